package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// The content check of a rebuild: every file and every pack record is read
// and verified against the rebuilt index. Nothing on disk is changed.

// adoption is content no journal entry names, to be indexed as reconcile
// indexes it.
type adoption struct {
	hash chunk.Hash
	size int64
	loc  *pack.Location
}

type indexedChunk struct {
	Hash       []byte `db:"hash"`
	Size       int64  `db:"size"`
	PackID     *int64 `db:"pack_id"`
	PackOffset *int64 `db:"pack_offset"`
}

// contentChecker holds the state of one content check.
type contentChecker struct {
	r     *reindexer
	adopt []adoption
	// queued holds the hashes of adopt: content found twice (a file and a
	// record, two records) is adopted once.
	queued map[chunk.Hash]bool
}

// checkContent verifies the content of every rebuilt row, reports data
// loss, and indexes content no entry names.
func (r *reindexer) checkContent(ctx context.Context) error {
	// One verdict per indexed chunk: its content at its location verified
	// (ok) or not. Rows without a verdict have no content at all.
	if _, err := r.tx.Exec(ctx, `CREATE TEMP TABLE reindex_content (hash bytea PRIMARY KEY, ok boolean NOT NULL) ON COMMIT DROP`); err != nil {
		return err
	}
	cc := &contentChecker{r: r, queued: map[chunk.Hash]bool{}}
	var batch []chunk.Hash
	err := r.s.blobs.Walk(ctx, func(h chunk.Hash, _ int64) error {
		batch = append(batch, h)
		if len(batch) == reconcileBatch {
			err := cc.files(ctx, batch)
			batch = batch[:0]
			return err
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = cc.files(ctx, batch)
	}
	if err != nil {
		return fmt.Errorf("check files: %w", err)
	}
	if r.s.packs != nil {
		ids, err := r.s.packs.IDs()
		if err != nil {
			return fmt.Errorf("check packs: %w", err)
		}
		for _, id := range ids {
			if err := cc.pack(ctx, id); err != nil {
				return fmt.Errorf("check pack %d: %w", id, err)
			}
		}
	}
	if err := cc.adoptAll(ctx); err != nil {
		return err
	}
	return r.findLost(ctx)
}

func (cc *contentChecker) lookup(ctx context.Context, keys [][]byte) (map[chunk.Hash]indexedChunk, error) {
	rows, _ := cc.r.tx.Query(ctx, `SELECT hash, size, pack_id, pack_offset FROM chunks WHERE hash = ANY($1)`, keys)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[indexedChunk])
	if err != nil {
		return nil, err
	}
	m := make(map[chunk.Hash]indexedChunk, len(list))
	for _, c := range list {
		h, _ := chunk.FromBytes(c.Hash)
		m[h] = c
	}
	return m, nil
}

// verdict records whether h's content is where its row says and whole.
func (cc *contentChecker) verdict(ctx context.Context, h chunk.Hash, ok bool, problem string) error {
	r := cc.r
	if _, err := r.tx.Exec(ctx, `INSERT INTO reindex_content (hash, ok) VALUES ($1, $2) ON CONFLICT DO NOTHING`, h[:], ok); err != nil {
		return err
	}
	if ok {
		r.rep.Verified++
		return nil
	}
	r.dataLoss(ctx, h, problem)
	return nil
}

func (r *reindexer) dataLoss(ctx context.Context, h chunk.Hash, problem string) {
	r.s.metrics.contentMissing.Inc()
	r.s.log.ErrorContext(ctx, "DATA LOSS: a journaled chunk's content is "+problem+"; its row is kept and reads as missing",
		"hash", h.String())
	r.rep.DataLoss++
	if len(r.rep.DataLossList) < maxReindexList {
		r.rep.DataLossList = append(r.rep.DataLossList, ChunkProblem{Hash: h.String(), Problem: problem})
	}
}

// files checks one batch of blob files.
func (cc *contentChecker) files(ctx context.Context, batch []chunk.Hash) error {
	r := cc.r
	keys := hashKeys(batch)
	rows, err := cc.lookup(ctx, keys)
	if err != nil {
		return err
	}
	trows, _ := r.tx.Query(ctx, "SELECT DISTINCT hash FROM chunk_tombstones WHERE hash = ANY($1)", keys)
	tombs, err := pgx.CollectRows(trows, pgx.RowTo[[]byte])
	if err != nil {
		return err
	}
	deleted := make(map[string]bool, len(tombs))
	for _, b := range tombs {
		deleted[string(b)] = true
	}
	for _, h := range batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		row, indexed := rows[h]
		switch {
		case indexed && row.PackID != nil:
			// A packed chunk's content is its record; a file of it is a
			// spare copy.
		case indexed:
			size, err := r.s.verifyBlob(ctx, h)
			switch {
			case err != nil && ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				err = cc.verdict(ctx, h, false, "damaged ("+err.Error()+")")
			case size != row.Size:
				err = cc.verdict(ctx, h, false, fmt.Sprintf("%d bytes where the journal says %d", size, row.Size))
			default:
				err = cc.verdict(ctx, h, true, "")
			}
			if err != nil {
				return err
			}
		case deleted[string(h[:])]:
			// A removed chunk whose removal a crash interrupted: left for
			// the executor, never indexed again (as reconcile does).
			r.rep.Tombstoned++
			r.s.log.WarnContext(ctx, "reindex: content of a removed chunk is still on disk; left for the executor", "hash", h.String())
		default:
			size, err := r.s.verifyBlob(ctx, h)
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				r.rep.UnindexedCorrupt++
				r.s.log.WarnContext(ctx, "reindex: content without a journal entry fails its hash: not indexed (reconcile quarantines it)",
					"hash", h.String(), "err", err)
				continue
			}
			cc.queue(adoption{hash: h, size: size})
		}
	}
	return nil
}

func (cc *contentChecker) queue(a adoption) {
	if cc.queued[a.hash] {
		return
	}
	cc.queued[a.hash] = true
	cc.adopt = append(cc.adopt, a)
}

// pack checks every record of pack id. A pack with a torn tail is left
// for reconcile to repair (reindex changes nothing on disk); any other is
// marked indexed.
func (cc *contentChecker) pack(ctx context.Context, id int64) error {
	r := cc.r
	rows, _ := r.tx.Query(ctx, "SELECT pack_offset FROM chunk_tombstones WHERE pack_id = $1", id)
	offs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	deleted := make(map[int64]bool, len(offs))
	for _, o := range offs {
		deleted[o] = true
	}
	var batch []pack.ScannedRecord
	end, err := r.s.packs.Scan(id, func(rec pack.ScannedRecord) error {
		batch = append(batch, rec)
		if len(batch) == reconcileBatch {
			err := cc.records(ctx, batch, deleted)
			batch = batch[:0]
			return err
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = cc.records(ctx, batch, deleted)
	}
	if err != nil {
		return err
	}
	size, err := r.s.packs.Size(id)
	if err != nil {
		return err
	}
	if end < size {
		r.rep.PacksLeft = append(r.rep.PacksLeft, id)
		r.s.log.WarnContext(ctx, "reindex: pack has a torn tail; left for reconcile to repair at the next start",
			"pack", id, "valid_bytes", end, "size", size)
		return nil
	}
	if _, err := r.tx.Exec(ctx, `INSERT INTO packs_indexed (pack_id, indexed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`, id, r.now); err != nil {
		return err
	}
	r.rep.PacksIndexed++
	return nil
}

func (cc *contentChecker) records(ctx context.Context, batch []pack.ScannedRecord, deleted map[int64]bool) error {
	r := cc.r
	keys := make([][]byte, len(batch))
	for i := range batch {
		keys[i] = batch[i].Hash[:]
	}
	rows, err := cc.lookup(ctx, keys)
	if err != nil {
		return err
	}
	for _, rec := range batch {
		row, indexed := rows[rec.Hash]
		here := indexed && row.PackID != nil && *row.PackID == rec.Pack && *row.PackOffset == rec.Offset
		switch {
		case here && rec.Valid && rec.Size == row.Size:
			err = cc.verdict(ctx, rec.Hash, true, "")
		case here:
			err = cc.verdict(ctx, rec.Hash, false, fmt.Sprintf("damaged (pack %d offset %d does not verify)", rec.Pack, rec.Offset))
		case indexed:
			// A duplicate record, or a chunk stored elsewhere.
		case deleted[rec.Offset]:
			r.rep.Tombstoned++
			r.s.log.WarnContext(ctx, "reindex: record of a removed chunk is still in its pack; left for the executor",
				"hash", rec.Hash.String(), "pack", rec.Pack, "offset", rec.Offset)
		case !rec.Valid:
			r.rep.UnindexedCorrupt++
			r.s.log.WarnContext(ctx, "reindex: pack record without a journal entry fails its hash: not indexed",
				"hash", rec.Hash.String(), "pack", rec.Pack, "offset", rec.Offset)
		default:
			loc := rec.Location
			cc.queue(adoption{hash: rec.Hash, size: rec.Size, loc: &loc})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// adoptAll indexes the content no entry names, as reconcile does: uploader
// "reconcile", stored now, the minimum retention. Outside a dry run its
// chunk.commit entries are appended (journal first), so the journal keeps
// holding every indexed chunk.
func (cc *contentChecker) adoptAll(ctx context.Context) error {
	r := cc.r
	for i := 0; i < len(cc.adopt); i += reconcileBatch {
		part := cc.adopt[i:min(i+reconcileBatch, len(cc.adopt))]
		n := len(part)
		hashes, sizes := make([][]byte, n), make([]int64, n)
		stored, until, by := make([]time.Time, n), make([]time.Time, n), make([]string, n)
		packs, offs := make([]*int64, n), make([]*int64, n)
		for j, a := range part {
			hashes[j], sizes[j] = a.hash[:], a.size
			stored[j], until[j], by[j] = r.now, r.now.Add(r.s.opts.MinRetention), "reconcile"
			if a.loc != nil {
				packs[j], offs[j] = &a.loc.Pack, &a.loc.Offset
			}
		}
		rows, _ := r.tx.Query(ctx, insertChunksSQL, pgx.NamedArgs{
			"hashes": hashes, "sizes": sizes, "stored": stored, "until": until, "by": by, "pack": packs, "off": offs,
		})
		got, err := pgx.CollectRows(rows, pgx.RowToStructByName[chunkRow])
		if err != nil {
			return fmt.Errorf("adopt content: %w", err)
		}
		if !r.opts.DryRun {
			if err := r.s.logChunkCommits(ctx, r.tx, r.now, got); err != nil {
				return fmt.Errorf("adopt content: %w", err)
			}
		}
		for _, c := range got {
			h, _ := chunk.FromBytes(c.Hash)
			if _, err := r.tx.Exec(ctx, `INSERT INTO reindex_content (hash, ok) VALUES ($1, true) ON CONFLICT DO NOTHING`, c.Hash); err != nil {
				return err
			}
			r.s.log.WarnContext(ctx, "reindex: indexed content that no journal entry names (uploader reconcile, minimum retention)",
				"hash", h.String(), "size", c.Size, "pack", c.PackID)
			r.rep.Adopted++
			if len(r.rep.AdoptedList) < maxReindexList {
				r.rep.AdoptedList = append(r.rep.AdoptedList, h.String())
			}
		}
	}
	return nil
}

// findLost reports every rebuilt row whose content was not found at all.
func (r *reindexer) findLost(ctx context.Context) error {
	rows, _ := r.tx.Query(ctx, `SELECT hash, size, pack_id, pack_offset FROM chunks c
		WHERE NOT EXISTS (SELECT FROM reindex_content o WHERE o.hash = c.hash) ORDER BY hash`)
	lost, err := pgx.CollectRows(rows, pgx.RowToStructByName[indexedChunk])
	if err != nil {
		return fmt.Errorf("find lost content: %w", err)
	}
	for _, c := range lost {
		h, _ := chunk.FromBytes(c.Hash)
		problem := "missing (no file)"
		if c.PackID != nil {
			problem = fmt.Sprintf("missing (no record at pack %d offset %d)", *c.PackID, *c.PackOffset)
		}
		r.dataLoss(ctx, h, problem)
	}
	return nil
}
