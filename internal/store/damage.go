package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Self-healing (invariant 9). A chunk whose stored copy does not match its
// address, or whose content is gone, gets an open record in
// damaged_chunks, written with its chunk.damage audit entry by whoever
// found it (the scrub, or a read that refused it). Its bad file is
// quarantined, never deleted; a bad pack record stays where it is (packs
// are never rewritten) and is simply never served.
//
// From then on Missing lists the chunk and StatHealthy (HEAD) says it is
// not stored, so the next backup that holds it uploads it again. An upload
// whose bytes hash to the address repairs it: the content is written as a
// fresh file under the chunk's address (for a packed chunk too: reads of a
// packed chunk whose record fails verification fall back to that file),
// and the record is closed with a chunk.repair entry. The chunk's row,
// retention and holds never change.
//
// The database never decides which bytes are served: every read verifies
// content against the address, a quarantine happens only after the vault
// itself found the bytes bad, and a repair writes only bytes that hash
// right. A record forged through a database credential costs a re-upload;
// a record closed through one lets agents deduplicate against the bad copy
// until the next scrub pass opens a new record, while reads keep refusing
// it.

// Who found damage.
const (
	DetectedByScrub = "scrub"
	DetectedByRead  = "read"
)

// Where the damaged copy was.
const (
	locationFile = "file"
	locationPack = "pack"
)

// Ways a repair went (audit.ChunkRepair.How).
const (
	repairRewritten = "rewritten"
	repairVerified  = "verified"
)

// damageActor is the audit actor of damage found by the vault itself.
const damageActor = "vault"

// Damage is one damage record, with the snapshots that reference the chunk.
type Damage struct {
	ID         int64           `json:"id"`
	Hash       chunk.Hash      `json:"hash"`
	Size       int64           `json:"size"`
	DetectedAt time.Time       `json:"detected_at"`
	DetectedBy string          `json:"detected_by"`
	Location   string          `json:"location"`
	Detail     string          `json:"detail"`
	RepairedAt *time.Time      `json:"repaired_at,omitempty"`
	RepairedBy string          `json:"repaired_by,omitempty"`
	Snapshots  []DamagedInSnap `json:"snapshots"`
}

// DamagedInSnap names a snapshot that references a damaged chunk.
type DamagedInSnap struct {
	ID     int64  `json:"id"`
	Source string `json:"source"`
	Name   string `json:"name"`
}

// checkStored verifies c's stored content where its row says it is, and
// returns what is wrong with it ("" if nothing). A packed chunk whose record
// fails verification is fine if the file a repair wrote under its address
// verifies. Errors are failures to look (I/O, context), not damage.
func (s *Store) checkStored(ctx context.Context, c Chunk) (problem string, err error) {
	if c.packed() {
		problem, err = s.checkPacked(c)
		if err != nil || problem == "" {
			return problem, err
		}
		// A repaired packed chunk: its fresh copy is a file.
		if p, err := s.checkFile(ctx, c); err == nil && p == "" {
			return "", nil
		}
		return problem, nil
	}
	return s.checkFile(ctx, c)
}

func (s *Store) checkFile(ctx context.Context, c Chunk) (string, error) {
	f, size, err := s.blobs.Open(ctx, c.Hash)
	if errors.Is(err, ErrNotFound) {
		return "content missing", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: check chunk %s: %w", c.Hash, err)
	}
	defer f.Close()
	if size != c.Size {
		return fmt.Sprintf("file is %d bytes, index says %d", size, c.Size), nil
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	_, err = io.CopyBuffer(io.Discard, chunk.NewVerifyingReader(f, c.Hash), *buf)
	switch {
	case errors.Is(err, chunk.ErrHashMismatch):
		return "file content does not hash to its address", nil
	case err != nil:
		return "", fmt.Errorf("store: check chunk %s: %w", c.Hash, err)
	}
	return "", nil
}

func (s *Store) checkPacked(c Chunk) (string, error) {
	if s.packs == nil {
		return "", fmt.Errorf("store: check chunk %s: packed in %d but packs are not configured", c.Hash, c.PackID)
	}
	data, err := s.packs.Read(c.location(), c.Hash, c.Size)
	switch {
	case errors.Is(err, pack.ErrNotFound):
		return fmt.Sprintf("pack %d is missing", c.PackID), nil
	case errors.Is(err, pack.ErrBadRecord):
		return fmt.Sprintf("pack %d offset %d: bad record header", c.PackID, c.PackOffset), nil
	case err != nil:
		return "", fmt.Errorf("store: check chunk %s: %w", c.Hash, err)
	case chunk.Sum(data) != c.Hash:
		return fmt.Sprintf("pack %d offset %d: record does not hash to its address", c.PackID, c.PackOffset), nil
	}
	return "", nil
}

const insertDamageSQL = `
INSERT INTO damaged_chunks (hash, detected_at, detected_by, detail, location)
VALUES (@hash, @now, @by, @detail, @location)
ON CONFLICT (hash) WHERE repaired_at IS NULL DO NOTHING
RETURNING id`

// recordDamage opens a damage record for c with its chunk.damage audit
// entry, and quarantines a bad file, unless the chunk has an open record
// already. It reports whether it opened one.
func (s *Store) recordDamage(ctx context.Context, c Chunk, by, detail string) (bool, error) {
	now := s.clk.Now()
	loc := locationFile
	if c.packed() {
		loc = locationPack
	}
	var id int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, insertDamageSQL, pgx.NamedArgs{
			"hash": c.Hash[:], "now": now, "by": by, "detail": detail, "location": loc,
		}).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // open already
		}
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, now, damageActor, audit.ActionChunkDamage, audit.ChunkDamage{
			Hash: c.Hash.String(), DamageID: id, DetectedBy: by, Location: loc, Detail: detail,
		})
	})
	if err != nil {
		return false, dbErr(fmt.Sprintf("record damage of %s", c.Hash), err)
	}
	s.quarantineBad(ctx, c)
	if id == 0 {
		return false, nil
	}
	s.metrics.corrupt.Inc()
	s.metrics.damagedOpen.Inc()
	s.log.ErrorContext(ctx, "DAMAGE: stored chunk does not match its address; reported missing until a verified re-upload repairs it",
		"hash", c.Hash.String(), "damage_id", id, "detected_by", by, "location", loc, "detail", detail)
	if s.opts.Notify != nil {
		d := Damage{ID: id, Hash: c.Hash, Size: c.Size, DetectedAt: now.UTC(), DetectedBy: by, Location: loc, Detail: detail}
		s.opts.Notify(ctx, Event{Type: "chunk.damaged", At: now.UTC(), Actor: damageActor, Damage: &d})
	}
	return true, nil
}

// quarantineBad moves the file under c's address out of the store if, read
// again under the hash lock, it does not verify: only bytes the vault
// itself found bad are ever moved, whatever a record says. A bad pack
// record is left in place (packs are never rewritten).
func (s *Store) quarantineBad(ctx context.Context, c Chunk) {
	mu := s.hashLock(c.Hash)
	mu.Lock()
	defer mu.Unlock()
	problem, err := s.checkFile(ctx, c)
	if err != nil || problem == "" || problem == "content missing" {
		return
	}
	if err := s.blobs.Quarantine(ctx, c.Hash); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.ErrorContext(ctx, "quarantine of a damaged chunk failed; it is still never served", "hash", c.Hash.String(), "err", err)
		return
	}
	s.log.WarnContext(ctx, "quarantined a damaged chunk file", "hash", c.Hash.String())
}

// noteReadDamage records damage a read found. A read that cannot record it
// (the index is down) still refuses the chunk; the scrub will record it.
// async is for callers inside a transaction (a snapshot commit reading a
// manifest): recording takes a connection of its own, and waiting for one
// while holding another could exhaust the pool, so it is recorded in the
// background instead.
func (s *Store) noteReadDamage(ctx context.Context, c Chunk, detail string, async bool) {
	ctx = context.WithoutCancel(ctx)
	note := func() {
		if _, err := s.recordDamage(ctx, c, DetectedByRead, detail); err != nil {
			s.log.ErrorContext(ctx, "could not record damage found by a read", "hash", c.Hash.String(), "err", err)
		}
	}
	if async {
		go note()
		return
	}
	note()
}

const openDamageSQL = `SELECT hash, id FROM damaged_chunks WHERE hash = ANY($1) AND repaired_at IS NULL`

// openDamage returns the open damage records among hashes, by hash.
func (s *Store) openDamage(ctx context.Context, hashes []chunk.Hash) (map[chunk.Hash]int64, error) {
	out := map[chunk.Hash]int64{}
	if len(hashes) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, openDamageSQL, hashKeys(hashes))
	if err != nil {
		return nil, dbErr("look up damage", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b []byte
		var id int64
		if err := rows.Scan(&b, &id); err != nil {
			return nil, dbErr("look up damage", err)
		}
		h, _ := chunk.FromBytes(b)
		out[h] = id
	}
	return out, dbErr("look up damage", rows.Err())
}

// healIfDamaged repairs c from an upload's body if c has an open damage
// record, and reports whether it did. body is not consumed otherwise.
func (s *Store) healIfDamaged(ctx context.Context, uploader string, c Chunk, body io.Reader) (bool, error) {
	open, err := s.openDamage(ctx, []chunk.Hash{c.Hash})
	if err != nil {
		return false, err
	}
	id, ok := open[c.Hash]
	if !ok {
		return false, nil
	}
	return true, s.repair(ctx, uploader, c, id, body)
}

const closeDamageSQL = `
UPDATE damaged_chunks SET repaired_at = @now, repaired_by = @by
WHERE id = @id AND repaired_at IS NULL
RETURNING id`

// repair restores damaged chunk c from an upload. Under the chunk's hash
// lock it checks the stored copy again: if it verifies after all (a record
// a database credential forged, or damage repaired meanwhile), only the
// upload is verified and nothing written; otherwise any bad file under the
// address is quarantined and the upload written as a fresh file, which
// Blobs.Put verifies against the address before anything is visible. The
// record is closed with a chunk.repair entry.
func (s *Store) repair(ctx context.Context, uploader string, c Chunk, damageID int64, body io.Reader) error {
	mu := s.hashLock(c.Hash)
	mu.Lock()
	defer mu.Unlock()
	problem, err := s.checkStored(ctx, c)
	if err != nil {
		return err
	}
	how := repairVerified
	if problem == "" {
		// Holding the hash is no proof of holding the content.
		buf := copyBufs.Get().(*[]byte)
		_, err := io.CopyBuffer(io.Discard, chunk.NewVerifyingReader(body, c.Hash), *buf)
		copyBufs.Put(buf)
		if err != nil {
			return fmt.Errorf("store: repair %s: %w", c.Hash, err)
		}
	} else {
		if err := s.blobs.Quarantine(ctx, c.Hash); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("store: repair %s: quarantine the bad copy: %w", c.Hash, err)
		}
		size, err := s.blobs.Put(ctx, c.Hash, body)
		if err != nil {
			return fmt.Errorf("store: repair %s: %w", c.Hash, err)
		}
		if size != c.Size {
			// Same hash, other size: impossible short of a BLAKE3 break;
			// refuse rather than serve it.
			return fmt.Errorf("store: repair %s: %d bytes, index says %d: %w", c.Hash, size, c.Size, ErrIntegrity)
		}
		how = repairRewritten
	}
	now := s.clk.Now()
	var closed bool
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, closeDamageSQL, pgx.NamedArgs{"now": now, "by": uploader, "id": damageID}).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // a concurrent repair closed it
		}
		if err != nil {
			return err
		}
		closed = true
		return s.appendAudit(ctx, tx, now, uploader, audit.ActionChunkRepair, audit.ChunkRepair{
			Hash: c.Hash.String(), DamageID: damageID, How: how,
		})
	})
	if err != nil {
		return dbErr(fmt.Sprintf("close damage of %s", c.Hash), err)
	}
	if closed {
		s.metrics.damagedOpen.Dec()
		s.metrics.repaired.Inc()
		s.log.WarnContext(ctx, "repaired a damaged chunk from an upload", "hash", c.Hash.String(),
			"damage_id", damageID, "how", how, "subject", uploader)
		if s.opts.Notify != nil {
			d := Damage{ID: damageID, Hash: c.Hash, Size: c.Size, RepairedAt: &now, RepairedBy: uploader, Detail: how}
			s.opts.Notify(ctx, Event{Type: "chunk.repaired", At: now.UTC(), Actor: uploader, Damage: &d})
		}
	}
	return nil
}

// healBatch repairs the chunks of a batch that were already stored and
// have an open damage record, from the batch's verified data.
func (s *Store) healBatch(ctx context.Context, uploader string, items []BatchItem, results []BatchResult) error {
	var stored []chunk.Hash
	for i := range results {
		if results[i].Err == nil && !results[i].Created {
			stored = append(stored, items[i].Hash)
		}
	}
	open, err := s.openDamage(ctx, stored)
	if err != nil || len(open) == 0 {
		return err
	}
	for i := range results {
		id, ok := open[items[i].Hash]
		if !ok || results[i].Err != nil || results[i].Created {
			continue
		}
		delete(open, items[i].Hash) // once per hash
		c, err := s.Stat(ctx, items[i].Hash)
		if err != nil {
			results[i].Err = err
			continue
		}
		if err := s.repair(ctx, uploader, c, id, bytes.NewReader(items[i].Data)); err != nil {
			results[i].Err = err
			continue
		}
		results[i].Repaired = true
	}
	return nil
}

const statHealthySQL = `
SELECT ` + chunkColumns + `,
       EXISTS (SELECT FROM damaged_chunks d WHERE d.hash = c.hash AND d.repaired_at IS NULL) AS damaged
FROM chunks c WHERE c.hash = $1`

type healthRow struct {
	chunkRow
	Damaged bool `db:"damaged"`
}

// StatHealthy is Stat for HEAD: a chunk with an open damage record is
// reported as not stored, with an error wrapping ErrDamaged, so that an
// agent uploads it again.
func (s *Store) StatHealthy(ctx context.Context, h chunk.Hash) (Chunk, error) {
	rows, _ := s.pool.Query(ctx, statHealthySQL, h[:])
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[healthRow])
	if err != nil {
		return Chunk{}, dbErr(fmt.Sprintf("stat chunk %s", h), err)
	}
	if row.Damaged {
		return Chunk{}, fmt.Errorf("store: chunk %s: %w", h, ErrDamaged)
	}
	return row.chunk(), nil
}

const listDamageSQL = `
SELECT d.id, d.hash, coalesce(c.size, 0) AS size, d.detected_at, d.detected_by, d.location, d.detail,
       d.repaired_at, coalesce(d.repaired_by, '') AS repaired_by
FROM damaged_chunks d LEFT JOIN chunks c ON c.hash = d.hash
WHERE (@all OR d.repaired_at IS NULL) AND d.id > @after
ORDER BY d.id
LIMIT @limit`

type damageRow struct {
	ID         int64      `db:"id"`
	Hash       []byte     `db:"hash"`
	Size       int64      `db:"size"`
	DetectedAt time.Time  `db:"detected_at"`
	DetectedBy string     `db:"detected_by"`
	Location   string     `db:"location"`
	Detail     string     `db:"detail"`
	RepairedAt *time.Time `db:"repaired_at"`
	RepairedBy string     `db:"repaired_by"`
}

// MaxDamageSnapshots bounds the snapshots listed per damaged chunk.
const MaxDamageSnapshots = 100

// ListDamage returns damage records after id after, in id order, at most
// limit: the open ones, or all with all set; each with the snapshots that
// reference the chunk (at most MaxDamageSnapshots, newest first).
func (s *Store) ListDamage(ctx context.Context, all bool, after int64, limit int) ([]Damage, error) {
	if limit <= 0 || limit > 1000 {
		return nil, invalid("limit", "must be between 1 and 1000")
	}
	if after < 0 {
		return nil, invalid("after", "must not be negative")
	}
	rows, _ := s.pool.Query(ctx, listDamageSQL, pgx.NamedArgs{"all": all, "after": after, "limit": limit})
	found, err := pgx.CollectRows(rows, pgx.RowToStructByName[damageRow])
	if err != nil {
		return nil, dbErr("list damage", err)
	}
	out := make([]Damage, len(found))
	for i, r := range found {
		h, _ := chunk.FromBytes(r.Hash)
		out[i] = Damage{ID: r.ID, Hash: h, Size: r.Size, DetectedAt: r.DetectedAt.UTC(), DetectedBy: r.DetectedBy,
			Location: r.Location, Detail: r.Detail, RepairedAt: r.RepairedAt, RepairedBy: r.RepairedBy,
			Snapshots: []DamagedInSnap{}}
		rows, _ := s.pool.Query(ctx, `SELECT s.id, s.source, s.name FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
			WHERE sc.hash = $1 AND s.deleted_at IS NULL ORDER BY s.id DESC LIMIT $2`, r.Hash, MaxDamageSnapshots)
		snaps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[DamagedInSnap])
		if err != nil {
			return nil, dbErr("list snapshots of damaged chunk", err)
		}
		if len(snaps) > 0 {
			out[i].Snapshots = snaps
		}
	}
	return out, nil
}

// DamageCounts are the damage records: open (awaiting repair), and all
// ever opened and closed.
type DamageCounts struct {
	Open     int64 `json:"open"`
	Detected int64 `json:"detected"`
	Repaired int64 `json:"repaired"`
}

// CountDamage counts the damage records.
func (s *Store) CountDamage(ctx context.Context) (DamageCounts, error) {
	var c DamageCounts
	err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE repaired_at IS NULL), count(*), count(repaired_at) FROM damaged_chunks`).
		Scan(&c.Open, &c.Detected, &c.Repaired)
	return c, dbErr("count damage", err)
}

// LoadDamageMetrics sets the damage metrics from the damage records, so
// that they survive a restart: call it once at start, before serving.
func (s *Store) LoadDamageMetrics(ctx context.Context) (DamageCounts, error) {
	c, err := s.CountDamage(ctx)
	if err != nil {
		return c, err
	}
	s.metrics.damagedOpen.Set(float64(c.Open))
	s.metrics.corrupt.Add(float64(c.Detected))
	s.metrics.repaired.Add(float64(c.Repaired))
	return c, nil
}
