package store_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

const delay = 72 * time.Hour

type deletionStore struct {
	*testStore
	keys   map[string]ed25519.PrivateKey // the admins' raw keys, by name
	dbSkew time.Duration                 // how far the "database clock" is from the server's
	mu     sync.Mutex
	events []store.Event
	blobs  *failingBlobs
	reg    *prometheus.Registry // the store's metrics
	logs   *logBuffer           // the store's log
}

// logBuffer collects a log for tests to search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// alarms reads the store's integrity alarm counter.
func (ds *deletionStore) alarms(t testing.TB) float64 {
	t.Helper()
	mfs, err := ds.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "wormvault_integrity_alarms_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no integrity alarm metric")
	return 0
}

// failingBlobs fails Remove while fail is set: a crash in the middle of an
// execution, as far as the executor can tell.
type failingBlobs struct {
	store.Blobs
	mu   sync.Mutex
	fail bool
}

var errInjected = errors.New("injected failure")

func (f *failingBlobs) Remove(ctx context.Context, h chunk.Hash) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errInjected
	}
	return f.Blobs.Remove(ctx, h)
}

func newDeletionStore(t testing.TB) *deletionStore {
	t.Helper()
	dir := t.TempDir()
	d, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := pack.Open(filepath.Join(dir, "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.NewPool(t)
	clk := clock.NewFake(epoch)
	pgtest.FollowClock(t, pool, clk)
	ds := &deletionStore{blobs: &failingBlobs{Blobs: d}, keys: map[string]ed25519.PrivateKey{},
		reg: prometheus.NewRegistry(), logs: &logBuffer{}}
	// The genesis admin set, as admins.json pins it in the data directory.
	g := store.Genesis{Policy: store.Policy{ApprovalsRequired: 2, Delay: store.Duration(delay),
		GovernanceApprovals: 2, GovernanceDelay: store.Duration(7 * 24 * time.Hour)}}
	for _, name := range []string{"admin-a", "admin-b", "admin-c", "admin-d"} {
		priv, pub, err := approval.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		ds.keys[name] = priv
		g.Admins = append(g.Admins, store.Admin{Name: name, Key: pub})
	}
	s := store.New(pool, ds.blobs, clk, slog.New(slog.NewTextHandler(ds.logs, nil)), store.NewMetrics(ds.reg), store.Options{
		MaxChunkSize: 4 << 20, Packs: packs, PackThreshold: 64 << 10, VaultID: testVaultID, Journal: newJournal(t, dir), Genesis: &g,
		Deletion: store.DeletionPolicy{ApprovalsRequired: 2, Delay: delay, Expiry: 7 * 24 * time.Hour},
		DatabaseTime: func(context.Context) (time.Time, error) {
			ds.mu.Lock()
			defer ds.mu.Unlock()
			return clk.Now().Add(ds.dbSkew), nil
		},
		Notify: func(_ context.Context, e store.Event) {
			ds.mu.Lock()
			defer ds.mu.Unlock()
			ds.events = append(ds.events, e)
		},
	})
	t.Cleanup(func() { s.Close(); packs.Close() })
	ds.testStore = &testStore{Store: s, pool: pool, clk: clk, dir: dir, blobs: d}
	if err := s.SeedAdminSet(context.Background(), g); err != nil {
		t.Fatalf("SeedAdminSet: %v", err)
	}
	return ds
}

const testVaultID = "wv-store-test"

// sign returns name's raw signature of the statement the store builds for
// action on request id.
func (ds *deletionStore) sign(name string, id int64, action string) (store.Signature, error) {
	msg, err := ds.Statement(context.Background(), id, action, name)
	if err != nil {
		return store.Signature{}, err
	}
	return store.Signature{Signer: name, Format: approval.FormatRaw, Value: ed25519.Sign(ds.keys[name], msg)}, nil
}

// approve signs and sends name's approval, as the CLI would.
func (ds *deletionStore) approve(name string, id int64) (store.Deletion, error) {
	sig, err := ds.sign(name, id, approval.ActionApprove)
	if err != nil {
		return store.Deletion{}, err
	}
	return ds.ApproveDeletion(context.Background(), name, id, sig)
}

// cancel signs and sends name's cancel.
func (ds *deletionStore) cancel(name string, id int64, reason string) (store.Deletion, error) {
	sig, err := ds.sign(name, id, approval.ActionCancel)
	if err != nil {
		return store.Deletion{}, err
	}
	return ds.CancelDeletion(context.Background(), name, id, reason, sig)
}

func (ds *deletionStore) eventTypes() []string {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	var out []string
	for _, e := range ds.events {
		out = append(out, e.Type)
	}
	return out
}

func (ds *deletionStore) mustRequest(t testing.TB, by string, tg store.DeletionTargets) store.Deletion {
	t.Helper()
	d, err := ds.RequestDeletion(context.Background(), by, tg, "retention clean-up")
	if err != nil {
		t.Fatalf("RequestDeletion: %v", err)
	}
	sig, err := ds.sign(by, d.ID, approval.ActionRequest)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := ds.SignRequest(context.Background(), by, d.ID, sig)
	if err != nil {
		t.Fatalf("SignRequest: %v", err)
	}
	signed.Affected = d.Affected
	return signed
}

func (ds *deletionStore) mustApprove(t testing.TB, by string, id int64) store.Deletion {
	t.Helper()
	d, err := ds.approve(by, id)
	if err != nil {
		t.Fatalf("ApproveDeletion(%s): %v", by, err)
	}
	return d
}

func (ds *deletionStore) readable(t testing.TB, h chunk.Hash) bool {
	t.Helper()
	rc, _, err := ds.OpenChunk(context.Background(), h)
	if err == nil {
		io.Copy(io.Discard, rc)
		rc.Close()
		return true
	}
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("OpenChunk(%s): %v", h, err)
	}
	return false
}

// The whole lifecycle, with three admins and an injected clock.
func TestDeletionLifecycle(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()

	small, smallH := randomChunk(t, 3000)    // packed
	large, largeH := randomChunk(t, 200_000) // a file of its own
	kept, keptH := randomChunk(t, 1000)      // retained longer
	held, heldH := randomChunk(t, 1000)      // under a legal hold
	inSnap, inSnapH := randomChunk(t, 1000)  // in a retained snapshot
	for _, b := range [][]byte{small, large, kept, held, inSnap} {
		ds.mustPut(t, b)
	}
	if _, err := ds.Retain(ctx, "agent-1", []chunk.Hash{keptH}, epoch.AddDate(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "case-1", Reason: "litigation", Chunks: []chunk.Hash{heldH}}); err != nil {
		t.Fatal(err)
	}
	root, _ := manifest.Manifest{Chunks: []chunk.Hash{inSnapH}}.Marshal()
	ds.mustPut(t, root)
	if _, err := ds.CommitSnapshot(ctx, "agent-1", store.NewSnapshot{Source: "db01", Name: "daily-1",
		TakenAt: epoch, RetainUntil: epoch.AddDate(1, 0, 0), ManifestRoot: chunk.Sum(root)}); err != nil {
		t.Fatal(err)
	}
	_, absent := randomChunk(t, 10)

	// Past the 30-day minimum retention of the plain chunks.
	ds.clk.Advance(31 * 24 * time.Hour)
	d := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks,
		Chunks: []chunk.Hash{smallH, largeH, keptH, heldH, inSnapH, absent}})
	if d.State != store.StateRequested || len(d.Digest) != 32 || !strings.Contains(d.Targets, "chunk: "+smallH.String()) {
		t.Fatalf("request = %+v", d)
	}
	if d.Affected == nil || d.Affected.Chunks != 5 {
		t.Errorf("affected = %+v, want 5 stored chunks", d.Affected)
	}
	d = ds.mustApprove(t, "admin-b", d.ID)
	if d.State != store.StateRequested {
		t.Fatalf("after one approval: %s, want requested", d.State)
	}
	d = ds.mustApprove(t, "admin-c", d.ID)
	if d.State != store.StateScheduled || !d.ExecutesAt.Equal(ds.clk.Now().Add(delay)) {
		t.Fatalf("after quorum: %s executes %v, want scheduled at now+%s", d.State, d.ExecutesAt, delay)
	}

	// Not before its time.
	ds.clk.Advance(delay - time.Minute)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 0 {
		t.Fatalf("RunDue before executes_at = %+v, %v; want nothing executed", rep, err)
	}
	if !ds.readable(t, smallH) || !ds.readable(t, largeH) {
		t.Fatal("content deleted before executes_at")
	}
	ds.clk.Advance(time.Minute)
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue at executes_at = %+v, %v", rep, err)
	}

	for _, h := range []chunk.Hash{smallH, largeH} {
		if ds.readable(t, h) {
			t.Errorf("deleted chunk %s still readable", h)
		}
	}
	for _, h := range []chunk.Hash{keptH, heldH, inSnapH} {
		if !ds.readable(t, h) {
			t.Errorf("protected chunk %s was deleted", h)
		}
	}
	if f := ds.files(t); len(f) != 0 {
		t.Errorf("files left: %v (the large chunk's file must be gone)", f)
	}
	var tombs int
	ds.pool.QueryRow(ctx, "SELECT count(*) FROM chunk_tombstones WHERE deletion_id = $1 AND content_removed_at IS NOT NULL", d.ID).Scan(&tombs)
	if tombs != 2 {
		t.Errorf("tombstones with content removed = %d, want 2", tombs)
	}

	d, _ = ds.GetDeletion(ctx, d.ID)
	// The snapshot's chunk was retained by the snapshot commit itself, so
	// it is skipped as retained (in_retained_snapshot is the backstop).
	want := map[string]int64{"chunk:" + store.SkipRetained: 2, "chunk:" + store.SkipHeld: 1,
		"chunk:" + store.SkipNotFound: 1}
	if d.State != store.StateExecuted || d.Report == nil || d.Report.Deleted != 2 || !equalCounts(d.Report.Skipped, want) ||
		d.Report.BytesFreed != int64(len(small)+len(large)) {
		t.Errorf("executed request = %s, report %+v; want 2 deleted, skipped %v", d.State, d.Report, want)
	}
	outs, _ := ds.DeletionOutcomes(ctx, d.ID, "", 100)
	if len(outs) != 6 {
		t.Errorf("outcomes = %d, want 6", len(outs))
	}

	// The audit log has every step, and verifies.
	entries, _ := ds.AuditEntries(ctx, 0, 1000)
	var actions []string
	for _, e := range entries {
		if strings.HasPrefix(e.Action, "deletion.") {
			actions = append(actions, e.Action)
		}
	}
	wantActions := "deletion.request deletion.sign deletion.approve deletion.approve deletion.schedule deletion.execute deletion.executed"
	if strings.Join(actions, " ") != wantActions {
		t.Errorf("audit = %v, want %s", actions, wantActions)
	}
	if _, err := ds.VerifyAudit(ctx); err != nil {
		t.Errorf("VerifyAudit: %v", err)
	}
	if got := strings.Join(ds.eventTypes(), " "); got != "deletion.requested deletion.approved deletion.approved deletion.scheduled deletion.executed" {
		t.Errorf("events = %s", got)
	}

	// Idempotent: running again changes nothing.
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 0 {
		t.Errorf("second RunDue = %+v, %v", rep, err)
	}
	// A cancel after execution is refused.
	if _, err := ds.cancel("admin-b", d.ID, "too late"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("cancel after execution: %v, want ErrConflict", err)
	}
	// A deleted chunk can be stored again.
	if res := ds.mustPut(t, small); !res.Created || !ds.readable(t, smallH) {
		t.Errorf("re-upload after deletion: %+v", res)
	}
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestApprovalAbuse(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	targets := store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}}

	d := ds.mustRequest(t, "admin-a", targets)
	if _, err := ds.approve("admin-a", d.ID); !errors.Is(err, store.ErrSelfApproval) {
		t.Errorf("self-approval: %v, want ErrSelfApproval", err)
	}
	ds.mustApprove(t, "admin-b", d.ID)
	// Same subject again (any token): one person, one approval.
	if _, err := ds.approve("admin-b", d.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second approval by the same admin: %v, want ErrConflict", err)
	}
	got, _ := ds.GetDeletion(ctx, d.ID)
	if got.State != store.StateRequested || len(got.Approvals) != 1 {
		t.Errorf("after refused approvals: %s with %d approvals, want requested with 1", got.State, len(got.Approvals))
	}

	// Cancelled: no more approvals.
	if _, err := ds.cancel("admin-c", d.ID, "not agreed"); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.approve("admin-c", d.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("approval of a cancelled request: %v, want ErrConflict", err)
	}
	if _, err := ds.cancel("admin-c", d.ID, "again"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second cancel: %v, want ErrConflict", err)
	}
	if _, err := ds.cancel("admin-c", d.ID, " "); !isInvalid(err) {
		t.Errorf("cancel without reason: %v, want InvalidError", err)
	}

	// Expired: a quorum that comes too late counts for nothing.
	e := ds.mustRequest(t, "admin-a", targets)
	ds.clk.Advance(7*24*time.Hour + time.Second)
	if _, err := ds.approve("admin-b", e.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("approval after expiry: %v, want ErrConflict", err)
	}
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Expired) != 1 || rep.Expired[0] != e.ID {
		t.Errorf("RunDue = %+v, %v; want request %d expired", rep, err, e.ID)
	}
	if got, _ := ds.GetDeletion(ctx, e.ID); got.State != store.StateExpired {
		t.Errorf("state = %s, want expired", got.State)
	}

	// Bad requests.
	for _, tg := range []store.DeletionTargets{
		{Kind: store.DeleteChunks},
		{Kind: store.DeleteSnapshots, Snapshots: []int64{-1}},
		{Kind: store.DeleteExpired},
		{Kind: "everything"},
		{Kind: store.DeleteHoldRelease},
	} {
		if _, err := ds.RequestDeletion(ctx, "admin-a", tg, "x"); !isInvalid(err) {
			t.Errorf("RequestDeletion(%+v): %v, want InvalidError", tg, err)
		}
	}
	if _, err := ds.RequestDeletion(ctx, "admin-a", targets, ""); !isInvalid(err) {
		t.Errorf("request without reason: %v, want InvalidError", err)
	}
	if ds.readable(t, h) != true {
		t.Error("chunk gone after refused actions")
	}
}

// Approve and cancel racing: exactly one wins; never both effects.
func TestApproveCancelRace(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	for i := range 5 {
		d := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
		ds.mustApprove(t, "admin-b", d.ID)
		var wg sync.WaitGroup
		var approveErr, cancelErr error
		wg.Add(2)
		go func() { defer wg.Done(); _, approveErr = ds.approve("admin-c", d.ID) }()
		go func() { defer wg.Done(); _, cancelErr = ds.cancel("admin-d", d.ID, "veto") }()
		wg.Wait()
		got, _ := ds.GetDeletion(ctx, d.ID)
		switch {
		case cancelErr != nil:
			t.Errorf("round %d: cancel failed (%v); a cancel before execution always succeeds", i, cancelErr)
		case got.State != store.StateCancelled:
			t.Errorf("round %d: state %s after a successful cancel", i, got.State)
		case approveErr == nil && len(got.Approvals) != 2:
			t.Errorf("round %d: approval reported but %d approvals stored", i, len(got.Approvals))
		case approveErr != nil && !errors.Is(approveErr, store.ErrConflict):
			t.Errorf("round %d: approve: %v", i, approveErr)
		}
	}
	ds.clk.Advance(delay + 31*24*time.Hour)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 0 || !ds.readable(t, h) {
		t.Errorf("after cancelled requests RunDue = %+v, %v, readable %v", rep, err, ds.readable(t, h))
	}
}

func scheduledFor(t testing.TB, ds *deletionStore, tg store.DeletionTargets) store.Deletion {
	t.Helper()
	d := ds.mustRequest(t, "admin-a", tg)
	ds.mustApprove(t, "admin-b", d.ID)
	return ds.mustApprove(t, "admin-c", d.ID)
}

// Only the server's clock moved forward: nothing executes, and it says why.
func TestClockSkewRefusesExecution(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	ds.clk.Advance(delay)
	ds.mu.Lock()
	ds.dbSkew = -delay // the database still lives three days earlier
	ds.mu.Unlock()
	if _, err := ds.RunDue(ctx); !errors.Is(err, store.ErrClockSkew) {
		t.Fatalf("RunDue with skewed clocks: %v, want ErrClockSkew", err)
	}
	if !ds.readable(t, h) {
		t.Fatal("chunk deleted despite the clock check")
	}
	ds.mu.Lock()
	ds.dbSkew = 30 * time.Second // within tolerance
	ds.mu.Unlock()
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 || ds.readable(t, h) {
		t.Fatalf("RunDue with agreeing clocks = %+v, %v", rep, err)
	}
}

// Two executors at once: one executes, the other finds nothing to do, and
// the outcome is the same as with one.
func TestConcurrentExecutors(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	var hs []chunk.Hash
	for range 50 {
		b, h := randomChunk(t, 500)
		ds.mustPut(t, b)
		hs = append(hs, h)
	}
	ds.clk.Advance(31 * 24 * time.Hour)
	d := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks, Chunks: hs})
	ds.clk.Advance(delay)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = ds.RunDue(ctx) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("RunDue: %v", err)
		}
	}
	// Whoever lost the lock left it to the winner; one more run settles it.
	ds.RunDue(ctx)
	got, _ := ds.GetDeletion(ctx, d.ID)
	if got.State != store.StateExecuted || got.Report.Deleted != 50 {
		t.Errorf("state %s, report %+v; want executed with 50 deleted", got.State, got.Report)
	}
	var n int
	ds.pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE action = 'deletion.executed'").Scan(&n)
	if n != 1 {
		t.Errorf("deletion.executed audit entries = %d, want 1", n)
	}
}

// A crash in the middle of an execution (rows deleted, content not yet
// removed) is finished by the next run: same end state.
func TestExecutionResumesAfterFailure(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100_000) // a file
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	d := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	ds.clk.Advance(delay)
	ds.blobs.mu.Lock()
	ds.blobs.fail = true
	ds.blobs.mu.Unlock()
	if _, err := ds.RunDue(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("RunDue with failing removal: %v", err)
	}
	if got, _ := ds.GetDeletion(ctx, d.ID); got.State != store.StateExecuting {
		t.Fatalf("state after failure = %s, want executing", got.State)
	}
	if len(ds.files(t)) != 1 {
		t.Fatal("the file should still be there after the failed removal")
	}
	ds.blobs.mu.Lock()
	ds.blobs.fail = false
	ds.blobs.mu.Unlock()
	// A restart's reconcile must not bring the deleted chunk back, nor
	// remove it (a tombstone row alone proves nothing): the executor's
	// rerun finishes the removal.
	if rep, err := ds.Reconcile(ctx); err != nil || rep.Adopted != 0 || rep.Tombstoned != 1 || len(ds.files(t)) != 1 {
		t.Fatalf("Reconcile = %+v, %v (files %v); want nothing adopted, 1 tombstoned left in place", rep, err, ds.files(t))
	}
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Fatalf("rerun = %+v, %v", rep, err)
	}
	got, _ := ds.GetDeletion(ctx, d.ID)
	if got.State != store.StateExecuted || got.Report.Deleted != 1 || len(ds.files(t)) != 0 {
		t.Errorf("after rerun: %s, %+v, files %v", got.State, got.Report, ds.files(t))
	}
}

// What the database refuses, whatever the application role sends.
func TestDeletionDatabaseGuards(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	d := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	mustRefuseAll(t, ds.pool, []forbidden{
		{name: "delete outside the executor", sql: "DELETE FROM chunks", code: "WV003"},
		{name: "delete naming a request that is not executing",
			sql: "SELECT set_config('wormvault.deletion_id', '" + itoa(d.ID) + "', true); DELETE FROM chunks", code: "WV003"},
		{name: "schedule without approvals", sql: "UPDATE deletion_requests SET state = 'scheduled', scheduled_at = now(), executes_at = now() + delay", code: "WV006"},
		{name: "jump to executing", sql: "UPDATE deletion_requests SET state = 'executing'", code: "WV006"},
		{name: "self-approval in SQL", sql: "INSERT INTO deletion_approvals VALUES (" + itoa(d.ID) + ", 'admin-a', now())", code: "WV006"},
		{name: "weaken the policy", sql: "UPDATE deletion_requests SET approvals_required = 1", code: "WV006", runtime: permissionDenied},
		{name: "rewrite the targets", sql: "UPDATE deletion_requests SET targets = 'x'", code: "WV006", runtime: permissionDenied},
		{name: "delete a request", sql: "DELETE FROM deletion_requests", code: "WV004", runtime: permissionDenied},
	}, ds.deletionState)
	if !ds.readable(t, h) {
		t.Error("chunk gone")
	}
	if got, _ := ds.GetDeletion(ctx, d.ID); got.State != store.StateRequested {
		t.Errorf("state = %s", got.State)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Snapshots and "everything expired before T" requests, and hold release
// through the same machinery.
func TestDeleteSnapshotsExpiredAndHoldRelease(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	commit := func(source, name string, until time.Time, content ...[]byte) (int64, []chunk.Hash) {
		var hs []chunk.Hash
		for _, c := range content {
			ds.mustPut(t, c)
			hs = append(hs, chunk.Sum(c))
		}
		root, _ := manifest.Manifest{Chunks: hs}.Marshal()
		ds.mustPut(t, root)
		res, err := ds.CommitSnapshot(ctx, "agent-1", store.NewSnapshot{Source: source, Name: name, TakenAt: ds.clk.Now(),
			RetainUntil: until, ManifestRoot: chunk.Sum(root)})
		if err != nil {
			t.Fatal(err)
		}
		return res.Snapshot.ID, append(hs, chunk.Sum(root))
	}
	a1, _ := randomChunk(t, 700)
	shared, sharedH := randomChunk(t, 700)
	b1, _ := randomChunk(t, 700)
	oldID, oldHashes := commit("db01", "old", epoch.AddDate(0, 2, 0), a1, shared)
	newID, _ := commit("db01", "new", epoch.AddDate(1, 0, 0), shared)
	webID, webHashes := commit("web", "old", epoch.AddDate(0, 2, 0), b1)

	hold, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "audit", Reason: "tax audit", Snapshots: []int64{webID}})
	if err != nil {
		t.Fatal(err)
	}
	ds.clk.Advance(90 * 24 * time.Hour) // past the old snapshots' retention
	d := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteExpired, Before: ds.clk.Now()})
	ds.clk.Advance(delay)
	if _, err := ds.RunDue(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := ds.GetDeletion(ctx, d.ID)
	if got.State != store.StateExecuted || got.Report.Snapshots != 1 {
		t.Fatalf("expired deletion: %s, %+v; want the old db01 snapshot deleted", got.State, got.Report)
	}
	for _, h := range oldHashes {
		if want := h == sharedH; ds.readable(t, h) != want {
			t.Errorf("chunk %s of the deleted snapshot: readable %v, want %v (shared with a retained snapshot)", h, !want, want)
		}
	}
	for _, h := range webHashes {
		if !ds.readable(t, h) {
			t.Errorf("held snapshot's chunk %s deleted", h)
		}
	}
	snap, _ := ds.GetSnapshot(ctx, newID)
	if snap.ID != newID {
		t.Errorf("retained snapshot missing")
	}
	_ = oldID

	// Releasing the hold needs the same quorum and delay...
	r := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteHoldRelease, Hold: hold.ID})
	ds.clk.Advance(delay)
	if _, err := ds.RunDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := ds.GetDeletion(ctx, r.ID); got.State != store.StateExecuted || !got.Report.HoldReleased {
		t.Fatalf("hold release: %s, %+v", got.State, got.Report)
	}
	// ...after which the web snapshot can go.
	w := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteSnapshots, Snapshots: []int64{webID}})
	ds.clk.Advance(delay)
	if _, err := ds.RunDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := ds.GetDeletion(ctx, w.ID); got.Report.Snapshots != 1 || got.Report.Deleted != 2 {
		t.Errorf("snapshot deletion after release: %+v, want 1 snapshot and its 2 chunks", got.Report)
	}
	for _, h := range webHashes {
		if ds.readable(t, h) {
			t.Errorf("chunk %s of the deleted web snapshot still readable", h)
		}
	}
}

// The auditor's view of a chunk shows the deletion in flight.
func TestChunkDeletionState(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	other, otherH := randomChunk(t, 100)
	ds.mustPut(t, other)
	state := func(h chunk.Hash) string {
		cr, err := ds.ChunkRetention(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		return cr.Deletion
	}
	if s := state(h); s != "none" {
		t.Fatalf("before any request: %s", s)
	}
	d := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	if s := state(h); s != store.StateRequested {
		t.Errorf("after request: %s, want requested", s)
	}
	ds.mustApprove(t, "admin-b", d.ID)
	ds.mustApprove(t, "admin-c", d.ID)
	if s, o := state(h), state(otherH); s != store.StateScheduled || o != "none" {
		t.Errorf("after quorum: %s (other chunk %s), want scheduled (none)", s, o)
	}
	ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteExpired, Before: ds.clk.Now().AddDate(0, 2, 0)})
	if o := state(otherH); o != store.StateRequested {
		t.Errorf("chunk covered by an expired-before request: %s, want requested", o)
	}
}

// deletionState describes everything a deletion can change, for tests
// that check a refused statement changed nothing.
func (ds *deletionStore) deletionState(t testing.TB) string {
	t.Helper()
	var s string
	err := ds.pool.QueryRow(context.Background(), `SELECT concat_ws(' | ',
		(SELECT string_agg(encode(hash, 'hex') || '@' || retain_until, ',' ORDER BY hash) FROM chunks),
		(SELECT string_agg(id || ':' || state || ':' || coalesce(executes_at::text, '-'), ',' ORDER BY id) FROM deletion_requests),
		(SELECT string_agg(id || ':' || coalesce(deleted_at::text, '-'), ',' ORDER BY id) FROM snapshots),
		(SELECT string_agg(id || ':' || coalesce(released_at::text, '-'), ',' ORDER BY id) FROM holds),
		'approvals ' || (SELECT count(*) FROM deletion_approvals),
		'outcomes ' || (SELECT count(*) FROM deletion_outcomes),
		'tombstones ' || (SELECT count(*) FROM chunk_tombstones),
		'admin sets ' || (SELECT count(*) FROM admin_set_versions) || '/' || (SELECT count(*) FROM admin_keys),
		'packs ' || (SELECT count(*) FROM packs_indexed),
		'integrator ' || (SELECT chunk_seq FROM audit_integrator),
		'audit ' || (SELECT count(*) FROM audit_log))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
