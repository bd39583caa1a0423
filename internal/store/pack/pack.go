// Package pack stores small chunks as records appended to pack files, so
// that many chunks cost one write and one fsync instead of a file, an fsync,
// a rename and a directory fsync each.
//
// Layout: <dir>/<id as 16 hex digits>.pack. A pack starts with an 8-byte
// magic; each record is a 40-byte header (magic "WVR1", data length as
// big-endian uint32, the chunk's BLAKE3 hash) followed by the data. Every
// record names and sizes itself, so a pack can be verified and its index rows
// rebuilt from the pack alone.
//
// One pack is open for appends at a time; it is sealed (fsynced, made
// read-only) when it reaches the size limit, and a new one begins. A process
// starts a fresh pack at every Open, so a pack left open by a crash (or by
// Close) is never appended to again: its tail is checked by Scan, repaired
// by Truncate, and it is then sealed by Seal.
//
// A failed write (a full disk, above all) never leaves the writer closed:
// the pack it failed in is abandoned (cut back to its last durable record,
// or removed if it holds none), and the next Append starts a new pack. If
// that start fails too (the disk is still full), the Append fails with the
// cause and the one after it tries again, so appends resume by themselves
// once space returns. Open itself succeeds on a full disk, without an open
// pack, so that a vault can start and serve reads.
//
// The package knows nothing of the index: the store decides what a record
// means and when it may be acknowledged (after Append returned, which is
// after the fsync, and after its index row committed).
package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wormvault/wormvault/internal/chunk"
)

const (
	// HeaderSize is the size of a record header.
	HeaderSize = 40
	// DefaultLimit is the size at which a pack is sealed.
	DefaultLimit = 64 << 20
	// MaxRecord is the largest record data accepted.
	MaxRecord = 16 << 20

	fileMagic   = "WVPACK1\n"
	recordMagic = "WVR1"
	suffix      = ".pack"
)

var (
	// ErrNotFound: no such pack.
	ErrNotFound = errors.New("pack: not found")
	// ErrBadRecord: the bytes at a location are not the record expected.
	ErrBadRecord = errors.New("pack: bad record")
	// ErrNoHolePunch: the filesystem cannot free space inside a file.
	ErrNoHolePunch = errors.New("pack: filesystem does not support hole punching")
)

// Record is a chunk to append.
type Record struct {
	Hash chunk.Hash
	Data []byte
}

// Location is where a record lives: its pack and the offset of its header.
type Location struct {
	Pack   int64
	Offset int64
}

// Options tunes Packs. Zero fields take defaults.
type Options struct {
	// Limit is the pack size at which the open pack is sealed.
	Limit int64
}

// Packs is the set of pack files in one directory. Append is serialised by
// the caller's committer but Packs is safe for concurrent use.
type Packs struct {
	dir   string
	limit int64

	mu     sync.Mutex
	active *os.File // nil while no pack is open
	id     int64    // the open pack, or the last one while none is open
	size   int64
	next   int64 // the id the next start uses
	// down says why no pack is open (a failed write or start); nil while
	// one is, or before the first start.
	down   error
	closed bool   // Close was called: appends fail for good
	hdr    []byte // reused append buffer
}

// Open opens or creates the pack directory and starts a new pack. If the
// filesystem has no space for the new pack (ENOSPC, EDQUOT), Open still
// succeeds, without an open pack: Err reports why, and the next Append or
// Ready starts one.
func Open(dir string, o Options) (*Packs, error) {
	if o.Limit == 0 {
		o.Limit = DefaultLimit
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	p := &Packs{dir: dir, limit: o.Limit}
	ids, err := p.IDs()
	if err != nil {
		return nil, err
	}
	p.next = 1
	if len(ids) > 0 {
		p.next = ids[len(ids)-1] + 1
	}
	if err := p.start(); err != nil && !NoSpace(err) {
		return nil, err
	}
	return p, nil
}

// NoSpace reports whether err says the filesystem is out of space (or the
// user out of quota): a condition that passes once space is freed.
func NoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// OpenReadOnly opens an existing pack directory for reading and scanning
// only: it creates nothing (no new pack, unlike Open), Active returns 0 and
// Append fails. vault reindex uses it, so that rebuilding the index never
// changes the data directory. It returns an error wrapping fs.ErrNotExist
// if dir does not exist.
func OpenReadOnly(dir string) (*Packs, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("pack: %s is not a directory", dir)
	}
	return &Packs{dir: dir, limit: DefaultLimit, closed: true}, nil
}

// Active returns the id of the pack open for appends, or 0 if none is
// open (a start failed; the next Append retries).
func (p *Packs) Active() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active == nil {
		return 0
	}
	return p.id
}

// Err returns why no pack is open for appends (the last failed write or
// start), or nil if one is, or none was needed yet.
func (p *Packs) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	return p.down
}

// Ready reports whether appends can proceed: it returns nil if a pack is
// open, and otherwise tries to start one (as the next Append would) and
// returns the error if that fails. Readiness probes call it, so a writer
// stopped by a full disk shows ready again as soon as space returns.
func (p *Packs) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	if p.active != nil {
		return nil
	}
	return p.start()
}

func (p *Packs) path(id int64) string {
	return filepath.Join(p.dir, fmt.Sprintf("%016x%s", id, suffix))
}

var errClosed = errors.New("pack: closed")

// start creates pack p.next and makes its existence durable; p.mu is held.
// On failure no pack is open, p.down says why, and a file it created is
// removed again: it holds no record, so nothing can refer to it, and on a
// full disk an empty pack left behind at every retry would only add to
// the clutter.
func (p *Packs) start() (err error) {
	id := p.next
	p.next++ // never reuse an id, even one whose file is removed below
	path := p.path(id)
	defer func() {
		if err != nil {
			err = fmt.Errorf("pack: create %d: %w", id, err)
			p.down = err
		}
	}()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		if rerr := os.Remove(path); rerr != nil {
			return errors.Join(err, fmt.Errorf("remove the empty pack: %w", rerr))
		}
		_ = syncDir(p.dir) // best effort: an empty pack that reappears after a crash is harmless
		return err
	}
	if _, err := f.Write([]byte(fileMagic)); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := syncDir(p.dir); err != nil {
		return fail(err)
	}
	p.active, p.id, p.size, p.down = f, id, int64(len(fileMagic)), nil
	return nil
}

// Append writes recs to the open pack with one write and one fdatasync and
// returns their locations, in order. When it returns without error every
// record is durable. sealed reports that the pack the records went into was
// sealed afterwards (it reached its limit); a new pack is then open, unless
// starting it failed, in which case the next Append tries again.
//
// If no pack is open (an earlier write or start failed), Append first
// starts one, and fails with that error if it cannot. An error for which
// NoSpace is true passes once space is freed.
func (p *Packs) Append(recs []Record) (locs []Location, sealed bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false, errClosed
	}
	if p.active == nil {
		if err := p.start(); err != nil {
			return nil, false, err
		}
	}
	buf := p.hdr[:0]
	locs = make([]Location, len(recs))
	off := p.size
	for i, r := range recs {
		if len(r.Data) > MaxRecord {
			return nil, false, fmt.Errorf("pack: record of %d bytes over %d", len(r.Data), MaxRecord)
		}
		locs[i] = Location{Pack: p.id, Offset: off}
		buf = appendHeader(buf, r.Hash, len(r.Data))
		buf = append(buf, r.Data...)
		off += HeaderSize + int64(len(r.Data))
	}
	p.hdr = buf[:0]
	if _, err := p.active.WriteAt(buf, p.size); err != nil {
		return nil, false, p.fail(fmt.Errorf("pack: append to %d: %w", p.id, err))
	}
	if err := unix.Fdatasync(int(p.active.Fd())); err != nil {
		return nil, false, p.fail(fmt.Errorf("pack: sync %d: %w", p.id, err))
	}
	p.size = off
	if p.size >= p.limit {
		// The records are durable whatever happens to the seal: its
		// failure abandons the pack (unsealed, it is scanned at the next
		// start) but does not fail the append.
		return locs, p.seal(), nil
	}
	return locs, false, nil
}

// fail abandons the open pack after a failed write or sync and returns
// err. Its tail is in an unknown state, so nothing more is appended to it:
// it is cut back to the end of its last durable record (on a full disk that
// frees what the failed write took), and removed if it holds no record at
// all: no Append succeeded in it, so nothing refers to it. If the cut
// fails, the next Open's Scan finds the torn tail. The next Append starts a
// new pack.
func (p *Packs) fail(err error) error {
	f, path := p.active, p.path(p.id)
	p.active, p.down = nil, err
	if p.size <= int64(len(fileMagic)) {
		f.Close()
		if os.Remove(path) == nil {
			_ = syncDir(p.dir)
		}
		return err
	}
	if f.Truncate(p.size) == nil {
		_ = f.Sync()
	}
	f.Close()
	return err
}

// seal makes the open pack read-only and starts the next, reporting
// whether the pack was sealed. A failed start leaves no pack open (the next
// Append retries); a failed chmod or sync abandons the pack unsealed.
func (p *Packs) seal() bool {
	f := p.active
	if err := f.Chmod(0o440); err != nil {
		p.abandon(fmt.Errorf("pack: seal %d: %w", p.id, err))
		return false
	}
	if err := f.Sync(); err != nil {
		p.abandon(fmt.Errorf("pack: seal %d: %w", p.id, err))
		return false
	}
	f.Close()
	p.active = nil
	_ = p.start() // on failure p.down says why, and the next Append retries
	return true
}

// abandon closes the open pack, whose records are all durable, without
// sealing it: the next start-up's reconcile scans it.
func (p *Packs) abandon(err error) {
	p.active.Close()
	p.active, p.down = nil, err
}

func appendHeader(b []byte, h chunk.Hash, n int) []byte {
	b = append(b, recordMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return append(b, h[:]...)
}

// Read returns the data of the record at loc, which must be the record of h
// with size bytes. The data is not verified against h: callers verify.
func (p *Packs) Read(loc Location, h chunk.Hash, size int64) ([]byte, error) {
	f, err := os.Open(p.path(loc.Pack))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pack %d: %w", loc.Pack, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer f.Close()
	buf := make([]byte, HeaderSize+size)
	if _, err := f.ReadAt(buf, loc.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("pack %d offset %d: %w: short read", loc.Pack, loc.Offset, ErrBadRecord)
		}
		return nil, fmt.Errorf("pack: read %d: %w", loc.Pack, err)
	}
	gotHash, n, ok := parseHeader(buf)
	if !ok || gotHash != h || int64(n) != size {
		return nil, fmt.Errorf("pack %d offset %d: %w: header does not name %s", loc.Pack, loc.Offset, ErrBadRecord, h)
	}
	return buf[HeaderSize:], nil
}

func parseHeader(b []byte) (chunk.Hash, int, bool) {
	var h chunk.Hash
	if len(b) < HeaderSize || string(b[:4]) != recordMagic {
		return h, 0, false
	}
	n := binary.BigEndian.Uint32(b[4:8])
	if n > MaxRecord {
		return h, 0, false
	}
	copy(h[:], b[8:HeaderSize])
	return h, int(n), true
}

// IDs lists the packs in the directory, in ascending order.
func (p *Packs) IDs() ([]int64, error) {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	var ids []int64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok || len(name) != 16 {
			continue
		}
		id, err := strconv.ParseInt(name, 16, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// ScannedRecord is a record found by Scan.
type ScannedRecord struct {
	Location
	Hash chunk.Hash
	Size int64
	// Valid reports whether the data hashes to Hash.
	Valid bool
}

// Scan reads pack id from the start and calls fn for each well-framed
// record, with Valid telling whether its data verifies. Bytes that are not
// a record (the punched hole of a deleted chunk, or damage) are skipped up
// to the next record that verifies. It returns end, the offset just past
// the last well-framed record: everything from end on is a torn tail.
func (p *Packs) Scan(id int64, fn func(ScannedRecord) error) (end int64, err error) {
	f, err := os.Open(p.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("pack %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("pack: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("pack: %w", err)
	}
	magic := make([]byte, len(fileMagic))
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, []byte(fileMagic)) {
		return 0, nil
	}
	off := int64(len(fileMagic))
	hdr := make([]byte, HeaderSize)
	data := make([]byte, 0, 256<<10)
	end = off
	for off+HeaderSize <= st.Size() {
		if _, err := f.ReadAt(hdr, off); err != nil {
			return end, fmt.Errorf("pack: scan %d: %w", id, err)
		}
		h, n, ok := parseHeader(hdr)
		if !ok || off+HeaderSize+int64(n) > st.Size() {
			// Not a record: a punched hole (zeros) of a deleted chunk, or
			// damage. Look for the next record after it; if there is none,
			// this is the tail.
			next, err := resync(f, off+1, st.Size())
			if err != nil {
				return end, fmt.Errorf("pack: scan %d: %w", id, err)
			}
			if next < 0 {
				return end, nil
			}
			off = next
			continue
		}
		data = slices.Grow(data[:0], n)[:n]
		if _, err := f.ReadAt(data, off+HeaderSize); err != nil {
			return off, fmt.Errorf("pack: scan %d: %w", id, err)
		}
		rec := ScannedRecord{Location: Location{Pack: id, Offset: off}, Hash: h, Size: int64(n), Valid: chunk.Sum(data) == h}
		if err := fn(rec); err != nil {
			return end, err
		}
		off += HeaderSize + int64(n)
		end = off
	}
	return end, nil
}

// resync finds the offset of the next well-framed record whose data
// verifies, at or after from, or -1.
func resync(f *os.File, from, size int64) (int64, error) {
	buf := make([]byte, 1<<20)
	for pos := from; pos+HeaderSize <= size; {
		n, err := f.ReadAt(buf, pos)
		if err != nil && !errors.Is(err, io.EOF) {
			return -1, err
		}
		i := bytes.Index(buf[:n], []byte(recordMagic))
		if i < 0 {
			// Keep the last bytes: the magic may straddle two reads.
			pos += int64(max(n-len(recordMagic)+1, 1))
			continue
		}
		cand := pos + int64(i)
		hdr := make([]byte, HeaderSize)
		if _, err := f.ReadAt(hdr, cand); err == nil {
			if h, m, ok := parseHeader(hdr); ok && cand+HeaderSize+int64(m) <= size {
				data := make([]byte, m)
				if _, err := f.ReadAt(data, cand+HeaderSize); err == nil && chunk.Sum(data) == h {
					return cand, nil
				}
			}
		}
		pos = cand + 1
	}
	return -1, nil
}

// Truncate cuts pack id to size bytes, dropping a torn tail. It refuses
// the open pack.
func (p *Packs) Truncate(id, size int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active != nil && id == p.id {
		return fmt.Errorf("pack: truncate %d: it is open for appends", id)
	}
	path := p.path(id)
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("pack: truncate %d: %w", id, err)
	}
	// Sealed packs are read-only; the repair needs write access briefly.
	if err := os.Chmod(path, 0o640); err != nil {
		return fmt.Errorf("pack: truncate %d: %w", id, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pack: truncate %d: %w", id, err)
	}
	defer f.Close()
	if size < st.Size() {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("pack: truncate %d: %w", id, err)
		}
	}
	if err := f.Chmod(0o440); err != nil {
		return fmt.Errorf("pack: truncate %d: %w", id, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pack: truncate %d: %w", id, err)
	}
	return nil
}

// Seal makes pack id read-only, as a pack is sealed when it reaches its
// size limit: the store calls it for a pack that a crash or a shutdown left
// unsealed, once reconcile has checked its tail, so that no pack but the
// open one is writable. It refuses the open pack and does nothing to a
// pack already sealed; changed reports whether the mode changed.
func (p *Packs) Seal(id int64) (changed bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active != nil && id == p.id {
		return false, fmt.Errorf("pack: seal %d: it is open for appends", id)
	}
	path := p.path(id)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("pack %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("pack: seal %d: %w", id, err)
	}
	if st.Mode().Perm()&0o222 == 0 {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("pack: seal %d: %w", id, err)
	}
	defer f.Close()
	if err := f.Chmod(0o440); err != nil {
		return false, fmt.Errorf("pack: seal %d: %w", id, err)
	}
	// The mode is metadata: without the sync a crash could undo it.
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("pack: seal %d: %w", id, err)
	}
	return true, nil
}

// Size returns the current size of pack id.
func (p *Packs) Size(id int64) (int64, error) {
	st, err := os.Stat(p.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("pack %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("pack: %w", err)
	}
	return st.Size(), nil
}

// Punch frees the space of the record at loc (header and data) without
// rewriting the pack: the filesystem deallocates the range and it reads as
// zeros. On filesystems without hole punching the record is overwritten
// with zeros instead, so the content is destroyed all the same, and Punch
// returns an error wrapping ErrNoHolePunch: the space stays used until the
// pack is rewritten.
func (p *Packs) Punch(loc Location, size int64) error {
	path := p.path(loc.Pack)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrPermission) {
		// A sealed pack: open it for the punch only.
		if err := os.Chmod(path, 0o640); err != nil {
			return fmt.Errorf("pack: punch %d: %w", loc.Pack, err)
		}
		defer os.Chmod(path, 0o440)
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
	}
	if err != nil {
		return fmt.Errorf("pack: punch %d: %w", loc.Pack, err)
	}
	defer f.Close()
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, loc.Offset, HeaderSize+size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		// No hole punching here: overwrite the record with zeros, so the
		// deleted content is gone even though its space is not freed.
		if _, werr := f.WriteAt(make([]byte, HeaderSize+size), loc.Offset); werr != nil {
			return fmt.Errorf("pack: punch %d: %w (and zeroing: %w)", loc.Pack, ErrNoHolePunch, werr)
		}
		if serr := f.Sync(); serr != nil {
			return fmt.Errorf("pack: punch %d: %w", loc.Pack, serr)
		}
		return fmt.Errorf("pack: punch %d: record zeroed: %w", loc.Pack, ErrNoHolePunch)
	}
	if err != nil {
		return fmt.Errorf("pack: punch %d: %w", loc.Pack, err)
	}
	return f.Sync()
}

// Close closes the open pack (it stays unsealed; the next Open starts a new
// one). Appends fail after it.
func (p *Packs) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.active == nil {
		return nil
	}
	err := p.active.Close()
	p.active = nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pack: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pack: sync dir: %w", err)
	}
	return nil
}
