package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
)

// The auditor's view of retention. Every query here is answered from
// indexes: nothing reads the whole chunks table (a test checks the plans).
// Chunk counts by retention month come from retention_months, which
// triggers keep in step with the chunks table.

// DeletionNone is the deletion state of every chunk until deletion requests
// exist (the deletion issue).
const DeletionNone = "none"

// SnapshotRef names a snapshot that references a chunk.
type SnapshotRef struct {
	ID          int64
	Source      string
	Name        string
	RetainUntil time.Time
}

// ChunkRetention is everything that keeps one chunk stored.
type ChunkRetention struct {
	Chunk
	// Expired is true once RetainUntil has passed: the chunk is still
	// present, and deletable only through an approved deletion request if
	// nothing else keeps it.
	Expired bool
	// Holds are the active holds covering the chunk, directly, through a
	// held snapshot or through a held source.
	Holds []HoldRef
	// Snapshots are the snapshots referencing the chunk, longest retained
	// first, at most MaxRefsShown of SnapshotCount.
	Snapshots     []SnapshotRef
	SnapshotCount int64
	// Deletion is the state of the most advanced open deletion request
	// covering the chunk (requested, scheduled, executing), or DeletionNone.
	Deletion string
}

// chunkDeletionStateSQL finds open requests naming the chunk in their
// frozen targets, or covering it as "everything expired before T" (whole
// vault). Requests are few; their targets text is scanned.
const chunkDeletionStateSQL = `
SELECT coalesce((SELECT state FROM deletion_requests
    WHERE state IN ('requested', 'scheduled', 'executing')
      AND ((kind = 'chunks' AND position(@line::text IN targets) > 0)
        OR (kind = 'expired' AND targets LIKE '%source: *%'
            AND substring(targets FROM 'before: ([^\n]+)')::timestamptz > @until))
    ORDER BY CASE state WHEN 'executing' THEN 0 WHEN 'scheduled' THEN 1 ELSE 2 END LIMIT 1), 'none')`

// MaxRefsShown bounds the holds and snapshots listed for one chunk.
const MaxRefsShown = 100

// heldChunkSQL is true when an active hold covers the chunk c: directly,
// through a held snapshot that references it, or through a held source.
const heldChunkSQL = `
(EXISTS (SELECT FROM hold_chunks hc JOIN holds h ON h.id = hc.hold_id
         WHERE hc.hash = c.hash AND h.released_at IS NULL)
 OR EXISTS (SELECT FROM snapshot_chunks sc JOIN hold_snapshots hs ON hs.snapshot_id = sc.snapshot_id
            JOIN holds h ON h.id = hs.hold_id
            WHERE sc.hash = c.hash AND h.released_at IS NULL)
 OR EXISTS (SELECT FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
            JOIN holds h ON h.source = s.source
            WHERE sc.hash = c.hash AND h.released_at IS NULL))`

const (
	chunkHoldsSQL = `
SELECT h.id, h.name, h.reason, 'chunk' AS via, 0::bigint AS snapshot_id, '' AS source
FROM hold_chunks hc JOIN holds h ON h.id = hc.hold_id
WHERE hc.hash = @hash AND h.released_at IS NULL
UNION ALL
SELECT h.id, h.name, h.reason, 'snapshot', hs.snapshot_id, ''
FROM snapshot_chunks sc JOIN hold_snapshots hs ON hs.snapshot_id = sc.snapshot_id JOIN holds h ON h.id = hs.hold_id
WHERE sc.hash = @hash AND h.released_at IS NULL
UNION ALL
SELECT DISTINCT h.id, h.name, h.reason, 'source', 0::bigint, h.source
FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id JOIN holds h ON h.source = s.source
WHERE sc.hash = @hash AND h.released_at IS NULL
ORDER BY 1, 5
LIMIT @n`
	chunkSnapshotsSQL = `
SELECT s.id, s.source, s.name, s.retain_until
FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
WHERE sc.hash = $1
ORDER BY s.retain_until DESC, s.id DESC
LIMIT $2`
	chunkSnapshotCountSQL = `SELECT count(*) FROM snapshot_chunks WHERE hash = $1`
)

// ChunkRetention returns what keeps chunk h stored, or ErrNotFound.
func (s *Store) ChunkRetention(ctx context.Context, h chunk.Hash) (ChunkRetention, error) {
	now := s.clk.Now()
	var cr ChunkRetention
	err := s.inReadTx(ctx, fmt.Sprintf("retention of chunk %s", h), func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, statChunkSQL, h[:])
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[chunkRow])
		if err != nil {
			return sqlErr(fmt.Sprintf("stat chunk %s", h), err)
		}
		cr.Chunk = row.chunk()
		cr.Chunk.StoredAt, cr.Chunk.RetainUntil = cr.StoredAt.UTC(), cr.RetainUntil.UTC()
		cr.Expired = !cr.RetainUntil.After(now)
		// The furthest-advanced open request that names this chunk, or
		// covers it as expired: requested, scheduled or executing.
		if err := tx.QueryRow(ctx, chunkDeletionStateSQL, pgx.NamedArgs{
			"line": "chunk: " + h.String() + "\n", "until": cr.RetainUntil,
		}).Scan(&cr.Deletion); err != nil {
			return sqlErr("chunk deletion state", err)
		}
		rows, _ = tx.Query(ctx, chunkHoldsSQL, pgx.NamedArgs{"hash": h[:], "n": MaxRefsShown})
		if cr.Holds, err = pgx.CollectRows(rows, pgx.RowToStructByPos[HoldRef]); err != nil {
			return sqlErr("chunk holds", err)
		}
		rows, _ = tx.Query(ctx, chunkSnapshotsSQL, h[:], MaxRefsShown)
		if cr.Snapshots, err = pgx.CollectRows(rows, pgx.RowToStructByPos[SnapshotRef]); err != nil {
			return sqlErr("chunk snapshots", err)
		}
		for i := range cr.Snapshots {
			cr.Snapshots[i].RetainUntil = cr.Snapshots[i].RetainUntil.UTC()
		}
		return sqlErr("count chunk snapshots", tx.QueryRow(ctx, chunkSnapshotCountSQL, h[:]).Scan(&cr.SnapshotCount))
	})
	if err != nil {
		return ChunkRetention{}, err
	}
	return cr, nil
}

// ExpiringChunk is a chunk in an expiry list.
type ExpiringChunk struct {
	Chunk
	// Held is true if an active hold covers the chunk: it stays whatever
	// its retention.
	Held bool
}

type expiringChunkRow struct {
	chunkRow
	Held bool `db:"held"`
}

// ChunkPage is one page of an expiry list. Next is empty on the last page.
type ChunkPage struct {
	Chunks []ExpiringChunk
	Next   string
}

const (
	expiringChunksSQL = `SELECT ` + chunkColumns + `, ` + heldChunkSQL + ` AS held
FROM chunks c WHERE c.retain_until < @before
ORDER BY c.retain_until, c.hash LIMIT @n`
	expiringChunksAfterSQL = `SELECT ` + chunkColumns + `, ` + heldChunkSQL + ` AS held
FROM chunks c WHERE c.retain_until < @before AND (c.retain_until, c.hash) > (@after_at, @after_hash)
ORDER BY c.retain_until, c.hash LIMIT @n`
)

// ExpiringChunks lists the chunks retained until before a time (those
// already expired included), soonest first, one keyset page at a time.
func (s *Store) ExpiringChunks(ctx context.Context, before time.Time, limit int, cursor string) (ChunkPage, error) {
	limit, err := pageLimit(limit)
	if err != nil {
		return ChunkPage{}, err
	}
	if before.IsZero() {
		return ChunkPage{}, invalid("before", "is required")
	}
	before = before.UTC().Truncate(time.Microsecond)
	query := fmt.Sprintf("expiring-chunks\x00%d", before.UnixMicro())
	sql, args := expiringChunksSQL, pgx.NamedArgs{"before": before, "n": limit + 1}
	if cursor != "" {
		k, err := decodeCursor(cursorExpiringChunks, query, cursor)
		if err != nil {
			return ChunkPage{}, err
		}
		sql, args["after_at"], args["after_hash"] = expiringChunksAfterSQL, k.At, k.Hash[:]
	}
	rows, _ := s.pool.Query(ctx, sql, args)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[expiringChunkRow])
	if err != nil {
		return ChunkPage{}, dbErr("expiring chunks", err)
	}
	page := ChunkPage{Chunks: make([]ExpiringChunk, 0, len(list))}
	for _, r := range list[:min(len(list), limit)] {
		c := r.chunk()
		c.StoredAt, c.RetainUntil = c.StoredAt.UTC(), c.RetainUntil.UTC()
		page.Chunks = append(page.Chunks, ExpiringChunk{Chunk: c, Held: r.Held})
	}
	if len(list) > limit {
		last := page.Chunks[limit-1]
		page.Next = encodeCursor(cursorExpiringChunks, query, cursorKey{At: last.RetainUntil, Hash: last.Hash})
	}
	return page, nil
}

const (
	expiringSnapshotsSQL = `SELECT ` + snapshotColumns + ` FROM snapshots s
WHERE s.retain_until < @before AND s.deleted_at IS NULL ORDER BY s.retain_until, s.id LIMIT @n`
	expiringSnapshotsAfterSQL = `SELECT ` + snapshotColumns + ` FROM snapshots s
WHERE s.retain_until < @before AND s.deleted_at IS NULL AND (s.retain_until, s.id) > (@after_at, @after_id)
ORDER BY s.retain_until, s.id LIMIT @n`
)

// ExpiringSnapshots lists the snapshots retained until before a time
// (those already expired included), soonest first, one keyset page at a
// time.
func (s *Store) ExpiringSnapshots(ctx context.Context, before time.Time, limit int, cursor string) (SnapshotPage, error) {
	limit, err := pageLimit(limit)
	if err != nil {
		return SnapshotPage{}, err
	}
	if before.IsZero() {
		return SnapshotPage{}, invalid("before", "is required")
	}
	before = before.UTC().Truncate(time.Microsecond)
	query := fmt.Sprintf("expiring-snapshots\x00%d", before.UnixMicro())
	sql, args := expiringSnapshotsSQL, pgx.NamedArgs{"before": before, "n": limit + 1}
	if cursor != "" {
		k, err := decodeCursor(cursorExpiringSnapshots, query, cursor)
		if err != nil {
			return SnapshotPage{}, err
		}
		sql, args["after_at"], args["after_id"] = expiringSnapshotsAfterSQL, k.At, k.ID
	}
	rows, _ := s.pool.Query(ctx, sql, args)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[snapshotRow])
	if err != nil {
		return SnapshotPage{}, dbErr("expiring snapshots", err)
	}
	page := SnapshotPage{Snapshots: make([]Snapshot, 0, len(list))}
	for _, r := range list[:min(len(list), limit)] {
		page.Snapshots = append(page.Snapshots, r.snapshot())
	}
	if len(list) > limit {
		last := page.Snapshots[limit-1]
		page.Next = encodeCursor(cursorExpiringSnapshots, query, cursorKey{At: last.RetainUntil, ID: last.ID})
	}
	return page, nil
}

// Count is a number of chunks and their bytes.
type Count struct {
	Chunks int64
	Bytes  int64
}

// MonthCount counts the chunks whose retention ends in Month (the first
// day of a UTC month).
type MonthCount struct {
	Month time.Time
	Count
}

// SnapshotCounts summarises snapshots.
type SnapshotCounts struct {
	Total   int64
	Expired int64 // retain_until passed, still present
	Held    int64 // under an active hold
}

// RetentionSummary is the auditor's overview of what the vault keeps, as of
// At, read in one consistent database snapshot.
type RetentionSummary struct {
	At    time.Time
	Total Count
	// Months counts chunks by the UTC month their retention ends in,
	// earliest first; past months are expired.
	Months []MonthCount
	// Expired counts chunks whose retention has passed but that are still
	// present (nothing is deleted without an approved deletion request).
	Expired Count
	// Held counts distinct chunks under at least one active hold.
	Held Count
	// PendingDeletion is meant to count chunks in approved, scheduled
	// deletions. It is not computed yet and is always zero (documented).
	PendingDeletion Count
	Snapshots       SnapshotCounts
	ActiveHolds     int64
}

const (
	retentionMonthsSQL = `
SELECT month, sum(chunks)::bigint AS chunks, sum(bytes)::bigint AS bytes
FROM retention_months GROUP BY month HAVING sum(chunks) <> 0 ORDER BY month`
	// Expired chunks of the current month: the earlier months come whole
	// from retention_months. A range of the (retain_until, hash) INCLUDE
	// (size) index, never the table.
	expiredThisMonthSQL = `
SELECT count(*), coalesce(sum(size), 0)::bigint FROM chunks
WHERE retain_until >= @month AND retain_until <= @now`
	// Distinct held chunks; sizes come from hold targets and references,
	// not from the chunks table.
	heldSummarySQL = `
WITH held AS (
    SELECT c.hash, c.size FROM hold_chunks hc JOIN holds h ON h.id = hc.hold_id
    JOIN chunks c ON c.hash = hc.hash
    WHERE h.released_at IS NULL
  UNION
    SELECT sc.hash, sc.size FROM hold_snapshots hs JOIN holds h ON h.id = hs.hold_id
    JOIN snapshot_chunks sc ON sc.snapshot_id = hs.snapshot_id
    WHERE h.released_at IS NULL
  UNION
    SELECT sc.hash, sc.size FROM holds h JOIN snapshots s ON s.source = h.source
    JOIN snapshot_chunks sc ON sc.snapshot_id = s.id
    WHERE h.released_at IS NULL
)
SELECT count(*), coalesce(sum(size), 0)::bigint FROM held`
	snapshotSummarySQL = `
SELECT count(*), count(*) FILTER (WHERE retain_until <= @now), count(*) FILTER (WHERE held)
FROM (SELECT ` + snapshotColumns + ` FROM snapshots s WHERE s.deleted_at IS NULL) x`
	activeHoldsSQL = `SELECT count(*) FROM holds WHERE released_at IS NULL`
)

// RetentionSummary returns counts and bytes by retention month, expired,
// held and pending deletion, and snapshot and hold counts.
func (s *Store) RetentionSummary(ctx context.Context) (RetentionSummary, error) {
	now := s.clk.Now().UTC().Truncate(time.Microsecond)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	sum := RetentionSummary{At: now, Months: []MonthCount{}}
	err := s.inReadTx(ctx, "retention summary", func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, retentionMonthsSQL)
		months, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (MonthCount, error) {
			var m MonthCount
			err := r.Scan(&m.Month, &m.Chunks, &m.Bytes)
			m.Month = m.Month.UTC()
			return m, err
		})
		if err != nil {
			return sqlErr("retention months", err)
		}
		for _, m := range months {
			sum.Months = append(sum.Months, m)
			sum.Total.Chunks += m.Chunks
			sum.Total.Bytes += m.Bytes
			if m.Month.Before(month) {
				sum.Expired.Chunks += m.Chunks
				sum.Expired.Bytes += m.Bytes
			}
		}
		var part Count
		args := pgx.NamedArgs{"month": month, "now": now}
		if err := tx.QueryRow(ctx, expiredThisMonthSQL, args).Scan(&part.Chunks, &part.Bytes); err != nil {
			return sqlErr("expired chunks", err)
		}
		sum.Expired.Chunks += part.Chunks
		sum.Expired.Bytes += part.Bytes
		if err := tx.QueryRow(ctx, heldSummarySQL).Scan(&sum.Held.Chunks, &sum.Held.Bytes); err != nil {
			return sqlErr("held chunks", err)
		}
		err = tx.QueryRow(ctx, snapshotSummarySQL, args).Scan(&sum.Snapshots.Total, &sum.Snapshots.Expired, &sum.Snapshots.Held)
		if err != nil {
			return sqlErr("snapshot counts", err)
		}
		return sqlErr("active holds", tx.QueryRow(ctx, activeHoldsSQL).Scan(&sum.ActiveHolds))
	})
	if err != nil {
		return RetentionSummary{}, err
	}
	return sum, nil
}

// inReadTx runs fn in a read-only, repeatable-read transaction, so that
// the several queries of one answer see one consistent state.
func (s *Store) inReadTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return sqlErr(op, err)
	}
	defer tx.Rollback(ctx)
	if err := fn(tx); err != nil {
		return err
	}
	return sqlErr(op, tx.Commit(ctx))
}
