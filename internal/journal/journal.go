// Package journal keeps the vault's authoritative record in its data
// directory: every audit log entry, byte for byte the Merkle leaf the
// database stores, appended and fsynced before the database transaction
// that holds it commits.
//
// The database is an index (invariant 8): a leaked database credential
// can rewrite rows, but not this file, which only the server process
// writes. The deletion executor reads the journal, not the database, to
// decide what may be destroyed, and `vault reindex` rebuilds the database
// from the journal and the stored content.
//
// # Format
//
// The journal is a sequence of segment files named %016d.wvj (the first
// sequence number they hold), each a sequence of records:
//
//	u32 length of payload | u32 CRC-32C of (seq, payload) | u64 seq | payload
//
// little-endian. Records are appended in sequence order; a record whose
// seq is not one more than the previous one's replaces the previous
// records from that seq on: it is written after a database transaction
// that had appended them rolled back, so they were never committed. A
// torn record at the end of the last segment (a crash mid-append, before
// the fsync that precedes any commit) is cut off at open.
package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sys/unix"
)

const (
	headerSize = 16
	// MaxPayload bounds one record; an audit entry is far smaller.
	MaxPayload = 16 << 20
	// segmentSize is the size past which a new segment is started.
	segmentSize = 64 << 20
	suffix      = ".wvj"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of the journal. Each one means the database and the journal
// disagree in a way the vault cannot explain: it is an alarm, never a
// reason to drop what the journal holds.
var (
	// ErrCorrupt: a record in the middle of the journal does not check.
	ErrCorrupt = errors.New("journal: corrupt record")
	// ErrDiverged: an append does not continue the journal, or the
	// database's log is not the journal's.
	ErrDiverged = errors.New("journal: the database's audit log diverges from the journal")
)

// Record is one entry: its sequence number (leaf index + 1) and payload.
type Record struct {
	Seq     int64
	Payload []byte
}

type position struct {
	seg    int // index into j.segs
	offset int64
	length int32
}

// Journal is an open journal. It is safe for concurrent use.
type Journal struct {
	dir string

	mu     sync.Mutex
	segs   []string   // segment file names, in order
	active *os.File   // the last segment, open for appending
	size   int64      // of the active segment
	pos    []position // pos[i] locates the effective entry with seq i+1
	hashes []tlog.Hash
	// confirmed is the highest seq known to be committed in the database
	// (seen there by an append or a checkpoint): entries up to it can no
	// longer be replaced.
	confirmed int64
	// last caches the payload of the entry an append last wrote, which
	// the next append compares with the database's head.
	last Record
}

// Open opens (creating if needed) the journal in dir, checks every
// record, and cuts a torn tail off the last segment.
func Open(dir string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j := &Journal{dir: dir}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix) && e.Type().IsRegular() {
			j.segs = append(j.segs, e.Name())
		}
	}
	sort.Strings(j.segs)
	for i, name := range j.segs {
		if err := j.load(i, name, i == len(j.segs)-1); err != nil {
			return nil, err
		}
	}
	if len(j.segs) == 0 {
		if err := j.newSegment(1); err != nil {
			return nil, err
		}
	} else {
		f, err := os.OpenFile(filepath.Join(dir, j.segs[len(j.segs)-1]), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("journal: %w", err)
		}
		j.active, j.size = f, st.Size()
	}
	return j, nil
}

// load reads segment i, adding its records to the index. In the last
// segment a torn or unchecked tail is cut off.
func (j *Journal) load(i int, name string, last bool) error {
	path := filepath.Join(j.dir, name)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	var off int64
	hdr := make([]byte, headerSize)
	var buf []byte
	for off < st.Size() {
		seq, payload, n, err := readRecord(f, off, hdr, &buf)
		if err != nil {
			// Only the last record of the last segment can be torn: it
			// was being written, and fsynced, when the process died. A
			// bad record with others after it is damage.
			if last && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrCorrupt) && recordEnd(hdr, off) >= st.Size()) {
				return cutTail(path, off)
			}
			return fmt.Errorf("journal: %s at offset %d: %w", name, off, err)
		}
		if err := j.index(seq, payload, position{seg: i, offset: off, length: int32(len(payload))}); err != nil {
			return fmt.Errorf("journal: %s at offset %d: %w", name, off, err)
		}
		off += n
	}
	return nil
}

// recordEnd is where the record whose header is hdr, at off, says it ends.
func recordEnd(hdr []byte, off int64) int64 {
	return off + headerSize + int64(binary.LittleEndian.Uint32(hdr[0:4]))
}

func cutTail(path string, at int64) error {
	if err := os.Truncate(path, at); err != nil {
		return fmt.Errorf("journal: cut torn tail: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	return f.Sync()
}

// readRecord reads the record at off, returning its seq, payload (valid
// until the next call) and total length.
func readRecord(r io.ReaderAt, off int64, hdr []byte, buf *[]byte) (int64, []byte, int64, error) {
	if _, err := r.ReadAt(hdr, off); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, 0, err
	}
	n := binary.LittleEndian.Uint32(hdr[0:4])
	sum := binary.LittleEndian.Uint32(hdr[4:8])
	seq := int64(binary.LittleEndian.Uint64(hdr[8:16]))
	if n > MaxPayload || seq < 1 {
		return 0, nil, 0, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	p := (*buf)[:n]
	if _, err := r.ReadAt(p, off+headerSize); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, 0, err
	}
	if checksum(seq, p) != sum {
		return 0, nil, 0, fmt.Errorf("%w: checksum of entry %d", ErrCorrupt, seq)
	}
	return seq, p, headerSize + int64(n), nil
}

func checksum(seq int64, payload []byte) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(seq))
	c := crc32.Update(0, castagnoli, b[:])
	return crc32.Update(c, castagnoli, payload)
}

// index makes the record the effective entry seq, replacing any entries
// from seq on (a rolled-back transaction's).
func (j *Journal) index(seq int64, payload []byte, p position) error {
	head := int64(len(j.pos))
	if seq > head+1 {
		return fmt.Errorf("%w: entry %d follows entry %d", ErrCorrupt, seq, head)
	}
	if seq <= head {
		j.pos = j.pos[:seq-1]
		j.hashes = j.hashes[:tlog.StoredHashIndex(0, seq-1)]
	}
	hs, err := tlog.StoredHashes(seq-1, payload, treeReader{j})
	if err != nil {
		return fmt.Errorf("journal: tree hashes of entry %d: %w", seq, err)
	}
	j.hashes = append(j.hashes, hs...)
	j.pos = append(j.pos, p)
	return nil
}

// treeReader is tlog.HashReader over the journal's own tree; its users
// hold j.mu (or are inside Open).
type treeReader struct{ j *Journal }

func (r treeReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	j := r.j
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(j.hashes)) {
			return nil, fmt.Errorf("journal: no tree hash %d", x)
		}
		out[i] = j.hashes[x]
	}
	return out, nil
}

func (j *Journal) newSegment(first int64) error {
	name := fmt.Sprintf("%016d%s", first, suffix)
	f, err := os.OpenFile(filepath.Join(j.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("journal: new segment: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		f.Close()
		return err
	}
	if j.active != nil {
		// A full segment is never written again: read-only, like a sealed
		// pack.
		j.active.Chmod(0o440)
		j.active.Close()
	}
	j.segs = append(j.segs, name)
	j.active, j.size = f, 0
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("journal: sync directory: %w", err)
	}
	return nil
}

// Head returns the seq of the last effective entry (0 when empty).
func (j *Journal) Head() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return int64(len(j.pos))
}

// Append durably appends recs, which must be consecutive, as the entries
// following the database's last entry dbHead, whose payload is
// dbHeadPayload (nil when dbHead is 0). It returns once they are fsynced.
//
// The database's head must be the journal's: either its last entry, or an
// earlier entry that was never confirmed as committed (the transactions
// after it rolled back). Anything else is ErrDiverged: entries the journal
// holds are missing from the database (its log was truncated), or the
// database holds entries the server never journaled (they were forged).
func (j *Journal) Append(dbHead int64, dbHeadPayload []byte, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.checkHead(dbHead, dbHeadPayload); err != nil {
		return err
	}
	for i, r := range recs {
		if r.Seq != dbHead+1+int64(i) {
			return fmt.Errorf("journal: append: entry %d where %d was due", r.Seq, dbHead+1+int64(i))
		}
		if len(r.Payload) > MaxPayload {
			return fmt.Errorf("journal: append: entry %d is %d bytes", r.Seq, len(r.Payload))
		}
	}
	if j.size >= segmentSize {
		if err := j.newSegment(recs[0].Seq); err != nil {
			return err
		}
	}
	var b []byte
	for _, r := range recs {
		var hdr [headerSize]byte
		binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(r.Payload)))
		binary.LittleEndian.PutUint32(hdr[4:8], checksum(r.Seq, r.Payload))
		binary.LittleEndian.PutUint64(hdr[8:16], uint64(r.Seq))
		b = append(b, hdr[:]...)
		b = append(b, r.Payload...)
	}
	start := j.size
	if _, err := j.active.Write(b); err != nil {
		// A partial write is a torn tail: cut it so the next append starts
		// on a record boundary.
		j.active.Truncate(start)
		return fmt.Errorf("journal: append: %w", err)
	}
	if err := unix.Fdatasync(int(j.active.Fd())); err != nil {
		// Not durable, so never committed: cut the records off, so that
		// the next append's positions are where its bytes land.
		j.active.Truncate(start)
		return fmt.Errorf("journal: append: fdatasync: %w", err)
	}
	j.size += int64(len(b))
	j.last = Record{Seq: recs[len(recs)-1].Seq, Payload: slices.Clone(recs[len(recs)-1].Payload)}
	seg := len(j.segs) - 1
	off := start
	for _, r := range recs {
		if err := j.index(r.Seq, r.Payload, position{seg: seg, offset: off, length: int32(len(r.Payload))}); err != nil {
			return err
		}
		off += headerSize + int64(len(r.Payload))
	}
	return nil
}

// checkHead is Append's divergence check; j.mu is held.
func (j *Journal) checkHead(dbHead int64, dbHeadPayload []byte) error {
	head := int64(len(j.pos))
	switch {
	case dbHead > head:
		return fmt.Errorf("%w: the database's log has %d entries, the journal %d: entries %d to %d were never journaled",
			ErrDiverged, dbHead, head, head+1, dbHead)
	case dbHead < j.confirmed:
		return fmt.Errorf("%w: the database's log has %d entries, but %d were committed: entries %d to %d are gone from the database",
			ErrDiverged, dbHead, j.confirmed, dbHead+1, j.confirmed)
	case dbHead == 0:
		return nil
	}
	p := j.last.Payload
	if j.last.Seq != dbHead {
		var err error
		if p, err = j.payload(dbHead); err != nil {
			return err
		}
	}
	if string(p) != string(dbHeadPayload) {
		return fmt.Errorf("%w: entry %d differs between the database and the journal", ErrDiverged, dbHead)
	}
	j.confirmed = dbHead
	return nil
}

// Confirm records that the database's log has size entries, the last one
// with payload: they are committed and can no longer be replaced (the
// checkpoint signer calls it). It returns ErrDiverged if the database is
// not the journal's.
func (j *Journal) Confirm(size int64, lastPayload []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.checkHead(size, lastPayload)
}

// payload reads entry seq; j.mu is held.
func (j *Journal) payload(seq int64) ([]byte, error) {
	if seq < 1 || seq > int64(len(j.pos)) {
		return nil, fmt.Errorf("journal: no entry %d", seq)
	}
	p := j.pos[seq-1]
	f, err := os.Open(filepath.Join(j.dir, j.segs[p.seg]))
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	b := make([]byte, p.length)
	if _, err := f.ReadAt(b, p.offset+headerSize); err != nil {
		return nil, fmt.Errorf("journal: read entry %d: %w", seq, err)
	}
	return b, nil
}

// Entry returns the payload of entry seq.
func (j *Journal) Entry(seq int64) ([]byte, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.payload(seq)
}

// TreeHash returns the Merkle tree hash of the journal's first n entries,
// to compare with the database's tree of the same size.
func (j *Journal) TreeHash(n int64) (tlog.Hash, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if n < 0 || n > int64(len(j.pos)) {
		return tlog.Hash{}, fmt.Errorf("journal: tree of %d entries; the journal has %d", n, len(j.pos))
	}
	if n == 0 {
		return tlog.Hash{}, nil
	}
	return tlog.TreeHash(n, treeReader{j})
}

// StoredHashes returns the Merkle tree's stored hashes (in
// tlog.StoredHashIndex order) that entries from to to (inclusive) added:
// what the database's audit_hashes must hold for them. The append path
// takes them from here rather than reading the database's tree back.
func (j *Journal) StoredHashes(from, to int64) ([]tlog.Hash, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if from < 1 || to < from || to > int64(len(j.pos)) {
		return nil, fmt.Errorf("journal: no tree hashes for entries %d to %d of %d", from, to, len(j.pos))
	}
	return slices.Clone(j.hashes[tlog.StoredHashIndex(0, from-1):tlog.StoredHashCount(to)]), nil
}

// Scan calls fn with every effective entry from seq from on, in order,
// up to the head at the time of the call. The payload is valid only
// during the call.
func (j *Journal) Scan(from int64, fn func(seq int64, payload []byte) error) error {
	j.mu.Lock()
	pos := slices.Clone(j.pos)
	segs := slices.Clone(j.segs)
	j.mu.Unlock()
	var (
		f    *os.File
		fseg = -1
		buf  []byte
		hdr  = make([]byte, headerSize)
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for seq := max(from, 1); seq <= int64(len(pos)); seq++ {
		p := pos[seq-1]
		if p.seg != fseg {
			if f != nil {
				f.Close()
			}
			var err error
			if f, err = os.Open(filepath.Join(j.dir, segs[p.seg])); err != nil {
				return fmt.Errorf("journal: %w", err)
			}
			fseg = p.seg
		}
		got, payload, _, err := readRecord(f, p.offset, hdr, &buf)
		if err != nil {
			return fmt.Errorf("journal: entry %d: %w", seq, err)
		}
		if got != seq {
			return fmt.Errorf("%w: entry %d found where %d was indexed", ErrCorrupt, got, seq)
		}
		if err := fn(seq, payload); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the journal.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.active == nil {
		return nil
	}
	err := j.active.Close()
	j.active = nil
	return err
}
