package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/store"
)

// Replication, as seen from a replica (docs/replication.md): the primaries
// it pulls from, their alarms, and an admin's acknowledgement of an alarm.

type replicaSourceJSON struct {
	store.ReplicaSource
	Disappeared      []store.Disappeared `json:"disappeared"`
	DisappearedTotal int64               `json:"disappeared_total"`
}

// maxDisappearedListed bounds the disappearances listed per source.
const maxDisappearedListed = 100

func (h *handler) listReplication(w http.ResponseWriter, r *http.Request) {
	list, err := h.store.ReplicaSources(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := make([]replicaSourceJSON, len(list))
	for i, s := range list {
		d, n, err := h.store.ReplicaDisappeared(r.Context(), s.Name, maxDisappearedListed)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		if d == nil {
			d = []store.Disappeared{}
		}
		out[i] = replicaSourceJSON{ReplicaSource: s, Disappeared: d, DisappearedTotal: n}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sources": out})
}

type acknowledgeRequest struct {
	Reason string `json:"reason"`
}

// acknowledgeReplication is one admin of this vault accepting that a
// primary's log no longer extends the checkpoint kept: replication from
// it resumes at the next pass, from the primary's current checkpoint.
func (h *handler) acknowledgeReplication(w http.ResponseWriter, r *http.Request) {
	var req acknowledgeRequest
	if err := readJSON(w, r, 8<<10, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	src, err := h.store.AcknowledgeReplicaAlarm(r.Context(), principal(r).Subject, chi.URLParam(r, "source"), req.Reason)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, src)
}
