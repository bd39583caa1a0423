package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type httpMetrics struct {
	requests *prometheus.HistogramVec
	// integrity counts requests answered 500 "integrity": the audit log's
	// tree or chain is broken, or it was rolled back. Alert on any.
	integrity prometheus.Counter
	// batchRefused counts the chunks of batch uploads refused, by error
	// code: the per-item refusals are counted here and summarised in one
	// log line per request, never logged one line each.
	batchRefused *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wormvault_http_request_duration_seconds",
			Help:    "HTTP requests by method, route pattern and status.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method", "route", "status"}),
		integrity: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_integrity_errors_total",
			Help: "Requests that failed on an audit log integrity check (broken tree or chain, rollback).",
		}),
		batchRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormvault_batch_chunks_refused_total",
			Help: "Chunks of batch uploads refused, by error code (insufficient_storage, hash_mismatch, ...).",
		}, []string{"code"}),
	}
	reg.MustRegister(m.requests, m.integrity, m.batchRefused)
	return m
}

func (m *httpMetrics) observe(method, route string, status int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Observe(d.Seconds())
}
