package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// errorCases is the mapping table of STYLE.md 2.3, as extended in
// errors.go.
var errorCases = []struct {
	name   string
	err    error
	status int
	code   string
}{
	{"InvalidError", &store.InvalidError{Field: "retain_until", Reason: "must be in the future"}, 400, "invalid"},
	{"malformed hash", chunk.ErrInvalidHash, 400, "invalid"},
	{"ParseHash error", parseHashErr(), 400, "invalid"},
	{"malformed request", errBadRequest, 400, "invalid"},
	{"method not allowed", errMethodNotAllowed, 405, "method_not_allowed"},
	{"unauthenticated", auth.ErrUnauthenticated, 401, "unauthenticated"},
	{"forbidden", auth.ErrForbidden, 403, "forbidden"},
	{"self-approval", store.ErrSelfApproval, 403, "self_approval"},
	{"signer is not the caller", fmt.Errorf("approve: %w", store.ErrSignerNotCaller), 403, "forbidden"},
	{"clock skew", store.ErrClockSkew, 503, "clock_skew"},
	{"not found", store.ErrNotFound, 404, "not_found"},
	{"no route", errNoRoute, 404, "not_found"},
	{"conflict", store.ErrConflict, 409, "conflict"},
	{"retention shortened", store.ErrRetentionShortened, 409, "retention_locked"},
	{"immutable", store.ErrImmutable, 409, "immutable"},
	{"governed change", fmt.Errorf("store: retention policy %q: %w", "x", store.ErrGovernedChange), 409, "governed"},
	{"MaxBytesError", &http.MaxBytesError{Limit: 10}, 413, "too_large"},
	{"store too large", store.ErrTooLarge, 413, "too_large"},
	{"hash mismatch", chunk.ErrHashMismatch, 422, "hash_mismatch"},
	{"index unavailable", store.ErrUnavailable, 503, "unavailable"},
	{"starting", fmt.Errorf("store: new content refused while starting (pack tails): %w", store.ErrStarting), 503, "starting"},
	{"ENOSPC", syscall.ENOSPC, 507, "insufficient_storage"},
	{"ENOSPC in a PathError", &fs.PathError{Op: "write", Path: "/data/x", Err: syscall.ENOSPC}, 507, "insufficient_storage"},
	{"EDQUOT", &fs.PathError{Op: "write", Path: "/data/x", Err: syscall.EDQUOT}, 507, "insufficient_storage"},
	{"free space below the reserve", store.ErrInsufficientStorage, 507, "insufficient_storage"},
	{"ENOSPC beats unavailable", fmt.Errorf("store: adopt chunk: %w: audit: journal: %w", store.ErrUnavailable,
		&fs.PathError{Op: "write", Path: "/data/journal/1.wvj", Err: syscall.ENOSPC}), 507, "insufficient_storage"},
	{"not ready", errNotReady, 503, "degraded"},
	{"not ready beats its causes", fmt.Errorf("%w: %w", errNotReady, errors.Join(store.ErrUnavailable, syscall.ENOSPC)), 503, "degraded"},
	{"integrity beats not ready", fmt.Errorf("%w: %w", errNotReady, store.ErrRollback), 500, "integrity"},
	{"ENOSPC from a pack start", fmt.Errorf("store: pack chunk: %w", errors.Join(
		fmt.Errorf("pack: create 7: %w", &fs.PathError{Op: "write", Path: "/data/packs/7.pack", Err: syscall.ENOSPC}),
		errors.New("remove the empty pack: busy"))), 507, "insufficient_storage"},
	{"ENOSPC from the journal in a group commit", fmt.Errorf("store: commit group: %w",
		fmt.Errorf("journal: append: %w", &fs.PathError{Op: "write", Path: "/data/journal/1.wvj", Err: syscall.ENOSPC})), 507, "insufficient_storage"},
	{"corrupt", store.ErrCorrupt, 500, "corrupt"},
	{"content missing", store.ErrContentMissing, 500, "content_missing"},
	{"audit tree broken", store.ErrAuditTree, 500, "integrity"},
	{"audit chain broken", store.ErrAuditChainBroken, 500, "integrity"},
	{"audit log rolled back", store.ErrRollback, 500, "integrity"},
	{"client went away", context.Canceled, statusClientClosed, "client_closed"},
	{"anything else", errors.New("disk on fire"), 500, "internal"},
	{"EIO", &fs.PathError{Op: "read", Path: "/data/x", Err: syscall.EIO}, 500, "internal"},

	// Precedence where one error carries two meanings.
	{"corrupt beats hash mismatch", fmt.Errorf("open: %w: %w", store.ErrCorrupt, chunk.ErrHashMismatch), 500, "corrupt"},
	{"damaged", fmt.Errorf("head: %w", store.ErrDamaged), 404, "damaged"},
	{"damaged read is corrupt", fmt.Errorf("open: %w: %w", store.ErrCorrupt, store.ErrDamaged), 500, "corrupt"},
	{"oversize body read inside bad JSON", fmt.Errorf("%w: request body: %w", errBadRequest, &http.MaxBytesError{Limit: 1}), 413, "too_large"},
	{"oversize body read inside a store error", fmt.Errorf("store: put: %w", &http.MaxBytesError{Limit: 1}), 413, "too_large"},
	{"slow body read inside a store error", fmt.Errorf("store: put: %w: reading request body: %w", errBadRequest, errTooSlow), 408, "too_slow"},
	{"batch memory busy", fmt.Errorf("api: batch: %w", errBusy), 503, "busy"},
	{"daily quota", fmt.Errorf("store: put: %w", &store.QuotaError{Kind: store.QuotaDaily, RetryAfter: time.Hour}), 429, "quota_daily_exceeded"},
	{"total quota", fmt.Errorf("store: put: %w", &store.QuotaError{Kind: store.QuotaTotal}), 507, "quota_total_exceeded"},
	{"token at its request cap", fmt.Errorf("api: %w", errTooManyRequests), 429, "too_many_requests"},
	{"group commit deadline", fmt.Errorf("store: commit group: %w: deadline", store.ErrUnavailable), 503, "unavailable"},
	{"integrity beats unavailable", fmt.Errorf("store: checkpoint: %w: %w", store.ErrUnavailable, store.ErrAuditTree), 500, "integrity"},
	{"unavailable revocation check", fmt.Errorf("auth: check revocation: %w", fmt.Errorf("store: check revocation: %w: %w", store.ErrUnavailable, errors.New("dial tcp: connection refused"))), 503, "unavailable"},
}

func parseHashErr() error {
	_, err := chunk.ParseHash("../../etc/passwd")
	return err
}

func TestErrorStatus(t *testing.T) {
	t.Parallel()
	wraps := []struct {
		name string
		wrap func(error) error
	}{
		{"bare", func(err error) error { return err }},
		{"wrapped", func(err error) error { return fmt.Errorf("x: %w", err) }},
		{"wrapped twice", func(err error) error { return fmt.Errorf("api: put: %w", fmt.Errorf("store: put chunk: %w", err)) }},
		{"joined", func(err error) error { return errors.Join(errors.New("cleanup failed"), err) }},
	}
	for _, tt := range errorCases {
		for _, w := range wraps {
			t.Run(tt.name+"/"+w.name, func(t *testing.T) {
				err := w.wrap(tt.err)
				status, code := errorStatus(err)
				if status != tt.status || code != tt.code {
					t.Errorf("errorStatus(%v) = %d %q, want %d %q", err, status, code, tt.status, tt.code)
				}
			})
		}
	}
	t.Run("%v loses the meaning", func(t *testing.T) {
		// Guards the table against a mapping that matched on text.
		if status, code := errorStatus(fmt.Errorf("x: %v", store.ErrNotFound)); status != 500 || code != "internal" {
			t.Errorf("errorStatus(%%v-wrapped ErrNotFound) = %d %q, want 500 internal", status, code)
		}
	})
}

// TestWriteError checks the response writeError builds from the mapping:
// the JSON body, Retry-After on the statuses that mean "retry later", and server-side causes kept out of
// the message.
func TestWriteError(t *testing.T) {
	t.Parallel()
	var logBuf strings.Builder
	h := &handler{log: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		metrics: newHTTPMetrics(prometheus.NewRegistry())}
	secret := "/srv/vault/data/blake3/ab/cd: password=hunter2"
	for _, tt := range errorCases {
		t.Run(tt.name, func(t *testing.T) {
			err := fmt.Errorf("x: %w: %s", tt.err, secret)
			rec := httptest.NewRecorder()
			h.writeError(rec, httptest.NewRequest(http.MethodGet, "/v1/x", nil), err)
			if tt.status == statusClientClosed {
				// Nobody is listening: nothing is written.
				if rec.Body.Len() != 0 || rec.Code != http.StatusOK || len(rec.Header()) != 0 {
					t.Errorf("client gone: wrote status %d, body %q", rec.Code, rec.Body)
				}
				return
			}
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d", rec.Code, tt.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var body struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("decode %q: %v", rec.Body, err)
			}
			if _, err := dec.Token(); err != io.EOF {
				t.Errorf("trailing data after the error object")
			}
			if body.Error.Code != tt.code || body.Error.Message == "" {
				t.Errorf("body = %+v, want code %q and a message", body, tt.code)
			}
			if tt.status >= 500 && strings.Contains(body.Error.Message, "hunter2") {
				t.Errorf("5xx message %q reveals the cause", body.Error.Message)
			}
			if tt.status < 500 && !strings.Contains(body.Error.Message, "hunter2") {
				t.Errorf("4xx message %q does not explain the error", body.Error.Message)
			}
			// "Retry later": 503, 507 for want of disk space, 429 (a daily
			// quota, a token at its request cap); a total quota waits for
			// an admin, not for time.
			wantRetry := tt.status == 503 || tt.status == 429 || (tt.status == 507 && tt.code != "quota_total_exceeded")
			if got := rec.Header().Get("Retry-After"); wantRetry != (got != "") {
				t.Errorf("status %d with Retry-After %q", tt.status, got)
			}
		})
	}
}
