package api

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/restic"
	"github.com/wormvault/wormvault/internal/store"
)

// Options configures the HTTP API.
type Options struct {
	Store    *store.Store
	Verifier *auth.Verifier
	Log      *slog.Logger
	// Registry receives the HTTP metrics and is served on /metrics. Nil:
	// a private registry.
	Registry *prometheus.Registry
	// CheckpointKey is the verifier key of the audit log's checkpoints
	// (a golang.org/x/mod/sumdb/note verifier key), served to auditors.
	CheckpointKey string

	// MinBodyRate is the slowest a request body may arrive, in bytes per
	// second averaged from the handler's first read of it, once
	// BodyRateGrace has passed; slower requests are cut with 408. 0
	// disables the check.
	MinBodyRate   int64
	BodyRateGrace time.Duration
	// BatchMemory bounds the bytes of batch bodies held in memory at once
	// (0: DefaultBatchMemory).
	BatchMemory int64
	// batchWait replaces batchWait in tests.
	batchWait time.Duration
	// MaxRequestsPerToken caps one token's concurrent requests (429
	// beyond it), on /v1 and /restic; 0 or less: no cap.
	MaxRequestsPerToken int
	// tokenAcquired, if set, is told of every request admitted by the
	// per-token cap (tests).
	tokenAcquired func(jti string)
	// ReadyTimeout bounds /readyz's database query. Zero:
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// CheckpointMaxAge: /readyz is degraded once no checkpoint signing
	// pass has succeeded for this long. Zero: not checked (for servers
	// that sign no checkpoints, as in tests).
	CheckpointMaxAge time.Duration
}

type handler struct {
	store    *store.Store
	verifier *auth.Verifier
	log      *slog.Logger
	metrics  *httpMetrics
	maxChunk int64
	maxBatch int
	ckptKey  string

	minRate          int64
	rateGrace        time.Duration
	batchMem         *batchMemory
	readyTimeout     time.Duration
	checkpointMaxAge time.Duration
	ready            readyState
	perToken         *tokenLimiter
}

// NewHandler returns the vault's HTTP API. The routes read like the API
// table in docs/api.md.
func NewHandler(o Options) http.Handler {
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	h := &handler{
		store:    o.Store,
		verifier: o.Verifier,
		log:      o.Log.With("component", "api"),
		metrics:  newHTTPMetrics(o.Registry),
		maxChunk: o.Store.Options().MaxChunkSize,
		maxBatch: o.Store.Options().MaxBatch,
		ckptKey:  o.CheckpointKey,

		minRate:          o.MinBodyRate,
		rateGrace:        o.BodyRateGrace,
		batchMem:         newBatchMemory(o.BatchMemory, o.batchWait),
		readyTimeout:     o.ReadyTimeout,
		checkpointMaxAge: o.CheckpointMaxAge,
		perToken:         newTokenLimiter(o.MaxRequestsPerToken, o.tokenAcquired),
	}
	if h.readyTimeout <= 0 {
		h.readyTimeout = DefaultReadyTimeout
	}
	const (
		agent   = auth.RoleAgent
		reader  = auth.RoleReader
		auditor = auth.RoleAuditor
		admin   = auth.RoleAdmin
		// A replica pulling from this vault (docs/replication.md): it
		// reads what it copies and audits, and writes nothing.
		replicator = auth.RoleReplicator
	)

	r := chi.NewRouter()
	// minBodyRate first: it needs the server's own ResponseWriter to set
	// read deadlines on the connection.
	r.Use(h.minBodyRate, middleware.RequestID, h.accessLog, h.recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, errNoRoute)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, errMethodNotAllowed)
	})

	r.Get("/healthz", h.healthz)
	r.Get("/readyz", h.readyz)
	// Counts, bytes and corruption counters are not for everyone: a
	// Prometheus scraper holds a metrics token (bearer_token_file).
	r.With(h.authenticate, h.require(auth.RoleMetrics)).Handle("/metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	// restic's REST backend protocol, one repository per /restic/{repo}/ (docs/restic.md).
	limit := h.perToken.limit(h.writeError)
	r.Mount("/restic", restic.NewHandler(restic.Options{Store: o.Store, Verifier: o.Verifier, Log: o.Log, WriteError: h.writeError, Limit: limit}))

	r.Route("/v1", func(r chi.Router) {
		r.Use(h.authenticate, limit)

		r.With(h.require(agent)).Put("/chunks/{hash}", h.putChunk)
		r.With(h.require(agent, reader, auditor, admin, replicator)).Head("/chunks/{hash}", h.headChunk)
		r.With(h.require(reader, replicator)).Get("/chunks/{hash}", h.getChunk)
		r.With(h.require(agent)).Post("/chunks/batch", h.putBatch)
		r.With(h.require(agent, replicator)).Post("/chunks/missing", h.missingChunks)
		r.With(h.require(agent)).Post("/chunks/retain", h.retainChunks)
		r.With(h.require(auditor, admin)).Get("/chunks/{hash}/retention", h.chunkRetention)
		r.With(h.require(auditor, admin)).Get("/damaged", h.listDamaged)
		r.With(h.require(auditor, admin)).Get("/scrub", h.scrubStatus)

		r.With(h.require(agent)).Post("/snapshots", h.commitSnapshot)
		r.With(h.require(reader, auditor, admin, replicator)).Get("/snapshots", h.listSnapshots)
		r.With(h.require(reader, auditor, admin, replicator)).Get("/snapshots/{id}", h.getSnapshot)
		r.With(h.require(agent)).Post("/snapshots/{id}/retain", h.retainSnapshot)

		r.With(h.require(admin)).Post("/holds", h.placeHold)
		r.With(h.require(auditor, admin, replicator)).Get("/holds", h.listHolds)
		r.With(h.require(auditor, admin, replicator)).Get("/holds/{id}", h.getHold)
		r.With(h.require(admin)).Delete("/holds/{id}", h.releaseHold)

		r.With(h.require(auditor, admin)).Get("/retention/summary", h.retentionSummary)
		r.With(h.require(auditor, admin)).Get("/retention/chunks", h.expiringChunks)
		r.With(h.require(auditor, admin)).Get("/retention/snapshots", h.expiringSnapshots)

		r.With(h.require(admin)).Post("/deletions", h.requestDeletion)
		r.With(h.require(auditor, admin)).Get("/deletions", h.listDeletions)
		r.With(h.require(admin)).Post("/deletions/execute-due", h.executeDue)
		r.With(h.require(auditor, admin)).Get("/deletions/{id}", h.getDeletion)
		r.With(h.require(auditor, admin)).Get("/deletions/{id}/outcomes", h.deletionOutcomes)
		r.With(h.require(admin)).Get("/deletions/{id}/statement", h.deletionStatement)
		r.With(h.require(admin)).Post("/deletions/{id}/sign", h.signDeletion)
		r.With(h.require(admin)).Post("/deletions/{id}/approve", h.approveDeletion)
		r.With(h.require(admin)).Post("/deletions/{id}/cancel", h.cancelDeletion)
		r.With(h.require(auditor, admin)).Get("/expiry", h.listExpiry)

		r.With(h.require(auditor, admin)).Get("/admins", h.adminSet)

		r.With(h.require(auditor, admin)).Get("/policies", h.listPolicies)
		r.With(h.require(auditor, admin)).Get("/policies/{name}", h.getPolicy)
		r.With(h.require(admin)).Put("/policies/{name}", h.setPolicy)

		r.With(h.require(auditor)).Get("/audit", h.auditEntries)
		r.With(h.require(auditor, admin, replicator)).Get("/audit/checkpoint", h.auditCheckpoint)
		r.With(h.require(auditor, admin, replicator)).Get("/audit/key", h.auditKey)
		r.With(h.require(auditor, admin, replicator)).Get("/audit/entries", h.auditLeaves)
		r.With(h.require(auditor, admin)).Get("/audit/proof/inclusion", h.auditInclusion)
		r.With(h.require(auditor, admin, replicator)).Get("/audit/proof/consistency", h.auditConsistency)

		r.With(h.require(auditor, admin)).Get("/replication", h.listReplication)
		r.With(h.require(admin)).Post("/replication/{source}/acknowledge", h.acknowledgeReplication)

		r.With(h.require(auditor, admin)).Get("/quotas", h.listQuotas)
		r.With(h.require(admin)).Put("/quotas", h.setQuota)

		r.With(h.require(auditor, admin)).Get("/restic/repositories", h.listResticRepositories)
		r.With(h.require(admin)).Put("/restic/repositories/{repo}/retention", h.setResticRetention)
	})
	return r
}
