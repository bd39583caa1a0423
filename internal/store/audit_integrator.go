package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/audit"
)

// The integrator sequences chunk commits into the audit log in batches,
// as transparency logs do, so that the upload path never touches the log.
// `vault serve` runs it every second; a chunk is in the log within a few
// seconds of being acknowledged.

// DefaultIntegrateBatch is how many chunks one integration transaction
// appends at most.
const DefaultIntegrateBatch = 5000

// integratorLag: chunks stored longer ago than this are assumed to have
// no uncommitted neighbour with a smaller seq (chunks.seq is assigned at
// insert, so a long transaction may commit a smaller seq after a larger
// one). The position only skips work; correctness comes from the
// anti-join on audit_chunks.
const integratorLag = time.Minute

const integrateChunksSQL = `
SELECT c.seq, c.hash, c.size, c.stored_at, c.retain_until, c.uploaded_by
FROM chunks c
WHERE c.seq > @low AND NOT EXISTS (SELECT FROM audit_chunks a WHERE a.chunk_seq = c.seq)
ORDER BY c.seq
LIMIT @n`

type integrateRow struct {
	Seq         int64     `db:"seq"`
	Hash        []byte    `db:"hash"`
	Size        int64     `db:"size"`
	StoredAt    time.Time `db:"stored_at"`
	RetainUntil time.Time `db:"retain_until"`
	UploadedBy  string    `db:"uploaded_by"`
}

// IntegrateChunks appends a chunk.commit entry for up to batch stored
// chunks that are not in the log yet, and returns how many it appended.
// Concurrent integrators serialise on the position row.
func (s *Store) IntegrateChunks(ctx context.Context, batch int) (int, error) {
	if batch <= 0 {
		batch = DefaultIntegrateBatch
	}
	now := s.clk.Now()
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var low int64
		if err := tx.QueryRow(ctx, "SELECT chunk_seq FROM audit_integrator FOR UPDATE").Scan(&low); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, integrateChunksSQL, pgx.NamedArgs{"low": low, "n": batch})
		todo, err := pgx.CollectRows(rows, pgx.RowToStructByName[integrateRow])
		if err != nil {
			return err
		}
		if len(todo) > 0 {
			recs := make([]auditRecord, len(todo))
			for i, c := range todo {
				recs[i] = auditRecord{at: now, actor: c.UploadedBy, action: audit.ActionChunkCommit, details: audit.ChunkCommit{
					Hash: hex.EncodeToString(c.Hash), Size: c.Size, UploadedBy: c.UploadedBy,
					StoredAt: c.StoredAt.UTC(), RetainUntil: c.RetainUntil.UTC(), ChunkSeq: c.Seq,
				}}
			}
			first, err := appendAuditBatch(ctx, tx, recs)
			if err != nil {
				return err
			}
			seqs, hashes, leaves := make([]int64, len(todo)), make([][]byte, len(todo)), make([]int64, len(todo))
			for i, c := range todo {
				seqs[i], hashes[i], leaves[i] = c.Seq, c.Hash, first-1+int64(i)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO audit_chunks (chunk_seq, hash, leaf)
				SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[])`, seqs, hashes, leaves); err != nil {
				return err
			}
			n = len(todo)
		}
		// Move the position past every chunk stored before the lag that
		// is logged, up to the first that is not.
		_, err = tx.Exec(ctx, `UPDATE audit_integrator SET chunk_seq = greatest(chunk_seq, coalesce((
			SELECT max(c.seq) FROM chunks c
			WHERE c.seq > @low AND c.stored_at < @before
			  AND c.seq < coalesce((SELECT min(u.seq) FROM chunks u
			      WHERE u.seq > @low AND NOT EXISTS (SELECT FROM audit_chunks a WHERE a.chunk_seq = u.seq)), 9223372036854775807)
		), chunk_seq))`, pgx.NamedArgs{"low": low, "before": now.Add(-integratorLag)})
		return err
	})
	if err != nil {
		return 0, dbErr("integrate chunks", err)
	}
	return n, nil
}

// logRemovals appends a chunk.remove entry for each chunk the executor
// removed, in the executor's transaction.
func logRemovals(ctx context.Context, tx pgx.Tx, deletionID int64, now time.Time, hashes [][]byte) error {
	if len(hashes) == 0 {
		return nil
	}
	recs := make([]auditRecord, len(hashes))
	for i, h := range hashes {
		recs[i] = auditRecord{at: now, actor: "executor", action: audit.ActionChunkRemove,
			details: audit.ChunkRemove{Hash: hex.EncodeToString(h), DeletionID: deletionID}}
	}
	if _, err := appendAuditBatch(ctx, tx, recs); err != nil {
		return fmt.Errorf("audit: log removals: %w", err)
	}
	return nil
}
