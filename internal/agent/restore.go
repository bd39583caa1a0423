package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/manifest"
)

// Restore defaults.
const (
	// DefaultMaxRestoreChunk bounds a chunk read by a restore: the agent
	// writes none larger than MaxChunkSize, and a larger one is refused
	// rather than held in memory.
	DefaultMaxRestoreChunk = 16 << 20
	// DefaultReadAhead is how many chunks of one file are fetched ahead of
	// the one being written.
	DefaultReadAhead = 2
	// maxManifestRead bounds the root manifest (the vault's own limit).
	maxManifestRead = 16 << 20
)

// RestoreOptions configures a restore.
type RestoreOptions struct {
	// Workers is how many files are restored at once.
	Workers int
	// ReadAhead is how many chunks of a file are fetched ahead.
	ReadAhead int
	// MaxChunk bounds one chunk.
	MaxChunk int64
	// Retry is applied to every request. Failures of a chunk's content
	// (hash mismatch, corrupt on the vault) are never retried.
	Retry client.Backoff
	// Progress, if set, is updated as the restore runs.
	Progress *Progress
}

func (o *RestoreOptions) defaults() {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.ReadAhead <= 0 {
		o.ReadAhead = DefaultReadAhead
	}
	if o.MaxChunk <= 0 {
		o.MaxChunk = DefaultMaxRestoreChunk
	}
	if o.Retry.MaxAttempts == 0 {
		// A chunk cut short mid-answer is retried a few times, not for
		// minutes: the vault cuts the answer off on purpose when the
		// content fails verification while it is sent.
		o.Retry.MaxAttempts = 6
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
}

// Tree is a snapshot's metadata: its index and its entries, checked.
type Tree struct {
	Index   Index
	Entries []Entry
}

// ErrNotAgentSnapshot is returned by ReadTree for a snapshot whose root
// manifest does not start with an agent index.
var ErrNotAgentSnapshot = errors.New("agent: not a snapshot made by vault push")

// ReadTree reads the metadata of the snapshot whose manifest root is root:
// the root manifest, its index, and the tree chunks, each verified against
// its hash. Every entry is checked before anything is written: a path that
// is absolute, has "..", appears twice or lies under something other than
// a directory of the tree fails the whole tree with ErrUnsafePath.
func ReadTree(ctx context.Context, c *client.Client, root chunk.Hash, o RestoreOptions) (*Tree, error) {
	o.defaults()
	r := &restorer{c: c, o: o}
	b, err := r.fetch(ctx, root, maxManifestRead)
	if err != nil {
		return nil, fmt.Errorf("agent: read root manifest %s: %w", root, err)
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("agent: root manifest %s: %w", root, err)
	}
	if len(m.Chunks) == 0 {
		return nil, fmt.Errorf("%w: its root manifest lists no index", ErrNotAgentSnapshot)
	}
	b, err = r.fetch(ctx, m.Chunks[0], o.MaxChunk)
	if err != nil {
		return nil, fmt.Errorf("agent: read index %s: %w", m.Chunks[0], err)
	}
	ix, err := ParseIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAgentSnapshot, err)
	}
	t := &Tree{Index: ix}
	for i, h := range ix.Tree {
		b, err := r.fetch(ctx, h, o.MaxChunk)
		if err != nil {
			return nil, fmt.Errorf("agent: read tree chunk %d of %d (%s): %w", i+1, len(ix.Tree), h, err)
		}
		if t.Entries, err = parseTreeChunk(t.Entries, b); err != nil {
			return nil, fmt.Errorf("agent: tree chunk %d of %d (%s): %w", i+1, len(ix.Tree), h, err)
		}
	}
	if int64(len(t.Entries)) != ix.Entries {
		return nil, fmt.Errorf("agent: the index counts %d entries, the tree has %d", ix.Entries, len(t.Entries))
	}
	if err := checkTree(t.Entries); err != nil {
		return nil, err
	}
	return t, nil
}

// RestoreResult is a finished restore.
type RestoreResult struct {
	Counts
	Duration time.Duration
}

// RestoreError lists the files whose content could not be restored (a
// chunk failed verification, or the vault reported it corrupt or gone).
// None of them was written: each file is written under a temporary name
// and renamed into place only once all its chunks were verified.
type RestoreError struct {
	Failed []error
}

func (e *RestoreError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "agent: %d file(s) could not be restored and were not written:", len(e.Failed))
	for _, err := range e.Failed {
		b.WriteString("\n  ")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap returns the failures.
func (e *RestoreError) Unwrap() []error { return e.Failed }

// Restore writes the tree into target, which must be empty or absent:
// directories, then files (in parallel, each verified chunk by chunk and
// renamed into place only when complete), then symbolic links, then the
// directories' modes and times, deepest first. Everything is created
// through an os.Root on target, which refuses any path that resolves
// outside it, and the tree was checked by ReadTree, so a crafted tree
// cannot write outside target.
//
// A file whose content fails is reported in a *RestoreError after the
// others are restored; any other error stops the restore.
func Restore(ctx context.Context, c *client.Client, t *Tree, target string, o RestoreOptions) (RestoreResult, error) {
	o.defaults()
	start := time.Now()
	r := &restorer{c: c, o: o}
	if err := prepareTarget(target); err != nil {
		return RestoreResult{}, err
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("agent: %w", err)
	}
	defer root.Close()
	r.root = root
	result := func() RestoreResult { return RestoreResult{Counts: o.Progress.Counts(), Duration: time.Since(start)} }

	// Directories stay writable by us until the end.
	for _, e := range t.Entries {
		if e.Type == TypeDir {
			if err := root.Mkdir(e.Path, 0o700); err != nil {
				return result(), fmt.Errorf("agent: restore %s: %w", e.Path, err)
			}
			o.Progress.Dirs.Add(1)
		}
	}

	var (
		mu     sync.Mutex
		failed []error
	)
	files := make(chan Entry)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(files)
		for _, e := range t.Entries {
			if e.Type != TypeFile {
				continue
			}
			select {
			case files <- e:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range o.Workers {
		g.Go(func() error {
			for e := range files {
				err := r.restoreFile(gctx, e)
				var ce *contentError
				switch {
				case err == nil:
				case errors.As(err, &ce):
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				default:
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return result(), err
	}

	for _, e := range t.Entries {
		if e.Type != TypeSymlink {
			continue
		}
		if err := root.Symlink(e.Target, e.Path); err != nil {
			return result(), fmt.Errorf("agent: restore %s: %w", e.Path, err)
		}
		if err := setSymlinkTime(root, e.Path, e.MTime); err != nil {
			return result(), fmt.Errorf("agent: restore %s: %w", e.Path, err)
		}
		o.Progress.Symlinks.Add(1)
	}

	// Deepest first: a directory's times change whenever something is
	// created in it, and a read-only directory must be finished last.
	for i := len(t.Entries) - 1; i >= 0; i-- {
		e := t.Entries[i]
		if e.Type != TypeDir {
			continue
		}
		if err := root.Chmod(e.Path, fileMode(e.Mode)); err != nil {
			return result(), fmt.Errorf("agent: restore %s: %w", e.Path, err)
		}
		if err := root.Chtimes(e.Path, e.MTime, e.MTime); err != nil {
			return result(), fmt.Errorf("agent: restore %s: %w", e.Path, err)
		}
	}
	if len(failed) > 0 {
		return result(), &RestoreError{Failed: failed}
	}
	return result(), nil
}

// prepareTarget creates target, or checks that it is an empty directory:
// a restore never overwrites or merges.
func prepareTarget(target string) error {
	fi, err := os.Stat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(target, 0o700); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("agent: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("agent: restore target %s is not a directory", target)
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("agent: restore target %s is not empty: restore into a new or empty directory", target)
	}
	return nil
}

// WriteFile writes the content of file entry e to w, each chunk verified
// whole before any of its bytes is written. If a chunk fails, the output
// stops before it: what was written is a correct prefix, and the error
// says so.
func WriteFile(ctx context.Context, c *client.Client, e Entry, w io.Writer, o RestoreOptions) error {
	o.defaults()
	if e.Type != TypeFile {
		return fmt.Errorf("agent: %s is a %s, not a file", e.Path, e.Type)
	}
	r := &restorer{c: c, o: o}
	n, err := r.stream(ctx, e, w)
	if err != nil {
		return fmt.Errorf("%w (the output stopped after %d correct bytes)", err, n)
	}
	return nil
}

// restorer runs one restore.
type restorer struct {
	c    *client.Client
	o    RestoreOptions
	root *os.Root
}

// contentError is a failure of a file's content, as opposed to one of the
// restore itself.
type contentError struct {
	path string
	err  error
}

func (e *contentError) Error() string { return fmt.Sprintf("%s: %v", e.path, e.err) }
func (e *contentError) Unwrap() error { return e.err }

var (
	errChunkTooLarge = errors.New("chunk larger than a restore accepts")
	errSizeMismatch  = errors.New("restored size differs from the snapshot's")
)

// isContentFailure reports whether a chunk read failed because of the
// chunk itself, not of the connection or the token.
func isContentFailure(err error) bool {
	return errors.Is(err, chunk.ErrHashMismatch) || errors.Is(err, errChunkTooLarge) ||
		client.IsCode(err, "corrupt") || client.IsCode(err, "not_found") || client.IsCode(err, "content_missing")
}

// fetch reads a whole chunk of at most max bytes, verified against h.
func (r *restorer) fetch(ctx context.Context, h chunk.Hash, max int64) ([]byte, error) {
	var data []byte
	err := r.o.Retry.Do(ctx, func(ctx context.Context) error {
		rc, err := r.c.GetChunk(ctx, h)
		if err != nil {
			return err
		}
		defer rc.Close()
		// The client's reader verifies the content when it reaches the
		// end; reading past max means it is not a chunk we would write.
		data, err = io.ReadAll(io.LimitReader(rc, max+1))
		if err != nil {
			return err
		}
		if int64(len(data)) > max {
			return fmt.Errorf("%w: over %d bytes", errChunkTooLarge, max)
		}
		return nil
	})
	return data, err
}

// stream writes e's content to w in order, fetching up to ReadAhead chunks
// ahead, and returns the bytes written.
func (r *restorer) stream(ctx context.Context, e Entry, w io.Writer) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		data []byte
		err  error
	}
	results := make(chan chan result, r.o.ReadAhead)
	go func() {
		defer close(results)
		for _, h := range e.Chunks {
			ch := make(chan result, 1)
			select {
			case results <- ch:
			case <-ctx.Done():
				return
			}
			go func() {
				data, err := r.fetch(ctx, h, r.o.MaxChunk)
				ch <- result{data, err}
			}()
		}
	}()
	var n int64
	i := 0
	for ch := range results {
		res := <-ch
		if res.err != nil {
			err := fmt.Errorf("chunk %d of %d (%s): %w", i+1, len(e.Chunks), e.Chunks[i], res.err)
			if isContentFailure(res.err) {
				return n, &contentError{path: e.Path, err: err}
			}
			return n, fmt.Errorf("agent: restore %s: %w", e.Path, err)
		}
		if _, err := w.Write(res.data); err != nil {
			return n, fmt.Errorf("agent: restore %s: write: %w", e.Path, err)
		}
		n += int64(len(res.data))
		r.o.Progress.Bytes.Add(int64(len(res.data)))
		i++
	}
	if err := ctx.Err(); err != nil {
		return n, err
	}
	if n != e.Size {
		return n, &contentError{path: e.Path, err: fmt.Errorf("%w: %d bytes, the snapshot says %d", errSizeMismatch, n, e.Size)}
	}
	return n, nil
}

// restoreFile writes one file under a temporary name in its directory and
// renames it into place once all of it was verified and written, with its
// mode and time set: a failure leaves no file at all, never a wrong one.
func (r *restorer) restoreFile(ctx context.Context, e Entry) (err error) {
	var f *os.File
	var tmp string
	for attempt := 0; ; attempt++ {
		tmp = path.Join(path.Dir(e.Path), ".wvrestore-"+randomHex(8))
		f, err = r.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) && attempt < 3 {
			continue
		}
		if err != nil {
			return fmt.Errorf("agent: restore %s: %w", e.Path, err)
		}
		break
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			r.root.Remove(tmp)
		}
	}()
	if _, err := r.stream(ctx, e, f); err != nil {
		return err
	}
	if err := f.Chmod(fileMode(e.Mode)); err != nil {
		return fmt.Errorf("agent: restore %s: %w", e.Path, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("agent: restore %s: %w", e.Path, err)
	}
	if err := r.root.Chtimes(tmp, e.MTime, e.MTime); err != nil {
		return fmt.Errorf("agent: restore %s: %w", e.Path, err)
	}
	if err := r.root.Rename(tmp, e.Path); err != nil {
		return fmt.Errorf("agent: restore %s: %w", e.Path, err)
	}
	r.o.Progress.Files.Add(1)
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
