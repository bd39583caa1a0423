package api

import (
	"net/http"
	"strconv"

	"github.com/wormvault/wormvault/internal/store"
)

// defaultDamageLimit is the page size of GET /v1/damaged without a limit.
const defaultDamageLimit = 100

type damagePageJSON struct {
	Damaged []store.Damage `json:"damaged"`
	// Next is the after= of the next page; absent on the last.
	Next string `json:"next,omitempty"`
}

// listDamaged serves the damage report: damaged chunks (the open records,
// or every record with all=true), each with the snapshots that reference
// it.
func (h *handler) listDamaged(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r, "limit", "after", "all")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	limit, err := queryLimit(q)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if limit == 0 {
		limit = defaultDamageLimit
	}
	var after int64
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			h.writeError(w, r, &store.InvalidError{Field: "after", Reason: "must be a damage record id (a non-negative integer)"})
			return
		}
	}
	all := false
	switch q.Get("all") {
	case "", "false":
	case "true":
		all = true
	default:
		h.writeError(w, r, &store.InvalidError{Field: "all", Reason: "must be true or false"})
		return
	}
	list, err := h.store.ListDamage(r.Context(), all, after, limit)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := damagePageJSON{Damaged: list}
	if len(list) == limit {
		out.Next = strconv.FormatInt(list[len(list)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

// scrubStatus serves the scrub's saved state and the damage counts.
func (h *handler) scrubStatus(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		h.writeError(w, r, err)
		return
	}
	st, err := h.store.ScrubStatus(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
