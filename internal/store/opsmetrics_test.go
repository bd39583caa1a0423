package store_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/store"
)

// gathered returns each gathered sample's value by metric name and label
// values ("name" or "name{v1,v2}").
func gathered(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetValue() + "}"
			}
			switch {
			case m.Gauge != nil:
				got[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				got[key] = m.GetCounter().GetValue()
			}
		}
	}
	return got
}

// A database that is gone must not take /metrics with it (the free space
// and the pool matter most then), and must not look healthy: the scrape
// succeeds, wormvault_database_up is 0 and the deletion series are
// missing rather than a reassuring 0; an executor run against it counts as
// a failure.
func TestMetricsScrapeWithDatabaseDown(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	reg := prometheus.NewRegistry()
	s := store.New(ts.pool, ts.blobs, ts.clk, slog.New(slog.DiscardHandler), store.NewMetrics(reg), store.Options{MaxChunkSize: 1 << 20, MaxBatch: 50})
	reg.MustRegister(s.Collector())

	got := gathered(t, reg)
	if got["wormvault_database_up"] != 1 || got["wormvault_deletions{scheduled}"] != 0 {
		t.Fatalf("database up: wormvault_database_up %v, scheduled %v; want 1, 0", got["wormvault_database_up"], got["wormvault_deletions{scheduled}"])
	}
	if _, ok := got["wormvault_deletions{scheduled}"]; !ok {
		t.Fatalf("database up: no wormvault_deletions{state=scheduled} series: %v", got)
	}

	ts.pool.Close()
	got = gathered(t, reg)
	if v, ok := got["wormvault_database_up"]; !ok || v != 0 {
		t.Errorf("database down: wormvault_database_up = %v (present %v), want 0", v, ok)
	}
	for _, st := range []string{"requested", "scheduled", "executing"} {
		if v, ok := got["wormvault_deletions{"+st+"}"]; ok {
			t.Errorf("database down: wormvault_deletions{state=%q} = %v, want no series", st, v)
		}
	}
	if _, ok := got["wormvault_db_pool_max_conns"]; !ok {
		t.Errorf("database down: the pool's series are missing")
	}

	if _, err := s.RunDue(context.Background()); err == nil {
		t.Fatal("RunDue on a closed pool: no error")
	}
	got = gathered(t, reg)
	if got["wormvault_executor_runs_total"] != 1 || got["wormvault_executor_failures_total"] != 1 {
		t.Errorf("after a failed run: runs %v failures %v, want 1 and 1", got["wormvault_executor_runs_total"], got["wormvault_executor_failures_total"])
	}
}

// TestScrapeReadsFreeSpace: a scrape reports the data directory's free
// space and reserve even when nothing else has read them (no upload, no
// readiness probe). Otherwise a quiet vault shows 0 free and 0 reserve
// after a start, which the example alert WormvaultFreeSpaceAtReserve
// (free <= reserve) takes for a full disk, and a vault filling up from
// outside shows stale figures.
func TestScrapeReadsFreeSpace(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	reg := prometheus.NewRegistry()
	free := int64(40 << 30)
	s := store.New(ts.pool, ts.blobs, ts.clk, slog.New(slog.DiscardHandler), store.NewMetrics(reg), store.Options{
		MaxChunkSize: 1 << 20, MaxBatch: 50,
		FreeSpace: func() (store.Space, error) { return store.Space{Free: free, Total: 100 << 30}, nil },
		Reserve:   store.Reserve{Percent: 2},
	})
	reg.MustRegister(s.Collector())
	got := gathered(t, reg)
	if got["wormvault_data_free_bytes"] != float64(free) || got["wormvault_data_reserve_bytes"] != float64(2<<30) {
		t.Errorf("first scrape: free %v, reserve %v; want %d, %d", got["wormvault_data_free_bytes"], got["wormvault_data_reserve_bytes"], free, 2<<30)
	}
}
