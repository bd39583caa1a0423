package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultReadyTimeout bounds each readiness probe that can block (the
// database query): a stalled database must make /readyz answer
// "degraded", not hang.
const DefaultReadyTimeout = 2 * time.Second

// errNotReady: a subsystem the vault needs to take uploads fails; /readyz
// answers 503 "degraded" with the state of each.
var errNotReady = errors.New("api: not ready")

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readiness is /readyz's body: each subsystem's check. Error texts are
// the operator's (the probe needs no token, so they name no paths or
// addresses: see checkError).
type readiness struct {
	Status     string          `json:"status"` // "ready" or "degraded"
	Database   readyCheck      `json:"database"`
	PackWriter packCheck       `json:"pack_writer"`
	FreeSpace  spaceCheck      `json:"free_space"`
	Checkpoint checkpointCheck `json:"checkpoint"`
	AuditLog   readyCheck      `json:"audit_log"`
	// GroupCommit fails while the last group commit failed (a stalled or
	// unreachable index: uploads get 503) until one succeeds again.
	GroupCommit readyCheck `json:"group_commit"`
	// Reconcile fails until the start-up reconcile, which runs in the
	// background while the vault serves, has completed.
	Reconcile reconcileCheck `json:"reconcile"`
}

type reconcileCheck struct {
	readyCheck
	// Phase: "pack tails" (uploads held), "chunk files", "index rows" or
	// "done"; Checked counts the chunk files and rows checked so far.
	Phase      string `json:"phase,omitempty"`
	Checked    int64  `json:"checked"`
	Resumed    bool   `json:"resumed,omitempty"`
	WritesHeld bool   `json:"writes_held,omitempty"`
	// OrphansPending counts chunks whose content is durable but whose row
	// failed to commit, waiting for the index to answer again.
	OrphansPending int `json:"orphans_pending"`
}

type readyCheck struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

type packCheck struct {
	readyCheck
	Enabled    bool  `json:"enabled"`
	ActivePack int64 `json:"active_pack,omitempty"`
}

type spaceCheck struct {
	readyCheck
	Checked      bool  `json:"checked"`
	FreeBytes    int64 `json:"free_bytes"`
	TotalBytes   int64 `json:"total_bytes"`
	ReserveBytes int64 `json:"reserve_bytes"`
	// ReadOnly: new content is refused whatever the free space (start-up
	// could not finish on a full disk).
	ReadOnly bool `json:"read_only,omitempty"`
}

type checkpointCheck struct {
	readyCheck
	Size int64 `json:"size"`
	// AgeSeconds is the time since a signing pass last found the audit
	// log covered by a signed checkpoint; -1 if none has yet.
	AgeSeconds    float64 `json:"age_seconds"`
	MaxAgeSeconds float64 `json:"max_age_seconds,omitempty"`
}

// readyz reports, per subsystem, whether the vault can take uploads: the
// index answers a real query (within readyTimeout), the pack writer has a
// pack open or can start one, free space is above the reserve, checkpoints
// are being signed, and the audit log was not found rolled back. All good:
// 200 "ready". Otherwise the one error mapping decides: 503 "degraded", or
// 500 "integrity" for a rolled-back audit log (retrying cannot help); the
// body carries every check either way.
func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	rd, err := h.readiness(r.Context())
	h.noteReadiness(r.Context(), rd, err)
	if err == nil {
		writeJSON(w, http.StatusOK, rd)
		return
	}
	status, code := errorStatus(err)
	if code == "integrity" {
		h.metrics.integrity.Inc()
	}
	if v := retryAfter(status); v != "" {
		w.Header().Set("Retry-After", v)
	}
	writeJSON(w, status, struct {
		readiness
		Error errorDetail `json:"error"`
	}{rd, errorDetail{Code: code, Message: publicMessage(status, code, err)}})
}

// readiness runs every check; err wraps errNotReady and each failure.
func (h *handler) readiness(ctx context.Context) (readiness, error) {
	var failed []error
	// fail records a check's result. shown is what /readyz says of a
	// failure; empty: the kind of failure only (see checkError).
	fail := func(c *readyCheck, name string, err error, shown string) {
		c.OK = err == nil
		if err != nil {
			c.Error = shown
			if shown == "" {
				c.Error = checkError(err)
			}
			failed = append(failed, fmt.Errorf("%s: %w", name, err))
		}
	}
	var rd readiness

	pctx, cancel := context.WithTimeout(ctx, h.readyTimeout)
	fail(&rd.Database, "database", h.store.ProbeIndex(pctx), "")
	cancel()

	enabled, active, perr := h.store.PackWriterStatus()
	rd.PackWriter = packCheck{Enabled: enabled, ActivePack: active}
	fail(&rd.PackWriter.readyCheck, "pack writer", perr, "")

	sp := h.store.SpaceStatus()
	rd.FreeSpace = spaceCheck{Checked: sp.Checked, FreeBytes: sp.Free, TotalBytes: sp.Total, ReserveBytes: sp.Reserve, ReadOnly: sp.ReadOnly != nil}
	switch {
	case sp.ReadOnly != nil:
		fail(&rd.FreeSpace.readyCheck, "free space", fmt.Errorf("read-only: %w", sp.ReadOnly),
			"read-only: start-up could not finish for want of space; uploads are refused until it has")
	case sp.Err != nil:
		fail(&rd.FreeSpace.readyCheck, "free space", sp.Err, "free space cannot be read (see the server log)")
	case !sp.OK():
		fail(&rd.FreeSpace.readyCheck, "free space", fmt.Errorf("%d bytes free, at or below the reserve of %d", sp.Free, sp.Reserve),
			"free space at or below the reserve: uploads are refused")
	default:
		fail(&rd.FreeSpace.readyCheck, "free space", nil, "")
	}

	cp := h.store.CheckpointStatus()
	rd.Checkpoint = checkpointCheck{Size: cp.Size, AgeSeconds: -1, MaxAgeSeconds: h.checkpointMaxAge.Seconds()}
	if !cp.CurrentAt.IsZero() {
		rd.Checkpoint.AgeSeconds = cp.Age.Seconds()
	}
	var cerr error
	var shown string
	if h.checkpointMaxAge > 0 {
		switch {
		case cp.CurrentAt.IsZero():
			shown = "no checkpoint signing pass has succeeded yet"
		case cp.Age > h.checkpointMaxAge:
			shown = fmt.Sprintf("the audit log has not been covered by a signed checkpoint for %s (at most %s)", cp.Age.Round(time.Second), h.checkpointMaxAge)
		}
		if shown != "" {
			cerr = errors.New(shown)
			if cp.Err != nil {
				cerr = fmt.Errorf("%w; last attempt: %w", cerr, cp.Err)
			}
		}
	}
	fail(&rd.Checkpoint.readyCheck, "checkpoint", cerr, shown)

	fail(&rd.AuditLog, "audit log", h.store.AuditIntegrity(), "")
	fail(&rd.GroupCommit, "group commit", h.store.CommitHealth(), "")

	rs := h.store.ReconcileStatus()
	rd.Reconcile = reconcileCheck{Phase: rs.Phase, Checked: rs.Checked, Resumed: rs.Resumed, WritesHeld: rs.WritesHeld, OrphansPending: rs.Orphans}
	var rerr error
	shown = ""
	switch {
	case !rs.Tracked || rs.Done:
	case rs.Err != nil:
		shown = fmt.Sprintf("start-up reconcile failed in phase %s after %d checked; retrying (see the server log)", rs.Phase, rs.Checked)
		rerr = fmt.Errorf("%s: %w", shown, rs.Err)
	default:
		shown = fmt.Sprintf("start-up reconcile in progress: phase %s, %d checked", rs.Phase, rs.Checked)
		rerr = errors.New(shown)
	}
	fail(&rd.Reconcile.readyCheck, "reconcile", rerr, shown)

	if len(failed) == 0 {
		rd.Status = "ready"
		return rd, nil
	}
	rd.Status = "degraded"
	return rd, fmt.Errorf("%w: %w", errNotReady, errors.Join(failed...))
}

// checkError is a check's error as /readyz shows it: the kind of failure,
// without the paths, addresses and SQL of the cause (those go to the log),
// since /readyz needs no token.
func checkError(err error) string {
	status, code := errorStatus(err)
	if status < 500 {
		return code
	}
	if code == "internal" {
		return "failed (see the server log)"
	}
	return code
}

// readyState remembers the last readiness seen, so that a degraded vault
// logs each change once, not once per probe.
type readyState struct {
	mu   sync.Mutex
	last string
}

func (h *handler) noteReadiness(ctx context.Context, rd readiness, err error) {
	var failing []string
	for _, c := range []struct {
		name string
		ok   bool
	}{{"database", rd.Database.OK}, {"pack_writer", rd.PackWriter.OK}, {"free_space", rd.FreeSpace.OK},
		{"checkpoint", rd.Checkpoint.OK}, {"audit_log", rd.AuditLog.OK}, {"reconcile", rd.Reconcile.OK}} {
		if !c.ok {
			failing = append(failing, c.name)
		}
	}
	now := strings.Join(failing, ",")
	h.ready.mu.Lock()
	changed := now != h.ready.last
	h.ready.last = now
	h.ready.mu.Unlock()
	switch {
	case !changed:
	case err == nil:
		h.log.InfoContext(ctx, "ready again")
	default:
		h.log.WarnContext(ctx, "not ready", "failing", failing, "err", err)
	}
}
