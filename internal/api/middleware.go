package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/wormvault/wormvault/internal/auth"
)

// authenticate verifies the bearer token and puts the principal in the
// request context. A token that cannot be checked because the revocation
// list is unreachable gets 503, never a pass.
func (h *handler) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := h.verifier.FromRequest(r)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), p)))
	})
}

// require admits only principals holding one of roles. Rights come from the
// role claim alone.
func (h *handler) require(roles ...auth.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := auth.FromContext(r.Context())
			if !ok {
				h.writeError(w, r, fmt.Errorf("api: no principal: %w", auth.ErrUnauthenticated))
				return
			}
			if err := auth.Require(p, roles...); err != nil {
				h.writeError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// accessLog logs one line per request: the route pattern (never the raw
// path, which may be attacker-chosen), status, bytes, duration and subject.
func (h *handler) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		ctx, principal := auth.WithPrincipalSlot(r.Context())
		r = r.WithContext(ctx)
		// Deferred, so that a response cut short on purpose (a panic with
		// http.ErrAbortHandler) is logged and counted too.
		defer func() {
			route := chi.RouteContext(r.Context()).RoutePattern()
			attrs := []any{
				"method", r.Method, "route", route, "status", ww.Status(),
				"bytes_out", ww.BytesWritten(), "duration", time.Since(start),
				"request_id", middleware.GetReqID(r.Context()),
			}
			if p, ok := principal(); ok {
				attrs = append(attrs, "subject", p.Subject, "role", string(p.Role))
			}
			h.log.Log(r.Context(), slog.LevelInfo, "request", attrs...)
			h.metrics.observe(r.Method, route, ww.Status(), time.Since(start))
		}()
		next.ServeHTTP(ww, r)
	})
}

// recoverer turns a panic into a logged 500. http.ErrAbortHandler is
// re-raised: it is how a handler deliberately cuts a response short (a
// chunk that failed verification mid-stream).
func (h *handler) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.log.ErrorContext(r.Context(), "panic in handler", "panic", fmt.Sprint(v),
				"request_id", middleware.GetReqID(r.Context()))
			h.writeError(w, r, fmt.Errorf("api: panic: %v", v))
		}()
		next.ServeHTTP(w, r)
	})
}
