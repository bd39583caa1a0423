package agent

import "sync/atomic"

// Progress is what a push or restore has done so far. The agent updates it
// while it runs; a caller may read it from another goroutine at any time
// (to draw a progress bar).
type Progress struct {
	// Files, Dirs and Symlinks count the entries pushed or restored.
	Files, Dirs, Symlinks atomic.Int64
	// Bytes counts file content read (push) or written (restore).
	Bytes atomic.Int64
	// Chunks counts the distinct chunks of a push (content, tree
	// metadata, manifests).
	Chunks atomic.Int64
	// KnownChunks and KnownBytes count those the vault already had.
	KnownChunks, KnownBytes atomic.Int64
	// UploadedChunks and UploadedBytes count what was sent.
	UploadedChunks, UploadedBytes atomic.Int64
	// NewChunks and NewBytes count what the vault stored for the first
	// time (a chunk sent twice by two agents at once is new only once).
	NewChunks, NewBytes atomic.Int64
	// Warnings counts skipped files.
	Warnings atomic.Int64
}

// Counts is a copy of a Progress.
type Counts struct {
	Files, Dirs, Symlinks         int64
	Bytes                         int64
	Chunks                        int64
	KnownChunks, KnownBytes       int64
	UploadedChunks, UploadedBytes int64
	NewChunks, NewBytes           int64
	Warnings                      int64
}

// Counts returns the current counts.
func (p *Progress) Counts() Counts {
	return Counts{
		Files: p.Files.Load(), Dirs: p.Dirs.Load(), Symlinks: p.Symlinks.Load(),
		Bytes: p.Bytes.Load(), Chunks: p.Chunks.Load(),
		KnownChunks: p.KnownChunks.Load(), KnownBytes: p.KnownBytes.Load(),
		UploadedChunks: p.UploadedChunks.Load(), UploadedBytes: p.UploadedBytes.Load(),
		NewChunks: p.NewChunks.Load(), NewBytes: p.NewBytes.Load(),
		Warnings: p.Warnings.Load(),
	}
}
