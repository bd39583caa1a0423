package api

import (
	"net/http"
	"strconv"

	"github.com/wormvault/wormvault/internal/store"
)

func (h *handler) auditEntries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, limit := int64(0), 100
	var err error
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			h.writeError(w, r, &store.InvalidError{Field: "after", Reason: "must be a non-negative integer"})
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			h.writeError(w, r, &store.InvalidError{Field: "limit", Reason: "must be 1 to 1000"})
			return
		}
	}
	entries, err := h.store.AuditEntries(r.Context(), after, limit)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if entries == nil {
		entries = []store.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}
