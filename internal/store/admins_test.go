package store_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// auditActions lists the audit log's actions in order.
func (ds *deletionStore) auditActions(t testing.TB) []string {
	t.Helper()
	rows, err := ds.pool.Query(context.Background(), "SELECT action FROM audit_log ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		rows.Scan(&a)
		out = append(out, a)
	}
	return out
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// Every way of passing off a signature that is not a fresh one by an admin
// of the set, for this vault, this request and these targets, is refused,
// audited, and changes nothing.
func TestSignedApprovalAbuse(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	targets := store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}}
	d := ds.mustRequest(t, "admin-a", targets)
	other := ds.mustRequest(t, "admin-a", targets)
	_, outsider, _ := ed25519.GenerateKey(nil)

	// A statement like the server's, with one field changed, signed by
	// admin-b's real key.
	forged := func(edit func(*approval.Statement)) store.Signature {
		st := approval.Statement{Type: approval.TypeDeletionApproval, Vault: testVaultID, Request: d.ID, Kind: d.Kind,
			TargetsDigest: d.Digest, Approvals: d.ApprovalsRequired, Delay: time.Duration(d.Delay),
			AdminSet: *d.AdminSetVersion, Signer: "admin-b"}
		edit(&st)
		msg, err := st.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return store.Signature{Signer: "admin-b", Format: approval.FormatRaw, Value: ed25519.Sign(ds.keys["admin-b"], msg)}
	}
	// The genuine statement is accepted when signed by the right key: the
	// forgeries below fail for their one difference only.
	if _, err := ds.Statement(ctx, d.ID, approval.ActionApprove, "admin-b"); err != nil {
		t.Fatal(err)
	}
	msgForOther, _ := ds.Statement(ctx, other.ID, approval.ActionApprove, "admin-b")
	msgB, _ := ds.Statement(ctx, d.ID, approval.ActionApprove, "admin-b")
	msgMallory, _ := approval.Statement{Type: approval.TypeDeletionApproval, Vault: testVaultID, Request: d.ID, Kind: d.Kind,
		TargetsDigest: d.Digest, Approvals: 2, Delay: delay, AdminSet: 1, Signer: "mallory"}.Bytes()
	tests := []struct {
		name string
		sig  store.Signature
		want error
	}{
		{"no signature (a token alone)", store.Signature{Signer: "admin-b", Format: approval.FormatRaw}, store.ErrBadSignature},
		{"key not in the admin set", store.Signature{Signer: "mallory", Format: approval.FormatRaw, Value: ed25519.Sign(outsider, msgMallory)}, store.ErrBadSignature},
		{"admin-b's name, an outsider's key", store.Signature{Signer: "admin-b", Format: approval.FormatRaw, Value: ed25519.Sign(outsider, msgB)}, store.ErrBadSignature},
		{"admin-b's name, admin-c's key", store.Signature{Signer: "admin-b", Format: approval.FormatRaw, Value: ed25519.Sign(ds.keys["admin-c"], msgB)}, store.ErrBadSignature},
		{"the requester's key", func() store.Signature { s, _ := ds.sign("admin-a", d.ID, approval.ActionApprove); return s }(), store.ErrSelfApproval},
		{"replayed from another request", store.Signature{Signer: "admin-b", Format: approval.FormatRaw, Value: ed25519.Sign(ds.keys["admin-b"], msgForOther)}, store.ErrBadSignature},
		{"another vault", forged(func(s *approval.Statement) { s.Vault = "wv-other-vault" }), store.ErrBadSignature},
		{"altered targets", forged(func(s *approval.Statement) { s.TargetsDigest = make([]byte, 32) }), store.ErrBadSignature},
		{"weaker policy", forged(func(s *approval.Statement) { s.Approvals = 1 }), store.ErrBadSignature},
		{"a cancel statement as an approval", forged(func(s *approval.Statement) { s.Type = approval.TypeDeletionCancel }), store.ErrBadSignature},
		{"an approval of an admin-set change", forged(func(s *approval.Statement) { s.Type = approval.TypeAdminSetApproval }), store.ErrBadSignature},
		{"raw signature sent as sshsig", func() store.Signature {
			s, _ := ds.sign("admin-b", d.ID, approval.ActionApprove)
			s.Format = approval.FormatSSHSIG
			return s
		}(), store.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ds.ApproveDeletion(ctx, tt.sig.Signer, d.ID, tt.sig); !errors.Is(err, tt.want) {
				t.Errorf("ApproveDeletion: %v, want %v", err, tt.want)
			}
		})
	}
	got, _ := ds.GetDeletion(ctx, d.ID)
	if got.State != store.StateRequested || len(got.Approvals) != 0 {
		t.Fatalf("after forged approvals: %s with %d approvals", got.State, len(got.Approvals))
	}
	if n := count(ds.auditActions(t), "deletion.approve.refused"); n != len(tests) {
		t.Errorf("refused attempts audited: %d, want %d", n, len(tests))
	}

	// The same key twice counts once.
	ds.mustApprove(t, "admin-b", d.ID)
	if _, err := ds.approve("admin-b", d.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second approval by the same key: %v, want ErrConflict", err)
	}
	// An unsigned request takes no approvals and cannot be signed by an outsider.
	u, err := ds.RequestDeletion(ctx, "stolen-token", targets, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.approve("admin-b", u.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("approval of an unsigned request: %v, want ErrConflict", err)
	}
	msgU, _ := approval.Statement{Type: approval.TypeDeletionRequest, Vault: testVaultID, Request: u.ID, Kind: u.Kind,
		TargetsDigest: u.Digest, Approvals: 2, Delay: delay, AdminSet: 1, Signer: "mallory"}.Bytes()
	if _, err := ds.SignRequest(ctx, "mallory", u.ID, store.Signature{Signer: "mallory", Format: approval.FormatRaw,
		Value: ed25519.Sign(outsider, msgU)}); !errors.Is(err, store.ErrBadSignature) {
		t.Errorf("request signed by an outsider: %v, want ErrBadSignature", err)
	}
	// Cancel needs a signature too.
	if _, err := ds.CancelDeletion(ctx, "admin-c", d.ID, "freeze", store.Signature{Signer: "admin-c"}); !errors.Is(err, store.ErrBadSignature) {
		t.Errorf("unsigned cancel: %v, want ErrBadSignature", err)
	}
	if !ds.readable(t, h) {
		t.Error("chunk gone")
	}
}

// Approval rows written straight into the database to fake a quorum: the
// executor re-verifies the signatures, refuses, and says so.
func TestExecutorRefusesEditedApprovals(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	d := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	ds.mustApprove(t, "admin-b", d.ID)
	now := ds.clk.Now()
	// One forged row (garbage signature under admin-c's name), then the
	// state flipped to scheduled, all as the application role.
	if _, err := ds.pool.Exec(ctx, `INSERT INTO deletion_approvals (deletion_id, approver, approved_at, format, signature)
		VALUES ($1, 'admin-c', $2, 'raw', $3)`, d.ID, now, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.pool.Exec(ctx, `UPDATE deletion_requests SET state = 'scheduled', scheduled_at = $2::timestamptz, executes_at = $2::timestamptz + delay
		WHERE id = $1`, d.ID, now); err != nil {
		t.Fatal(err)
	}
	ds.clk.Advance(delay)
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Executed) != 0 {
		t.Fatalf("RunDue = %+v, %v; want nothing executed", rep, err)
	}
	got, _ := ds.GetDeletion(ctx, d.ID)
	if got.State != store.StateRefused || got.Refusal == nil || !strings.Contains(*got.Refusal, "admin-c") {
		t.Errorf("state %s, refusal %v; want refused naming admin-c", got.State, got.Refusal)
	}
	if !ds.readable(t, h) {
		t.Error("chunk deleted on forged approvals")
	}
	if n := count(ds.auditActions(t), "deletion.refused"); n != 1 {
		t.Errorf("deletion.refused audit entries = %d, want 1", n)
	}
	if !strings.Contains(strings.Join(ds.eventTypes(), " "), "deletion.refused") {
		t.Errorf("events %v: want deletion.refused (the alert)", ds.eventTypes())
	}
	if _, err := ds.VerifyAudit(ctx); err != nil {
		t.Errorf("VerifyAudit: %v", err)
	}
}

// Admin-set changes: the governance quorum and delay, the removed admin
// can neither approve nor veto, and the floors hold.
func TestAdminSetChanges(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	remove := store.DeletionTargets{Kind: store.DeleteAdminSet, Change: &store.AdminChange{Op: store.AdminRemove, Name: "admin-d"}}
	d := ds.mustRequest(t, "admin-a", remove)
	if d.ApprovalsRequired != 2 || time.Duration(d.Delay) != 7*24*time.Hour {
		t.Errorf("admin_set request policy = %d, %s; want the governance 2, 168h", d.ApprovalsRequired, time.Duration(d.Delay))
	}
	if _, err := ds.approve("admin-d", d.ID); !errors.Is(err, store.ErrSelfApproval) {
		t.Errorf("admin-d approving their own removal: %v, want ErrSelfApproval", err)
	}
	if _, err := ds.cancel("admin-d", d.ID, "no"); !errors.Is(err, store.ErrSelfApproval) {
		t.Errorf("admin-d vetoing their own removal: %v, want ErrSelfApproval", err)
	}
	ds.mustApprove(t, "admin-b", d.ID)
	got := ds.mustApprove(t, "admin-c", d.ID)
	if got.State != store.StateScheduled {
		t.Fatalf("state %s, want scheduled", got.State)
	}
	ds.clk.Advance(delay) // the deletion delay is not enough
	if rep, _ := ds.RunDue(ctx); len(rep.Executed) != 0 {
		t.Fatal("admin-set change executed before the governance delay")
	}
	ds.clk.Advance(7 * 24 * time.Hour)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue = %+v, %v", rep, err)
	}
	set, err := ds.AdminSet(ctx, 0)
	if err != nil || set.Version != 2 || len(set.Admins) != 3 {
		t.Fatalf("admin set after removal = %+v, %v", set, err)
	}
	if _, ok := set.Member("admin-d"); ok {
		t.Error("admin-d still an admin")
	}
	// admin-d's key now counts for nothing.
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	e := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	if _, err := ds.approve("admin-d", e.ID); err == nil {
		t.Error("a removed admin's approval was accepted")
	}

	// Floors: no change may lower the quorum or delays below them, nor
	// leave too few admins to reach a quorum.
	p := set.Policy
	for _, tt := range []struct {
		name string
		c    store.AdminChange
	}{
		{"governance quorum 1", store.AdminChange{Op: store.AdminPolicy, Policy: store.Policy{ApprovalsRequired: 1, Delay: p.Delay, GovernanceApprovals: 1, GovernanceDelay: p.GovernanceDelay}}},
		{"deletion quorum 0", store.AdminChange{Op: store.AdminPolicy, Policy: store.Policy{ApprovalsRequired: 0, Delay: p.Delay, GovernanceApprovals: 2, GovernanceDelay: p.GovernanceDelay}}},
		{"governance delay below the deletion delay", store.AdminChange{Op: store.AdminPolicy, Policy: store.Policy{ApprovalsRequired: 2, Delay: p.Delay, GovernanceApprovals: 2, GovernanceDelay: p.Delay / 2}}},
		{"governance quorum below the deletion quorum", store.AdminChange{Op: store.AdminPolicy, Policy: store.Policy{ApprovalsRequired: 2, Delay: p.Delay, GovernanceApprovals: 1, GovernanceDelay: p.GovernanceDelay}}},
		{"remove below quorum+1 admins", store.AdminChange{Op: store.AdminRemove, Name: "admin-c"}},
		{"add an enrolled key", store.AdminChange{Op: store.AdminAdd, Name: "admin-e", Key: approval.PublicOf(ds.keys["admin-a"])}},
	} {
		if _, err := ds.RequestDeletion(ctx, "admin-a", store.DeletionTargets{Kind: store.DeleteAdminSet, Change: &tt.c}, "x"); err == nil {
			t.Errorf("%s: request accepted", tt.name)
		}
	}
	// A forged admin_set version (not through an executing request) is
	// refused by the database.
	if _, err := ds.pool.Exec(ctx, `INSERT INTO admin_set_versions (version, approvals_required, delay, governance_approvals,
		governance_delay, created_at, request_id) VALUES (3, 1, '1s', 2, '1s', now(), $1)`, e.ID); err == nil ||
		!strings.Contains(err.Error(), "WV008") {
		t.Errorf("forged admin set version: %v, want WV008", err)
	}
	if _, err := ds.pool.Exec(ctx, `INSERT INTO admin_keys VALUES (2, 'mallory', 'raw', $1, now())`, make([]byte, 32)); err == nil ||
		!strings.Contains(err.Error(), "WV008") {
		t.Errorf("key slipped into an admin set: %v, want WV008", err)
	}
}

// The genesis set is seeded once; a different one is refused.
func TestSeedAdminSet(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	set, err := ds.AdminSet(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := store.Genesis{Policy: set.Policy, Admins: set.Admins}
	if err := ds.SeedAdminSet(ctx, g); err != nil {
		t.Errorf("re-seeding the same set: %v", err)
	}
	g.Admins = g.Admins[:3]
	if err := ds.SeedAdminSet(ctx, g); !errors.Is(err, store.ErrConflict) {
		t.Errorf("seeding a different set: %v, want ErrConflict", err)
	}
	_, pub, _ := approval.GenerateKey()
	for _, bad := range []store.Genesis{
		{Policy: set.Policy, Admins: set.Admins[:2]},                                               // too few for the quorum
		{Policy: set.Policy, Admins: append(set.Admins[:3:3], store.Admin{Name: "BAD", Key: pub})}, // bad name
		{Policy: set.Policy, Admins: append(set.Admins[:3:3], store.Admin{Name: "dup", Key: set.Admins[0].Key})},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("Genesis.Check(%+v) passed", bad)
		}
	}
}

// One insider (admin-a) holding another admin's stolen key (admin-b's)
// must not make a quorum of two: a request, approval or cancel counts only
// when its signer is the admin the calling token names. Each attempt is
// refused with ErrSignerNotCaller, audited, and changes nothing.
func TestApprovalWithAnotherAdminsKeyThroughOwnTokenIsRefused(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	targets := store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}}
	d := ds.mustRequest(t, "admin-c", targets)

	stolenApprove, err := ds.sign("admin-b", d.ID, approval.ActionApprove)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.ApproveDeletion(ctx, "admin-a", d.ID, stolenApprove); !errors.Is(err, store.ErrSignerNotCaller) {
		t.Errorf("admin-a's token with admin-b's approval: %v, want ErrSignerNotCaller", err)
	}
	stolenCancel, _ := ds.sign("admin-b", d.ID, approval.ActionCancel)
	if _, err := ds.CancelDeletion(ctx, "admin-a", d.ID, "veto", stolenCancel); !errors.Is(err, store.ErrSignerNotCaller) {
		t.Errorf("admin-a's token with admin-b's cancel: %v, want ErrSignerNotCaller", err)
	}
	u, err := ds.RequestDeletion(ctx, "admin-a", targets, "x")
	if err != nil {
		t.Fatal(err)
	}
	stolenRequest, _ := ds.sign("admin-b", u.ID, approval.ActionRequest)
	if _, err := ds.SignRequest(ctx, "admin-a", u.ID, stolenRequest); !errors.Is(err, store.ErrSignerNotCaller) {
		t.Errorf("admin-a's token signing a request with admin-b's key: %v, want ErrSignerNotCaller", err)
	}

	got, _ := ds.GetDeletion(ctx, d.ID)
	if got.State != store.StateRequested || len(got.Approvals) != 0 {
		t.Errorf("after the attempts: %s with %d approvals, want requested with none", got.State, len(got.Approvals))
	}
	if gu, _ := ds.GetDeletion(ctx, u.ID); gu.RequestedByAdmin != nil {
		t.Errorf("request %d signed by %s through another admin's token", u.ID, *gu.RequestedByAdmin)
	}
	actions := ds.auditActions(t)
	for _, a := range []string{"deletion.approve.refused", "deletion.cancel.refused", "deletion.sign.refused"} {
		if count(actions, a) != 1 {
			t.Errorf("audit log: %d %s entries, want 1", count(actions, a), a)
		}
	}
	// admin-b's own token with admin-b's key still counts.
	ds.mustApprove(t, "admin-b", d.ID)
}
