package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Chunk is a stored chunk's index row.
type Chunk struct {
	Hash        chunk.Hash
	Size        int64
	Seq         int64
	StoredAt    time.Time
	RetainUntil time.Time
	UploadedBy  string
	// PackID and PackOffset locate a packed chunk's record; PackID is 0 for
	// a chunk stored as its own file.
	PackID     int64
	PackOffset int64
}

type chunkRow struct {
	Hash        []byte    `db:"hash"`
	Size        int64     `db:"size"`
	Seq         int64     `db:"seq"`
	StoredAt    time.Time `db:"stored_at"`
	RetainUntil time.Time `db:"retain_until"`
	UploadedBy  string    `db:"uploaded_by"`
	PackID      *int64    `db:"pack_id"`
	PackOffset  *int64    `db:"pack_offset"`
}

func (r chunkRow) chunk() Chunk {
	h, _ := chunk.FromBytes(r.Hash) // the CHECK constraint guarantees 32 bytes
	c := Chunk{Hash: h, Size: r.Size, Seq: r.Seq, StoredAt: r.StoredAt, RetainUntil: r.RetainUntil, UploadedBy: r.UploadedBy}
	if r.PackID != nil && r.PackOffset != nil {
		c.PackID, c.PackOffset = *r.PackID, *r.PackOffset
	}
	return c
}

func (c Chunk) packed() bool { return c.PackID != 0 }

func (c Chunk) location() pack.Location { return pack.Location{Pack: c.PackID, Offset: c.PackOffset} }

const chunkColumns = "hash, size, seq, stored_at, retain_until, uploaded_by, pack_id, pack_offset"

// PutResult tells what PutChunk did.
type PutResult struct {
	Chunk   Chunk
	Created bool // false: the chunk was already stored
	// Repaired: the chunk was stored but damaged, and this upload's
	// verified bytes repaired it (Created is false).
	Repaired bool
}

const insertChunkSQL = `
INSERT INTO chunks (hash, size, stored_at, retain_until, uploaded_by)
VALUES (@hash, @size, @now, @until, @by)
ON CONFLICT (hash) DO NOTHING
RETURNING ` + chunkColumns

// PutChunk stores body under h for uploader, retained until at least
// retainUntil (zero: the minimum retention). It returns only once the content
// is durable and the index row committed (invariant 4); on any error nothing
// new is visible.
//
// A chunk already stored is not rewritten, but its body is still hashed in
// full: a client must not be able to claim a hash without holding the
// content, and a different body under a known hash is refused with
// chunk.ErrHashMismatch. Retention is then extended if asked, never shortened.
//
// While free space is at or below the reserve (or the store is read-only)
// every upload is refused with ErrInsufficientStorage before its body is
// read; a full filesystem surfaces as an error wrapping syscall.ENOSPC.
func (s *Store) PutChunk(ctx context.Context, uploader string, h chunk.Hash, body io.Reader, retainUntil time.Time) (PutResult, error) {
	return s.PutChunkSized(ctx, uploader, h, body, -1, retainUntil)
}

// PutChunkSized is PutChunk for a body that declares its size (-1: it
// does not): an upload that the uploader's quota cannot take is refused
// with a *QuotaError before its body is read, unless the chunk is already
// stored (a dedup hit stores nothing, so it costs nothing). An undeclared
// size is refused only once the quota is used up. See quota.go.
func (s *Store) PutChunkSized(ctx context.Context, uploader string, h chunk.Hash, body io.Reader, size int64, retainUntil time.Time) (PutResult, error) {
	now := s.clk.Now()
	until, err := s.retainUntil(now, retainUntil)
	if err != nil {
		return PutResult{}, err
	}
	if err := s.admitContent(ctx); err != nil {
		return PutResult{}, err
	}
	if err := s.admitQuota(ctx, uploader, h, size, now); err != nil {
		return PutResult{}, err
	}
	body = &limitReader{r: body, max: s.opts.MaxChunkSize}

	it := &commitItem{hash: h, uploader: uploader, now: now, until: until}
	if s.committer != nil {
		// Small chunks are read whole (bounded by the pack threshold),
		// verified, and handed to the group committer, which looks them up
		// for the whole group at once: a small upload costs no database
		// round trip of its own. A larger one continues as a file.
		buf := s.packBufs.Get().(*[]byte)
		defer s.packBufs.Put(buf)
		n, err := io.ReadFull(body, *buf)
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			it.data, it.size = (*buf)[:n], int64(n)
			if chunk.Sum(it.data) != h {
				return PutResult{}, fmt.Errorf("store: put chunk %s: %w", h, chunk.ErrHashMismatch)
			}
		case err != nil:
			return PutResult{}, fmt.Errorf("store: put chunk %s: read body: %w", h, err)
		default:
			body = io.MultiReader(bytes.NewReader(*buf), body)
		}
	}

	var row chunkRow
	var created bool
	if it.data != nil {
		if row, created, err = s.index(ctx, it); err != nil {
			return PutResult{}, err
		}
		if !created && s.executing.Load() > 0 {
			// The committer's lookup may predate a deletion in progress.
			row.Hash = nil
		}
	} else {
		// Look a large chunk up first: if the index is down this fails
		// before any disk work, and one already stored is not rewritten.
		existing, err := s.Stat(ctx, h)
		switch {
		case err == nil:
			return s.putExisting(ctx, uploader, existing, body, extendTo(retainUntil, until))
		case !errors.Is(err, ErrNotFound):
			return PutResult{}, err
		}
		if row, created, err = s.putFile(ctx, it, body); err != nil {
			return PutResult{}, err
		}
	}
	if created {
		return PutResult{Chunk: row.chunk(), Created: true}, nil
	}
	// Already stored, or a concurrent upload of the same chunk committed
	// first: both callers succeed, and this one may still extend retention.
	existing := row.chunk()
	if row.Hash == nil {
		existing, err = s.Stat(ctx, h)
		if errors.Is(err, ErrNotFound) {
			// It was there at the group lookup and a deletion executing
			// meanwhile took it: not stored, so not acknowledged.
			return PutResult{}, fmt.Errorf("store: chunk %s was deleted during the upload; upload it again: %w", h, ErrConflict)
		}
		if err != nil {
			return PutResult{}, err
		}
	}
	// A damaged chunk is listed missing so that agents send it again:
	// this upload's bytes, verified above, repair it.
	repaired, err := s.healIfDamaged(ctx, uploader, existing, bytes.NewReader(it.data))
	if err != nil {
		return PutResult{}, err
	}
	c, err := s.extend(ctx, uploader, existing, extendTo(retainUntil, until))
	return PutResult{Chunk: c, Repaired: repaired}, err
}

// putFile writes a chunk as its own file and indexes it. The body streams
// into a staged file with no lock held: a slow client delays nobody. Only
// publishing and indexing run under the chunk's hash lock, so that the
// deletion executor never removes the file of a re-upload between its
// publication and its row.
func (s *Store) putFile(ctx context.Context, it *commitItem, body io.Reader) (chunkRow, bool, error) {
	st, err := s.blobs.Stage(ctx, it.hash, body)
	if err != nil {
		return chunkRow{}, false, fmt.Errorf("store: put chunk %s: %w", it.hash, err)
	}
	defer st.Discard()
	it.size = st.Size()
	mu := s.hashLock(it.hash)
	mu.Lock()
	defer mu.Unlock()
	if err := st.Publish(ctx); err != nil {
		return chunkRow{}, false, fmt.Errorf("store: put chunk %s: %w", it.hash, err)
	}
	// The content is durable. If the insert fails, the file stays without a
	// row: invisible to every reader, and adopted once the index answers
	// again (AdoptOrphans), by the next reconcile, or by a retried upload.
	// Removing it here could race a concurrent upload of the same chunk
	// that has already committed its row.
	row, created, err := s.index(ctx, it)
	if err != nil {
		s.noteOrphan(it.hash, it.size, nil)
	}
	return row, created, err
}

// index commits the row of a chunk whose content is durable: through the
// group committer when there is one, else alone. created is false if the
// row already existed.
func (s *Store) index(ctx context.Context, it *commitItem) (chunkRow, bool, error) {
	if s.committer != nil {
		return s.committer.commit(it)
	}
	var row chunkRow
	ctx, cancel := context.WithTimeout(ctx, s.opts.CommitTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, insertChunkSQL, pgx.NamedArgs{
			"hash": it.hash[:], "size": it.size, "now": it.now, "until": it.until, "by": it.uploader,
		})
		var err error
		if row, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[chunkRow]); err != nil {
			return err
		}
		return s.logChunkCommits(ctx, tx, it.now, []chunkRow{row})
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return chunkRow{}, false, nil
	}
	if err != nil {
		return chunkRow{}, false, dbErr("insert chunk", err)
	}
	s.metrics.chunksStored.Inc()
	s.metrics.bytesStored.Add(float64(row.Size))
	return row, true, nil
}

// putExisting handles an upload of a chunk the index already has.
func (s *Store) putExisting(ctx context.Context, uploader string, c Chunk, body io.Reader, until time.Time) (PutResult, error) {
	repaired, err := s.healIfDamaged(ctx, uploader, c, body)
	if err != nil {
		return PutResult{}, err
	}
	if repaired {
		c, err := s.extend(ctx, uploader, c, until)
		return PutResult{Chunk: c, Repaired: true}, err
	}
	var statErr error
	if !c.packed() {
		// Packed chunks are not looked up on disk: a dedup hit on a small
		// chunk costs a hash of the body and nothing else.
		_, statErr = s.blobs.Stat(ctx, c.Hash)
	}
	if errors.Is(statErr, ErrNotFound) {
		// The row survived but the content did not (data loss): the upload
		// carries the content, so restore it. Put verifies the hash.
		if _, err := s.blobs.Put(ctx, c.Hash, body); err != nil {
			return PutResult{}, fmt.Errorf("store: restore missing content of %s: %w", c.Hash, err)
		}
		s.log.WarnContext(ctx, "restored missing chunk content from an upload", "hash", c.Hash.String(), "subject", uploader)
	} else if statErr != nil {
		return PutResult{}, fmt.Errorf("store: stat chunk %s: %w", c.Hash, statErr)
	} else {
		vr := chunk.NewVerifyingReader(body, c.Hash)
		buf := copyBufs.Get().(*[]byte)
		_, err := io.CopyBuffer(io.Discard, vr, *buf)
		copyBufs.Put(buf)
		if err != nil {
			return PutResult{}, fmt.Errorf("store: verify re-upload of %s: %w", c.Hash, err)
		}
	}
	s.metrics.dedupHits.Inc()
	if s.executing.Load() > 0 {
		// A deletion is executing: the row seen before the body was read
		// may be gone now, and the upload must not be acknowledged as
		// stored if it is.
		if _, err := s.Stat(ctx, c.Hash); errors.Is(err, ErrNotFound) {
			return PutResult{}, fmt.Errorf("store: chunk %s was deleted during the upload; upload it again: %w", c.Hash, ErrConflict)
		} else if err != nil {
			return PutResult{}, err
		}
	}
	c, err = s.extend(ctx, uploader, c, until)
	return PutResult{Chunk: c}, err
}

// extendTo is the retention an upload of an already stored chunk asks for:
// only an explicit request extends it; a plain re-upload changes nothing.
func extendTo(requested, effective time.Time) time.Time {
	if requested.IsZero() {
		return time.Time{}
	}
	return effective
}

// extend raises one chunk's retention to until if that is later, with its
// audit entry in the same transaction.
func (s *Store) extend(ctx context.Context, actor string, c Chunk, until time.Time) (Chunk, error) {
	if !until.After(c.RetainUntil) {
		return c, nil
	}
	res, err := s.Retain(ctx, actor, []chunk.Hash{c.Hash}, until)
	if err != nil {
		return c, err
	}
	if res.Extended == 0 {
		return c, nil
	}
	return s.Stat(ctx, c.Hash) // the row as stored, at the database's precision
}

const statChunkSQL = `SELECT ` + chunkColumns + ` FROM chunks WHERE hash = $1`

// Stat returns a chunk's index row, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, h chunk.Hash) (Chunk, error) {
	ctx, cancel := s.lookupCtx(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, statChunkSQL, h[:])
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[chunkRow])
	if err != nil {
		return Chunk{}, dbErr(fmt.Sprintf("stat chunk %s", h), err)
	}
	return row.chunk(), nil
}

const presentChunksSQL = `SELECT hash FROM chunks WHERE hash = ANY($1)`

// healthyChunksSQL is presentChunksSQL without the chunks awaiting repair.
const healthyChunksSQL = `SELECT hash FROM chunks c WHERE hash = ANY($1)
AND NOT EXISTS (SELECT FROM damaged_chunks d WHERE d.hash = c.hash AND d.repaired_at IS NULL)`

// Missing returns, in request order and without duplicates, the hashes that
// are not stored, or stored but damaged (so that the agent uploads them
// again, which repairs them).
func (s *Store) Missing(ctx context.Context, hashes []chunk.Hash) ([]chunk.Hash, error) {
	if len(hashes) > s.opts.MaxBatch {
		return nil, invalid("hashes", "%d hashes, at most %d per request", len(hashes), s.opts.MaxBatch)
	}
	// An agent skips what this says is stored: not before the start-up
	// checks have compared the index with the journal (online.go).
	if err := s.writeHold(); err != nil {
		return nil, err
	}
	present, err := s.lookUp(ctx, s.pool, healthyChunksSQL, hashes)
	if err != nil {
		return nil, err
	}
	missing := make([]chunk.Hash, 0, len(hashes)-len(present))
	for _, h := range hashes {
		if _, ok := present[h]; !ok {
			present[h] = struct{}{} // report each hash once
			missing = append(missing, h)
		}
	}
	return missing, nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *Store) present(ctx context.Context, q querier, hashes []chunk.Hash) (map[chunk.Hash]struct{}, error) {
	return s.lookUp(ctx, q, presentChunksSQL, hashes)
}

func (s *Store) lookUp(ctx context.Context, q querier, sql string, hashes []chunk.Hash) (map[chunk.Hash]struct{}, error) {
	keys := make([][]byte, len(hashes))
	for i := range hashes {
		keys[i] = hashes[i][:]
	}
	ctx, cancel := s.lookupCtx(ctx)
	defer cancel()
	rows, _ := q.Query(ctx, sql, keys)
	found, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, dbErr("look up chunks", err)
	}
	present := make(map[chunk.Hash]struct{}, len(found))
	for _, b := range found {
		h, _ := chunk.FromBytes(b)
		present[h] = struct{}{}
	}
	return present, nil
}

// RetainResult tells what Retain did.
type RetainResult struct {
	// RetainUntil is how long every listed chunk that is stored is now
	// kept, at least: the earliest of their retentions after the call. It
	// is later than the date asked for when each was already kept longer
	// (the call never shortens); with none stored, it is the date asked for.
	RetainUntil time.Time
	Extended    int          // chunks whose retention moved to RetainUntil
	Unchanged   int          // chunks already retained at least that long
	NotFound    []chunk.Hash // hashes that are not stored
}

const extendRetentionSQL = `
UPDATE chunks SET retain_until = @until
WHERE hash = ANY(@hashes) AND retain_until < @until
RETURNING hash`

const earliestRetentionSQL = `SELECT min(retain_until) FROM chunks WHERE hash = ANY($1)`

// Retain extends the retention of the listed chunks to until. Retention is
// extend-only: a chunk already retained longer is left as it is and counted
// as unchanged, never shortened. A date that is not in the future is
// refused. The change and its audit entry commit together.
func (s *Store) Retain(ctx context.Context, actor string, hashes []chunk.Hash, until time.Time) (RetainResult, error) {
	now := s.clk.Now()
	switch {
	case len(hashes) == 0:
		return RetainResult{}, invalid("hashes", "at least one hash is required")
	case len(hashes) > s.opts.MaxBatch:
		return RetainResult{}, invalid("hashes", "%d hashes, at most %d per request", len(hashes), s.opts.MaxBatch)
	case !until.After(now):
		return RetainResult{}, invalid("retain_until", "must be in the future")
	case until.After(now.Add(s.opts.MaxRetention)):
		return RetainResult{}, invalid("retain_until", "more than %s ahead", s.opts.MaxRetention)
	}
	hashes = dedup(hashes)
	keys := make([][]byte, len(hashes))
	for i := range hashes {
		keys[i] = hashes[i][:]
	}
	res := RetainResult{RetainUntil: until}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		present, err := s.present(ctx, tx, hashes)
		if err != nil {
			return err
		}
		for _, h := range hashes {
			if _, ok := present[h]; !ok {
				res.NotFound = append(res.NotFound, h)
			}
		}
		rows, _ := tx.Query(ctx, extendRetentionSQL, pgx.NamedArgs{"until": until, "hashes": keys})
		extended, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return dbErr("extend retention", err)
		}
		res.Extended = len(extended)
		res.Unchanged = len(present) - len(extended)
		if len(present) > 0 {
			// Read back what holds now, so that a call asking for less
			// reports the longer retention that stays, not its own date.
			if err := tx.QueryRow(ctx, earliestRetentionSQL, keys).Scan(&res.RetainUntil); err != nil {
				return dbErr("read retention", err)
			}
		}
		if len(extended) == 0 {
			return nil
		}
		list := make([]string, len(extended))
		for i, b := range extended {
			h, _ := chunk.FromBytes(b)
			list[i] = h.String()
		}
		return s.appendAudit(ctx, tx, now, actor, "chunk.retain", map[string]any{
			"retain_until": until.UTC(), "hashes": list,
		})
	})
	if err != nil {
		return RetainResult{}, dbErr("retain", err)
	}
	return res, nil
}

func dedup(hashes []chunk.Hash) []chunk.Hash {
	seen := make(map[chunk.Hash]struct{}, len(hashes))
	out := hashes[:0:0]
	for _, h := range hashes {
		if _, ok := seen[h]; !ok {
			seen[h] = struct{}{}
			out = append(out, h)
		}
	}
	return out
}

// OpenChunk returns a stored chunk's content, verified. The whole content is
// hashed before OpenChunk returns, so corrupt content is reported as
// ErrCorrupt before a single byte is served; the returned reader verifies
// again while streaming (the file could change between the passes) and
// fails its last Read with chunk.ErrHashMismatch if it does.
func (s *Store) OpenChunk(ctx context.Context, h chunk.Hash) (io.ReadCloser, Chunk, error) {
	c, err := s.Stat(ctx, h)
	if err != nil {
		return nil, Chunk{}, err
	}
	if c.packed() {
		return s.openPacked(ctx, c, false)
	}
	f, size, err := s.blobs.Open(ctx, h)
	if errors.Is(err, ErrNotFound) {
		if open, derr := s.openDamage(ctx, []chunk.Hash{h}); derr == nil && open[h] != 0 {
			// Quarantined as damaged: refused until a re-upload repairs it.
			s.metrics.readsRefused.Inc()
			return nil, Chunk{}, fmt.Errorf("store: open chunk %s: %w: %w", h, ErrCorrupt, ErrDamaged)
		}
		s.metrics.contentMissing.Inc()
		s.log.ErrorContext(ctx, "data loss: indexed chunk has no content", "hash", h.String())
		s.noteReadDamage(ctx, c, "content missing", false)
		return nil, Chunk{}, fmt.Errorf("store: open chunk %s: %w", h, ErrContentMissing)
	}
	if err != nil {
		return nil, Chunk{}, fmt.Errorf("store: open chunk %s: %w", h, err)
	}
	if err := s.verify(f, h, size, c.Size); err != nil {
		f.Close()
		s.metrics.readsRefused.Inc()
		s.log.ErrorContext(ctx, "corrupt chunk refused", "hash", h.String(), "err", err)
		s.noteReadDamage(ctx, c, err.Error(), false)
		return nil, Chunk{}, fmt.Errorf("store: open chunk %s: %w: %w", h, ErrCorrupt, err)
	}
	return readCloser{chunk.NewVerifyingReader(f, h), f}, c, nil
}

// verify hashes f in full and rewinds it.
func (s *Store) verify(f io.ReadSeeker, h chunk.Hash, size, want int64) error {
	if size != want {
		return fmt.Errorf("size %d, index says %d", size, want)
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(io.Discard, chunk.NewVerifyingReader(f, h), *buf); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

type readCloser struct {
	io.Reader
	io.Closer
}

// openPacked reads a packed chunk's record whole (it is small), verifies it
// and serves it from memory, so what is verified is exactly what is sent.
//
// inTx says the caller holds a transaction's connection: damage found is
// then recorded in the background, on a connection of its own.
func (s *Store) openPacked(ctx context.Context, c Chunk, inTx bool) (io.ReadCloser, Chunk, error) {
	if s.packs == nil {
		return nil, Chunk{}, fmt.Errorf("store: open chunk %s: packed in %d but packs are not configured", c.Hash, c.PackID)
	}
	data, err := s.packs.Read(c.location(), c.Hash, c.Size)
	if err == nil && chunk.Sum(data) != c.Hash {
		err = chunk.ErrHashMismatch
	}
	if err == nil {
		return io.NopCloser(bytes.NewReader(data)), c, nil
	}
	if copyData, cerr := s.readRepairCopy(ctx, c); cerr == nil {
		// The record was damaged and a re-upload wrote a fresh copy as a
		// file (packs are never rewritten): serve that, verified.
		return io.NopCloser(bytes.NewReader(copyData)), c, nil
	}
	if errors.Is(err, pack.ErrNotFound) {
		s.metrics.contentMissing.Inc()
		s.log.ErrorContext(ctx, "data loss: pack of indexed chunk is missing", "hash", c.Hash.String(), "pack", c.PackID)
		s.noteReadDamage(ctx, c, fmt.Sprintf("pack %d is missing", c.PackID), inTx)
		return nil, Chunk{}, fmt.Errorf("store: open chunk %s: %w", c.Hash, ErrContentMissing)
	}
	s.metrics.readsRefused.Inc()
	s.log.ErrorContext(ctx, "corrupt packed chunk refused", "hash", c.Hash.String(), "pack", c.PackID, "err", err)
	s.noteReadDamage(ctx, c, fmt.Sprintf("pack %d offset %d: %v", c.PackID, c.PackOffset, err), inTx)
	return nil, Chunk{}, fmt.Errorf("store: open chunk %s: %w: %w", c.Hash, ErrCorrupt, err)
}

// readRepairCopy reads the file a repair wrote for packed chunk c, whole
// and verified; an error if there is none or it does not verify.
func (s *Store) readRepairCopy(ctx context.Context, c Chunk) ([]byte, error) {
	f, size, err := s.blobs.Open(ctx, c.Hash)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size != c.Size {
		return nil, fmt.Errorf("store: repair copy of %s is %d bytes, index says %d", c.Hash, size, c.Size)
	}
	data, err := io.ReadAll(io.LimitReader(f, c.Size))
	if err != nil {
		return nil, err
	}
	if chunk.Sum(data) != c.Hash {
		return nil, chunk.ErrHashMismatch
	}
	return data, nil
}
