package disk

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/store"
)

// On-disk names and modes. Changing any of them changes the format: bump
// FormatMarker.
const (
	// FormatFile is the name of the format marker in the data directory.
	FormatFile = "FORMAT"
	// FormatMarker is the exact content of FormatFile for this layout.
	FormatMarker = "wormvault-disk 1\n"

	blobsDir      = "blake3"
	quarantineDir = "quarantine"
	// tempPrefix marks files that are not (yet) blobs. Walk never reports
	// them and CleanTemp removes them.
	tempPrefix = ".tmp-"

	dirPerm  fs.FileMode = 0o750
	filePerm fs.FileMode = 0o440

	// copyBufSize bounds the memory one Put uses for its body, however
	// large the chunk.
	copyBufSize = 1 << 20
	// lockStripes is the number of mutexes that serialise publishing (and
	// quarantining) blobs with the same hash.
	lockStripes = 256
)

// ErrFormat is returned by Open for a data directory whose format marker is
// missing where one is required, or names a layout this code does not know.
var ErrFormat = errors.New("disk: unknown data directory format")

var _ store.Blobs = (*Disk)(nil)

// Options configures Open. The zero value is ready to use.
type Options struct {
	// FS performs every filesystem change. nil means the real filesystem
	// (OSFS); tests pass a wrapper that fails chosen steps.
	FS VFS
	// Logger receives warnings about stray files and failed clean-ups.
	// nil discards them.
	Logger *slog.Logger
	// Clock stamps quarantined blobs. nil means clock.Real.
	Clock clock.Clock
}

// Disk is a store.Blobs on a local filesystem. It is safe for concurrent use
// by one process; two processes must not share a data directory, because
// Disk's per-hash locks are in memory.
type Disk struct {
	dir        string // data directory, also holding the vault's other files
	blobs      string // dir/blake3
	quarantine string // dir/quarantine

	fs  VFS
	log *slog.Logger
	clk clock.Clock

	bufs sync.Pool // *[]byte of copyBufSize

	// locks serialise the publish step of Puts (and Quarantine) of one hash,
	// so that a Put that must undo its rename after a failed directory sync
	// can never remove a copy that another caller was already told is
	// durable.
	locks [lockStripes]sync.Mutex

	// durable[ab<<8|cd] records that blake3/ab/cd and blake3/ab are known to
	// have durable directory entries, so their parents need not be synced
	// again. Directories are never removed, so the flag never goes stale.
	durable [1 << 16]atomic.Bool
}

// Open opens the blob store in dir, creating dir and the layout if needed.
// A new or empty directory gets a FORMAT marker; a directory whose marker
// differs, or that has a blake3 directory but no marker, is refused with an
// error wrapping ErrFormat. Open then writes, renames, syncs and removes a
// probe file, so a read-only or otherwise unusable filesystem fails here
// rather than on the first upload. dir may hold other files.
func Open(dir string, opts Options) (*Disk, error) {
	if opts.FS == nil {
		opts.FS = OSFS{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	dir = filepath.Clean(dir)
	d := &Disk{
		dir:        dir,
		blobs:      filepath.Join(dir, blobsDir),
		quarantine: filepath.Join(dir, quarantineDir),
		fs:         opts.FS,
		log:        opts.Logger,
		clk:        opts.Clock,
	}
	d.bufs.New = func() any {
		b := make([]byte, copyBufSize)
		return &b
	}
	if err := d.init(); err != nil {
		return nil, fmt.Errorf("disk: open %s: %w", dir, err)
	}
	return d, nil
}

func (d *Disk) init() error {
	fi, err := os.Stat(d.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := d.fs.MkdirAll(d.dir, dirPerm); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		// The marker and everything below it is only durable if the
		// directory itself is.
		if err := d.fs.SyncDir(filepath.Dir(d.dir)); err != nil {
			return fmt.Errorf("sync parent directory: %w", err)
		}
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", d.dir)
	}
	if err := d.checkFormat(); err != nil {
		return err
	}
	for _, sub := range []string{d.blobs, d.quarantine} {
		if err := d.fs.MkdirAll(sub, dirPerm); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	// Make blake3/ and quarantine/ durable before any blob goes below them.
	if err := d.fs.SyncDir(d.dir); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	// The 256 first-level fan-out directories exist from the start (one
	// directory sync here), so that a new leaf directory costs one parent
	// sync on the upload path, not two.
	for i := range 256 {
		top := filepath.Join(d.blobs, fmt.Sprintf("%02x", i))
		if err := d.fs.MkdirAll(top, dirPerm); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	if err := d.fs.SyncDir(d.blobs); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	if err := d.probe(); err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			// A full filesystem is usable for reads: the vault starts and
			// serves them (restores above all), and refuses new content
			// with 507 until space is freed. Anything else is a
			// filesystem the vault cannot use at all.
			d.log.Warn("the data directory's filesystem is full: reads are served, uploads are refused until space is freed",
				"dir", d.dir, "err", err)
			return nil
		}
		return fmt.Errorf("write probe in %s: %w", d.blobs, err)
	}
	return nil
}

// checkFormat accepts a directory with the right marker, writes the marker
// into one that has no blob directory yet, and refuses anything else: a
// layout this code does not know must never be written to or walked.
func (d *Disk) checkFormat() error {
	marker := filepath.Join(d.dir, FormatFile)
	b, err := os.ReadFile(marker)
	switch {
	case err == nil:
		if string(b) != FormatMarker {
			if len(b) > 64 {
				b = b[:64]
			}
			return fmt.Errorf("%w: %s contains %q, want %q", ErrFormat, marker, b, FormatMarker)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read format marker: %w", err)
	}
	// The marker is written before blake3/ is created, so blake3/ without a
	// marker was not made by this code.
	if _, err := os.Lstat(d.blobs); err == nil {
		return fmt.Errorf("%w: %s exists but %s is missing", ErrFormat, d.blobs, marker)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// A crash while writing the marker can only leave its temp file, which
	// nothing else would ever remove.
	stale, _ := filepath.Glob(filepath.Join(d.dir, tempPrefix+FormatFile+"-*"))
	for _, p := range stale {
		_ = d.fs.Remove(p) // best effort: harmless if it stays
	}
	if err := d.writeFile(d.dir, FormatFile, []byte(FormatMarker)); err != nil {
		return fmt.Errorf("write format marker: %w", err)
	}
	d.log.Info("created blob store", "dir", d.dir, "format", strings.TrimSpace(FormatMarker))
	return nil
}

// writeFile durably and atomically creates dir/name with content, read-only.
// It is used for the format marker, so that a crash never leaves a torn
// marker that would make the next Open refuse the directory.
func (d *Disk) writeFile(dir, name string, content []byte) (err error) {
	f, err := d.fs.CreateTemp(dir, tempPrefix+name+"-*")
	if err != nil {
		return fmt.Errorf("create temp: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = f.Close() // already failed; the close error adds nothing
			_ = d.fs.Remove(f.Name())
		}
	}()
	if _, err := f.Write(content); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := f.Chmod(filePerm); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if err := d.fs.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	renamed = true
	if err := d.fs.SyncDir(dir); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// probe exercises every operation Put needs, in the directory Put uses. Its
// names start with tempPrefix, so a crash mid-probe leaves only what
// CleanTemp removes.
func (d *Disk) probe() error {
	f, err := d.fs.CreateTemp(d.blobs, tempPrefix+"probe-*")
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	name := f.Name()
	_, werr := f.Write([]byte("probe\n"))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = d.fs.Remove(name)
		return fmt.Errorf("write: %w", err)
	}
	renamed := name + "-renamed"
	if err := d.fs.Rename(name, renamed); err != nil {
		_ = d.fs.Remove(name)
		return fmt.Errorf("rename: %w", err)
	}
	if err := d.fs.Remove(renamed); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := d.fs.SyncDir(d.blobs); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// Dir returns the data directory.
func (d *Disk) Dir() string { return d.dir }

// leafDir returns blake3/ab/cd for a hash starting abcd.
func (d *Disk) leafDir(h chunk.Hash) string {
	return filepath.Join(d.blobs, hex.EncodeToString(h[0:1]), hex.EncodeToString(h[1:2]))
}

// path returns the final name of a blob.
func (d *Disk) path(h chunk.Hash) string {
	return filepath.Join(d.leafDir(h), h.String())
}

func (d *Disk) lock(h chunk.Hash) *sync.Mutex {
	// Any byte of a cryptographic hash spreads evenly; the last one avoids
	// correlating stripes with fan-out directories.
	return &d.locks[h[chunk.Size-1]]
}

// Open returns the blob's content and size, or an error wrapping
// store.ErrNotFound. The content is not verified.
func (d *Disk) Open(ctx context.Context, h chunk.Hash) (io.ReadSeekCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("disk: open %s: %w", h, err)
	}
	f, err := os.Open(d.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("disk: open %s: %w", h, store.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("disk: open %s: %w", h, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("disk: open %s: %w", h, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, 0, fmt.Errorf("disk: open %s: not a regular file (%s)", h, fi.Mode().Type())
	}
	return f, fi.Size(), nil
}

// Stat returns the blob's size, or an error wrapping store.ErrNotFound.
func (d *Disk) Stat(ctx context.Context, h chunk.Hash) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("disk: stat %s: %w", h, err)
	}
	fi, err := os.Lstat(d.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("disk: stat %s: %w", h, store.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("disk: stat %s: %w", h, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("disk: stat %s: not a regular file (%s)", h, fi.Mode().Type())
	}
	return fi.Size(), nil
}

// Walk calls fn for every blob, in directory order. Temp files are skipped
// silently; anything else that is not a regular file named by its hash in
// its own fan-out directory is skipped with a warning, since no code of ours
// makes one. Walk returns fn's first error unchanged, or ctx.Err() once ctx
// is done.
func (d *Disk) Walk(ctx context.Context, fn func(h chunk.Hash, size int64) error) error {
	return d.walk(ctx, "", fn)
}

// WalkFrom is Walk over the blobs whose hash sorts after after only, in
// ascending hash order (directory order is hash order: names are lowercase
// hex). A reconcile pass resumes from its persisted cursor with it without
// listing the fan-out directories it has already done.
func (d *Disk) WalkFrom(ctx context.Context, after chunk.Hash, fn func(h chunk.Hash, size int64) error) error {
	return d.walk(ctx, after.String(), fn)
}

// walk is Walk after the hash whose hex is after ("" for all).
func (d *Disk) walk(ctx context.Context, after string, fn func(h chunk.Hash, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tops, err := os.ReadDir(d.blobs)
	if err != nil {
		return fmt.Errorf("disk: walk: %w", err)
	}
	for _, top := range tops {
		if strings.HasPrefix(top.Name(), tempPrefix) {
			continue
		}
		topPath := filepath.Join(d.blobs, top.Name())
		if !top.IsDir() || !isFanout(top.Name()) {
			d.stray(ctx, topPath)
			continue
		}
		if after != "" && top.Name() < after[0:2] {
			continue
		}
		mids, err := os.ReadDir(topPath)
		if err != nil {
			return fmt.Errorf("disk: walk: %w", err)
		}
		for _, mid := range mids {
			if err := ctx.Err(); err != nil {
				return err
			}
			midPath := filepath.Join(topPath, mid.Name())
			if !mid.IsDir() || !isFanout(mid.Name()) {
				d.stray(ctx, midPath)
				continue
			}
			if after != "" && top.Name()+mid.Name() < after[0:4] {
				continue
			}
			if err := d.walkLeaf(ctx, top.Name(), mid.Name(), midPath, after, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *Disk) walkLeaf(ctx context.Context, ab, cd, dir, after string, fn func(chunk.Hash, int64) error) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("disk: walk: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		h, err := chunk.ParseHash(name)
		if err != nil || name[0:2] != ab || name[2:4] != cd || !e.Type().IsRegular() {
			d.stray(ctx, filepath.Join(dir, name))
			continue
		}
		if name <= after {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // quarantined since ReadDir
		}
		if err != nil {
			return fmt.Errorf("disk: walk: %w", err)
		}
		if err := fn(h, fi.Size()); err != nil {
			return err
		}
	}
	return nil
}

func (d *Disk) stray(ctx context.Context, path string) {
	d.log.WarnContext(ctx, "stray entry in blob store, skipped", "path", path)
}

// isFanout reports whether name is two lowercase hex digits.
func isFanout(name string) bool {
	if len(name) != 2 {
		return false
	}
	for i := range 2 {
		c := name[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Remove unlinks the blob and syncs its directory. An absent blob is not
// an error.
func (d *Disk) Remove(ctx context.Context, h chunk.Hash) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("disk: remove %s: %w", h, err)
	}
	mu := d.lock(h)
	mu.Lock()
	defer mu.Unlock()
	path := d.path(h)
	if err := d.fs.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disk: remove %s: %w", h, err)
	}
	// Without this a crash could undo the unlink, and the next reconcile
	// would find content for a chunk that has a tombstone.
	if err := d.fs.SyncDir(filepath.Dir(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disk: remove %s: sync directory: %w", h, err)
	}
	return nil
}

// Quarantine moves the blob to quarantine/<hash>.<unix-nanos>, where it is
// kept for inspection and no longer found by Open, Stat or Walk. It returns
// an error wrapping store.ErrNotFound if there is no such blob.
func (d *Disk) Quarantine(ctx context.Context, h chunk.Hash) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("disk: quarantine %s: %w", h, err)
	}
	mu := d.lock(h)
	mu.Lock()
	defer mu.Unlock()

	src := d.path(h)
	if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disk: quarantine %s: %w", h, store.ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("disk: quarantine %s: %w", h, err)
	}
	// Never overwrite an earlier quarantined copy: each is evidence.
	nanos := d.clk.Now().UnixNano()
	dst := filepath.Join(d.quarantine, h.String()+"."+strconv.FormatInt(nanos, 10))
	for {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		} else if err != nil {
			return fmt.Errorf("disk: quarantine %s: %w", h, err)
		}
		nanos++
		dst = filepath.Join(d.quarantine, h.String()+"."+strconv.FormatInt(nanos, 10))
	}
	if err := d.fs.Rename(src, dst); err != nil {
		return fmt.Errorf("disk: quarantine %s: rename: %w", h, err)
	}
	// Sync both directories: otherwise a crash could bring the corrupt blob
	// back under its address after the caller has acted on its removal.
	if err := d.fs.SyncDir(d.quarantine); err != nil {
		return fmt.Errorf("disk: quarantine %s: sync directory: %w", h, err)
	}
	if err := d.fs.SyncDir(filepath.Dir(src)); err != nil {
		return fmt.Errorf("disk: quarantine %s: sync directory: %w", h, err)
	}
	d.log.WarnContext(ctx, "blob quarantined", "hash", h.String(), "path", dst)
	return nil
}

// CleanTemp removes every temp file under blake3/ (interrupted Puts and
// probes) and returns how many it removed. It must not run while a Put is in
// progress, since it would remove that Put's temp file. The removals are not
// synced: a temp file that a crash brings back is removed next time.
func (d *Disk) CleanTemp(ctx context.Context) (int, error) {
	removed := 0
	err := filepath.WalkDir(d.blobs, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if e.IsDir() {
			// Blobs are at most two levels below blake3/.
			if rel, _ := filepath.Rel(d.blobs, path); strings.Count(rel, string(filepath.Separator)) >= 2 {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			return nil
		}
		if err := d.fs.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("disk: clean temp: %w", err)
	}
	if removed > 0 {
		d.log.InfoContext(ctx, "removed temp files of interrupted writes", "count", removed)
	}
	return removed, nil
}
