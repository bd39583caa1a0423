package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/store"
)

type policyResponse struct {
	Name        string `json:"name"`
	Pattern     string `json:"pattern"`
	DailyDays   int    `json:"daily_days"`
	YearlyYears int    `json:"yearly_years"`
	Version     int64  `json:"version"`
	Changed     bool   `json:"changed"`
	Versions    []struct {
		Version int64 `json:"version"`
	} `json:"versions"`
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Policies over HTTP: admins set and lengthen at once; shortening is 409
// governed, naming the request command; bad input is 400 with nothing
// stored; auditors and admins read; a commit under the policy gets the
// policy's date, and asking past its longest term is 400.
func TestPoliciesOverHTTP(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.seedAdmins(t)
	admin := ts.token(t, auth.RoleAdmin)
	example := map[string]any{"pattern": "db-*", "daily_days": 14, "weekly_weeks": 8, "monthly_months": 13,
		"yearly_years": 7, "minimum_days": 30}
	put := func(body map[string]any) response {
		return ts.do(t, http.MethodPut, "/v1/policies/standard", admin, jsonBody(t, body), nil)
	}

	before := ts.vaultState(t)
	for _, bad := range []map[string]any{
		{"pattern": "db *", "daily_days": 1},
		{"pattern": "db-*"},
		{"pattern": "db-*", "daily_days": -1},
		{"pattern": "db-*", "daily_days": 1, "name": "other"},
	} {
		wantError(t, put(bad), http.StatusBadRequest, "invalid")
	}
	wantError(t, ts.do(t, http.MethodPut, "/v1/policies/Bad%20Name", admin, jsonBody(t, example), nil), http.StatusBadRequest, "invalid")
	if after := ts.vaultState(t); after != before {
		t.Errorf("bad policies changed the vault")
	}

	resp := put(example)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT policy: %d %s", resp.StatusCode, resp.body)
	}
	if resp = put(example); resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.body), `"changed":false`) {
		t.Errorf("PUT the same policy: %d %s", resp.StatusCode, resp.body)
	}
	example["yearly_years"] = 10
	var p policyResponse
	resp = put(example)
	decodeJSON(t, resp, &p)
	if resp.StatusCode != http.StatusOK || p.Version != 2 || !p.Changed || p.YearlyYears != 10 {
		t.Errorf("lengthening: %d %+v", resp.StatusCode, p)
	}
	example["daily_days"] = 7
	msg := wantError(t, put(example), http.StatusConflict, "governed")
	if !strings.Contains(msg, "vault admin policies request") {
		t.Errorf("the refusal %q does not name the request command", msg)
	}
	example["daily_days"] = 14

	for _, role := range []auth.Role{auth.RoleAgent, auth.RoleReader} {
		wantError(t, ts.do(t, http.MethodGet, "/v1/policies", ts.token(t, role), nil, nil), http.StatusForbidden, "forbidden")
	}
	wantError(t, ts.do(t, http.MethodPut, "/v1/policies/standard", ts.token(t, auth.RoleAuditor), jsonBody(t, example), nil),
		http.StatusForbidden, "forbidden")
	resp = ts.do(t, http.MethodGet, "/v1/policies/standard", ts.token(t, auth.RoleAuditor), nil, nil)
	p = policyResponse{}
	decodeJSON(t, resp, &p)
	if resp.StatusCode != http.StatusOK || p.Version != 2 || len(p.Versions) != 2 {
		t.Errorf("GET policy: %d %+v", resp.StatusCode, p)
	}
	resp = ts.do(t, http.MethodGet, "/v1/policies", ts.token(t, auth.RoleAuditor), nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.body), `"name":"standard"`) {
		t.Errorf("GET policies: %d %s", resp.StatusCode, resp.body)
	}
	wantError(t, ts.do(t, http.MethodGet, "/v1/policies/none", admin, nil, nil), http.StatusNotFound, "not_found")

	// Commits under the policy.
	root := ts.putManifest(t, manifest.Manifest{Chunks: ts.putChunks(t, 2)})
	now := ts.clk.Now()
	body := map[string]any{"source": "db-1", "name": "s1", "taken_at": now, "manifest_root": root.String(),
		"retain_until": now.AddDate(10, 0, 1)}
	before = ts.vaultState(t)
	msg = wantError(t, ts.postJSON(t, "/v1/snapshots", ts.token(t, auth.RoleAgent), body), http.StatusBadRequest, "invalid")
	if !strings.Contains(msg, "standard") {
		t.Errorf("refusal %q does not name the policy", msg)
	}
	delete(body, "retain_until")
	body["taken_at"] = now.Add(time.Hour)
	wantError(t, ts.postJSON(t, "/v1/snapshots", ts.token(t, auth.RoleAgent), body), http.StatusBadRequest, "invalid")
	if after := ts.vaultState(t); after != before {
		t.Errorf("refused commits changed the vault")
	}
	body["taken_at"] = now.AddDate(-3, 0, 0) // forged: decides nothing
	resp = ts.postJSON(t, "/v1/snapshots", ts.token(t, auth.RoleAgent), body)
	var c struct {
		RetainUntil time.Time `json:"retain_until"`
		CommittedAt time.Time `json:"committed_at"`
		Policies    []string  `json:"policies"`
		Class       string    `json:"class"`
	}
	decodeJSON(t, resp, &c)
	if resp.StatusCode != http.StatusCreated || !c.RetainUntil.Equal(c.CommittedAt.AddDate(10, 0, 0)) || c.Class != "yearly" ||
		len(c.Policies) != 1 || c.Policies[0] != "standard" {
		t.Errorf("commit under the policy: %d %+v", resp.StatusCode, c)
	}

	// The governed request.
	wantError(t, ts.postJSON(t, "/v1/deletions", admin, map[string]any{"kind": "policy", "reason": "x"}), http.StatusBadRequest, "invalid")
	example["daily_days"] = 7
	example["name"] = "standard"
	resp = ts.postJSON(t, "/v1/deletions", admin, map[string]any{"kind": "policy", "reason": "shorter dailies", "policy": example})
	var d store.Deletion
	decodeJSON(t, resp, &d)
	if resp.StatusCode != http.StatusCreated || d.Kind != "policy" || !strings.Contains(d.Targets, "daily-days: 7") {
		t.Errorf("policy request: %d %s", resp.StatusCode, resp.body)
	}
}
