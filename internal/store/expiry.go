package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/audit"
)

// Routine expiry (issue 15, part 3). Without an expiry authorisation in
// force nothing expires by itself. An authorisation is a governed request
// (kind expiry_authorisation: the governance quorum and delay) whose
// signed targets text names its terms: how often it may run and its
// per-run ceilings. Once the executor executed it, it is in force (state
// executing) until any one admin suspends it with a signed cancel; it is
// never executed to completion. On each interval the executor makes a
// run: a request of kind expired, for the whole vault and before the
// run's time, that names the authorisation (authorisation_id) and runs
// through the executor's one path, with the same checks, tombstones,
// outcomes, audit entries and report as a manual deletion. Before each
// run the executor verifies the authorisation again from its stored
// signatures and from the data directory's journal (a row forged in the
// database authorises nothing), and measures the run's candidates against
// the ceilings: above them it removes nothing, records the run as
// refused, and alarms.

// ExpiryTerms are what an expiry authorisation allows: a run at most
// every Interval, each removing at most MaxPercent of the stored bytes and
// at most MaxChunks chunks (0: that ceiling is not set; at least one is).
type ExpiryTerms struct {
	Interval   Duration `json:"interval"`
	MaxPercent int      `json:"max_percent,omitempty"`
	MaxChunks  int64    `json:"max_chunks,omitempty"`
}

func (e ExpiryTerms) audit() audit.ExpiryTerms {
	return audit.ExpiryTerms{Interval: time.Duration(e.Interval), MaxPercent: e.MaxPercent, MaxChunks: e.MaxChunks}
}

func expiryTermsOf(e audit.ExpiryTerms) *ExpiryTerms {
	return &ExpiryTerms{Interval: Duration(e.Interval), MaxPercent: e.MaxPercent, MaxChunks: e.MaxChunks}
}

// RunCeiling is what an expiry run measured against its authorisation's
// ceilings before it started: the chunks past retention, unheld and in no
// retained snapshot, and the bytes stored.
type RunCeiling struct {
	Candidates     int64 `json:"candidates"`
	CandidateBytes int64 `json:"candidate_bytes"`
	StoredBytes    int64 `json:"stored_bytes"`
	MaxChunks      int64 `json:"max_chunks,omitempty"`
	MaxBytes       int64 `json:"max_bytes,omitempty"`
}

// over reports whether the candidates exceed a ceiling that is set.
func (c RunCeiling) over(t ExpiryTerms) bool {
	return (t.MaxChunks > 0 && c.Candidates > c.MaxChunks) || (t.MaxPercent > 0 && c.CandidateBytes > c.MaxBytes)
}

// inForce reports whether d is an expiry authorisation in force.
func (d Deletion) inForce() bool {
	return d.Kind == DeleteExpiryAuthorisation && d.State == StateExecuting
}

// expiryLock is the first key of the advisory lock the executor holds on
// an authorisation while it starts a run: one run start at a time.
const expiryLock = 0x657870 // "exp"

// errRunSuspended stops an expiry run whose authorisation was suspended
// while it ran: what it did so far stands, and it finishes.
var errRunSuspended = errors.New("store: the expiry authorisation was suspended")

// The chunks a run would remove, by the index, at @now: past retention,
// unheld (directly or through a snapshot or source) and in no snapshot
// retained past @now. The executor checks each again, and the journal
// too, when it removes it.
const expiryCandidatesSQL = `
SELECT count(*), coalesce(sum(c.size), 0)::bigint FROM chunks c
WHERE c.retain_until < @now AND NOT chunk_held(c.hash)
  AND NOT EXISTS (SELECT FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
                  WHERE sc.hash = c.hash AND s.deleted_at IS NULL AND s.retain_until > @now)`

// ExpiryRun is what one run of an authorisation started, or why not.
type ExpiryRun struct {
	Authorisation int64
	// Run is the run's request (0: no run was due).
	Run     int64
	Refused bool // above the ceiling: it removed nothing
}

// runExpiries starts the due run of every expiry authorisation in force
// and executes it.
func (s *Store) runExpiries(ctx context.Context, v *journalView, now time.Time) ([]ExpiryRun, error) {
	rows, _ := s.pool.Query(ctx, `SELECT id FROM deletion_requests
		WHERE kind = 'expiry_authorisation' AND state = 'executing' ORDER BY id`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, dbErr("list expiry authorisations", err)
	}
	var out []ExpiryRun
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		run, err := s.startRun(ctx, v, id)
		if err != nil {
			return out, fmt.Errorf("store: expiry authorisation %d: %w", id, err)
		}
		if run.Run == 0 {
			continue
		}
		out = append(out, run)
		if run.Refused {
			continue
		}
		if _, err := s.execute(ctx, run.Run, v); err != nil {
			return out, fmt.Errorf("store: expiry run %d: %w", run.Run, err)
		}
	}
	return out, nil
}

// startRun starts authorisation id's run if one is due: it verifies the
// authorisation, measures the candidates against the ceilings, and makes
// the run's request, executing or refused, with its audit entry.
func (s *Store) startRun(ctx context.Context, v *journalView, id int64) (ExpiryRun, error) {
	run := ExpiryRun{Authorisation: id}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return run, dbErr("acquire", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", expiryLock, int32(id)).Scan(&locked); err != nil {
		return run, dbErr("lock expiry authorisation", err)
	}
	if !locked {
		return run, nil
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1, $2)", expiryLock, int32(id))

	now := s.clk.Now()
	if err := s.checkClocks(ctx, now); err != nil {
		return run, err
	}
	if err := v.catchUp(); err != nil {
		return run, fmt.Errorf("store: read the journal: %w", err)
	}
	var auth, r Deletion
	var refusal error
	var wait *audit.Verdict
	var ceiling RunCeiling
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if auth, err = lockDeletion(ctx, tx, id); err != nil {
			return err
		}
		if !auth.inForce() {
			return nil
		}
		// Every run, the authorisation's signatures and quorum again, from
		// the stored rows and from the journal: a row forged or edited in
		// the database authorises nothing.
		if refusal = s.verifyForExecution(ctx, tx, auth); refusal == nil {
			if refusal, wait = s.verifyFromJournal(v, auth, now); refusal == nil && wait == nil {
				switch vd := v.r.MayRunExpiry(id, now); {
				case vd.Never:
					refusal = fmt.Errorf("by the data directory's journal: %s", vd.Reason)
				case !vd.Allowed:
					wait = &vd
				}
			}
		}
		if refusal != nil {
			if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'refused', refused_at = $2, refusal = $3
				WHERE id = $1`, id, now, refusal.Error()); err != nil {
				return err
			}
			return s.appendAudit(ctx, tx, now, "executor", "deletion.refused", map[string]any{
				"deletion_id": id, "reason": refusal.Error(),
			})
		}
		if wait != nil {
			return nil
		}
		t, err := targetsOf(v, id)
		if err != nil {
			return err
		}
		terms := *t.Expiry
		var last *time.Time
		if err := tx.QueryRow(ctx, `SELECT max(requested_at) FROM deletion_requests WHERE authorisation_id = $1`, id).Scan(&last); err != nil {
			return err
		}
		if last != nil && now.Before(last.Add(time.Duration(terms.Interval))) {
			return nil // not due
		}
		if err := tx.QueryRow(ctx, "SELECT coalesce(sum(size), 0)::bigint FROM chunks").Scan(&ceiling.StoredBytes); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, expiryCandidatesSQL, pgx.NamedArgs{"now": now}).Scan(&ceiling.Candidates, &ceiling.CandidateBytes); err != nil {
			return err
		}
		ceiling.MaxChunks = terms.MaxChunks
		if terms.MaxPercent > 0 {
			ceiling.MaxBytes = ceiling.StoredBytes * int64(terms.MaxPercent) / 100
		}
		if r, err = s.insertRun(ctx, tx, auth, now); err != nil {
			return err
		}
		run.Run = r.ID
		details := map[string]any{
			"deletion_id": r.ID, "authorisation_id": id, "digest": hex.EncodeToString(r.Digest), "targets": r.Targets,
			"candidates": ceiling.Candidates, "candidate_bytes": ceiling.CandidateBytes, "stored_bytes": ceiling.StoredBytes,
			"max_chunks": ceiling.MaxChunks, "max_bytes": ceiling.MaxBytes,
			// The rest of the run's row, so that `vault reindex` rebuilds it.
			"reason": r.Reason, "approvals_required": r.ApprovalsRequired, "delay": time.Duration(r.Delay).String(),
			"admin_set_version": r.AdminSetVersion, "expires_at": r.ExpiresAt.UTC(),
		}
		if ceiling.over(terms) {
			// Refuse the whole run: more expired than the admins expected
			// is a reason to look, not to delete up to a limit.
			run.Refused = true
			var limits []string
			if terms.MaxChunks > 0 {
				limits = append(limits, fmt.Sprintf("%d chunks", terms.MaxChunks))
			}
			if terms.MaxPercent > 0 {
				limits = append(limits, fmt.Sprintf("%d%% of %d bytes = %d bytes", terms.MaxPercent, ceiling.StoredBytes, ceiling.MaxBytes))
			}
			reason := fmt.Sprintf("%d chunks (%d bytes) expired, above the ceiling (%s)",
				ceiling.Candidates, ceiling.CandidateBytes, strings.Join(limits, ", "))
			if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'refused', refused_at = $2, refusal = $3, report = $4
				WHERE id = $1`, r.ID, now, reason, ExecReport{Skipped: map[string]int64{}, Ceiling: &ceiling}); err != nil {
				return err
			}
			details["refusal"] = reason
			return s.appendAudit(ctx, tx, now, "executor", audit.ActionExpiryRefused, details)
		}
		if err := setExecutor(ctx, tx, r.ID, now); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, now, "executor", audit.ActionExpiryRun, details)
	})
	if err != nil {
		return ExpiryRun{Authorisation: id}, dbErr("start expiry run", err)
	}
	switch {
	case refusal != nil:
		s.alarm(ctx, "refused an expiry authorisation whose request, approvals or admin set do not verify "+
			"against the stored signatures and the data directory's journal; no run is made under it",
			"deletion_id", id, "err", refusal)
		if d, err := s.GetDeletion(ctx, id); err == nil {
			s.notify(ctx, "deletion.refused", "executor", d)
		}
	case wait != nil:
		s.reportWait(ctx, auth, wait)
	case run.Refused:
		s.metrics.expiryRefused.Inc()
		s.alarm(ctx, "an expiry run found more expired than its authorisation's ceiling and removed nothing; "+
			"find out why before anything expires (suspend the authorisation, or authorise a higher ceiling)",
			"deletion_id", run.Run, "authorisation_id", id, "candidates", ceiling.Candidates,
			"candidate_bytes", ceiling.CandidateBytes, "stored_bytes", ceiling.StoredBytes,
			"max_chunks", ceiling.MaxChunks, "max_bytes", ceiling.MaxBytes)
		if d, err := s.GetDeletion(ctx, run.Run); err == nil {
			s.notify(ctx, "expiry.refused", "executor", d)
		}
	case run.Run != 0:
		s.metrics.expiryRuns.Inc()
		s.log.WarnContext(ctx, "expiry run started", "deletion_id", run.Run, "authorisation_id", id,
			"candidates", ceiling.Candidates, "candidate_bytes", ceiling.CandidateBytes)
	}
	return run, nil
}

// insertRun makes the request of a run of auth at now: everything
// expired before now, in the whole vault, under the current admin set and
// at least its deletion policy (the run takes no signatures: the
// authorisation's are its authority).
func (s *Store) insertRun(ctx context.Context, tx pgx.Tx, auth Deletion, now time.Time) (Deletion, error) {
	t := DeletionTargets{Kind: DeleteExpired, Before: now}
	text, err := t.canonical(s.opts.MaxBatch)
	if err != nil {
		return Deletion{}, err
	}
	digest := sha256.Sum256([]byte(text))
	set, err := adminSetVersion(ctx, tx, 0)
	if err != nil {
		return Deletion{}, err
	}
	quorum := max(s.opts.Deletion.ApprovalsRequired, set.Policy.ApprovalsRequired)
	delay := max(s.opts.Deletion.Delay, time.Duration(set.Policy.Delay))
	rows, _ := tx.Query(ctx, `INSERT INTO deletion_requests
		(kind, targets, digest, reason, requested_by, requested_at, approvals_required, delay, expires_at, admin_set_version,
		 authorisation_id)
		VALUES (@kind, @targets, @digest, @reason, 'executor', @now, @quorum, @delay, @expires, @version, @auth)
		RETURNING `+deletionColumns, pgx.NamedArgs{
		"kind": DeleteExpired, "targets": text, "digest": digest[:], "now": now, "quorum": quorum, "delay": delay,
		"reason":  "routine expiry under expiry authorisation " + strconv.FormatInt(auth.ID, 10),
		"expires": now.Add(s.opts.Deletion.Expiry), "version": set.Version, "auth": auth.ID,
	})
	return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Deletion])
}

// verifyRun is verifyForExecution and verifyFromJournal for an expiry
// run, which has no signatures of its own: its authorisation's must
// verify, from the stored rows and from the journal, and the journal must
// show the run started validly under it, with the index's targets.
func (s *Store) verifyRun(ctx context.Context, tx pgx.Tx, v *journalView, d Deletion) error {
	if sum := sha256.Sum256([]byte(d.Targets)); string(sum[:]) != string(d.Digest) {
		return errors.New("the targets do not match their digest")
	}
	rows, _ := tx.Query(ctx, "SELECT "+deletionColumns+" FROM deletion_requests WHERE id = $1 FOR SHARE", *d.AuthorisationID)
	auth, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Deletion])
	if err != nil {
		return fmt.Errorf("its authorisation %d: %w", *d.AuthorisationID, err)
	}
	if auth.Kind != DeleteExpiryAuthorisation {
		return fmt.Errorf("%d is not an expiry authorisation", auth.ID)
	}
	if err := s.verifyForExecution(ctx, tx, auth); err != nil {
		return fmt.Errorf("its authorisation %d: %w", auth.ID, err)
	}
	if _, _, a, ok := v.r.RunBudget(d.ID); !ok || a != auth.ID {
		return fmt.Errorf("the data directory's journal has no valid start of run %d under authorisation %d", d.ID, auth.ID)
	}
	req, _ := v.r.Request(d.ID)
	if req.Kind != d.Kind || string(req.Digest) != string(d.Digest) {
		return errors.New("the index's run differs from the data directory's journal's (kind or digest)")
	}
	return nil
}

// budget is what an expiry run may still remove by the journal, spent as
// one batch picks chunks (-1: no such ceiling).
type budget struct{ chunks, bytes int64 }

// take reports whether a chunk of size n fits, and spends it.
func (b *budget) take(n int64) bool {
	if b.chunks == 0 || (b.bytes >= 0 && n > b.bytes) {
		return false
	}
	if b.chunks > 0 {
		b.chunks--
	}
	if b.bytes >= 0 {
		b.bytes -= n
	}
	return true
}

// Expiry is an expiry authorisation with its terms and latest runs, for
// `vault admin expiry show`.
type Expiry struct {
	Authorisation Deletion     `json:"authorisation"`
	Terms         *ExpiryTerms `json:"terms"`
	// InForce: executed and not suspended (state executing).
	InForce bool       `json:"in_force"`
	Runs    []Deletion `json:"runs"`
}

// ListExpiry returns the expiry authorisations, newest first, each with
// its latest runs (at most runs of them).
func (s *Store) ListExpiry(ctx context.Context, runs int) ([]Expiry, error) {
	if runs <= 0 || runs > 100 {
		runs = 10
	}
	rows, _ := s.pool.Query(ctx, "SELECT "+deletionColumns+` FROM deletion_requests
		WHERE kind = 'expiry_authorisation' ORDER BY id DESC LIMIT 100`)
	auths, err := pgx.CollectRows(rows, pgx.RowToStructByName[Deletion])
	if err != nil {
		return nil, dbErr("list expiry authorisations", err)
	}
	out := make([]Expiry, 0, len(auths))
	for _, a := range auths {
		e := Expiry{Authorisation: a, InForce: a.inForce(), Runs: []Deletion{}}
		if t, err := parseTargets(a.Targets); err == nil {
			e.Terms = t.Expiry
		}
		rows, _ := s.pool.Query(ctx, "SELECT "+deletionColumns+` FROM deletion_requests
			WHERE authorisation_id = $1 ORDER BY id DESC LIMIT $2`, a.ID, runs)
		if e.Runs, err = pgx.CollectRows(rows, pgx.RowToStructByName[Deletion]); err != nil {
			return nil, dbErr("list expiry runs", err)
		}
		for i := range e.Runs {
			e.Runs[i].Approvals = []Approval{}
		}
		e.Authorisation.Approvals = []Approval{}
		out = append(out, e)
	}
	return out, nil
}
