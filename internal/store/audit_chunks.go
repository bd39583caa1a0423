package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/audit"
)

// Chunk commits are logged in the transaction that indexes them (the group
// commit), so no acknowledged chunk can be left out of the log: there is no
// separate integrator whose position a database credential could move
// past unlogged chunks. The entries reach the data directory's journal
// before the transaction commits, which is what lets `vault reindex`
// rebuild each chunk's row with its retention.

// DefaultIntegrateBatch is how many chunks one integration transaction
// appends at most.
const DefaultIntegrateBatch = 5000

const integrateChunksSQL = `
SELECT ` + chunkColumns + `
FROM chunks c
WHERE NOT EXISTS (SELECT FROM audit_chunks a WHERE a.chunk_seq = c.seq)
ORDER BY c.seq
LIMIT $1`

// IntegrateChunks appends a chunk.commit entry for up to batch chunk rows
// that have none, and returns how many it appended. Chunks are logged in
// the transaction that indexes them, so this only backfills rows indexed
// by a vault from before that (and bulk-made rows in tests); `vault serve`
// does not run it: a row that no server transaction logged is no evidence.
// It keeps no position, so nothing in the database can make it skip rows.
func (s *Store) IntegrateChunks(ctx context.Context, batch int) (int, error) {
	if batch <= 0 {
		batch = DefaultIntegrateBatch
	}
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, integrateChunksSQL, batch)
		todo, err := pgx.CollectRows(rows, pgx.RowToStructByName[chunkRow])
		if err != nil {
			return err
		}
		n = len(todo)
		return s.logChunkCommits(ctx, tx, s.clk.Now(), todo)
	})
	if err != nil {
		return 0, dbErr("integrate chunks", err)
	}
	return n, nil
}

// logChunkCommits appends a chunk.commit entry for each row inserted in tx
// and links the entries to the rows in audit_chunks.
func (s *Store) logChunkCommits(ctx context.Context, tx pgx.Tx, now time.Time, rows []chunkRow) error {
	if len(rows) == 0 {
		return nil
	}
	head, err := lockAuditHead(ctx, tx)
	if err != nil {
		return err
	}
	var b pgx.Batch
	if err := s.queueChunkCommits(ctx, tx, &b, head, now, rows); err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("audit: log chunk commits: %w", err)
	}
	return nil
}

// queueChunkCommits is logChunkCommits for a caller that holds the append
// lock (head was read under it): the entries are journaled, and their
// rows and links queued in b.
func (s *Store) queueChunkCommits(ctx context.Context, tx pgx.Tx, b *pgx.Batch, head auditHead, now time.Time, rows []chunkRow) error {
	if len(rows) == 0 {
		return nil
	}
	recs := make([]auditRecord, len(rows))
	for i, c := range rows {
		d := audit.ChunkCommit{
			Hash: hex.EncodeToString(c.Hash), Size: c.Size, UploadedBy: c.UploadedBy,
			StoredAt: c.StoredAt.UTC(), RetainUntil: c.RetainUntil.UTC(), ChunkSeq: c.Seq,
		}
		if c.PackID != nil {
			d.PackID, d.PackOffset = *c.PackID, *c.PackOffset
		}
		recs[i] = auditRecord{at: now, actor: c.UploadedBy, action: audit.ActionChunkCommit, details: d}
	}
	if err := s.queueAudit(ctx, tx, b, head, recs); err != nil {
		return err
	}
	seqs, hashes, leaves := make([]int64, len(rows)), make([][]byte, len(rows)), make([]int64, len(rows))
	for i, c := range rows {
		seqs[i], hashes[i], leaves[i] = c.Seq, c.Hash, head.seq+int64(i) // leaf index = seq - 1
	}
	b.Queue(`INSERT INTO audit_chunks (chunk_seq, hash, leaf)
		SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[])`, seqs, hashes, leaves)
	return nil
}

// logRemovals appends a chunk.remove entry for each chunk the executor
// removed, in the executor's transaction.
func (s *Store) logRemovals(ctx context.Context, tx pgx.Tx, deletionID int64, now time.Time, hashes [][]byte) error {
	if len(hashes) == 0 {
		return nil
	}
	recs := make([]auditRecord, len(hashes))
	for i, h := range hashes {
		recs[i] = auditRecord{at: now, actor: "executor", action: audit.ActionChunkRemove,
			details: audit.ChunkRemove{Hash: hex.EncodeToString(h), DeletionID: deletionID}}
	}
	if _, err := s.appendAuditBatch(ctx, tx, recs); err != nil {
		return fmt.Errorf("audit: log removals: %w", err)
	}
	return nil
}
