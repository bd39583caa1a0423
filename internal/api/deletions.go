package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/store"
)

type deletionRequestJSON struct {
	Kind      string    `json:"kind"`
	Chunks    []string  `json:"chunks,omitempty"`
	Snapshots []int64   `json:"snapshots,omitempty"`
	Before    time.Time `json:"before,omitzero"`
	Source    string    `json:"source,omitempty"`
	Hold      int64     `json:"hold,omitempty"`
	Reason    string    `json:"reason"`
}

func (h *handler) requestDeletion(w http.ResponseWriter, r *http.Request) {
	var req deletionRequestJSON
	if err := readJSON(w, r, batchBodyLimit(h.maxBatch), &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	t := store.DeletionTargets{Kind: req.Kind, Snapshots: req.Snapshots, Before: req.Before, Source: req.Source, Hold: req.Hold}
	if len(req.Chunks) > 0 {
		hashes, err := parseHashes(req.Chunks, h.maxBatch)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		t.Chunks = hashes
	}
	d, err := h.store.RequestDeletion(r.Context(), principal(r).Subject, t, req.Reason)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

func deletionID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, &store.InvalidError{Field: "id", Reason: "must be a positive integer"}
	}
	return id, nil
}

func (h *handler) getDeletion(w http.ResponseWriter, r *http.Request) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := h.store.GetDeletion(r.Context(), id)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *handler) listDeletions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	switch state {
	case "", store.StateRequested, store.StateScheduled, store.StateCancelled, store.StateExpired, store.StateExecuting, store.StateExecuted:
	default:
		h.writeError(w, r, &store.InvalidError{Field: "state", Reason: "unknown state"})
		return
	}
	var before int64
	if v := q.Get("before"); v != "" {
		var err error
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before <= 0 {
			h.writeError(w, r, &store.InvalidError{Field: "before", Reason: "must be a positive integer"})
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			h.writeError(w, r, &store.InvalidError{Field: "limit", Reason: "must be 1 to 500"})
			return
		}
		limit = n
	}
	ds, err := h.store.ListDeletions(r.Context(), state, before, limit)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	resp := map[string]any{"deletions": ds}
	if ds == nil {
		resp["deletions"] = []store.Deletion{}
	}
	if len(ds) == limit {
		resp["next"] = strconv.FormatInt(ds[len(ds)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) deletionOutcomes(w http.ResponseWriter, r *http.Request) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if _, err := h.store.GetDeletion(r.Context(), id); err != nil {
		h.writeError(w, r, err)
		return
	}
	after := r.URL.Query().Get("after")
	if len(after) > 64 {
		h.writeError(w, r, &store.InvalidError{Field: "after", Reason: "too long"})
		return
	}
	out, err := h.store.DeletionOutcomes(r.Context(), id, after, 1000)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if out == nil {
		out = []store.Outcome{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"outcomes": out})
}

func (h *handler) approveDeletion(w http.ResponseWriter, r *http.Request) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := h.store.ApproveDeletion(r.Context(), principal(r).Subject, id)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *handler) cancelDeletion(w http.ResponseWriter, r *http.Request) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSON(w, r, 8<<10, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := h.store.CancelDeletion(r.Context(), principal(r).Subject, id, req.Reason)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// executeDue runs the executor now (as its loop would): for cron-style use
// by `vault admin execute-due`. It only ever executes approved requests
// whose delay has passed.
func (h *handler) executeDue(w http.ResponseWriter, r *http.Request) {
	rep, err := h.store.RunDue(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if rep.Expired == nil {
		rep.Expired = []int64{}
	}
	if rep.Executed == nil {
		rep.Executed = []int64{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"expired": rep.Expired, "executed": rep.Executed})
}
