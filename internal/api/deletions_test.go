package api

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

func (ts *testServer) admin(t testing.TB, subject string) string {
	t.Helper()
	tok, _, err := ts.issuer.Issue(auth.RoleAdmin, subject, tokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type deletionJSON struct {
	ID         int64      `json:"id"`
	State      string     `json:"state"`
	Digest     string     `json:"digest"`
	Targets    string     `json:"targets"`
	ExecutesAt *time.Time `json:"executes_at"`
	Approvals  []struct {
		Approver string `json:"approver"`
	} `json:"approvals"`
	Report *struct {
		Deleted int64            `json:"deleted"`
		Skipped map[string]int64 `json:"skipped"`
	} `json:"report"`
}

// adminKeys are the seeded admins' raw private keys, by name.
type adminKeys map[string]ed25519.PrivateKey

// testGenesis makes the admins every test server pins as its genesis
// admin set (as admins.json does in a data directory): alice, bob, carol,
// dave and erin with raw keys; deletions need 2 approvals and the store's
// default delay.
func testGenesis(t testing.TB) (adminKeys, store.Genesis) {
	t.Helper()
	keys := adminKeys{}
	g := store.Genesis{Policy: store.Policy{ApprovalsRequired: 2, Delay: store.Duration(store.DefaultDeletionDelay),
		GovernanceApprovals: 3, GovernanceDelay: store.Duration(7 * 24 * time.Hour)}}
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin"} {
		priv, pub, err := approval.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = priv
		g.Admins = append(g.Admins, store.Admin{Name: name, Key: pub})
	}
	return keys, g
}

// seedAdmins enrols the pinned genesis admins in the index and returns
// their keys.
func (ts *testServer) seedAdmins(t testing.TB) adminKeys {
	t.Helper()
	if err := ts.store.SeedAdminSet(context.Background(), ts.genesis); err != nil {
		t.Fatal(err)
	}
	return ts.admins
}

// signed fetches the statement for action on id as signer, signs it with
// key and posts it (the CLI's steps). reason is for cancels.
func (ts *testServer) signed(t testing.TB, token string, id int64, action, signer string, key ed25519.PrivateKey, reason string) response {
	t.Helper()
	resp := ts.do(t, http.MethodGet, deletionPath(id, "statement")+"?action="+action+"&signer="+signer, token, nil, nil)
	if resp.StatusCode != http.StatusOK {
		return resp
	}
	path := map[string]string{"request": "sign", "approve": "approve", "cancel": "cancel"}[action]
	return ts.postJSON(t, deletionPath(id, path), token, map[string]string{
		"signer": signer, "format": "raw", "signature": base64.StdEncoding.EncodeToString(ed25519.Sign(key, resp.body)),
		"reason": reason,
	})
}

// requestDeletion requests and signs, as the token's subject (an admin
// name) with keys[subject].
func (ts *testServer) requestSigned(t testing.TB, keys adminKeys, subject string, hs ...chunk.Hash) deletionJSON {
	t.Helper()
	d := ts.requestDeletion(t, ts.admin(t, subject), hs...)
	ts.signed(t, ts.admin(t, subject), d.ID, "request", subject, keys[subject], "").mustStatus(t, http.StatusOK)
	return d
}

func (ts *testServer) requestDeletion(t testing.TB, token string, hs ...chunk.Hash) deletionJSON {
	t.Helper()
	var list []string
	for _, h := range hs {
		list = append(list, h.String())
	}
	resp := ts.postJSON(t, "/v1/deletions", token, map[string]any{"kind": "chunks", "chunks": list, "reason": "clean-up"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("request deletion: %d %s", resp.StatusCode, resp.body)
	}
	var d deletionJSON
	decodeJSON(t, resp, &d)
	return d
}

func deletionPath(id int64, action string) string {
	p := "/v1/deletions/" + strconv.FormatInt(id, 10)
	if action != "" {
		p += "/" + action
	}
	return p
}

// The lifecycle over HTTP, and every abuse case: each refused with its
// status and code, and nothing deleted.
func TestDeletionOverHTTP(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 2000)
	ts.put(t, h, body, http.StatusCreated)
	kept, keptH := randomChunk(t, 2000)
	ts.put(t, keptH, kept, http.StatusCreated)
	ts.clk.Advance(minRetention + time.Hour)
	// Extend one chunk: it must survive the deletion.
	resp := ts.postJSON(t, "/v1/chunks/retain", ts.token(t, auth.RoleAgent),
		map[string]any{"hashes": []string{keptH.String()}, "retain_until": ts.clk.Now().AddDate(1, 0, 0)})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("retain: %d", resp.StatusCode)
	}

	keys := ts.seedAdmins(t)
	alice, bob, carol := ts.admin(t, "alice"), ts.admin(t, "bob"), ts.admin(t, "carol")
	bob2 := ts.admin(t, "bob") // the same person with another token

	// Only admins may request.
	for _, role := range []auth.Role{auth.RoleAgent, auth.RoleReader, auth.RoleAuditor} {
		resp := ts.postJSON(t, "/v1/deletions", ts.token(t, role), map[string]any{"kind": "chunks", "chunks": []string{h.String()}, "reason": "x"})
		wantError(t, resp, http.StatusForbidden, "forbidden")
	}
	wantError(t, ts.postJSON(t, "/v1/deletions", alice, map[string]any{"kind": "chunks", "chunks": []string{h.String()}}),
		http.StatusBadRequest, "invalid")
	wantError(t, ts.postJSON(t, "/v1/deletions", alice, map[string]any{"kind": "chunks", "chunks": []string{"nothex"}, "reason": "x"}),
		http.StatusBadRequest, "invalid")

	d := ts.requestSigned(t, keys, "alice", h, keptH)
	if d.State != "requested" || len(d.Digest) != 64 {
		t.Fatalf("request = %+v", d)
	}
	approve := func(token, signer string) response {
		return ts.signed(t, token, d.ID, "approve", signer, keys[signer], "")
	}
	wantError(t, approve(alice, "alice"), http.StatusForbidden, "self_approval")
	for _, role := range []auth.Role{auth.RoleAgent, auth.RoleReader, auth.RoleAuditor} {
		wantError(t, approve(ts.token(t, role), "bob"), http.StatusForbidden, "forbidden")
	}
	// Malformed signed bodies.
	wantError(t, ts.postJSON(t, deletionPath(d.ID, "approve"), bob, map[string]string{"signer": "bob", "format": "pgp", "signature": ""}),
		http.StatusBadRequest, "invalid")
	wantError(t, ts.postJSON(t, deletionPath(d.ID, "approve"), bob, map[string]string{"signer": "bob", "format": "raw", "signature": "%%%"}),
		http.StatusBadRequest, "invalid")
	wantError(t, ts.do(t, http.MethodGet, deletionPath(d.ID, "statement")+"?action=approve&signer=Bob%0A", bob, nil, nil),
		http.StatusBadRequest, "invalid")
	if resp := approve(bob, "bob"); resp.StatusCode != http.StatusOK {
		t.Fatalf("approve: %d %s", resp.StatusCode, resp.body)
	}
	wantError(t, approve(bob2, "bob"), http.StatusConflict, "conflict")
	var got deletionJSON
	decodeJSON(t, ts.do(t, http.MethodGet, deletionPath(d.ID, ""), ts.token(t, auth.RoleAuditor), nil, nil), &got)
	if got.State != "requested" || len(got.Approvals) != 1 {
		t.Fatalf("after bob twice: %+v, want one approval", got)
	}
	resp = approve(carol, "carol")
	decodeJSON(t, resp, &got)
	if got.State != "scheduled" || got.ExecutesAt == nil {
		t.Fatalf("after quorum: %+v", got)
	}

	// Not before its time, whoever asks.
	execute := func() response {
		return ts.do(t, http.MethodPost, "/v1/deletions/execute-due", ts.admin(t, "ops"), nil, nil)
	}
	wantError(t, ts.do(t, http.MethodPost, "/v1/deletions/execute-due", ts.token(t, auth.RoleAgent), nil, nil), http.StatusForbidden, "forbidden")
	if resp := execute(); resp.StatusCode != http.StatusOK {
		t.Fatalf("execute-due: %d", resp.StatusCode)
	}
	ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil).mustStatus(t, http.StatusOK)

	ts.clk.Advance(store.DefaultDeletionDelay)
	execute().mustStatus(t, http.StatusOK)
	wantError(t, ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil), http.StatusNotFound, "not_found")
	ts.do(t, http.MethodGet, chunkPath(keptH), ts.token(t, auth.RoleReader), nil, nil).mustStatus(t, http.StatusOK)
	decodeJSON(t, ts.do(t, http.MethodGet, deletionPath(d.ID, ""), ts.admin(t, "alice"), nil, nil), &got)
	if got.State != "executed" || got.Report == nil || got.Report.Deleted != 1 || got.Report.Skipped["chunk:retained"] != 1 {
		t.Errorf("executed = %+v, report %+v", got, got.Report)
	}
	if f := ts.blobFiles(t); len(f) != 1 || f[0] != blobFile(keptH) {
		t.Errorf("blob files = %v, want only the retained chunk", f)
	}
	var outs struct {
		Outcomes []store.Outcome `json:"outcomes"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, deletionPath(d.ID, "outcomes"), ts.token(t, auth.RoleAuditor), nil, nil), &outs)
	if len(outs.Outcomes) != 2 {
		t.Errorf("outcomes = %+v", outs.Outcomes)
	}

	// Too late to cancel, or to approve.
	wantError(t, ts.signed(t, ts.admin(t, "dave"), d.ID, "cancel", "dave", keys["dave"], "stop"), http.StatusConflict, "conflict")
	wantError(t, approve(ts.admin(t, "dave"), "dave"), http.StatusConflict, "conflict")
	wantError(t, ts.do(t, http.MethodGet, deletionPath(999, ""), ts.admin(t, "dave"), nil, nil), http.StatusNotFound, "not_found")
	wantError(t, ts.do(t, http.MethodGet, "/v1/deletions/x", ts.admin(t, "dave"), nil, nil), http.StatusBadRequest, "invalid")
}

// Any single admin can cancel; a cancelled request never executes.
func TestCancelOverHTTP(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 500)
	ts.put(t, h, body, http.StatusCreated)
	ts.clk.Advance(minRetention + time.Hour)
	keys := ts.seedAdmins(t)
	d := ts.requestSigned(t, keys, "alice", h)
	ts.signed(t, ts.admin(t, "bob"), d.ID, "approve", "bob", keys["bob"], "").mustStatus(t, http.StatusOK)
	ts.signed(t, ts.admin(t, "carol"), d.ID, "approve", "carol", keys["carol"], "").mustStatus(t, http.StatusOK)

	wantError(t, ts.postJSON(t, deletionPath(d.ID, "cancel"), ts.token(t, auth.RoleAuditor), map[string]string{"reason": "x"}),
		http.StatusForbidden, "forbidden")
	wantError(t, ts.signed(t, ts.admin(t, "dave"), d.ID, "cancel", "dave", keys["dave"], ""), http.StatusBadRequest, "invalid")
	// A token alone cannot cancel either: a stolen token-signing key must
	// not be able to freeze deletions anonymously.
	wantError(t, ts.postJSON(t, deletionPath(d.ID, "cancel"), ts.admin(t, "dave"),
		map[string]string{"reason": "x", "signer": "dave", "format": "raw", "signature": ""}), http.StatusForbidden, "bad_signature")
	ts.signed(t, ts.admin(t, "dave"), d.ID, "cancel", "dave", keys["dave"], "not agreed").mustStatus(t, http.StatusOK)
	wantError(t, ts.signed(t, ts.admin(t, "erin"), d.ID, "approve", "erin", keys["erin"], ""), http.StatusConflict, "conflict")

	ts.clk.Advance(store.DefaultDeletionDelay + time.Hour)
	ts.do(t, http.MethodPost, "/v1/deletions/execute-due", ts.admin(t, "ops"), nil, nil).mustStatus(t, http.StatusOK)
	ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil).mustStatus(t, http.StatusOK)
	var list struct {
		Deletions []deletionJSON `json:"deletions"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/deletions?state=cancelled", ts.token(t, auth.RoleAuditor), nil, nil), &list)
	if len(list.Deletions) != 1 || list.Deletions[0].ID != d.ID {
		t.Errorf("cancelled list = %+v", list.Deletions)
	}
	wantError(t, ts.do(t, http.MethodGet, "/v1/deletions?state=bogus", ts.token(t, auth.RoleAuditor), nil, nil), http.StatusBadRequest, "invalid")
}

func (r response) mustStatus(t testing.TB, want int) {
	t.Helper()
	if r.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL, r.StatusCode, want, r.body)
	}
}

// Acceptance 2: the token-signing key is stolen. The intruder mints three
// admin tokens and tries everything a token can do; with no admin's
// private key nothing is deleted, and the audit log shows every refused
// attempt.
func TestStolenSigningKeyCannotDelete(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	keys := ts.seedAdmins(t)
	body, h := randomChunk(t, 500)
	ts.put(t, h, body, http.StatusCreated)
	ts.clk.Advance(minRetention + time.Hour)

	// ts.issuer signs with the server's key: exactly what the intruder has.
	forged := []string{ts.admin(t, "alice"), ts.admin(t, "bob"), ts.admin(t, "carol")}
	_, intruder, _ := ed25519.GenerateKey(nil)
	d := ts.requestDeletion(t, forged[0], h)
	// Sign the request with the intruder's own key under alice's name.
	wantError(t, ts.signed(t, forged[0], d.ID, "request", "alice", intruder, ""), http.StatusForbidden, "bad_signature")
	for i, signer := range []string{"bob", "carol"} {
		wantError(t, ts.signed(t, forged[i+1], d.ID, "approve", signer, intruder, ""), http.StatusConflict, "conflict") // unsigned request
	}
	// A request signed by a real admin (say alice was tricked into it) still
	// needs two more real keys: forged approvals fail.
	e := ts.requestSigned(t, keys, "alice", h)
	for i, signer := range []string{"bob", "carol"} {
		wantError(t, ts.signed(t, forged[i+1], e.ID, "approve", signer, intruder, ""), http.StatusForbidden, "bad_signature")
		wantError(t, ts.postJSON(t, deletionPath(e.ID, "approve"), forged[i+1], map[string]string{"signer": signer, "format": "raw", "signature": ""}),
			http.StatusForbidden, "bad_signature")
		wantError(t, ts.postJSON(t, deletionPath(e.ID, "approve"), ts.admin(t, "mallory"), map[string]string{"signer": "mallory", "format": "raw", "signature": "AAAA"}),
			http.StatusForbidden, "bad_signature")
	}
	ts.clk.Advance(8 * 24 * time.Hour) // past the request expiry and any delay
	forged = append(forged, ts.admin(t, "alice"))
	ts.do(t, http.MethodPost, "/v1/deletions/execute-due", forged[3], nil, nil).mustStatus(t, http.StatusOK)
	ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil).mustStatus(t, http.StatusOK)
	for _, id := range []int64{d.ID, e.ID} {
		var got deletionJSON
		decodeJSON(t, ts.do(t, http.MethodGet, deletionPath(id, ""), forged[3], nil, nil), &got)
		if got.State != "expired" || len(got.Approvals) != 0 {
			t.Errorf("request %d: %s with %d approvals, want expired with none", id, got.State, len(got.Approvals))
		}
	}
	var audit struct {
		Entries []struct {
			Action string `json:"action"`
		} `json:"entries"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/audit", ts.token(t, auth.RoleAuditor), nil, nil), &audit)
	refused := map[string]int{}
	for _, e := range audit.Entries {
		refused[e.Action]++
	}
	if refused["deletion.sign.refused"] != 1 || refused["deletion.approve.refused"] != 6 || refused["deletion.executed"] != 0 {
		t.Errorf("audit actions %v: want 1 refused sign, 6 refused approvals, no execution", refused)
	}
}
