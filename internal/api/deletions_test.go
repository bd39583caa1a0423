package api

import (
	"net/http"
	"strconv"
	"testing"
	"time"

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

	d := ts.requestDeletion(t, alice, h, keptH)
	if d.State != "requested" || len(d.Digest) != 64 {
		t.Fatalf("request = %+v", d)
	}
	approve := func(token string) response {
		return ts.do(t, http.MethodPost, deletionPath(d.ID, "approve"), token, nil, nil)
	}
	wantError(t, approve(alice), http.StatusForbidden, "self_approval")
	for _, role := range []auth.Role{auth.RoleAgent, auth.RoleReader, auth.RoleAuditor} {
		wantError(t, approve(ts.token(t, role)), http.StatusForbidden, "forbidden")
	}
	if resp := approve(bob); resp.StatusCode != http.StatusOK {
		t.Fatalf("approve: %d %s", resp.StatusCode, resp.body)
	}
	wantError(t, approve(bob2), http.StatusConflict, "conflict")
	var got deletionJSON
	decodeJSON(t, ts.do(t, http.MethodGet, deletionPath(d.ID, ""), ts.token(t, auth.RoleAuditor), nil, nil), &got)
	if got.State != "requested" || len(got.Approvals) != 1 {
		t.Fatalf("after bob twice: %+v, want one approval", got)
	}
	resp = approve(carol)
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
	wantError(t, ts.postJSON(t, deletionPath(d.ID, "cancel"), ts.admin(t, "dave"), map[string]string{"reason": "stop"}),
		http.StatusConflict, "conflict")
	wantError(t, ts.do(t, http.MethodPost, deletionPath(d.ID, "approve"), ts.admin(t, "dave"), nil, nil), http.StatusConflict, "conflict")
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
	d := ts.requestDeletion(t, ts.admin(t, "alice"), h)
	ts.do(t, http.MethodPost, deletionPath(d.ID, "approve"), ts.admin(t, "bob"), nil, nil).mustStatus(t, http.StatusOK)
	ts.do(t, http.MethodPost, deletionPath(d.ID, "approve"), ts.admin(t, "carol"), nil, nil).mustStatus(t, http.StatusOK)

	wantError(t, ts.postJSON(t, deletionPath(d.ID, "cancel"), ts.token(t, auth.RoleAuditor), map[string]string{"reason": "x"}),
		http.StatusForbidden, "forbidden")
	wantError(t, ts.postJSON(t, deletionPath(d.ID, "cancel"), ts.admin(t, "mallory"), map[string]string{}),
		http.StatusBadRequest, "invalid")
	ts.postJSON(t, deletionPath(d.ID, "cancel"), ts.admin(t, "dave"), map[string]string{"reason": "not agreed"}).mustStatus(t, http.StatusOK)
	wantError(t, ts.do(t, http.MethodPost, deletionPath(d.ID, "approve"), ts.admin(t, "erin"), nil, nil), http.StatusConflict, "conflict")

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
