package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// Put streams r into the store under h and returns the number of bytes
// written once the blob is durable: Stage, then Publish. See the package
// documentation for the order of steps and why each exists.
//
// Put returns an error wrapping chunk.ErrHashMismatch if the content does not
// hash to h, r's own error (wrapped, so errors.Is and errors.As see it) if
// reading fails, and ctx's error if ctx is done before the blob is
// published. In every error case no blob under h is added and no temp file is
// left behind, short of a failure to remove it (which is logged; CleanTemp
// removes it later).
func (d *Disk) Put(ctx context.Context, h chunk.Hash, r io.Reader) (size int64, err error) {
	st, err := d.Stage(ctx, h, r)
	if err != nil {
		return 0, err
	}
	defer st.Discard()
	if err := st.Publish(ctx); err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// staged is a verified, synced temp file waiting to be published.
type staged struct {
	d       *Disk
	h       chunk.Hash
	dir     string
	tmpName string
	size    int64
	// renamed: the temp file is now the blob (or was removed after a
	// failed directory sync); nothing is left to discard.
	renamed bool
}

var _ store.StagedBlob = (*staged)(nil)

// Stage is steps 1 to 5 of Put: the body is streamed to a temp file next
// to the blob's final name, verified against h, made read-only and synced.
// It takes no lock: a slow body delays nobody else. The errors are Put's;
// on error nothing is left behind.
func (d *Disk) Stage(ctx context.Context, h chunk.Hash, r io.Reader) (store.StagedBlob, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("disk: put %s: %w", h, err)
	}
	dir := d.leafDir(h)
	if err := d.mkdirs(h, dir); err != nil {
		return nil, fmt.Errorf("disk: put %s: %w", h, err)
	}
	// The temp file lives in the final directory so that the rename is
	// within one directory (atomic, and one directory to sync).
	tmp, err := d.fs.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("disk: put %s: create temp: %w", h, err)
	}
	st := &staged{d: d, h: h, dir: dir, tmpName: tmp.Name()}
	closed, ok := false, false
	defer func() {
		if ok {
			return
		}
		if !closed {
			_ = tmp.Close() // the write already failed; this error adds nothing
		}
		st.Discard()
	}()

	n, got, err := d.copy(ctx, tmp, r)
	if err != nil {
		return nil, fmt.Errorf("disk: put %s: %w", h, err)
	}
	if got != h {
		return nil, fmt.Errorf("disk: put %s: content hashes to %s: %w", h, got, chunk.ErrHashMismatch)
	}
	// Read-only before the Sync, so the mode is made durable with the data:
	// immutability is also a file mode.
	if err := tmp.Chmod(filePerm); err != nil {
		return nil, fmt.Errorf("disk: put %s: chmod temp: %w", h, err)
	}
	// Without this Sync a crash after the rename can leave the final name
	// pointing at a zero-length or partial file.
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("disk: put %s: sync temp: %w", h, err)
	}
	closed = true
	// Close reports deferred write errors on some filesystems (NFS).
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("disk: put %s: close temp: %w", h, err)
	}
	st.size, ok = n, true
	return st, nil
}

// Size is the staged content's length.
func (st *staged) Size() int64 { return st.size }

// Publish is steps 6 to 8 of Put: unless ctx is done, the temp file is
// renamed to the blob's name and the directory synced.
func (st *staged) Publish(ctx context.Context) error {
	if st.renamed {
		return fmt.Errorf("disk: put %s: published twice", st.h)
	}
	// Last chance to honour a cancelled request: after the rename the blob is
	// visible.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("disk: put %s: %w", st.h, err)
	}
	if err := st.d.publish(st.h, st.dir, st.tmpName, &st.renamed); err != nil {
		return fmt.Errorf("disk: put %s: %w", st.h, err)
	}
	return nil
}

// Discard removes the temp file unless it was published.
func (st *staged) Discard() {
	if st.renamed {
		return
	}
	st.renamed = true // nothing left to discard after this
	if rerr := st.d.fs.Remove(st.tmpName); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		st.d.log.Warn("cannot remove temp file of failed put", "hash", st.h.String(), "path", st.tmpName, "err", rerr)
	}
}

// publish renames the verified, synced temp file to the blob's name and
// syncs the directory. If the directory sync fails and there was no blob
// before, it removes the blob again: the caller is told the write failed and
// must not find it. A blob that existed before is left alone, since an
// earlier caller may already have been told it is durable (the rename
// replaced it with identical, freshly verified content).
//
// The per-hash lock makes "existed before" exact: a concurrent Put of the
// same hash either finished its directory sync before us or starts after.
func (d *Disk) publish(h chunk.Hash, dir, tmpName string, renamed *bool) error {
	final := filepath.Join(dir, h.String())
	mu := d.lock(h)
	mu.Lock()
	defer mu.Unlock()

	_, err := os.Lstat(final)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat: %w", err)
	}
	if err := d.fs.Rename(tmpName, final); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	*renamed = true
	// Sync the directory too: otherwise a crash can undo the rename while
	// the index row, committed after we return, survives.
	serr := d.fs.SyncDir(dir)
	if serr == nil {
		return nil
	}
	if !existed {
		if rerr := d.fs.Remove(final); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			d.log.Error("cannot remove blob after failed directory sync; it has no index row",
				"hash", h.String(), "path", final, "err", rerr)
			return fmt.Errorf("sync directory: %w (and remove: %w)", serr, rerr)
		}
		// Best effort: if the removal is lost in a crash, the startup
		// reconcile verifies the file and indexes or quarantines it.
		_ = d.fs.SyncDir(dir)
	}
	return fmt.Errorf("sync directory: %w", serr)
}

// mkdirs creates blake3/ab/cd and makes its entries durable.
func (d *Disk) mkdirs(h chunk.Hash, dir string) error {
	if err := d.fs.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	i := int(h[0])<<8 | int(h[1])
	if d.durable[i].Load() {
		return nil
	}
	// MkdirAll cannot say whether it created the leaf, and a concurrent Put
	// may have created it without having synced its parent yet. So until
	// this process has synced it once, sync the parent: at most one extra
	// fsync per leaf directory per process (the first level was made and
	// synced by Open). Without it a crash could drop a new directory, and
	// with it a blob we reported durable.
	if err := d.fs.SyncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	d.durable[i].Store(true)
	return nil
}

// copy streams r into w through the BLAKE3 hasher, using one pooled buffer,
// so that memory per upload is bounded whatever the chunk size.
func (d *Disk) copy(ctx context.Context, w io.Writer, r io.Reader) (int64, chunk.Hash, error) {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	hw := chunk.NewHasher()
	// Reading through a readerFunc hides any WriterTo of r, and
	// io.MultiWriter has no ReaderFrom, so CopyBuffer really uses our
	// buffer. It also stops at the first read after ctx is done (file I/O
	// itself cannot be interrupted), and remembers r's error so that a read
	// failure can be told from a write failure.
	var rerr error
	src := readerFunc(func(p []byte) (int, error) {
		if err := ctx.Err(); err != nil {
			rerr = err
			return 0, err
		}
		n, err := r.Read(p)
		if err != nil && err != io.EOF {
			rerr = err
		}
		return n, err
	})
	n, err := io.CopyBuffer(io.MultiWriter(w, hw), src, *bp)
	if err != nil {
		if rerr != nil && err == rerr {
			return n, chunk.Hash{}, fmt.Errorf("read body: %w", err)
		}
		return n, chunk.Hash{}, fmt.Errorf("write temp: %w", err)
	}
	return n, chunk.SumOf(hw), nil
}

// readerFunc adapts a function to io.Reader.
type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
