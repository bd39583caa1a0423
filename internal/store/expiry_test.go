package store_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
)

const governanceDelay = 7 * 24 * time.Hour

// mustAuthoriseExpiry puts an expiry authorisation with terms in force:
// requested by admin-a, approved by admin-b and admin-c (the governance
// quorum), executed after the governance delay.
func (ds *deletionStore) mustAuthoriseExpiry(t testing.TB, terms store.ExpiryTerms) store.Deletion {
	t.Helper()
	ctx := context.Background()
	d := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteExpiryAuthorisation, Expiry: &terms})
	if d.ApprovalsRequired != 2 || time.Duration(d.Delay) != governanceDelay {
		t.Fatalf("authorisation policy = %d approvals, %s; want the governance policy (2, %s)", d.ApprovalsRequired,
			time.Duration(d.Delay), governanceDelay)
	}
	ds.mustApprove(t, "admin-b", d.ID)
	ds.mustApprove(t, "admin-c", d.ID)
	ds.clk.Advance(governanceDelay - time.Minute)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 0 {
		t.Fatalf("RunDue before the governance delay = %+v, %v; want nothing", rep, err)
	}
	ds.clk.Advance(time.Minute)
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Executed) != 1 || rep.Executed[0] != d.ID || len(rep.Expiry) != 0 {
		t.Fatalf("RunDue after the governance delay = %+v, %v; want authorisation %d in force and no run yet", rep, err, d.ID)
	}
	got, err := ds.GetDeletion(ctx, d.ID)
	if err != nil || got.State != store.StateExecuting {
		t.Fatalf("authorisation = %+v, %v; want executing (in force)", got, err)
	}
	return got
}

// mustReplayClean replays the whole audit log with the policy engine the
// executor and the auditor use, and fails on any finding.
func (ds *deletionStore) mustReplayClean(t testing.TB) {
	t.Helper()
	entries, err := ds.AuditEntries(context.Background(), 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	r := audit.NewReplay()
	r.Pin(audit.Pins{VaultID: testVaultID})
	for _, e := range entries {
		r.ApplyPayload(e.Seq, []byte(e.Payload))
	}
	if len(r.Findings) > 0 {
		t.Fatalf("the log's replay has findings: %v", r.Findings)
	}
}

func (ds *deletionStore) chunkGone(t testing.TB, h chunk.Hash) bool {
	t.Helper()
	_, err := ds.Stat(context.Background(), h)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err != nil && !ds.readable(t, h)
}

func (ds *deletionStore) mustSnapshot(t testing.TB, name string, until time.Time, hs ...chunk.Hash) (int64, chunk.Hash) {
	t.Helper()
	root, err := manifest.Manifest{Chunks: hs}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ds.mustPut(t, root)
	res, err := ds.CommitSnapshot(context.Background(), "agent-1", store.NewSnapshot{Source: "db01", Name: name,
		TakenAt: ds.clk.Now(), RetainUntil: until, ManifestRoot: chunk.Sum(root)})
	if err != nil {
		t.Fatalf("CommitSnapshot: %v", err)
	}
	return res.Snapshot.ID, chunk.Sum(root)
}

var dailyExpiry = store.ExpiryTerms{Interval: store.Duration(24 * time.Hour), MaxPercent: 100}

func TestExpiryRemovesOnlyExpiredUnreferencedUnheld(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()

	small, smallH := randomChunk(t, 3000)     // packed, expired, unreferenced, unheld
	large, largeH := randomChunk(t, 200_000)  // a file of its own, likewise
	oldSnap, oldSnapH := randomChunk(t, 1000) // only in a snapshot that expired
	kept, keptH := randomChunk(t, 1000)       // retained for a year
	held, heldH := randomChunk(t, 1000)       // under a legal hold
	inSnap, inSnapH := randomChunk(t, 1000)   // in a snapshot retained for a year
	for _, b := range [][]byte{small, large, oldSnap, kept, held, inSnap} {
		ds.mustPut(t, b)
	}
	if _, err := ds.Retain(ctx, "agent-1", []chunk.Hash{keptH}, epoch.AddDate(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "case-1", Reason: "litigation", Chunks: []chunk.Hash{heldH}}); err != nil {
		t.Fatal(err)
	}
	oldSnapID, oldRoot := ds.mustSnapshot(t, "old", epoch.Add(35*24*time.Hour), oldSnapH)
	_, keptRoot := ds.mustSnapshot(t, "kept", epoch.AddDate(1, 0, 0), inSnapH)

	auth := ds.mustAuthoriseExpiry(t, dailyExpiry)
	// In force, but nothing has expired yet: a run removes nothing.
	ds.clk.Advance(24 * time.Hour)
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Expiry) != 1 || rep.Expiry[0].Refused {
		t.Fatalf("first run = %+v, %v; want one run", rep, err)
	}
	if first, _ := ds.GetDeletion(ctx, rep.Expiry[0].Run); first.State != store.StateExecuted || first.Report.Deleted != 0 {
		t.Fatalf("first run = %s, report %+v; want executed, nothing deleted", first.State, first.Report)
	}

	// Past the 30-day minimum retention and the old snapshot's.
	ds.clk.Advance(32 * 24 * time.Hour)
	rep, err = ds.RunDue(ctx)
	if err != nil || len(rep.Expiry) != 1 || rep.Expiry[0].Refused || rep.Expiry[0].Authorisation != auth.ID {
		t.Fatalf("RunDue = %+v, %v; want one run under authorisation %d", rep, err, auth.ID)
	}
	for name, h := range map[string]chunk.Hash{"small": smallH, "large": largeH, "old snapshot's": oldSnapH, "old root": oldRoot} {
		if !ds.chunkGone(t, h) {
			t.Errorf("expired, unreferenced, unheld %s chunk %s was kept", name, h)
		}
	}
	for name, h := range map[string]chunk.Hash{"retained": keptH, "held": heldH, "snapshot's": inSnapH, "snapshot root": keptRoot} {
		if !ds.readable(t, h) {
			t.Errorf("%s chunk %s was removed", name, h)
		}
	}
	if f := ds.files(t); len(f) != 0 {
		t.Errorf("files left: %v (the large chunk's file must be gone)", f)
	}
	var deleted bool
	ds.pool.QueryRow(ctx, "SELECT deleted_at IS NOT NULL FROM snapshots WHERE id = $1", oldSnapID).Scan(&deleted)
	if !deleted {
		t.Errorf("expired snapshot %d was not tombstoned by the run", oldSnapID)
	}

	// The run's report, like a manual deletion's.
	run, err := ds.GetDeletion(ctx, rep.Expiry[0].Run)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes := int64(len(small)+len(large)+len(oldSnap)) + mustSize(t, ds, oldRoot)
	if run.Kind != store.DeleteExpired || run.AuthorisationID == nil || *run.AuthorisationID != auth.ID ||
		run.State != store.StateExecuted || run.Report == nil || run.Report.Deleted != 4 || run.Report.Snapshots != 1 ||
		run.Report.BytesFreed != wantBytes {
		t.Errorf("run = %s %s under %v, report %+v; want executed, 4 deleted (%d bytes), 1 snapshot", run.Kind, run.State,
			run.AuthorisationID, run.Report, wantBytes)
	}
	var tombs int
	ds.pool.QueryRow(ctx, "SELECT count(*) FROM chunk_tombstones WHERE deletion_id = $1 AND content_removed_at IS NOT NULL", run.ID).Scan(&tombs)
	if tombs != 4 {
		t.Errorf("tombstones with content removed = %d, want 4", tombs)
	}
	var actions []string
	entries, _ := ds.AuditEntries(ctx, 0, 10_000)
	for _, e := range entries {
		if strings.Contains(e.Payload, `"deletion_id":`+itoa(run.ID)+`,`) || strings.Contains(e.Payload, `"deletion_id":`+itoa(run.ID)+`}`) {
			actions = append(actions, e.Action)
		}
	}
	if got := strings.Join(actions, " "); !strings.HasPrefix(got, "expiry.run ") || !strings.HasSuffix(got, " deletion.executed") ||
		strings.Count(got, "chunk.remove") != 4 {
		t.Errorf("the run's audit entries = %s; want expiry.run, 4 chunk.remove, deletion.executed", got)
	}
	ds.mustReplayClean(t)

	// Not again before the interval.
	ds.clk.Advance(23 * time.Hour)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expiry) != 0 {
		t.Errorf("RunDue within the interval = %+v, %v; want no run", rep, err)
	}
	ds.clk.Advance(time.Hour)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expiry) != 1 {
		t.Errorf("RunDue after the interval = %+v, %v; want a run", rep, err)
	}
	ds.mustReplayClean(t)
}

func mustSize(t testing.TB, ds *deletionStore, h chunk.Hash) int64 {
	t.Helper()
	var n int64
	if err := ds.pool.QueryRow(context.Background(), "SELECT size FROM chunk_tombstones WHERE hash = $1", h[:]).Scan(&n); err != nil {
		t.Fatalf("tombstone of %s: %v", h, err)
	}
	return n
}

func TestNothingExpiresWithoutAuthorisation(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 1000)
	ds.mustPut(t, b)
	ds.clk.Advance(400 * 24 * time.Hour)
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Executed) != 0 || len(rep.Expiry) != 0 {
		t.Fatalf("RunDue = %+v, %v; want nothing", rep, err)
	}
	if !ds.readable(t, h) || ds.count(t, "chunk_tombstones") != 0 || ds.count(t, "deletion_requests") != 0 {
		t.Error("something expired without an expiry authorisation")
	}
}

func TestExpiryCeilingRefusesAndAlarms(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	var hs []chunk.Hash
	for range 3 {
		b, h := randomChunk(t, 1000)
		ds.mustPut(t, b)
		hs = append(hs, h)
	}
	auth := ds.mustAuthoriseExpiry(t, store.ExpiryTerms{Interval: store.Duration(24 * time.Hour), MaxChunks: 2})
	alarms := ds.alarms(t)
	ds.clk.Advance(31 * 24 * time.Hour)
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Expiry) != 1 || !rep.Expiry[0].Refused {
		t.Fatalf("RunDue = %+v, %v; want one refused run", rep, err)
	}
	for _, h := range hs {
		if !ds.readable(t, h) {
			t.Errorf("chunk %s removed by a run above its ceiling", h)
		}
	}
	run, _ := ds.GetDeletion(ctx, rep.Expiry[0].Run)
	if run.State != store.StateRefused || run.Refusal == nil || !strings.Contains(*run.Refusal, "above the ceiling") ||
		run.Report == nil || run.Report.Ceiling == nil || run.Report.Ceiling.Candidates != 3 || run.Report.Ceiling.MaxChunks != 2 {
		t.Errorf("refused run = %s %v, report %+v", run.State, run.Refusal, run.Report)
	}
	// The alarm: metric, log, webhook event, audit entry.
	if got := ds.alarms(t); got != alarms+1 {
		t.Errorf("integrity alarms = %v, want %v", got, alarms+1)
	}
	if !strings.Contains(ds.logs.String(), "level=ERROR") || !strings.Contains(ds.logs.String(), "ceiling") {
		t.Errorf("no ERROR log about the ceiling:\n%s", ds.logs.String())
	}
	if types := strings.Join(ds.eventTypes(), " "); !strings.Contains(types, "expiry.refused") {
		t.Errorf("events = %s, want expiry.refused", types)
	}
	if n := mustAuditCount(t, ds, audit.ActionExpiryRefused); n != 1 {
		t.Errorf("expiry.refused entries = %d, want 1", n)
	}
	mfs, _ := ds.reg.Gather()
	refused := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "wormvault_expiry_runs_refused_total" {
			refused = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if refused != 1 {
		t.Errorf("wormvault_expiry_runs_refused_total = %v, want 1", refused)
	}
	// The authorisation stays in force; the next run, after the interval,
	// measures again.
	if a, _ := ds.GetDeletion(ctx, auth.ID); a.State != store.StateExecuting {
		t.Errorf("authorisation after a refused run = %s, want executing (in force)", a.State)
	}
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expiry) != 0 {
		t.Errorf("RunDue again within the interval = %+v, %v; want no run", rep, err)
	}
	ds.mustReplayClean(t)
}

func mustAuditCount(t testing.TB, ds *deletionStore, action string) int {
	t.Helper()
	var n int
	if err := ds.pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE action = $1", action).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSuspendedExpiryStopsNextRun(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	var hs []chunk.Hash
	for range 2 {
		b, h := randomChunk(t, 1000)
		ds.mustPut(t, b)
		hs = append(hs, h)
	}
	auth := ds.mustAuthoriseExpiry(t, dailyExpiry)

	// Any one admin, even one who had no part in it, suspends it at once
	// with a signed cancel; a bad signature does not.
	bad, _ := ds.sign("admin-c", auth.ID, approval.ActionCancel)
	bad.Value[0] ^= 1
	if _, err := ds.CancelDeletion(ctx, "admin-c", auth.ID, "forged", bad); !errors.Is(err, store.ErrBadSignature) {
		t.Fatalf("suspend with a bad signature: %v, want ErrBadSignature", err)
	}
	if _, err := ds.cancel("admin-d", auth.ID, "audit first"); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	if a, _ := ds.GetDeletion(ctx, auth.ID); a.State != store.StateCancelled {
		t.Fatalf("authorisation after suspension = %s, want cancelled", a.State)
	}
	ds.clk.Advance(31 * 24 * time.Hour)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expiry) != 0 {
		t.Fatalf("RunDue after suspension = %+v, %v; want no run", rep, err)
	}
	for _, h := range hs {
		if !ds.readable(t, h) {
			t.Errorf("chunk %s removed under a suspended authorisation", h)
		}
	}
	if _, err := ds.cancel("admin-b", auth.ID, "again"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second suspension: %v, want ErrConflict", err)
	}

	// Suspended while a run is under way: the run stops before its next
	// batch, removing nothing more.
	auth2 := ds.mustAuthoriseExpiry(t, dailyExpiry)
	ds.SetBeforeDeleteBatchForTest(func(int64) {
		ds.SetBeforeDeleteBatchForTest(nil)
		if _, err := ds.cancel("admin-b", auth2.ID, "stop it"); err != nil {
			t.Errorf("suspend during a run: %v", err)
		}
	})
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Expiry) != 1 {
		t.Fatalf("RunDue = %+v, %v; want one run", rep, err)
	}
	for _, h := range hs {
		if !ds.readable(t, h) {
			t.Errorf("chunk %s removed after the suspension", h)
		}
	}
	run, _ := ds.GetDeletion(ctx, rep.Expiry[0].Run)
	if run.State != store.StateExecuted || run.Report == nil || run.Report.Stopped != "suspended" || run.Report.Deleted != 0 {
		t.Errorf("run = %s, report %+v; want executed, stopped: suspended, nothing deleted", run.State, run.Report)
	}
	ds.mustReplayClean(t)
}

// A new snapshot that references an expired chunk, or an agent extending
// its retention, while a run is under way keeps it: the executor checks
// again in the transaction that deletes.
func TestExpiryRaceWithNewSnapshotKeepsChunk(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	var hs []chunk.Hash
	for range 3 {
		b, h := randomChunk(t, 1000)
		ds.mustPut(t, b)
		hs = append(hs, h)
	}
	ds.mustAuthoriseExpiry(t, dailyExpiry)
	ds.clk.Advance(31 * 24 * time.Hour)
	ds.SetBeforeDeleteBatchForTest(func(int64) {
		ds.SetBeforeDeleteBatchForTest(nil)
		ds.mustSnapshot(t, "late", ds.clk.Now().AddDate(0, 2, 0), hs[0])
		if _, err := ds.Retain(ctx, "agent-1", []chunk.Hash{hs[1]}, ds.clk.Now().AddDate(0, 2, 0)); err != nil {
			t.Error(err)
		}
	})
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Expiry) != 1 {
		t.Fatalf("RunDue = %+v, %v; want one run", rep, err)
	}
	if !ds.readable(t, hs[0]) || !ds.readable(t, hs[1]) {
		t.Error("a chunk referenced or retained during the run was removed")
	}
	if !ds.chunkGone(t, hs[2]) {
		t.Error("the untouched expired chunk was kept")
	}
	run, _ := ds.GetDeletion(ctx, rep.Expiry[0].Run)
	if run.Report == nil || run.Report.Deleted != 1 || run.Report.Skipped["chunk:"+store.SkipRetained] != 2 {
		t.Errorf("run report = %+v; want 1 deleted, 2 skipped as retained", run.Report)
	}
	ds.mustReplayClean(t)
}

// An expiry authorisation written into the index, in force, authorises
// nothing: with junk signatures the stored rows do not verify; with good
// signatures (stolen keys) the data directory's journal does not have it.
func TestForgedExpiryAuthorisationRemovesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		junk      bool
		wantAlarm string
	}{
		{"junk signatures", true, "signature"},
		{"stolen keys, not in the journal", false, "journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ds := newDeletionStore(t)
			ctx := context.Background()
			b, h := randomChunk(t, 1000)
			ds.mustPut(t, b)
			ds.clk.Advance(31 * 24 * time.Hour)
			terms := "wormvault-deletion-targets v1\nkind: expiry_authorisation\ninterval: 1h0m0s\nmax-percent: 100\nmax-chunks: 0\n"
			digest := sha256.Sum256([]byte(terms))
			const id = 900
			gd := governanceDelay
			sign := func(action, signer string) []byte {
				typ, _ := approval.TypeFor(store.DeleteExpiryAuthorisation, action)
				msg, err := approval.Statement{Type: typ, Vault: testVaultID, Request: id, Kind: store.DeleteExpiryAuthorisation,
					TargetsDigest: digest[:], Approvals: 2, Delay: gd, AdminSet: 1, Signer: signer}.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				if tc.junk {
					return make([]byte, ed25519.SignatureSize)
				}
				return ed25519.Sign(ds.keys[signer], msg)
			}
			at := ds.clk.Now().Add(-governanceDelay - time.Hour)
			asOwner(t, ds.pool, []string{"deletion_requests", "deletion_approvals"}, func(ctx context.Context, tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO deletion_requests (id, kind, targets, digest, reason, requested_by,
					requested_at, approvals_required, delay, expires_at, state, scheduled_at, executes_at, admin_set_version,
					requested_by_admin, request_format, request_signature) OVERRIDING SYSTEM VALUE
					VALUES (@id, 'expiry_authorisation', @targets, @digest, 'forged', 'admin-a', @at, 2, @delay, @expires,
					'executing', @at, @at::timestamptz + @delay::interval, 1, 'admin-a', 'raw', @sig)`, pgx.NamedArgs{
					"id": id, "targets": terms, "digest": digest[:], "at": at, "delay": gd,
					"expires": at.Add(7 * 24 * time.Hour), "sig": sign(approval.ActionRequest, "admin-a"),
				}); err != nil {
					return err
				}
				for _, a := range []string{"admin-b", "admin-c"} {
					if _, err := tx.Exec(ctx, `INSERT INTO deletion_approvals (deletion_id, approver, approved_at, format, signature)
						VALUES ($1, $2, $3, 'raw', $4)`, id, a, at, sign(approval.ActionApprove, a)); err != nil {
						return err
					}
				}
				return nil
			})
			alarms := ds.alarms(t)
			rep, err := ds.RunDue(ctx)
			if err != nil || len(rep.Expiry) != 0 {
				t.Fatalf("RunDue = %+v, %v; want no run", rep, err)
			}
			if !ds.readable(t, h) || ds.count(t, "chunk_tombstones") != 0 {
				t.Fatal("a forged expiry authorisation removed a chunk")
			}
			a, _ := ds.GetDeletion(ctx, id)
			if a.State != store.StateRefused || a.Refusal == nil || !strings.Contains(*a.Refusal, tc.wantAlarm) {
				t.Errorf("forged authorisation = %s, refusal %q; want refused (%s)", a.State, deref(a.Refusal), tc.wantAlarm)
			}
			if got := ds.alarms(t); got != alarms+1 {
				t.Errorf("integrity alarms = %v, want %v", got, alarms+1)
			}
			ds.clk.Advance(48 * time.Hour)
			if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expiry) != 0 || !ds.readable(t, h) {
				t.Errorf("RunDue later = %+v, %v; want nothing", rep, err)
			}
		})
	}
}

// What the runtime role (the server's database login) cannot do with
// expiry runs and authorisations, whatever it sends.
func TestExpiryRunsGuardedForRuntimeRole(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	auth := ds.mustAuthoriseExpiry(t, dailyExpiry)
	// A request that is no authorisation in force.
	other := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteExpired, Before: epoch})
	now := ds.clk.Now()
	insertRun := `INSERT INTO deletion_requests (kind, targets, digest, reason, requested_by, requested_at,
		approvals_required, delay, expires_at, admin_set_version, authorisation_id)
		VALUES ($1, 'x', decode(repeat('00', 32), 'hex'), 'forged run', 'executor', $2, 2, '72h', $3, 1, $4)`
	state := func(t testing.TB) string {
		var s string
		ds.pool.QueryRow(ctx, `SELECT string_agg(id || ':' || state || ':' || coalesce(authorisation_id::text, '-'), ' ' ORDER BY id)
			FROM deletion_requests`).Scan(&s)
		return s
	}
	mustRefuseAll(t, ds.pool, []forbidden{
		{name: "run without an authorisation in force", sql: insertRun,
			args: []any{"expired", now, now.Add(time.Hour), other.ID}, code: "WV006"},
		{name: "run of another kind", sql: insertRun,
			args: []any{"chunks", now, now.Add(time.Hour), auth.ID}, code: "23514"},
		{name: "move a run to another authorisation", sql: "UPDATE deletion_requests SET authorisation_id = $1 WHERE id = $2",
			args: []any{auth.ID, other.ID}, code: "WV006", runtime: permissionDenied},
		{name: "execute an authorisation to completion",
			sql: "UPDATE deletion_requests SET state = 'executed', executed_at = $2 WHERE id = $1", args: []any{auth.ID, now},
			code: "WV006"},
		{name: "suspend without a signature", sql: "UPDATE deletion_requests SET state = 'cancelled', cancelled_at = $2, cancelled_by = 'x', cancel_reason = 'x' WHERE id = $1",
			args: []any{auth.ID, now}, code: "WV006"},
		{name: "start a run that is no run", sql: "SELECT wv_begin_execution($1)", args: []any{other.ID}, code: "WV006"},
	}, state)
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// The index is rebuilt from the data directory with its expiry runs, run
// and refused, exactly as they were.
func TestReindexRebuildsExpiryRuns(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	for range 3 {
		b, _ := randomChunk(t, 1000)
		ds.mustPut(t, b)
	}
	auth := ds.mustAuthoriseExpiry(t, store.ExpiryTerms{Interval: store.Duration(24 * time.Hour), MaxChunks: 2})
	ds.clk.Advance(31 * 24 * time.Hour)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expiry) != 1 || !rep.Expiry[0].Refused {
		t.Fatalf("RunDue = %+v, %v; want a refused run", rep, err)
	}
	if _, err := ds.cancel("admin-d", auth.ID, "ceiling too low"); err != nil {
		t.Fatal(err)
	}
	ds.mustAuthoriseExpiry(t, dailyExpiry)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expiry) != 1 || rep.Expiry[0].Refused {
		t.Fatalf("RunDue = %+v, %v; want a run", rep, err)
	}
	before := mustDumpIndex(t, ds.pool)

	st, pool := rebuildStore(t, ds, pgtest.NewDatabase(t))
	rep, err := st.Reindex(ctx, store.ReindexOptions{})
	if err != nil {
		t.Fatalf("Reindex: %v", err)
	}
	if rep.DivergenceCount != 0 || rep.DataLoss != 0 {
		t.Errorf("report: %d divergences %v, %d lost; want none", rep.DivergenceCount, rep.Divergences, rep.DataLoss)
	}
	after := mustDumpIndex(t, pool)
	for _, table := range []string{"chunks", "chunk_tombstones", "deletion_requests", "deletion_approvals", "deletion_outcomes"} {
		onlyBefore, onlyAfter := diffRows(before[table], after[table])
		if len(onlyBefore)+len(onlyAfter) > 0 {
			t.Errorf("%s differs after the rebuild:\nonly before: %s\nonly after:  %s", table,
				strings.Join(onlyBefore, "\n  "), strings.Join(onlyAfter, "\n  "))
		}
	}
}
