package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/store"
)

// The restic protocol itself is served by internal/restic under /restic;
// these are the vault's own endpoints about restic repositories.

type resticRepositoryJSON struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	// MinRetention is the repository's own setting ("0s": none);
	// EffectiveRetention the longer of it and the vault's minimum.
	MinRetention string `json:"min_retention"`
	// CreatedScope is the scope of the token that created the repository
	// (absent: created before scopes, or by an admin).
	CreatedScope       json.RawMessage `json:"created_scope,omitempty"`
	EffectiveRetention string          `json:"effective_retention"`
	Files              *int64          `json:"files,omitempty"`
	Bytes              *int64          `json:"bytes,omitempty"`
	LastSnapshotAt     *time.Time      `json:"last_snapshot_at,omitempty"`
	ExtendedChunks     *int64          `json:"extended_chunks,omitempty"`
}

func (h *handler) resticRepositoryJSON(r store.ResticRepository) resticRepositoryJSON {
	return resticRepositoryJSON{
		Name: r.Name, CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy,
		MinRetention:       time.Duration(r.MinRetention).String(),
		CreatedScope:       r.CreatedScope,
		EffectiveRetention: h.store.EffectiveRetention(r).String(),
	}
}

func (h *handler) listResticRepositories(w http.ResponseWriter, r *http.Request) {
	list, err := h.store.ResticRepositories(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := make([]resticRepositoryJSON, len(list))
	for i, s := range list {
		out[i] = h.resticRepositoryJSON(s.ResticRepository)
		out[i].Files, out[i].Bytes = &s.Files, &s.Bytes
		if s.LastSnapshotAt != nil {
			t := s.LastSnapshotAt.UTC()
			out[i].LastSnapshotAt = &t
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"repositories": out})
}

type resticRetentionRequest struct {
	// MinRetention is a duration: "400d", "9600h".
	MinRetention string `json:"min_retention"`
}

// setResticRetention raises a repository's minimum retention (admin,
// audited, extend-only).
func (h *handler) setResticRetention(w http.ResponseWriter, r *http.Request) {
	var req resticRetentionRequest
	if err := readJSON(w, r, 4096, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := config.ParseDuration(req.MinRetention)
	if err != nil {
		h.writeError(w, r, &store.InvalidError{Field: "min_retention", Reason: err.Error() + `: a duration such as "400d" or "9600h"`})
		return
	}
	repo, extended, err := h.store.SetResticRetention(r.Context(), principal(r).Subject, chi.URLParam(r, "repo"), d)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := h.resticRepositoryJSON(repo)
	out.ExtendedChunks = &extended
	writeJSON(w, http.StatusOK, out)
}
