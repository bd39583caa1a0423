package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/restic"
	"github.com/wormvault/wormvault/internal/store"
)

var (
	// errBadRequest marks malformed requests detected in this package
	// (undecodable JSON, bad headers).
	errBadRequest = errors.New("api: bad request")
	// errMethodNotAllowed: the route exists, not with this method.
	errMethodNotAllowed = errors.New("api: method not allowed on this route")
)

// statusClientClosed is nginx's convention for "the client went away"; it
// only ever reaches the access log.
const statusClientClosed = 499

// errorStatus is the one mapping from errors to HTTP status and error code.
// Handlers never choose a failure status themselves.
func errorStatus(err error) (status int, code string) {
	var (
		invalid *store.InvalidError
		tooBig  *http.MaxBytesError
		missing *store.MissingChunksError
		quota   *store.QuotaError
	)
	switch {
	case isIntegrityErr(err):
		// First: an integrity failure must never hide behind another
		// meaning (least of all "unavailable, retry later").
		return http.StatusInternalServerError, "integrity"
	case errors.Is(err, errNotReady):
		// Before the causes' own meanings: whatever failed, /readyz says
		// "degraded", and its body says what.
		return http.StatusServiceUnavailable, "degraded"
	case errors.As(err, &tooBig), errors.Is(err, store.ErrTooLarge):
		// Before the others: an oversized body surfaces as a read error
		// wrapped by whatever was reading it.
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, errTooSlow):
		// Also a read error wrapped by its reader (as errBadRequest).
		return http.StatusRequestTimeout, "too_slow"
	case errors.Is(err, errBusy):
		return http.StatusServiceUnavailable, "busy"
	case errors.As(err, &invalid), errors.Is(err, chunk.ErrInvalidHash), errors.Is(err, errBadRequest):
		return http.StatusBadRequest, "invalid"
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	case errors.Is(err, auth.ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated"
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, store.ErrSignerNotCaller):
		// The caller's token names one admin, the signature another.
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, store.ErrSelfApproval):
		return http.StatusForbidden, "self_approval"
	case errors.Is(err, store.ErrBadSignature):
		// A token authenticates the call; only an admin's own key
		// approves, requests or cancels.
		return http.StatusForbidden, "bad_signature"
	case errors.Is(err, store.ErrDamaged) && !errors.Is(err, store.ErrCorrupt):
		// Indexed but damaged: not stored as far as agents go (HEAD).
		return http.StatusNotFound, "damaged"
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, store.ErrRetentionShortened):
		return http.StatusConflict, "retention_locked"
	case errors.Is(err, store.ErrImmutable):
		return http.StatusConflict, "immutable"
	case errors.Is(err, store.ErrGovernedChange):
		return http.StatusConflict, "governed"
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, chunk.ErrHashMismatch) && !errors.Is(err, store.ErrCorrupt):
		return http.StatusUnprocessableEntity, "hash_mismatch"
	case errors.Is(err, store.ErrClockSkew):
		return http.StatusServiceUnavailable, "clock_skew"
	case errors.As(err, &quota) && quota.Kind == store.QuotaDaily:
		return http.StatusTooManyRequests, "quota_daily_exceeded"
	case errors.As(err, &quota):
		// The subject's total quota, not the disk: only an admin raising
		// the quota helps, so no Retry-After.
		return http.StatusInsufficientStorage, "quota_total_exceeded"
	case errors.Is(err, errTooManyRequests):
		return http.StatusTooManyRequests, "too_many_requests"
	case errors.Is(err, store.ErrInsufficientStorage), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// Anywhere on the write path: a full disk passes once space is
		// freed, so it is "retry later", never an internal error. Before
		// "unavailable": when both are in the chain, the disk is the cause.
		return http.StatusInsufficientStorage, "insufficient_storage"
	case errors.Is(err, store.ErrStarting):
		return http.StatusServiceUnavailable, "starting"
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, store.ErrCorrupt):
		return http.StatusInternalServerError, "corrupt"
	case errors.Is(err, store.ErrContentMissing):
		return http.StatusInternalServerError, "content_missing"
	case errors.Is(err, context.Canceled):
		return statusClientClosed, "client_closed"
	case errors.As(err, &missing):
		return http.StatusUnprocessableEntity, "missing_chunks"
	case errors.Is(err, store.ErrRequiresApproval):
		return http.StatusConflict, "requires_approval"
	case errors.Is(err, store.ErrNotDeletable):
		// 403, as restic's rest-server --append-only answers: newer restic
		// clients treat it as final instead of retrying.
		return http.StatusForbidden, "not_deletable"
	case errors.Is(err, restic.ErrRangeNotSatisfiable):
		return http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable"
	case errors.Is(err, restic.ErrMethodNotAllowed):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	}
	return http.StatusInternalServerError, "internal"
}

// isIntegrityErr reports whether err is a failure of the audit log's own
// integrity: its tree or hash chain is broken, it was rolled back under
// a checkpoint the vault signed, or it diverges from the data directory's
// journal. Retrying cannot fix it; a human must look.
func isIntegrityErr(err error) bool {
	return errors.Is(err, store.ErrAuditTree) || errors.Is(err, store.ErrAuditChainBroken) || errors.Is(err, store.ErrRollback) ||
		errors.Is(err, store.ErrIntegrity)
}

// publicMessage is what the client is told. Server-side failures get a
// generic text: their causes (paths, SQL) go to the log only.
func publicMessage(status int, code string, err error) string {
	switch code {
	case "corrupt":
		return "stored content failed verification; it is not served (the operator has been alerted)"
	case "content_missing":
		return "stored content is missing; it is not served (the operator has been alerted)"
	case "integrity":
		return "the vault's audit log or index failed an integrity check; nothing more is recorded until an operator repairs it (the operator has been alerted)"
	case "unavailable":
		return "the vault's index is unavailable; retry later"
	case "starting":
		return "the vault is starting: uploads are admitted once its start-up checks pass; retry shortly"
	case "degraded":
		return "the vault is not ready: a subsystem failed its check (see the checks in this response)"
	case "clock_skew":
		return "the server's and the database's clocks disagree; nothing time-locked is executed until they agree (the operator has been alerted)"
	case "busy":
		return "the vault is at its bound on concurrent batch bodies; retry later"
	case "insufficient_storage":
		return "the vault is short of disk space and takes no new content until space is freed; reads go on; retry later"
	}
	if code == "quota_total_exceeded" {
		// Not a server fault: the message names the quota.
		var q *store.QuotaError
		errors.As(err, &q)
		return q.Error()
	}
	if status >= 500 {
		return "internal error"
	}
	return err.Error()
}

// Retry-After values, in seconds. A full disk waits for an operator to
// free space, so its clients back off longer than from an index that is
// briefly unreachable.
const (
	retryAfterUnavailable = "5"
	retryAfterNoSpace     = "60"
	// retryAfterBusy: a token at its cap on concurrent requests.
	retryAfterBusy = "1"
)

// retryAfter is the Retry-After header for a failure status: set for the
// statuses that mean "the same request may succeed later", empty for the
// others.
func retryAfter(status int) string {
	switch status {
	case http.StatusServiceUnavailable:
		return retryAfterUnavailable
	case http.StatusInsufficientStorage:
		return retryAfterNoSpace
	case http.StatusTooManyRequests:
		return retryAfterBusy
	}
	return ""
}

// errRetryAfter is the Retry-After header for err: a daily quota's is the
// time to the next UTC day (rounded up to a whole second), a total
// quota's is none (only an admin helps); other errors' follow their
// status.
func errRetryAfter(err error, status int) string {
	var q *store.QuotaError
	if errors.As(err, &q) {
		if q.Kind != store.QuotaDaily {
			return ""
		}
		return strconv.FormatInt(int64((q.RetryAfter+time.Second-1)/time.Second), 10)
	}
	return retryAfter(status)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Missing lists the first chunks a snapshot or hold named that are not
	// stored (code missing_chunks); MissingTotal counts them all.
	Missing      []chunk.Hash `json:"missing,omitempty"`
	MissingTotal int64        `json:"missing_total,omitempty"`
}

// writeError answers a failed request: status and JSON body from the one
// mapping, and a log line whose level follows the status.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := errorStatus(err)
	ctx := r.Context()
	// The request id ties the line to the request's access-log line.
	log := h.log.With("request_id", middleware.GetReqID(ctx))
	switch {
	case code == "integrity":
		h.metrics.integrity.Inc()
		log.ErrorContext(ctx, "ALERT: audit log integrity failure", "status", status, "code", code, "err", err)
	case code == "quota_total_exceeded":
		// The subject's own limit, counted in the metrics: not a fault.
		log.InfoContext(ctx, "request refused: total quota", "status", status, "code", code, "err", err)
	case status == http.StatusInsufficientStorage:
		// Expected while the disk is full, and then at every upload: the
		// operator learns it from /readyz and the metrics, not from one
		// ERROR line per refused request.
		log.WarnContext(ctx, "request refused: insufficient storage", "status", status, "code", code, "err", err)
	case code == "starting":
		// Expected for the moments after a start: not an error.
		log.InfoContext(ctx, "request refused: the vault is starting", "status", status, "code", code)
	case status >= 500:
		log.ErrorContext(ctx, "request failed", "status", status, "code", code, "err", err)
	case status == http.StatusUnauthorized:
		log.WarnContext(ctx, "authentication refused", "err", err)
	case status == statusClientClosed:
		log.InfoContext(ctx, "client went away", "err", err)
		return
	default:
		log.DebugContext(ctx, "request refused", "status", status, "code", code, "err", err)
	}
	if v := errRetryAfter(err, status); v != "" {
		w.Header().Set("Retry-After", v)
	}
	detail := errorDetail{Code: code, Message: publicMessage(status, code, err)}
	var missing *store.MissingChunksError
	if errors.As(err, &missing) {
		detail.Missing, detail.MissingTotal = missing.Hashes, missing.Total
	}
	writeJSON(w, status, errorBody{Error: detail})
}
