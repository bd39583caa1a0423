package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// ReconcileReport tells what Reconcile found and did.
type ReconcileReport struct {
	TempRemoved int // leftovers of interrupted writes removed
	Adopted     int // content without a row, verified and indexed
	Quarantined int // content without a row that failed verification
	// Tombstoned counts content without a row that a tombstone names:
	// left in place. Only the executor removes content, after verifying
	// the deletion from the journal; a tombstone row alone proves nothing.
	Tombstoned  int
	Missing     int          // rows without content: data loss
	MissingList []chunk.Hash // the first few missing, for the log

	PacksScanned   int // packs not known to be fully indexed, scanned
	TornTails      int // packs whose unreadable tail was cut off
	CorruptRecords int // pack records whose data does not match their hash
	PacksSealed    int // packs a crash or shutdown left writable, made read-only
}

const reconcileBatch = 1000

// Reconcile brings disk and index into agreement after a crash, in one
// go: ReconcileTail, then ReconcileRest (see online.go for the online
// form `vault serve` uses). A chunk whose content reached disk but whose
// row did not commit (the crash window between the two) is verified and
// indexed under the uploader "reconcile" with the minimum retention: it is
// whole, so keeping it is safe. Content that fails verification is
// quarantined, never indexed. Rows without content are data loss: they are
// logged at Error and counted, never silently dropped. Reconcile never
// removes content (invariant 8): what a row or tombstone says is no reason
// to destroy anything.
func (s *Store) Reconcile(ctx context.Context) (ReconcileReport, error) {
	rep, err := s.ReconcileTail(ctx)
	if err != nil {
		return rep, err
	}
	err = s.ReconcileRest(ctx, &rep)
	return rep, err
}

// adopt indexes the blobs in batch that have no row.
func (s *Store) adopt(ctx context.Context, batch []chunk.Hash, rep *ReconcileReport) error {
	present, err := s.present(ctx, s.pool, batch)
	if err != nil {
		return err
	}
	rows, _ := s.pool.Query(ctx, "SELECT DISTINCT hash FROM chunk_tombstones WHERE hash = ANY($1)", hashKeys(batch))
	tombs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return dbErr("look up tombstones", err)
	}
	deleted := make(map[chunk.Hash]bool, len(tombs))
	for _, b := range tombs {
		h, _ := chunk.FromBytes(b)
		deleted[h] = true
	}
	for _, h := range batch {
		if _, ok := present[h]; ok {
			continue
		}
		if deleted[h] {
			// Content of a deleted chunk whose removal a crash interrupted
			// (or whose tombstone was forged): the executor's rerun removes
			// it after verifying the deletion; never resurrected here.
			s.log.WarnContext(ctx, "reconcile: content of a tombstoned chunk left for the executor", "hash", h.String())
			rep.Tombstoned++
			continue
		}
		size, err := s.verifyBlob(ctx, h)
		if errors.Is(err, chunk.ErrHashMismatch) {
			s.log.WarnContext(ctx, "reconcile: quarantining corrupt unindexed content", "hash", h.String())
			if err := s.blobs.Quarantine(ctx, h); err != nil {
				return err
			}
			rep.Quarantined++
			continue
		}
		if err != nil {
			return err
		}
		now := s.clk.Now()
		if _, err := s.insertAdopted(ctx, chunkRow{Hash: h[:], Size: size, StoredAt: now,
			RetainUntil: now.Add(s.opts.MinRetention), UploadedBy: "reconcile"}); err != nil {
			return err
		}
		s.log.InfoContext(ctx, "reconcile: indexed content that had no row", "hash", h.String(), "size", size)
		rep.Adopted++
	}
	return nil
}

func (s *Store) verifyBlob(ctx context.Context, h chunk.Hash) (int64, error) {
	f, size, err := s.blobs.Open(ctx, h)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(io.Discard, chunk.NewVerifyingReader(f, h), *buf); err != nil {
		return 0, err
	}
	return size, nil
}

// findMissing walks the index in hash order, after the hex hash from (""
// for all), and checks each row has content, saving the cursor as it goes.
func (s *Store) findMissing(ctx context.Context, from string, rep *ReconcileReport) error {
	after := hexAfter(from)
	packSizes := make(map[int64]int64)
	for batches := 1; ; batches++ {
		rows, _ := s.pool.Query(ctx, "SELECT "+chunkColumns+" FROM chunks WHERE hash > $1 ORDER BY hash LIMIT $2", after, s.opts.ReconcileBatch)
		batch, err := pgx.CollectRows(rows, pgx.RowToStructByName[chunkRow])
		if err != nil {
			return dbErr("list chunks", err)
		}
		for _, r := range batch {
			if err := ctx.Err(); err != nil {
				return err
			}
			c := r.chunk()
			present, err := s.hasContent(c, packSizes)
			if err != nil {
				return err
			}
			if !present {
				s.log.ErrorContext(ctx, "data loss: indexed chunk has no content", "hash", c.Hash.String(), "pack", c.PackID)
				rep.Missing++
				if len(rep.MissingList) < 100 {
					rep.MissingList = append(rep.MissingList, c.Hash)
				}
			}
		}
		s.progress(ctx, int64(len(batch)))
		if len(batch) < s.opts.ReconcileBatch {
			return nil
		}
		after = batch[len(batch)-1].Hash
		if batches%cursorEvery == 0 {
			if err := s.saveCursor(reconcileCursor{Phase: cursorRows, After: hex.EncodeToString(after)}); err != nil {
				return err
			}
		}
	}
}

// hasContent reports whether c's content is where its row says: its file,
// or a pack long enough to hold its record.
func (s *Store) hasContent(c Chunk, packSizes map[int64]int64) (bool, error) {
	if !c.packed() {
		_, err := s.blobs.Stat(context.Background(), c.Hash)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	if s.packs == nil {
		return false, nil
	}
	size, ok := packSizes[c.PackID]
	if !ok {
		var err error
		size, err = s.packs.Size(c.PackID)
		if errors.Is(err, pack.ErrNotFound) {
			size = -1
		} else if err != nil {
			return false, err
		}
		packSizes[c.PackID] = size
	}
	return c.PackOffset+pack.HeaderSize+c.Size <= size, nil
}

// reconcilePacks scans every pack not known to be fully indexed: records
// without a row are indexed (their bytes were fsynced, but the crash or a
// failed transaction came before their row committed), a torn tail is cut
// off when no row points into it, and the pack is then marked indexed.
// Every pack but the open one is then sealed read-only: a pack a crash or
// a shutdown left open is never appended to again.
func (s *Store) reconcilePacks(ctx context.Context, rep *ReconcileReport) error {
	ids, err := s.packs.IDs()
	if err != nil {
		return err
	}
	rows, _ := s.pool.Query(ctx, "SELECT pack_id FROM packs_indexed")
	indexed, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return dbErr("list indexed packs", err)
	}
	done := make(map[int64]bool, len(indexed))
	for _, id := range indexed {
		done[id] = true
	}
	active := s.packs.Active()
	for _, id := range ids {
		if id == active {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !done[id] {
			if err := s.reconcilePack(ctx, id, rep); err != nil {
				return fmt.Errorf("pack %d: %w", id, err)
			}
		}
		sealed, err := s.packs.Seal(id)
		if errors.Is(err, pack.ErrNotFound) {
			continue // a pack that held no record, removed meanwhile
		}
		if err != nil {
			return err
		}
		if sealed {
			rep.PacksSealed++
		}
	}
	return nil
}

func (s *Store) reconcilePack(ctx context.Context, id int64, rep *ReconcileReport) error {
	rep.PacksScanned++
	var batch []pack.ScannedRecord
	flush := func() error {
		err := s.adoptRecords(ctx, batch, rep)
		batch = batch[:0]
		return err
	}
	end, err := s.packs.Scan(id, func(r pack.ScannedRecord) error {
		if !r.Valid {
			rep.CorruptRecords++
			s.log.ErrorContext(ctx, "reconcile: pack record does not match its hash", "pack", id, "offset", r.Offset, "hash", r.Hash.String())
			return nil
		}
		batch = append(batch, r)
		if len(batch) == reconcileBatch {
			return flush()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		return err
	}
	size, err := s.packs.Size(id)
	if err != nil {
		return err
	}
	if end < size {
		// Only cut what no row points into: rows commit after the fsync, so
		// normally none can; if one does, the pack is damaged, and cutting
		// would destroy evidence.
		var referenced bool
		err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM chunks WHERE pack_id = $1 AND pack_offset >= $2)", id, end).Scan(&referenced)
		if err != nil {
			return dbErr("check pack tail", err)
		}
		if referenced {
			s.log.ErrorContext(ctx, "reconcile: unreadable bytes inside an indexed part of a pack", "pack", id, "offset", end)
			rep.CorruptRecords++
			return nil
		}
		s.log.WarnContext(ctx, "reconcile: cutting torn pack tail", "pack", id, "valid_bytes", end, "size", size)
		if err := s.packs.Truncate(id, end); err != nil {
			return err
		}
		rep.TornTails++
	}
	_, err = s.pool.Exec(ctx, "INSERT INTO packs_indexed (pack_id, indexed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, s.clk.Now())
	return dbErr("mark pack indexed", err)
}

// adoptRecords indexes the records in batch whose hash has no row.
func (s *Store) adoptRecords(ctx context.Context, batch []pack.ScannedRecord, rep *ReconcileReport) error {
	hashes := make([]chunk.Hash, len(batch))
	for i, r := range batch {
		hashes[i] = r.Hash
	}
	present, err := s.present(ctx, s.pool, hashes)
	if err != nil {
		return err
	}
	rows, _ := s.pool.Query(ctx, "SELECT pack_offset FROM chunk_tombstones WHERE pack_id = $1", batch[0].Pack)
	offs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return dbErr("look up tombstones", err)
	}
	deleted := make(map[int64]bool, len(offs))
	for _, o := range offs {
		deleted[o] = true
	}
	now := s.clk.Now()
	for _, r := range batch {
		if _, ok := present[r.Hash]; ok {
			continue // indexed here, or a duplicate of a chunk stored elsewhere
		}
		if deleted[r.Offset] {
			// A deleted chunk whose hole punch a crash interrupted: the
			// executor's rerun punches it after verifying the deletion.
			rep.Tombstoned++
			continue
		}
		pid, off := r.Pack, r.Offset
		if _, err := s.insertAdopted(ctx, chunkRow{Hash: r.Hash[:], Size: r.Size, StoredAt: now,
			RetainUntil: now.Add(s.opts.MinRetention), UploadedBy: "reconcile", PackID: &pid, PackOffset: &off}); err != nil {
			return err
		}
		present[r.Hash] = struct{}{}
		s.log.InfoContext(ctx, "reconcile: indexed pack record that had no row", "hash", r.Hash.String(), "pack", r.Pack)
		rep.Adopted++
	}
	return nil
}

// insertAdopted indexes content found without a row, logging its commit
// in the same transaction. It reports false if a row appeared meanwhile.
func (s *Store) insertAdopted(ctx context.Context, c chunkRow) (bool, error) {
	var inserted bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `INSERT INTO chunks (hash, size, stored_at, retain_until, uploaded_by, pack_id, pack_offset)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO NOTHING RETURNING `+chunkColumns,
			c.Hash, c.Size, c.StoredAt, c.RetainUntil, c.UploadedBy, c.PackID, c.PackOffset)
		got, err := pgx.CollectRows(rows, pgx.RowToStructByName[chunkRow])
		if err != nil {
			return err
		}
		inserted = len(got) > 0
		return s.logChunkCommits(ctx, tx, s.clk.Now(), got)
	})
	if err != nil {
		return false, dbErr("adopt chunk", err)
	}
	return inserted, nil
}
