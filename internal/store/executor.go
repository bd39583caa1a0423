package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
)

// Skip reasons recorded for objects an execution did not delete.
const (
	SkipRetained           = "retained"
	SkipHeld               = "held"
	SkipInRetainedSnapshot = "in_retained_snapshot"
	SkipNotFound           = "not_found"
	SkipAlreadyDeleted     = "already_deleted"
	// SkipJournal prefixes the journal's reason (SkipHeld, ...) for an
	// object the index would have deleted but the data directory's
	// journal keeps: an integrity alarm.
	SkipJournal = "journal_"
)

// deletionLock is the first key of the session advisory lock an executor
// holds on a request while executing it: two executors never run one
// request at once.
const deletionLock = 0x64656c // "del"

const executeBatch = 1000

// RunReport tells what RunDue did.
type RunReport struct {
	Expired  []int64 // requests that ran out of time for their quorum
	Executed []int64 // requests executed to completion (an expiry authorisation: put in force)
	// Expiry are the routine expiry runs started, and refused, under the
	// expiry authorisations in force.
	Expiry []ExpiryRun
}

// RunDue expires requests whose quorum did not come in time and executes
// every scheduled request whose time has come, and any execution a crash
// interrupted. It is what the server's executor loop and `vault admin
// execute-due` call; it is safe to run concurrently and to rerun.
//
// The index only proposes: a request executes only if the data
// directory's journal, replayed from the pinned genesis admin set, shows
// it signed, approved and past its delay on the vault's own clock (see
// executor_journal.go). Without a journal or a pinned genesis nothing
// executes.
func (s *Store) RunDue(ctx context.Context) (RunReport, error) {
	s.metrics.executorRuns.Inc()
	rep, err := s.runDue(ctx)
	if err != nil && ctx.Err() == nil {
		s.metrics.executorFailures.Inc()
	}
	return rep, err
}

func (s *Store) runDue(ctx context.Context) (RunReport, error) {
	var rep RunReport
	now := s.clk.Now()
	expired, err := s.expireStale(ctx, now)
	rep.Expired = expired
	if err != nil {
		return rep, err
	}
	// An expiry authorisation in force stays executing: it is not an
	// interrupted execution (its runs are, when interrupted).
	rows, _ := s.pool.Query(ctx, `SELECT id FROM deletion_requests
		WHERE ((state = 'scheduled' AND executes_at <= $1) OR state = 'executing')
		  AND NOT (kind = 'expiry_authorisation' AND state = 'executing')
		ORDER BY executes_at, id`, now)
	due, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return rep, dbErr("list due deletions", err)
	}
	var inForce bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM deletion_requests
		WHERE kind = 'expiry_authorisation' AND state = 'executing')`).Scan(&inForce); err != nil {
		return rep, dbErr("list expiry authorisations", err)
	}
	if len(due) == 0 && !inForce {
		return rep, nil
	}
	if s.opts.Journal == nil || s.opts.Genesis == nil {
		s.exec.noJournal.Do(func() {
			s.log.ErrorContext(ctx, "deletions are due, but without the data directory's journal and pinned genesis admin set "+
				"the executor executes none: the database alone never causes content to be removed", "due", due)
		})
		return rep, nil
	}
	v := s.newJournalView()
	for _, id := range due {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		done, err := s.execute(ctx, id, v)
		if err != nil {
			return rep, fmt.Errorf("store: execute deletion %d: %w", id, err)
		}
		if done {
			rep.Executed = append(rep.Executed, id)
		}
	}
	if inForce {
		rep.Expiry, err = s.runExpiries(ctx, v, now)
	}
	return rep, err
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
			if err := s.appendAudit(ctx, tx, now, "executor", "deletion.expire", map[string]any{"deletion_id": id}); err != nil {
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
// executor holds it, it is no longer due, or the journal does not let it
// execute (yet).
func (s *Store) execute(ctx context.Context, id int64, v *journalView) (bool, error) {
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
	if err := v.catchUp(); err != nil {
		return false, fmt.Errorf("store: read the journal: %w", err)
	}
	// Claim: scheduled → executing, or resume an interrupted execution.
	// Either way every signature is verified again first, from the stored
	// rows and from the journal: a state column edited in the database
	// proves nothing, and neither do rows the journal does not hold.
	var d Deletion
	var refusal error
	var wait *audit.Verdict
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
		switch {
		case d.AuthorisationID != nil:
			refusal = s.verifyRun(ctx, tx, v, d)
		default:
			if refusal = s.verifyForExecution(ctx, tx, d); refusal == nil {
				refusal, wait = s.verifyFromJournal(v, d, now)
			}
		}
		if wait != nil {
			return nil
		}
		if refusal != nil {
			if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'refused', refused_at = $2, refusal = $3
				WHERE id = $1`, id, now, refusal.Error()); err != nil {
				return err
			}
			d.State = StateRefused
			return s.appendAudit(ctx, tx, now, "executor", "deletion.refused", map[string]any{
				"deletion_id": id, "reason": refusal.Error(),
			})
		}
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		if d.State != StateExecuting {
			if _, err := tx.Exec(ctx, "UPDATE deletion_requests SET state = 'executing' WHERE id = $1", id); err != nil {
				return err
			}
			d.State = StateExecuting
		}
		if req, _ := v.r.Request(id); req.Executing {
			return nil // resumed: the journal has its deletion.execute
		}
		return s.appendAudit(ctx, tx, now, "executor", "deletion.execute", map[string]any{
			"deletion_id": id, "digest": hex.EncodeToString(d.Digest),
		})
	})
	if err != nil {
		return false, dbErr("claim deletion", err)
	}
	if wait != nil {
		s.reportWait(ctx, d, wait)
		return false, nil
	}
	if refusal != nil {
		s.alarm(ctx, "refused to execute a deletion whose request, approvals or admin set do not verify "+
			"against the stored signatures and the data directory's journal; its rows may have been edited in the database",
			"deletion_id", id, "err", refusal)
		if d, err := s.GetDeletion(ctx, id); err == nil {
			s.notify(ctx, "deletion.refused", "executor", d)
		}
		return false, nil
	}
	if d.State != StateExecuting {
		return false, nil
	}
	// The journal now holds the deletion.execute entry; the replay must
	// have found it valid.
	if err := v.catchUp(); err != nil {
		return false, fmt.Errorf("store: read the journal: %w", err)
	}
	if req, ok := v.r.Request(id); !ok || !req.Executing {
		s.alarm(ctx, "the journal does not show the deletion's execution as valid; it goes no further", "deletion_id", id,
			"verdict", v.r.MayExecute(id, now).Reason)
		return false, fmt.Errorf("store: deletion %d: %w: the journal does not show its execution as valid", id, ErrIntegrity)
	}
	if d.Kind == DeleteExpiryAuthorisation {
		// Executed, an authorisation is in force: its runs do the work.
		s.log.WarnContext(ctx, "expiry authorisation in force: the executor now removes what expires, on its terms; "+
			"any admin can suspend it", "deletion_id", id)
		d, _ = s.GetDeletion(ctx, id)
		s.notify(ctx, "expiry.in_force", "executor", d)
		return true, nil
	}
	s.log.WarnContext(ctx, "executing deletion", "deletion_id", id, "kind", d.Kind)

	t, err := targetsOf(v, id)
	if err != nil {
		return false, err
	}
	jc := &journalCheck{v: v}
	if d.AuthorisationID != nil {
		jc.auth = *d.AuthorisationID
	}
	if err := s.refresh(ctx, jc, id, now); err != nil {
		if errors.Is(err, ErrIntegrity) {
			s.alarm(ctx, "cannot read what the journal's snapshots reference; the deletion goes no further", "deletion_id", id, "err", err)
		}
		return false, err
	}
	rep := ExecReport{Skipped: map[string]int64{}}
	if err := s.executeTargets(ctx, id, now, t, &rep, jc); errors.Is(err, errRunSuspended) {
		rep.Stopped = "suspended"
		s.log.WarnContext(ctx, "expiry run stopped: its authorisation was suspended", "deletion_id", id, "authorisation_id", jc.auth)
	} else if err != nil {
		return false, err
	}
	freed, err := s.removeContent(ctx, v, id, now)
	if err != nil {
		return false, err
	}
	// The report is recounted from the outcomes, so a rerun after a crash
	// reports the whole execution, not only its own part.
	if err := s.countOutcomes(ctx, id, &rep); err != nil {
		return false, err
	}
	rep.BytesFreed = freed
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'executed', executed_at = $2, report = $3
			WHERE id = $1`, id, now, rep); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, now, "executor", "deletion.executed", map[string]any{
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

// reportWait reports, once per deletion and reason, a request the index
// says is due that the journal does not let execute yet.
func (s *Store) reportWait(ctx context.Context, d Deletion, wait *audit.Verdict) {
	if wait.At.IsZero() {
		if s.exec.once(d.ID, wait.Reason) {
			s.alarm(ctx, "the data directory's journal has findings: no deletion executes until they are resolved",
				"deletion_id", d.ID, "reason", wait.Reason)
		}
		return
	}
	if s.exec.once(d.ID, "wait "+wait.At.String()) {
		s.metrics.integrityAlarms.Inc()
		s.log.WarnContext(ctx, "the index says a deletion is due that the journal says is not: it waits for the journal's time "+
			"(its executes_at may have been moved in the database)", "deletion_id", d.ID,
			"index_executes_at", d.ExecutesAt, "journal_executes_at", wait.At, "reason", wait.Reason)
	}
}

// executeTargets deletes what t names: t comes from the journal's request
// entry, and each object goes only if the index and the journal (jc) both
// say it may.
func (s *Store) executeTargets(ctx context.Context, id int64, now time.Time, t DeletionTargets, rep *ExecReport, jc *journalCheck) error {
	switch t.Kind {
	case DeleteAdminSet:
		return s.applyAdminChange(ctx, id, now, t.Change, rep, jc.v)
	case DeletePolicy:
		return s.applyPolicyChange(ctx, id, now, t.Policy, rep)
	case DeleteExpiryAuthorisation:
		// In force once executed (execute stops before the targets): its
		// runs, requests of kind expired, do the work.
		return nil
	case DeleteHoldRelease:
		return s.releaseHold(ctx, id, now, t.Hold)
	case DeleteChunks:
		for i := 0; i < len(t.Chunks); i += executeBatch {
			if err := s.deleteChunks(ctx, id, now, t.Chunks[i:min(i+executeBatch, len(t.Chunks))], jc); err != nil {
				return err
			}
		}
		return nil
	case DeleteSnapshots:
		if err := s.deleteSnapshots(ctx, id, now, t.Snapshots, jc); err != nil {
			return err
		}
		return s.deleteChunksOf(ctx, id, now, jc, `SELECT DISTINCT sc.hash FROM snapshot_chunks sc
			WHERE sc.snapshot_id = ANY(@ids) AND sc.hash > @after ORDER BY sc.hash LIMIT @n`, pgx.NamedArgs{"ids": t.Snapshots})
	case DeleteExpired:
		rows, _ := s.pool.Query(ctx, `SELECT id FROM snapshots WHERE retain_until < @before AND deleted_at IS NULL
			AND (@source = '' OR source = @source) ORDER BY id`, pgx.NamedArgs{"before": t.Before, "source": t.Source})
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return dbErr("list expired snapshots", err)
		}
		for i := 0; i < len(ids); i += executeBatch {
			if err := s.deleteSnapshots(ctx, id, now, ids[i:min(i+executeBatch, len(ids))], jc); err != nil {
				return err
			}
		}
		if t.Source == "" {
			return s.deleteChunksOf(ctx, id, now, jc, `SELECT hash FROM chunks
				WHERE retain_until < @before AND hash > @after ORDER BY hash LIMIT @n`, pgx.NamedArgs{"before": t.Before})
		}
		return s.deleteChunksOf(ctx, id, now, jc, `SELECT DISTINCT sc.hash FROM snapshot_chunks sc
			JOIN snapshots s ON s.id = sc.snapshot_id
			WHERE s.source = @source AND s.retain_until < @before AND sc.hash > @after ORDER BY sc.hash LIMIT @n`,
			pgx.NamedArgs{"before": t.Before, "source": t.Source})
	}
	return fmt.Errorf("store: unknown deletion kind %q", t.Kind)
}

// deleteChunksOf deletes, batch by batch, the chunks a keyset query lists
// (it takes @after and @n).
func (s *Store) deleteChunksOf(ctx context.Context, id int64, now time.Time, jc *journalCheck, query string, args pgx.NamedArgs) error {
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
		if err := s.deleteChunks(ctx, id, now, hs, jc); err != nil {
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

// deleteChunks deletes one batch of chunks in one transaction: those that
// the index and the journal both say are past retention, unheld and in no
// retained snapshot lose their rows (the trigger writes their tombstones;
// the chunk.remove entries are the journal's record of what content the
// execution may remove); every object gets its outcome.
func (s *Store) deleteChunks(ctx context.Context, id int64, now time.Time, hs []chunk.Hash, jc *journalCheck) error {
	if s.beforeDeleteBatch != nil {
		s.beforeDeleteBatch(id)
	}
	if err := s.refresh(ctx, jc, id, now); err != nil {
		return err
	}
	var disagree []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		disagree = disagree[:0]
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, classifyChunksSQL, pgx.NamedArgs{"hashes": hashKeys(hs), "now": now})
		cs, err := pgx.CollectRows(rows, pgx.RowToStructByName[classified])
		if err != nil {
			return err
		}
		// An expiry run stops once its authorisation is suspended (the lock
		// orders this batch and the suspension), and removes no more than
		// the journal's ceiling allows.
		left := budget{chunks: -1, bytes: -1}
		if jc.auth != 0 {
			var state string
			if err := tx.QueryRow(ctx, "SELECT state FROM deletion_requests WHERE id = $1 FOR SHARE", jc.auth).Scan(&state); err != nil {
				return err
			}
			if state != StateExecuting {
				return errRunSuspended
			}
			left.chunks, left.bytes, _, _ = jc.v.r.RunBudget(id)
		}
		var ok [][]byte
		var objs, outcomes, reasons []string
		for _, c := range cs {
			h, _ := chunk.FromBytes(c.Hash)
			skip := c.Skip
			switch js := jc.v.r.ChunkSkip(id, h, now, jc.refs); {
			case skip != "" || js == "":
			case js == audit.SkipCeiling || js == audit.SkipSuspended:
				skip = js // the run's limits, not a disagreement
			default:
				skip = SkipJournal + js
				disagree = append(disagree, h.String()+" "+js)
			}
			if skip == "" && !left.take(jc.v.r.Chunk(h).Size) {
				skip = audit.SkipCeiling
			}
			if skip == "" {
				ok = append(ok, c.Hash)
				continue
			}
			objs = append(objs, hex.EncodeToString(c.Hash))
			outcomes = append(outcomes, "skipped")
			reasons = append(reasons, skip)
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
			if err := s.logRemovals(ctx, tx, id, now, deleted); err != nil {
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
	if err == nil && len(disagree) > 0 {
		s.alarm(ctx, "the index would delete chunks that the data directory's journal keeps; they are kept",
			"deletion_id", id, "count", len(disagree), "first", disagree[:min(len(disagree), 10)])
	}
	if errors.Is(err, errRunSuspended) {
		return err
	}
	return dbErr("delete chunks", err)
}

// deleteSnapshots tombstones the snapshots among ids that the index and
// the journal both say are deletable.
func (s *Store) deleteSnapshots(ctx context.Context, id int64, now time.Time, ids []int64, jc *journalCheck) error {
	if err := s.refresh(ctx, jc, id, now); err != nil {
		return err
	}
	var disagree []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		disagree = disagree[:0]
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
			n, _ := strconv.ParseInt(c.Object, 10, 64)
			if js := jc.v.r.SnapshotSkip(id, n, now); c.Skip == "" && js != "" {
				c.Skip = SkipJournal + js
				disagree = append(disagree, c.Object+" "+js)
			}
			if c.Skip == "" {
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
	if err == nil && len(disagree) > 0 {
		s.alarm(ctx, "the index would delete snapshots that the data directory's journal keeps; they are kept",
			"deletion_id", id, "count", len(disagree), "first", disagree[:min(len(disagree), 10)])
	}
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
	return dbErr("count outcomes", err)
}
