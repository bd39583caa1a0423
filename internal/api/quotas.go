package api

import (
	"net/http"

	"github.com/wormvault/wormvault/internal/store"
)

// quotaRequest sets a subject's quota. It replaces the quota whole: a
// limit that is null or absent is no limit of that kind.
type quotaRequest struct {
	Subject    string `json:"subject"`
	DailyBytes *int64 `json:"daily_bytes"`
	TotalBytes *int64 `json:"total_bytes"`
	Reason     string `json:"reason"`
}

func (h *handler) setQuota(w http.ResponseWriter, r *http.Request) {
	var req quotaRequest
	if err := readJSON(w, r, 4096, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	u, err := h.store.SetQuota(r.Context(), principal(r).Subject, store.QuotaChange{
		Subject: req.Subject, DailyBytes: req.DailyBytes, TotalBytes: req.TotalBytes, Reason: req.Reason,
	})
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// listQuotas answers every subject with a quota or stored content, or
// with ?subject=NAME that subject alone (with zero usage if it has none).
func (h *handler) listQuotas(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("subject") {
		u, err := h.store.QuotaUsage(r.Context(), r.URL.Query().Get("subject"))
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"quotas": []store.QuotaUsage{u}})
		return
	}
	list, err := h.store.ListQuotas(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []store.QuotaUsage{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"quotas": list})
}
