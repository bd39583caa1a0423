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
	// RepeatedBytes counts chunks met again within this push (the same
	// content twice), which are neither checked nor sent again.
	RepeatedBytes atomic.Int64
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
	RepeatedBytes                 int64
	UploadedChunks, UploadedBytes int64
	NewChunks, NewBytes           int64
	Warnings                      int64
}

// DedupShare is the share of the chunk bytes settled so far (found in the
// vault, repeated within the push, or uploaded) that did not need sending.
// Chunks read but still waiting for their check or upload are left out:
// counting them as not uploaded would show all-new data, mid-push, as
// partly deduplicated (issue 16).
func (c Counts) DedupShare() float64 {
	saved := c.KnownBytes + c.RepeatedBytes
	if saved+c.UploadedBytes == 0 {
		return 0
	}
	return float64(saved) / float64(saved+c.UploadedBytes)
}

// Counts returns the current counts.
func (p *Progress) Counts() Counts {
	return Counts{
		Files: p.Files.Load(), Dirs: p.Dirs.Load(), Symlinks: p.Symlinks.Load(),
		Bytes: p.Bytes.Load(), Chunks: p.Chunks.Load(),
		KnownChunks: p.KnownChunks.Load(), KnownBytes: p.KnownBytes.Load(), RepeatedBytes: p.RepeatedBytes.Load(),
		UploadedChunks: p.UploadedChunks.Load(), UploadedBytes: p.UploadedBytes.Load(),
		NewChunks: p.NewChunks.Load(), NewBytes: p.NewBytes.Load(),
		Warnings: p.Warnings.Load(),
	}
}
