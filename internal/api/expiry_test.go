package api

import (
	"context"
	"net/http"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
)

// Expiry authorisations over HTTP: bad terms are refused with 400 and
// store nothing; a good one is a governed request; GET /v1/expiry shows it
// to auditors and admins only.
func TestExpiryAuthorisationOverHTTP(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.seedAdmins(t)
	admin := ts.admin(t, "alice")
	count := func() int {
		var n int
		if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM deletion_requests").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for name, expiry := range map[string]any{
		"no terms":         nil,
		"no ceiling":       map[string]any{"interval": "24h"},
		"bad interval":     map[string]any{"interval": "daily", "max_percent": 5},
		"too often":        map[string]any{"interval": "1m", "max_percent": 5},
		"percent above":    map[string]any{"interval": "24h", "max_percent": 101},
		"negative chunks":  map[string]any{"interval": "24h", "max_chunks": -1},
		"unknown field":    map[string]any{"interval": "24h", "max_percent": 5, "scope": "db01"},
		"negative percent": map[string]any{"interval": "24h", "max_percent": -5, "max_chunks": 10},
	} {
		body := map[string]any{"kind": "expiry_authorisation", "reason": "routine expiry"}
		if expiry != nil {
			body["expiry"] = expiry
		}
		wantError(t, ts.postJSON(t, "/v1/deletions", admin, body), http.StatusBadRequest, "invalid")
		if n := count(); n != 0 {
			t.Fatalf("%s: %d requests stored, want none", name, n)
		}
	}
	resp := ts.postJSON(t, "/v1/deletions", admin, map[string]any{"kind": "expiry_authorisation", "reason": "routine expiry",
		"expiry": map[string]any{"interval": "24h", "max_percent": 5, "max_chunks": 1000}})
	resp.mustStatus(t, http.StatusCreated)
	var d struct {
		ID                int64  `json:"id"`
		Targets           string `json:"targets"`
		ApprovalsRequired int    `json:"approvals_required"`
		Delay             string `json:"delay"`
	}
	decodeJSON(t, resp, &d)
	want := "wormvault-deletion-targets v1\nkind: expiry_authorisation\ninterval: 24h0m0s\nmax-percent: 5\nmax-chunks: 1000\n"
	if d.Targets != want || d.ApprovalsRequired != ts.genesis.Policy.GovernanceApprovals || d.Delay != "168h0m0s" {
		t.Errorf("authorisation = %+v; want targets %q and the governance policy", d, want)
	}

	var list struct {
		Authorisations []struct {
			Authorisation struct {
				ID int64 `json:"id"`
			} `json:"authorisation"`
			Terms struct {
				Interval   string `json:"interval"`
				MaxPercent int    `json:"max_percent"`
			} `json:"terms"`
			InForce bool  `json:"in_force"`
			Runs    []any `json:"runs"`
		} `json:"authorisations"`
	}
	resp = ts.do(t, http.MethodGet, "/v1/expiry", ts.token(t, auth.RoleAuditor), nil, nil)
	resp.mustStatus(t, http.StatusOK)
	decodeJSON(t, resp, &list)
	if len(list.Authorisations) != 1 || list.Authorisations[0].Authorisation.ID != d.ID || list.Authorisations[0].InForce ||
		list.Authorisations[0].Terms.Interval != "24h0m0s" || list.Authorisations[0].Runs == nil {
		t.Errorf("GET /v1/expiry = %+v", list)
	}
	wantError(t, ts.do(t, http.MethodGet, "/v1/expiry?runs=0", admin, nil, nil), http.StatusBadRequest, "invalid")
	wantError(t, ts.do(t, http.MethodGet, "/v1/expiry", ts.token(t, auth.RoleAgent), nil, nil), http.StatusForbidden, "forbidden")
}
