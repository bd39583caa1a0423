package api

import (
	"context"
	"crypto/rand"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/store"
)

// scrapeMetrics fetches /metrics with a metrics token and returns each
// sample line's value by its series (name and labels as exposed).
func (ts *testServer) scrapeMetrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp := ts.do(t, http.MethodGet, "/metrics", ts.token(t, auth.RoleMetrics), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.body)
	}
	got := map[string]float64{}
	for _, line := range strings.Split(string(resp.body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		got[line[:i]] = v
	}
	return got
}

// wantMetrics checks each series' value; a negative want only requires
// the series to be there.
func wantMetrics(t testing.TB, got map[string]float64, want map[string]float64) {
	t.Helper()
	for series, w := range want {
		v, ok := got[series]
		switch {
		case !ok:
			t.Errorf("/metrics lacks %s", series)
		case w >= 0 && v != w:
			t.Errorf("/metrics %s = %v, want %v", series, v, w)
		}
	}
}

// What one alerts on is on /metrics with the value the vault's state
// implies: pending deletions by state, executor runs, the checkpoint's
// age, free space and the database pool.
func TestMetricsOperationalSeries(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ctx := context.Background()

	got := ts.scrapeMetrics(t)
	wantMetrics(t, got, map[string]float64{
		`wormvault_database_up`:                            1,
		`wormvault_deletions{state="requested"}`:           0,
		`wormvault_deletions{state="scheduled"}`:           0,
		`wormvault_deletions{state="executing"}`:           0,
		`wormvault_executor_runs_total`:                    0,
		`wormvault_executor_failures_total`:                0,
		`wormvault_audit_checkpoint_size`:                  0,
		`wormvault_audit_checkpoint_failing`:               0,
		`wormvault_db_pool_acquired_conns`:                 -1,
		`wormvault_db_pool_idle_conns`:                     -1,
		`wormvault_db_pool_total_conns`:                    -1,
		`wormvault_db_pool_acquires_total`:                 -1,
		`wormvault_db_pool_empty_acquires_total`:           -1,
		`wormvault_db_pool_acquire_seconds_total`:          -1,
		`wormvault_chunks_damaged`:                         0,
		`wormvault_audit_log_consistent`:                   -1,
		`wormvault_scrub_last_full_pass_timestamp_seconds`: 0,
	})
	// This server has no free-space reading, so it exports no free-space
	// series rather than a 0 that looks like a full disk; the values are
	// checked in TestUploadsRefusedBelowReserve.
	for _, name := range []string{"wormvault_data_free_bytes", "wormvault_data_reserve_bytes"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s without a free-space reading: want no series", name)
		}
	}
	if _, ok := got["wormvault_audit_checkpoint_age_seconds"]; ok {
		t.Errorf("wormvault_audit_checkpoint_age_seconds before any signing pass: want no series")
	}
	if got["wormvault_db_pool_max_conns"] < 1 || got["wormvault_db_pool_total_conns"] < 1 || got["wormvault_db_pool_acquires_total"] < 1 {
		t.Errorf("pool: max %v total %v acquires %v, want each >= 1", got["wormvault_db_pool_max_conns"],
			got["wormvault_db_pool_total_conns"], got["wormvault_db_pool_acquires_total"])
	}

	// A signed deletion request: requested 1.
	body, h := randomChunk(t, 2000)
	ts.put(t, h, body, http.StatusCreated)
	ts.clk.Advance(minRetention + time.Hour)
	keys := ts.seedAdmins(t)
	d := ts.requestSigned(t, keys, "alice", h)
	wantMetrics(t, ts.scrapeMetrics(t), map[string]float64{
		`wormvault_deletions{state="requested"}`: 1,
		`wormvault_deletions{state="scheduled"}`: 0,
	})

	// Approved by a quorum: scheduled 1, during the delay an operator is
	// alerted to.
	for _, a := range []string{"bob", "carol"} {
		resp := ts.signed(t, ts.admin(t, a), d.ID, "approve", a, keys[a], "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("approve as %s: %d %s", a, resp.StatusCode, resp.body)
		}
	}
	var dj deletionJSON
	decodeJSON(t, ts.do(t, http.MethodGet, deletionPath(d.ID, ""), ts.admin(t, "alice"), nil, nil), &dj)
	if dj.State != "scheduled" {
		t.Fatalf("after approvals: state %q, want scheduled", dj.State)
	}
	wantMetrics(t, ts.scrapeMetrics(t), map[string]float64{
		`wormvault_deletions{state="requested"}`: 0,
		`wormvault_deletions{state="scheduled"}`: 1,
	})

	// The executor runs before and after the delay: two runs, no failure,
	// nothing pending afterwards.
	if _, err := ts.store.RunDue(ctx); err != nil {
		t.Fatal(err)
	}
	ts.clk.Advance(store.DefaultDeletionDelay + time.Minute)
	rep, err := ts.store.RunDue(ctx)
	if err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue after the delay = %+v, %v; want 1 executed", rep, err)
	}
	wantMetrics(t, ts.scrapeMetrics(t), map[string]float64{
		`wormvault_deletions{state="scheduled"}`: 0,
		`wormvault_deletions{state="executing"}`: 0,
		`wormvault_executor_runs_total`:          2,
		`wormvault_executor_failures_total`:      0,
	})

	// A signed checkpoint, then 90 s by the vault's clock.
	skey, _, err := note.GenerateKey(rand.Reader, audit.Origin(testVaultID))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := ts.store.SignCheckpoint(ctx, signer)
	if err != nil {
		t.Fatal(err)
	}
	ts.clk.Advance(90 * time.Second)
	wantMetrics(t, ts.scrapeMetrics(t), map[string]float64{
		`wormvault_audit_checkpoint_age_seconds`: 90,
		`wormvault_audit_checkpoint_size`:        float64(cp.Size),
		`wormvault_audit_checkpoint_failing`:     0,
	})
}
