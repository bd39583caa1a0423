package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

type holdJSON struct {
	ID          int64      `json:"id"`
	Name        string     `json:"name"`
	Reason      string     `json:"reason"`
	Kind        string     `json:"kind"`
	Source      string     `json:"source,omitempty"`
	TargetCount int        `json:"target_count"`
	PlacedBy    string     `json:"placed_by"`
	PlacedAt    time.Time  `json:"placed_at"`
	Active      bool       `json:"active"`
	ReleasedAt  *time.Time `json:"released_at"`
	ReleasedBy  string     `json:"released_by,omitempty"`
}

func toHoldJSON(h store.Hold) holdJSON {
	return holdJSON{
		ID: h.ID, Name: h.Name, Reason: h.Reason, Kind: h.Kind, Source: h.Source, TargetCount: h.TargetCount,
		PlacedBy: h.PlacedBy, PlacedAt: h.PlacedAt.UTC(), Active: h.ReleasedAt == nil, ReleasedAt: h.ReleasedAt,
		ReleasedBy: h.ReleasedBy,
	}
}

type holdDetailJSON struct {
	holdJSON
	Chunks    []chunk.Hash `json:"chunks,omitempty"`
	Snapshots []int64      `json:"snapshots,omitempty"`
}

type holdPageJSON struct {
	Holds []holdJSON `json:"holds"`
	Next  string     `json:"next"`
}

// holdRefJSON is a hold as it applies to one chunk or snapshot.
type holdRefJSON struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	Reason     string `json:"reason"`
	Via        string `json:"via"`
	SnapshotID int64  `json:"snapshot_id,omitempty"`
	Source     string `json:"source,omitempty"`
}

func toHoldRefsJSON(refs []store.HoldRef) []holdRefJSON {
	out := make([]holdRefJSON, len(refs))
	for i, r := range refs {
		out[i] = holdRefJSON(r)
	}
	return out
}

type holdRequest struct {
	Name      string   `json:"name"`
	Reason    string   `json:"reason"`
	Chunks    []string `json:"chunks"`
	Snapshots []int64  `json:"snapshots"`
	Source    string   `json:"source"`
}

func (h *handler) placeHold(w http.ResponseWriter, r *http.Request) {
	var req holdRequest
	if err := readJSON(w, r, batchBodyLimit(h.maxBatch), &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	hashes, err := parseHashes(req.Chunks, h.maxBatch)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := h.store.PlaceHold(r.Context(), principal(r).Subject, store.NewHold{
		Name: req.Name, Reason: req.Reason, Chunks: hashes, Snapshots: req.Snapshots, Source: req.Source,
	})
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, holdDetailJSON{holdJSON: toHoldJSON(d.Hold), Chunks: d.Chunks, Snapshots: d.Snapshots})
}

func (h *handler) listHolds(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r, "limit", "cursor")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	limit, err := queryLimit(q)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	page, err := h.store.ListHolds(r.Context(), limit, q.Get("cursor"))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := holdPageJSON{Holds: make([]holdJSON, len(page.Holds)), Next: page.Next}
	for i, hd := range page.Holds {
		out.Holds[i] = toHoldJSON(hd)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) getHold(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := h.store.GetHold(r.Context(), id)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, holdDetailJSON{holdJSON: toHoldJSON(d.Hold), Chunks: d.Chunks, Snapshots: d.Snapshots})
}

// releaseHold asks for a hold's release, which is a deletion request of
// kind hold_release (202: it takes effect only once approved, after the
// delay). An optional JSON body gives the reason.
// releaseHold refuses: releasing a legal hold is destructive, so it is a
// deletion request signed by an admin's own key (which a bearer token
// cannot make) and approved by others. The message names the command.
func (h *handler) releaseHold(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if _, err := h.store.GetHold(r.Context(), id); err != nil {
		h.writeError(w, r, err)
		return
	}
	h.writeError(w, r, fmt.Errorf("release hold %d: %w: ask for it with `vault admin deletions request --hold %d --reason TEXT --key YOUR.key`",
		id, store.ErrRequiresApproval, id))
}
