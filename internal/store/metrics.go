package store

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// copyBufs bounds the memory of verification copies: one 256 KiB buffer per
// concurrent copy, reused.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Metrics are the store's Prometheus metrics.
type Metrics struct {
	chunksStored prometheus.Counter
	bytesStored  prometheus.Counter
	dedupHits    prometheus.Counter
	// corrupt counts damage records ever opened; damagedOpen those
	// awaiting repair; repaired those closed. All three are loaded from
	// damaged_chunks at start (LoadDamageMetrics), so they survive
	// restarts. readsRefused counts reads refused because content did
	// not verify.
	corrupt        prometheus.Counter
	damagedOpen    prometheus.Gauge
	repaired       prometheus.Counter
	readsRefused   prometheus.Counter
	contentMissing prometheus.Counter
	// The scrub's work, and when it last finished a full pass.
	scrubBytes        prometheus.Counter
	scrubChunks       prometheus.Counter
	scrubLastFullPass prometheus.Gauge
	groupSize         prometheus.Histogram
	// journalDiverged counts appends refused because the database's log
	// is not the journal's; integrityAlarms counts every integrity alarm
	// (a divergence, a refused execution, an index that disagrees with the
	// journal).
	journalDiverged prometheus.Counter
	integrityAlarms prometheus.Counter
	// MissingAtReconcile is the number of indexed chunks whose content the
	// last reconcile could not find (data loss).
	MissingAtReconcile prometheus.Gauge
	// auditRollbacks counts rollbacks of the audit log found under a
	// checkpoint the vault signed; auditConsistent is 1 while the log
	// extends it, 0 once it did not (until restart).
	auditRollbacks  prometheus.Counter
	auditConsistent prometheus.Gauge
	// commitTimeouts counts uploads failed (503) because their group
	// commit missed its deadline.
	commitTimeouts prometheus.Counter
	// spaceRefusals counts uploads refused for want of space (or while
	// read-only). The free space and reserve themselves are read at each
	// scrape (opsmetrics.go).
	spaceRefusals prometheus.Counter
	// quotaRefusals counts uploads (or batch chunks) refused by a quota,
	// by subject and kind; quotaUsed is the usage last read for a subject
	// that has a quota. Only subjects with a quota appear: the labels are
	// as many as the quotas the admins set.
	quotaRefusals *prometheus.CounterVec
	quotaUsed     *prometheus.GaugeVec
	// executorRuns counts RunDue calls; executorFailures those that
	// returned an error other than their context ending. A failing
	// executor leaves approved deletions unexecuted, and a refused one
	// may be an attack: both are worth an alert.
	executorRuns     prometheus.Counter
	executorFailures prometheus.Counter
	// orphans is the number of chunks whose content is durable but whose
	// row failed to commit, waiting to be adopted (online.go).
	orphans prometheus.Gauge
	// expiryRuns counts routine expiry runs started; expiryRefused those
	// refused because their candidates exceeded the ceiling (an alarm:
	// something expired far more than the authorisation expects).
	expiryRuns    prometheus.Counter
	expiryRefused prometheus.Counter
}

// NewMetrics creates the store's metrics and registers them with reg (if
// not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		chunksStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_chunks_stored_total", Help: "New chunks stored and acknowledged.",
		}),
		bytesStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_chunk_bytes_stored_total", Help: "Bytes of new chunks stored.",
		}),
		dedupHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_chunk_dedup_hits_total", Help: "Uploads of chunks that were already stored.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_chunk_corrupt_total",
			Help: "Chunks found damaged (content not matching its hash, or gone), counted from the damage records: survives restarts.",
		}),
		damagedOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wormvault_chunks_damaged", Help: "Damaged chunks awaiting a verified re-upload (reported missing to agents).",
		}),
		repaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_chunk_repaired_total", Help: "Damaged chunks repaired by a verified re-upload, counted from the damage records.",
		}),
		readsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_chunk_reads_refused_total", Help: "Reads refused because content did not match its hash (since start).",
		}),
		scrubBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_scrub_bytes_total", Help: "Bytes of chunk content re-hashed by the scrub (since start).",
		}),
		scrubChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_scrub_chunks_total", Help: "Chunks re-hashed by the scrub (since start).",
		}),
		scrubLastFullPass: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wormvault_scrub_last_full_pass_timestamp_seconds",
			Help: "When the scrub last finished a full pass over every chunk (Unix time; 0: never).",
		}),
		contentMissing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_chunk_content_missing_total", Help: "Reads of indexed chunks whose content was missing.",
		}),
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wormvault_commit_group_chunks", Help: "Chunks acknowledged per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		journalDiverged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_journal_diverged_total", Help: "Audit appends refused because the database's log diverges from the data directory's journal.",
		}),
		integrityAlarms: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_integrity_alarms_total", Help: "Integrity alarms: the index disagrees with the journal, or an execution was refused.",
		}),
		MissingAtReconcile: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wormvault_reconcile_missing_content", Help: "Indexed chunks without content at the last reconcile (data loss).",
		}),
		auditRollbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_audit_rollback_detected_total",
			Help: "Times the audit log was found not to extend the last checkpoint the vault signed (entries removed or rewritten).",
		}),
		auditConsistent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wormvault_audit_log_consistent",
			Help: "1 while the audit log extends the last checkpoint the vault signed; 0 once it did not (checkpoint signing stopped until restart).",
		}),
		spaceRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_uploads_refused_insufficient_storage_total",
			Help: "Uploads refused before any write because free space was at or below the reserve, or the vault was read-only.",
		}),
		quotaRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormvault_quota_refusals_total",
			Help: "Uploads (or batch chunks) refused by a quota, by token subject (scope) and kind (daily: 429, total: 507).",
		}, []string{"scope", "kind"}),
		quotaUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wormvault_quota_used_bytes",
			Help: "Bytes counted against a subject's quota (daily: new bytes today, UTC; total: stored), as last read by an upload; subjects with a quota only.",
		}, []string{"scope", "kind"}),
		commitTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_commit_timeouts_total",
			Help: "Uploads answered 503 because their group commit missed its deadline (a stalled index database).",
		}),
		executorRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_executor_runs_total", Help: "Runs of the deletion executor (since start).",
		}),
		executorFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_executor_failures_total", Help: "Runs of the deletion executor that failed (since start); the error is in the log.",
		}),
		orphans: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wormvault_orphans_pending",
			Help: "Chunks whose content is durable but whose index row failed to commit, waiting to be adopted once the index answers.",
		}),
		expiryRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_expiry_runs_total", Help: "Routine expiry runs started under an expiry authorisation (since start).",
		}),
		expiryRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormvault_expiry_runs_refused_total",
			Help: "Routine expiry runs refused because their candidates exceeded the authorisation's per-run ceiling (since start).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.orphans)
		reg.MustRegister(m.executorRuns, m.executorFailures, m.expiryRuns, m.expiryRefused)
		reg.MustRegister(m.spaceRefusals, m.commitTimeouts, m.quotaRefusals, m.quotaUsed)
		reg.MustRegister(m.chunksStored, m.bytesStored, m.dedupHits, m.corrupt, m.damagedOpen, m.repaired, m.readsRefused,
			m.scrubBytes, m.scrubChunks, m.scrubLastFullPass, m.contentMissing, m.groupSize, m.MissingAtReconcile,
			m.journalDiverged, m.integrityAlarms, m.auditRollbacks, m.auditConsistent)
	}
	return m
}
