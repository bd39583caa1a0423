package api

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
)

// TestStartingHandlerAnswersProbes: before the store is open, /healthz
// is alive, /readyz and every API request get 503 "starting" with a
// Retry-After, from the one error mapping.
func TestStartingHandlerAnswersProbes(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(Starting())
	t.Cleanup(srv.Close)
	resp := doRequest(t, srv, http.MethodGet, "/healthz", "", nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.body), `"starting"`) {
		t.Errorf("GET /healthz while starting = %d %s, want 200 starting", resp.StatusCode, resp.body)
	}
	for _, tt := range []struct{ method, path string }{
		{http.MethodGet, "/readyz"}, {http.MethodPut, "/v1/chunks/" + strings.Repeat("ab", 32)},
		{http.MethodGet, "/v1/snapshots"}, {http.MethodGet, "/nope"},
	} {
		resp := doRequest(t, srv, tt.method, tt.path, "", nil, nil)
		wantError(t, resp, http.StatusServiceUnavailable, "starting")
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s while starting: no Retry-After", tt.method, tt.path)
		}
	}
}

// TestReadyzReportsReconcileProgress: while the start-up reconcile runs,
// /readyz is degraded on the reconcile check alone, with its phase;
// uploads are refused (503 starting, nothing stored) until the pack tails
// are checked, while reads are served; once the reconcile completes the
// vault is ready.
func TestReadyzReportsReconcileProgress(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	stored := make([]byte, 1000)
	rand.Read(stored)
	h := chunk.Sum(stored)
	ts.do(t, http.MethodPut, "/v1/chunks/"+h.String(), ts.token(t, auth.RoleAgent), stored, nil).mustStatus(t, http.StatusCreated)

	ts.store.BeginReconcile()
	rd := wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "reconcile")
	if rd.Reconcile.Phase != "pack tails" || !rd.Reconcile.WritesHeld || !strings.Contains(rd.Reconcile.Error, "in progress") {
		t.Errorf("/readyz reconcile check = %+v, want phase pack tails, writes held, in progress", rd.Reconcile)
	}
	other := make([]byte, 1000)
	rand.Read(other)
	oh := chunk.Sum(other)
	wantError(t, ts.do(t, http.MethodPut, "/v1/chunks/"+oh.String(), ts.token(t, auth.RoleAgent), other, nil), http.StatusServiceUnavailable, "starting")
	wantError(t, ts.do(t, http.MethodHead, "/v1/chunks/"+oh.String(), ts.token(t, auth.RoleAgent), nil, nil), http.StatusNotFound, "")
	ts.do(t, http.MethodGet, "/v1/chunks/"+h.String(), ts.token(t, auth.RoleReader), nil, nil).mustStatus(t, http.StatusOK)

	ctx := context.Background()
	rep, err := ts.store.ReconcileTail(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rd = wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "reconcile")
	if rd.Reconcile.WritesHeld || rd.Reconcile.Phase != "chunk files" {
		t.Errorf("/readyz reconcile check after the pack tails = %+v, want writes admitted, phase chunk files", rd.Reconcile)
	}
	ts.do(t, http.MethodPut, "/v1/chunks/"+oh.String(), ts.token(t, auth.RoleAgent), other, nil).mustStatus(t, http.StatusCreated)
	if err := ts.store.ReconcileRest(ctx, &rep); err != nil {
		t.Fatal(err)
	}
	rd = wantReady(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil))
	if !rd.Reconcile.OK || rd.Reconcile.Phase != "done" || rd.Reconcile.Checked < 2 {
		t.Errorf("/readyz reconcile check when done = %+v, want ok, done, both rows checked", rd.Reconcile)
	}
}
