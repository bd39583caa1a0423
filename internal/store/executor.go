package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Skip reasons recorded for objects an execution did not delete.
const (
	SkipRetained           = "retained"
	SkipHeld               = "held"
	SkipInRetainedSnapshot = "in_retained_snapshot"
	SkipNotFound           = "not_found"
	SkipAlreadyDeleted     = "already_deleted"
)

// deletionLock is the first key of the session advisory lock an executor
// holds on a request while executing it: two executors never run one
// request at once.
const deletionLock = 0x64656c // "del"

const executeBatch = 1000

// RunReport tells what RunDue did.
type RunReport struct {
	Expired  []int64 // requests that ran out of time for their quorum
	Executed []int64 // requests executed to completion
}

// RunDue expires requests whose quorum did not come in time and executes
// every scheduled request whose time has come, and any execution a crash
// interrupted. It is what the server's executor loop and `vault admin
// execute-due` call; it is safe to run concurrently and to rerun.
func (s *Store) RunDue(ctx context.Context) (RunReport, error) {
	var rep RunReport
	now := s.clk.Now()
	expired, err := s.expireStale(ctx, now)
	rep.Expired = expired
	if err != nil {
		return rep, err
	}
	rows, _ := s.pool.Query(ctx, `SELECT id FROM deletion_requests
		WHERE (state = 'scheduled' AND executes_at <= $1) OR state = 'executing' ORDER BY executes_at, id`, now)
	due, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return rep, dbErr("list due deletions", err)
	}
	for _, id := range due {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		done, err := s.execute(ctx, id)
		if err != nil {
			return rep, fmt.Errorf("store: execute deletion %d: %w", id, err)
		}
		if done {
			rep.Executed = append(rep.Executed, id)
		}
	}
	return rep, nil
}

func (s *Store) expireStale(ctx context.Context, now time.Time) ([]int64, error) {
	var ids []int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `UPDATE deletion_requests SET state = 'expired'
			WHERE state = 'requested' AND expires_at <= $1 RETURNING id`, now)
		var err error
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return err
		}
		for _, id := range ids {
			if err := appendAudit(ctx, tx, now, "executor", "deletion.expire", map[string]any{"deletion_id": id}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, dbErr("expire deletions", err)
	}
	for _, id := range ids {
		if d, err := s.GetDeletion(ctx, id); err == nil {
			s.notify(ctx, "deletion.expired", "executor", d)
		}
	}
	return ids, nil
}

// checkClocks refuses to act on time-locked requests when the server's
// clock and the database's disagree: moving one host's clock forward must
// not shorten the cancel window.
func (s *Store) checkClocks(ctx context.Context, now time.Time) error {
	var db time.Time
	var err error
	if s.opts.DatabaseTime != nil {
		db, err = s.opts.DatabaseTime(ctx)
	} else {
		err = s.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&db)
	}
	if err != nil {
		return dbErr("read database clock", err)
	}
	if skew := now.Sub(db); skew > s.opts.MaxClockSkew || -skew > s.opts.MaxClockSkew {
		s.log.ErrorContext(ctx, "ALERT: server and database clocks disagree; no deletion will execute",
			"server_time", now, "database_time", db, "skew", skew)
		return fmt.Errorf("%w: server %s, database %s", ErrClockSkew, now.UTC().Format(time.RFC3339), db.UTC().Format(time.RFC3339))
	}
	return nil
}

// setExecutor puts tx on the executor's path for request id: the database
// registers the transaction as executing it (wv_begin_execution, which also
// moves a due scheduled request to executing), and the triggers let rows
// go only in a registered transaction. The database takes no time from the
// caller: its triggers use its own clock, so now is not sent; the Go side
// keeps its own checks against now.
func setExecutor(ctx context.Context, tx pgx.Tx, id int64, now time.Time) error {
	_, err := tx.Exec(ctx, "SELECT wv_begin_execution($1)", id)
	return err
}

// execute runs one request to completion. It reports false if another
// executor holds it or it is no longer due.
func (s *Store) execute(ctx context.Context, id int64) (bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, dbErr("acquire", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", deletionLock, int32(id)).Scan(&locked); err != nil {
		return false, dbErr("lock deletion", err)
	}
	if !locked {
		return false, nil
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1, $2)", deletionLock, int32(id))
	s.executing.Add(1)
	defer s.executing.Add(-1)

	now := s.clk.Now()
	if err := s.checkClocks(ctx, now); err != nil {
		return false, err
	}
	// Claim: scheduled → executing, or resume an interrupted execution.
	// Either way every signature is verified again first, from the stored
	// rows: a state column edited in the database proves nothing.
	var d Deletion
	var refusal error
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if d, err = lockDeletion(ctx, tx, id); err != nil {
			return err
		}
		switch {
		case d.State == StateExecuting:
		case d.State != StateScheduled:
			return nil
		case d.ExecutesAt.After(now):
			return fmt.Errorf("deletion %d executes at %s: %w", id, d.ExecutesAt.UTC().Format(time.RFC3339), ErrConflict)
		}
		if refusal = s.verifyForExecution(ctx, tx, d); refusal != nil {
			if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'refused', refused_at = $2, refusal = $3
				WHERE id = $1`, id, now, refusal.Error()); err != nil {
				return err
			}
			d.State = StateRefused
			return appendAudit(ctx, tx, now, "executor", "deletion.refused", map[string]any{
				"deletion_id": id, "reason": refusal.Error(),
			})
		}
		if d.State == StateExecuting {
			return nil
		}
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE deletion_requests SET state = 'executing' WHERE id = $1", id); err != nil {
			return err
		}
		d.State = StateExecuting
		return appendAudit(ctx, tx, now, "executor", "deletion.execute", map[string]any{
			"deletion_id": id, "digest": hex.EncodeToString(d.Digest),
		})
	})
	if err != nil {
		return false, dbErr("claim deletion", err)
	}
	if refusal != nil {
		s.log.ErrorContext(ctx, "ALERT: refused to execute a deletion whose approvals do not verify; "+
			"its rows may have been edited in the database", "deletion_id", id, "err", refusal)
		if d, err := s.GetDeletion(ctx, id); err == nil {
			s.notify(ctx, "deletion.refused", "executor", d)
		}
		return false, nil
	}
	if d.State != StateExecuting {
		return false, nil
	}
	s.log.WarnContext(ctx, "executing deletion", "deletion_id", id, "kind", d.Kind)

	t, err := parseTargets(d.Targets)
	if err != nil {
		return false, err
	}
	rep := ExecReport{Skipped: map[string]int64{}}
	if err := s.executeTargets(ctx, id, now, t, &rep); err != nil {
		return false, err
	}
	if err := s.removeContent(ctx, id, now); err != nil {
		return false, err
	}
	// The report is recounted from the outcomes, so a rerun after a crash
	// reports the whole execution, not only its own part.
	if err := s.countOutcomes(ctx, id, &rep); err != nil {
		return false, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'executed', executed_at = $2, report = $3
			WHERE id = $1`, id, now, rep); err != nil {
			return err
		}
		return appendAudit(ctx, tx, now, "executor", "deletion.executed", map[string]any{
			"deletion_id": id, "deleted": rep.Deleted, "skipped": rep.Skipped, "bytes_freed": rep.BytesFreed,
			"snapshots_deleted": rep.Snapshots, "hold_released": rep.HoldReleased,
		})
	})
	if err != nil {
		return false, dbErr("finish deletion", err)
	}
	d, _ = s.GetDeletion(ctx, id)
	s.log.WarnContext(ctx, "deletion executed", "deletion_id", id, "deleted", rep.Deleted,
		"skipped", rep.Skipped, "bytes_freed", rep.BytesFreed)
	s.notify(ctx, "deletion.executed", "executor", d)
	return true, nil
}

func (s *Store) executeTargets(ctx context.Context, id int64, now time.Time, t DeletionTargets, rep *ExecReport) error {
	switch t.Kind {
	case DeleteAdminSet:
		return s.applyAdminChange(ctx, id, now, t.Change, rep)
	case DeleteHoldRelease:
		return s.releaseHold(ctx, id, now, t.Hold)
	case DeleteChunks:
		for i := 0; i < len(t.Chunks); i += executeBatch {
			if err := s.deleteChunks(ctx, id, now, t.Chunks[i:min(i+executeBatch, len(t.Chunks))]); err != nil {
				return err
			}
		}
		return nil
	case DeleteSnapshots:
		if err := s.deleteSnapshots(ctx, id, now, t.Snapshots); err != nil {
			return err
		}
		return s.deleteChunksOf(ctx, id, now, `SELECT DISTINCT sc.hash FROM snapshot_chunks sc
			WHERE sc.snapshot_id = ANY(@ids) AND sc.hash > @after ORDER BY sc.hash LIMIT @n`, pgx.NamedArgs{"ids": t.Snapshots})
	case DeleteExpired:
		rows, _ := s.pool.Query(ctx, `SELECT id FROM snapshots WHERE retain_until < @before AND deleted_at IS NULL
			AND (@source = '' OR source = @source) ORDER BY id`, pgx.NamedArgs{"before": t.Before, "source": t.Source})
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return dbErr("list expired snapshots", err)
		}
		for i := 0; i < len(ids); i += executeBatch {
			if err := s.deleteSnapshots(ctx, id, now, ids[i:min(i+executeBatch, len(ids))]); err != nil {
				return err
			}
		}
		if t.Source == "" {
			return s.deleteChunksOf(ctx, id, now, `SELECT hash FROM chunks
				WHERE retain_until < @before AND hash > @after ORDER BY hash LIMIT @n`, pgx.NamedArgs{"before": t.Before})
		}
		return s.deleteChunksOf(ctx, id, now, `SELECT DISTINCT sc.hash FROM snapshot_chunks sc
			JOIN snapshots s ON s.id = sc.snapshot_id
			WHERE s.source = @source AND s.retain_until < @before AND sc.hash > @after ORDER BY sc.hash LIMIT @n`,
			pgx.NamedArgs{"before": t.Before, "source": t.Source})
	}
	return fmt.Errorf("store: unknown deletion kind %q", t.Kind)
}

// deleteChunksOf deletes, batch by batch, the chunks a keyset query lists
// (it takes @after and @n).
func (s *Store) deleteChunksOf(ctx context.Context, id int64, now time.Time, query string, args pgx.NamedArgs) error {
	after := []byte{}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		args["after"], args["n"] = after, executeBatch
		rows, _ := s.pool.Query(ctx, query, args)
		keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return dbErr("list chunks to delete", err)
		}
		if len(keys) == 0 {
			return nil
		}
		hs := make([]chunk.Hash, len(keys))
		for i, k := range keys {
			hs[i], _ = chunk.FromBytes(k)
		}
		if err := s.deleteChunks(ctx, id, now, hs); err != nil {
			return err
		}
		after = keys[len(keys)-1]
	}
}

const classifyChunksSQL = `
SELECT k.hash, CASE
    WHEN c.hash IS NULL AND EXISTS (SELECT FROM chunk_tombstones t WHERE t.hash = k.hash) THEN 'already_deleted'
    WHEN c.hash IS NULL THEN 'not_found'
    WHEN c.retain_until > @now THEN 'retained'
    WHEN chunk_held(c.hash) THEN 'held'
    WHEN EXISTS (SELECT FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
                 WHERE sc.hash = c.hash AND s.deleted_at IS NULL AND s.retain_until > @now) THEN 'in_retained_snapshot'
    ELSE '' END AS skip
FROM unnest(@hashes::bytea[]) AS k(hash) LEFT JOIN chunks c ON c.hash = k.hash`

type classified struct {
	Hash []byte `db:"hash"`
	Skip string `db:"skip"`
}

// deleteChunks deletes one batch of chunks in one transaction: those past
// retention, unheld and in no retained snapshot lose their rows (the
// trigger writes their tombstones); every object gets its outcome.
func (s *Store) deleteChunks(ctx context.Context, id int64, now time.Time, hs []chunk.Hash) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, classifyChunksSQL, pgx.NamedArgs{"hashes": hashKeys(hs), "now": now})
		cs, err := pgx.CollectRows(rows, pgx.RowToStructByName[classified])
		if err != nil {
			return err
		}
		var ok [][]byte
		var objs, outcomes, reasons []string
		for _, c := range cs {
			if c.Skip == "" {
				ok = append(ok, c.Hash)
				continue
			}
			objs = append(objs, hex.EncodeToString(c.Hash))
			outcomes = append(outcomes, "skipped")
			reasons = append(reasons, c.Skip)
		}
		if len(ok) > 0 {
			rows, _ := tx.Query(ctx, `DELETE FROM chunks WHERE hash = ANY($1) AND retain_until <= $2 RETURNING hash`, ok, now)
			deleted, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
			if err != nil {
				return err
			}
			for _, h := range deleted {
				objs = append(objs, hex.EncodeToString(h))
				outcomes = append(outcomes, "deleted")
				reasons = append(reasons, "")
			}
			if err := logRemovals(ctx, tx, id, now, deleted); err != nil {
				return err
			}
		}
		// A rerun after a crash meets the outcomes it already wrote; the
		// first outcome stands.
		_, err = tx.Exec(ctx, `INSERT INTO deletion_outcomes (deletion_id, object_kind, object, outcome, reason, at)
			SELECT $1, 'chunk', o, r, why, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS u(o, r, why)
			ON CONFLICT DO NOTHING`, id, objs, outcomes, reasons, now)
		return err
	})
	return dbErr("delete chunks", err)
}

// deleteSnapshots tombstones the deletable snapshots among ids.
func (s *Store) deleteSnapshots(ctx context.Context, id int64, now time.Time, ids []int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `SELECT k.id::text AS object, CASE
				WHEN s.id IS NULL THEN 'not_found'
				WHEN s.deleted_at IS NOT NULL THEN 'already_deleted'
				WHEN s.retain_until > @now THEN 'retained'
				WHEN snapshot_held(s.id, s.source) THEN 'held'
				ELSE '' END AS skip
			FROM unnest(@ids::bigint[]) AS k(id) LEFT JOIN snapshots s ON s.id = k.id`,
			pgx.NamedArgs{"ids": ids, "now": now})
		type row struct {
			Object string `db:"object"`
			Skip   string `db:"skip"`
		}
		cs, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
		if err != nil {
			return err
		}
		var ok []int64
		var objs, outcomes, reasons []string
		for _, c := range cs {
			if c.Skip == "" {
				n, _ := strconv.ParseInt(c.Object, 10, 64)
				ok = append(ok, n)
				objs, outcomes, reasons = append(objs, c.Object), append(outcomes, "deleted"), append(reasons, "")
				continue
			}
			objs, outcomes, reasons = append(objs, c.Object), append(outcomes, "skipped"), append(reasons, c.Skip)
		}
		if len(ok) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE snapshots SET deleted_at = $2, deletion_id = $3 WHERE id = ANY($1)`, ok, now, id); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO deletion_outcomes (deletion_id, object_kind, object, outcome, reason, at)
			SELECT $1, 'snapshot', o, r, why, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS u(o, r, why)
			ON CONFLICT DO NOTHING`, id, objs, outcomes, reasons, now)
		return err
	})
	return dbErr("delete snapshots", err)
}

func (s *Store) releaseHold(ctx context.Context, id int64, now time.Time, hold int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE holds SET released_at = $2, released_by = $3 WHERE id = $1 AND released_at IS NULL`,
			hold, now, "deletion:"+strconv.FormatInt(id, 10))
		if err != nil {
			return err
		}
		outcome, reason := "deleted", ""
		if tag.RowsAffected() == 0 {
			outcome, reason = "skipped", SkipAlreadyDeleted
		}
		_, err = tx.Exec(ctx, `INSERT INTO deletion_outcomes (deletion_id, object_kind, object, outcome, reason, at)
			VALUES ($1, 'hold', $2, $3, $4, $5) ON CONFLICT DO NOTHING`, id, strconv.FormatInt(hold, 10), outcome, reason, now)
		return err
	})
	return dbErr("release hold", err)
}

type tombstone struct {
	Hash       []byte    `db:"hash"`
	Size       int64     `db:"size"`
	PackID     *int64    `db:"pack_id"`
	PackOffset *int64    `db:"pack_offset"`
	DeletedAt  time.Time `db:"deleted_at"`
}

// removeContent removes from disk the content of the chunks request id
// deleted, after their rows are gone: a crash in between leaves content
// with a tombstone, which a rerun (or the start-up reconcile) removes.
// A file is left alone if the same chunk was uploaded again meanwhile (it
// is the new upload's now); a packed record is at a location no new upload
// can reuse, so its space is freed regardless.
func (s *Store) removeContent(ctx context.Context, id int64, now time.Time) error {
	for {
		rows, _ := s.pool.Query(ctx, `SELECT hash, size, pack_id, pack_offset, deleted_at FROM chunk_tombstones
			WHERE deletion_id = $1 AND content_removed_at IS NULL LIMIT $2`, id, executeBatch)
		ts, err := pgx.CollectRows(rows, pgx.RowToStructByName[tombstone])
		if err != nil {
			return dbErr("list tombstones", err)
		}
		if len(ts) == 0 {
			return nil
		}
		for _, t := range ts {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := s.removeTombstoned(ctx, t); err != nil {
				return err
			}
			if _, err := s.pool.Exec(ctx, `UPDATE chunk_tombstones SET content_removed_at = $3
				WHERE hash = $1 AND deleted_at = $2`, t.Hash, t.DeletedAt, now); err != nil {
				return dbErr("mark content removed", err)
			}
		}
	}
}

func (s *Store) removeTombstoned(ctx context.Context, t tombstone) error {
	h, _ := chunk.FromBytes(t.Hash)
	if t.PackID != nil {
		if s.packs == nil {
			return fmt.Errorf("store: chunk %s is packed but packs are not configured", h)
		}
		err := s.packs.Punch(pack.Location{Pack: *t.PackID, Offset: *t.PackOffset}, t.Size)
		if errors.Is(err, pack.ErrNotFound) {
			return nil
		}
		return err
	}
	mu := s.hashLock(h)
	mu.Lock()
	defer mu.Unlock()
	if c, err := s.Stat(ctx, h); err == nil && !c.packed() {
		return nil // uploaded again: the file is the new chunk's
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return s.blobs.Remove(ctx, h)
}

func (s *Store) countOutcomes(ctx context.Context, id int64, rep *ExecReport) error {
	rows, _ := s.pool.Query(ctx, `SELECT object_kind, outcome, reason, count(*) FROM deletion_outcomes
		WHERE deletion_id = $1 GROUP BY 1, 2, 3`, id)
	var kind, outcome, reason string
	var n int64
	_, err := pgx.ForEachRow(rows, []any{&kind, &outcome, &reason, &n}, func() error {
		switch {
		case outcome == "skipped":
			rep.Skipped[kind+":"+reason] += n
		case kind == "chunk":
			rep.Deleted += n
		case kind == "snapshot":
			rep.Snapshots += n
		case kind == "hold":
			rep.HoldReleased = true
		}
		return nil
	})
	if err != nil {
		return dbErr("count outcomes", err)
	}
	err = s.pool.QueryRow(ctx, "SELECT coalesce(sum(size), 0) FROM chunk_tombstones WHERE deletion_id = $1", id).Scan(&rep.BytesFreed)
	return dbErr("count bytes freed", err)
}
