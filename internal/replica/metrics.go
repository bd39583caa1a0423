package replica

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the replication metrics, labelled by source (the primary's
// name on this replica). A nil *Metrics records nothing.
type Metrics struct {
	chunks       *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	snapshots    *prometheus.CounterVec
	disappear    *prometheus.CounterVec
	alarmG       *prometheus.GaugeVec
	lagSeconds   *prometheus.GaugeVec
	lagBytes     *prometheus.GaugeVec
	lastPass     *prometheus.GaugeVec
	lastComplete *prometheus.GaugeVec
}

// NewMetrics registers the replication metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"source"}
	m := &Metrics{
		chunks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wormvault_replica_chunks_total",
			Help: "Chunk bodies fetched from the primary and stored."}, labels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wormvault_replica_bytes_total",
			Help: "Chunk bytes fetched from the primary and stored."}, labels),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wormvault_replica_snapshots_total",
			Help: "Snapshots copied from the primary."}, labels),
		disappear: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wormvault_replica_disappeared_total",
			Help: "Snapshots and chunks this vault holds that disappeared from the primary (each counted once)."}, []string{"source", "kind"}),
		alarmG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wormvault_replica_alarm",
			Help: "1 while replication is stopped because the primary's audit log was rolled back or forked."}, labels),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wormvault_replica_lag_seconds",
			Help: "Age of the oldest primary snapshot not copied yet (0: caught up), as of the last pass."}, labels),
		lagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wormvault_replica_lag_bytes",
			Help: "Bytes of the primary snapshots not copied yet (before deduplication), as of the last pass."}, labels),
		lastPass: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wormvault_replica_last_pass_timestamp_seconds",
			Help: "When the last recorded pass ended."}, labels),
		lastComplete: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wormvault_replica_last_complete_pass_timestamp_seconds",
			Help: "When the last pass that copied everything ended."}, labels),
	}
	reg.MustRegister(m.chunks, m.bytes, m.snapshots, m.disappear, m.alarmG, m.lagSeconds, m.lagBytes, m.lastPass, m.lastComplete)
	return m
}

func (m *Metrics) chunk(source string, n int64) {
	if m != nil {
		m.chunks.WithLabelValues(source).Inc()
		m.bytes.WithLabelValues(source).Add(float64(n))
	}
}

func (m *Metrics) snapshot(source string) {
	if m != nil {
		m.snapshots.WithLabelValues(source).Inc()
	}
}

func (m *Metrics) disappeared(source, kind string) {
	if m != nil {
		m.disappear.WithLabelValues(source, kind).Inc()
	}
}

func (m *Metrics) alarm(source string, on bool) {
	if m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.alarmG.WithLabelValues(source).Set(v)
	}
}

func (m *Metrics) lag(source string, seconds float64, bytes int64) {
	if m != nil {
		m.lagSeconds.WithLabelValues(source).Set(seconds)
		m.lagBytes.WithLabelValues(source).Set(float64(bytes))
	}
}

func (m *Metrics) pass(source string, at time.Time, complete bool) {
	if m != nil {
		m.lastPass.WithLabelValues(source).Set(float64(at.Unix()))
		if complete {
			m.lastComplete.WithLabelValues(source).Set(float64(at.Unix()))
		}
	}
}
