package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// scrapeTimeout bounds the database query of one scrape: a stalled index
// must not stall Prometheus, and wormvault_database_up says it failed.
const scrapeTimeout = 2 * time.Second

// pendingDeletionStates are the states of a deletion request that can
// still lead to content being removed: the ones an operator alerts on.
func pendingDeletionStates() []string { return []string{"requested", "scheduled", "executing"} }

// opsCollector reports, at each scrape, what is read from the database or
// the store's state rather than counted as it happens: pending deletions,
// the age of the last signed checkpoint, the connection pool, and the data
// directory's free space (read here, not only when an upload or a
// readiness probe reads it: a quiet vault must not show stale figures, nor
// zeros after a start that look like a full disk).
type opsCollector struct {
	s *Store

	deletions       *prometheus.Desc
	databaseUp      *prometheus.Desc
	checkpointAge   *prometheus.Desc
	checkpointSize  *prometheus.Desc
	checkpointError *prometheus.Desc
	poolAcquired    *prometheus.Desc
	poolIdle        *prometheus.Desc
	poolTotal       *prometheus.Desc
	poolMax         *prometheus.Desc
	poolAcquires    *prometheus.Desc
	poolEmpty       *prometheus.Desc
	poolWait        *prometheus.Desc
	freeBytes       *prometheus.Desc
	reserveBytes    *prometheus.Desc
}

// Collector returns a prometheus.Collector of the vault's operational
// state, read at each scrape: deletion requests by state (one query,
// bounded by a 2 s timeout), the signed checkpoint's age and the database
// pool's statistics. Register it once, in main.
func (s *Store) Collector() prometheus.Collector {
	return &opsCollector{
		s: s,
		deletions: prometheus.NewDesc("wormvault_deletions",
			"Deletion requests that can still remove content, by state (requested, scheduled, executing).", []string{"state"}, nil),
		databaseUp: prometheus.NewDesc("wormvault_database_up",
			"1 if this scrape's database query succeeded within 2s; 0 if not (wormvault_deletions is then missing).", nil, nil),
		checkpointAge: prometheus.NewDesc("wormvault_audit_checkpoint_age_seconds",
			"Seconds since the audit log was last covered by a signed checkpoint (missing until the first signing pass).", nil, nil),
		checkpointSize: prometheus.NewDesc("wormvault_audit_checkpoint_size",
			"Entries covered by the latest signed checkpoint (0: none).", nil, nil),
		checkpointError: prometheus.NewDesc("wormvault_audit_checkpoint_failing",
			"1 if the last checkpoint signing pass failed, else 0.", nil, nil),
		poolAcquired: prometheus.NewDesc("wormvault_db_pool_acquired_conns",
			"Database connections in use now.", nil, nil),
		poolIdle: prometheus.NewDesc("wormvault_db_pool_idle_conns",
			"Idle database connections in the pool now.", nil, nil),
		poolTotal: prometheus.NewDesc("wormvault_db_pool_total_conns",
			"Database connections open now (acquired, idle and being opened).", nil, nil),
		poolMax: prometheus.NewDesc("wormvault_db_pool_max_conns",
			"The pool's maximum number of database connections.", nil, nil),
		poolAcquires: prometheus.NewDesc("wormvault_db_pool_acquires_total",
			"Successful acquisitions of a database connection from the pool.", nil, nil),
		poolEmpty: prometheus.NewDesc("wormvault_db_pool_empty_acquires_total",
			"Acquisitions that had to wait because no idle connection was available.", nil, nil),
		poolWait: prometheus.NewDesc("wormvault_db_pool_acquire_seconds_total",
			"Total time spent acquiring database connections (including waiting for one).", nil, nil),
		freeBytes: prometheus.NewDesc("wormvault_data_free_bytes",
			"Free bytes on the data directory's filesystem (a reading at most a second old; missing if it cannot be read).", nil, nil),
		reserveBytes: prometheus.NewDesc("wormvault_data_reserve_bytes",
			"Free space kept back from new content; uploads get 507 at or below it.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.deletions, c.databaseUp, c.checkpointAge, c.checkpointSize, c.checkpointError,
		c.poolAcquired, c.poolIdle, c.poolTotal, c.poolMax, c.poolAcquires, c.poolEmpty, c.poolWait, c.freeBytes, c.reserveBytes} {
		ch <- d
	}
}

const pendingDeletionsSQL = `SELECT state, count(*) FROM deletion_requests WHERE state = ANY(@states) GROUP BY state`

type stateCount struct {
	State string `db:"state"`
	Count int64  `db:"count"`
}

// Collect implements prometheus.Collector. A failed query drops the
// deletion series and reports wormvault_database_up 0, rather than failing
// the whole scrape: the free space and the pool matter most when the
// database is in trouble.
func (c *opsCollector) Collect(ch chan<- prometheus.Metric) {
	// Collect has no context of its own; the timeout is its bound.
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	rows, _ := c.s.pool.Query(ctx, pendingDeletionsSQL, pgx.NamedArgs{"states": pendingDeletionStates()})
	counts, err := pgx.CollectRows(rows, pgx.RowToStructByName[stateCount])
	if err != nil {
		c.s.log.Warn("metrics: cannot count pending deletions", "err", err)
		ch <- prometheus.MustNewConstMetric(c.databaseUp, prometheus.GaugeValue, 0)
	} else {
		ch <- prometheus.MustNewConstMetric(c.databaseUp, prometheus.GaugeValue, 1)
		byState := map[string]int64{}
		for _, sc := range counts {
			byState[sc.State] = sc.Count
		}
		// Every state is reported, zero included, so that a rule on
		// wormvault_deletions{state="scheduled"} > 0 has a series to test.
		for _, st := range pendingDeletionStates() {
			ch <- prometheus.MustNewConstMetric(c.deletions, prometheus.GaugeValue, float64(byState[st]), st)
		}
	}

	cs := c.s.CheckpointStatus()
	if !cs.CurrentAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.checkpointAge, prometheus.GaugeValue, cs.Age.Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.checkpointSize, prometheus.GaugeValue, float64(cs.Size))
	failing := 0.0
	if cs.Err != nil {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(c.checkpointError, prometheus.GaugeValue, failing)

	if sp := c.s.SpaceStatus(); sp.Checked && sp.Err == nil {
		ch <- prometheus.MustNewConstMetric(c.freeBytes, prometheus.GaugeValue, float64(sp.Free))
		ch <- prometheus.MustNewConstMetric(c.reserveBytes, prometheus.GaugeValue, float64(sp.Reserve))
	}

	ps := c.s.pool.Stat()
	ch <- prometheus.MustNewConstMetric(c.poolAcquired, prometheus.GaugeValue, float64(ps.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(c.poolIdle, prometheus.GaugeValue, float64(ps.IdleConns()))
	ch <- prometheus.MustNewConstMetric(c.poolTotal, prometheus.GaugeValue, float64(ps.TotalConns()))
	ch <- prometheus.MustNewConstMetric(c.poolMax, prometheus.GaugeValue, float64(ps.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.poolAcquires, prometheus.CounterValue, float64(ps.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.poolEmpty, prometheus.CounterValue, float64(ps.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.poolWait, prometheus.CounterValue, ps.AcquireDuration().Seconds())
}
