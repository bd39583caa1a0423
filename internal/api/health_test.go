package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
)

// /metrics leaks counts, bytes and corruption counters: anonymous callers
// get 401, every role but metrics 403.
func TestMetricsRefuseAnonymousAndOtherRoles(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	wantError(t, ts.do(t, http.MethodGet, "/metrics", "", nil, nil), http.StatusUnauthorized, "unauthenticated")
	for _, role := range []auth.Role{auth.RoleAgent, auth.RoleReader, auth.RoleAuditor, auth.RoleAdmin} {
		wantError(t, ts.do(t, http.MethodGet, "/metrics", ts.token(t, role), nil, nil), http.StatusForbidden, "forbidden")
	}
	ts.do(t, http.MethodGet, "/metrics", ts.token(t, auth.RoleMetrics), nil, nil).mustStatus(t, http.StatusOK)
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	resp := ts.do(t, http.MethodGet, "/healthz", "", nil, nil)
	if want := `{"status":"ok"}`; resp.StatusCode != http.StatusOK || strings.TrimSpace(string(resp.body)) != want {
		t.Errorf("GET /healthz = %d %s, want 200 %s", resp.StatusCode, resp.body, want)
	}
	wantReady(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil))

	// A request first, so that the HTTP histogram has a series to show.
	wantError(t, ts.do(t, http.MethodGet, "/nope", "", nil, nil), http.StatusNotFound, "not_found")
	resp = ts.do(t, http.MethodGet, "/metrics", ts.token(t, auth.RoleMetrics), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	for _, want := range []string{
		"wormvault_http_request_duration_seconds_count",
		`route="/healthz"`,
		`route="unmatched",status="404"`,
	} {
		if !strings.Contains(string(resp.body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, resp.body)
		}
	}
}

func TestUnknownRoutes(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 100)
	ts.put(t, h, body, http.StatusCreated)
	before := ts.state(t)
	agent := ts.token(t, auth.RoleAgent)
	admin := ts.token(t, auth.RoleAdmin)
	tests := []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"unknown top-level path", http.MethodGet, "/nope", "", 404, "not_found"},
		{"root", http.MethodGet, "/", "", 404, "not_found"},
		{"unknown /v1 path, authenticated", http.MethodGet, "/v1/nope", agent, 404, "not_found"},
		{"unknown version", http.MethodPut, "/v2/chunks/" + h.String(), agent, 404, "not_found"},
		// Under /v1, authentication comes first: no route is revealed to
		// an unauthenticated caller.
		{"unknown /v1 path, anonymous", http.MethodGet, "/v1/nope", "", 401, "unauthenticated"},
		// Nothing in the API deletes: DELETE is not a route, for any role.
		{"DELETE chunk as agent", http.MethodDelete, chunkPath(h), agent, 405, "method_not_allowed"},
		{"DELETE chunk as admin", http.MethodDelete, chunkPath(h), admin, 405, "method_not_allowed"},
		{"POST to a chunk", http.MethodPost, chunkPath(h), agent, 405, "method_not_allowed"},
		// Route ordering: PUT on the name of a batch route is a (bad) hash.
		{"PUT /v1/chunks/missing", http.MethodPut, "/v1/chunks/missing", agent, 400, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.do(t, tt.method, tt.path, tt.token, nil, nil)
			wantError(t, resp, tt.status, tt.code)
			ts.assertUnchanged(t, before)
		})
	}
	resp := ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
	if resp.StatusCode != http.StatusOK || string(resp.body) != string(body) {
		t.Errorf("chunk not intact after the requests above: status %d", resp.StatusCode)
	}
}
