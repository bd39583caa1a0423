package api

import (
	"net/http"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// snapshotBodyLimit bounds the small JSON bodies of snapshot and hold
// requests that carry no hash lists.
const snapshotBodyLimit = 64 << 10

type snapshotJSON struct {
	ID            int64      `json:"id"`
	Source        string     `json:"source"`
	Name          string     `json:"name"`
	TakenAt       time.Time  `json:"taken_at"`
	CommittedAt   time.Time  `json:"committed_at"`
	CommittedBy   string     `json:"committed_by"`
	RetainUntil   time.Time  `json:"retain_until"`
	Tags          []string   `json:"tags"`
	ManifestRoot  chunk.Hash `json:"manifest_root"`
	ManifestCount int        `json:"manifest_count"`
	ChunkCount    int64      `json:"chunk_count"`
	TotalBytes    int64      `json:"total_bytes"`
	Held          bool       `json:"held"`
}

func toSnapshotJSON(s store.Snapshot) snapshotJSON {
	return snapshotJSON{
		ID: s.ID, Source: s.Source, Name: s.Name, TakenAt: s.TakenAt.UTC(), CommittedAt: s.CommittedAt.UTC(),
		CommittedBy: s.CommittedBy, RetainUntil: s.RetainUntil.UTC(), Tags: s.Tags, ManifestRoot: s.ManifestRoot,
		ManifestCount: s.ManifestCount, ChunkCount: s.ChunkCount, TotalBytes: s.TotalBytes, Held: s.Held,
	}
}

func toSnapshotsJSON(list []store.Snapshot) []snapshotJSON {
	out := make([]snapshotJSON, len(list))
	for i, s := range list {
		out[i] = toSnapshotJSON(s)
	}
	return out
}

type snapshotPageJSON struct {
	Snapshots []snapshotJSON `json:"snapshots"`
	// Next is the cursor of the next page; empty on the last page.
	Next string `json:"next"`
}

type commitRequest struct {
	Source       string    `json:"source"`
	Name         string    `json:"name"`
	TakenAt      time.Time `json:"taken_at"`
	RetainUntil  time.Time `json:"retain_until"`
	Tags         []string  `json:"tags"`
	ManifestRoot string    `json:"manifest_root"`
}

type commitResponse struct {
	snapshotJSON
	ExtendedChunks int64 `json:"extended_chunks"`
	// Policies name the retention policies that decided retain_until (none:
	// the agent's own), and Class what the snapshot was under them.
	Policies []string `json:"policies"`
	Class    string   `json:"class,omitempty"`
}

func (h *handler) commitSnapshot(w http.ResponseWriter, r *http.Request) {
	var req commitRequest
	if err := readJSON(w, r, snapshotBodyLimit, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	// A stolen agent token of one source must not commit as another:
	// impersonation and squatting another source's snapshot names.
	if err := auth.RequireSource(principal(r), req.Source); err != nil {
		h.writeError(w, r, err)
		return
	}
	root, err := chunk.ParseHash(req.ManifestRoot)
	if err != nil {
		h.writeError(w, r, &store.InvalidError{Field: "manifest_root", Reason: err.Error()})
		return
	}
	res, err := h.store.CommitSnapshot(r.Context(), principal(r).Subject, store.NewSnapshot{
		Source: req.Source, Name: req.Name, TakenAt: req.TakenAt, RetainUntil: req.RetainUntil,
		Tags: req.Tags, ManifestRoot: root,
	})
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, commitResponse{snapshotJSON: toSnapshotJSON(res.Snapshot), ExtendedChunks: res.ExtendedChunks,
		Policies: res.Policies, Class: res.Class})
}

func (h *handler) listSnapshots(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r, "source", "tag", "taken_from", "taken_before", "limit", "cursor")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	sq := store.SnapshotQuery{Source: q.Get("source"), Tags: q["tag"], Cursor: q.Get("cursor")}
	// A scoped reader sees its sources only: asking for another is 403,
	// listing them all lists its own.
	p := principal(r)
	if sq.Source != "" {
		if err := auth.RequireSource(p, sq.Source); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	if !p.Scope.All {
		sq.SourceScope = p.Scope.SourceRegexps()
	}
	if sq.TakenFrom, err = queryTime(q, "taken_from"); err == nil {
		if sq.TakenBefore, err = queryTime(q, "taken_before"); err == nil {
			sq.Limit, err = queryLimit(q)
		}
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	page, err := h.store.ListSnapshots(r.Context(), sq)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, snapshotPageJSON{Snapshots: toSnapshotsJSON(page.Snapshots), Next: page.Next})
}

type snapshotDetailJSON struct {
	snapshotJSON
	UniqueChunks int64         `json:"unique_chunks"`
	UniqueBytes  int64         `json:"unique_bytes"`
	Holds        []holdRefJSON `json:"holds"`
}

func (h *handler) getSnapshot(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := h.store.SnapshotDetail(r.Context(), id)
	if err == nil {
		err = auth.RequireSource(principal(r), d.Source)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, snapshotDetailJSON{
		snapshotJSON: toSnapshotJSON(d.Snapshot), UniqueChunks: d.UniqueChunks, UniqueBytes: d.UniqueBytes,
		Holds: toHoldRefsJSON(d.Holds),
	})
}

type extendRequest struct {
	RetainUntil time.Time `json:"retain_until"`
}

type extendResponse struct {
	snapshotJSON
	Changed        bool  `json:"changed"`
	ExtendedChunks int64 `json:"extended_chunks"`
}

func (h *handler) retainSnapshot(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var req extendRequest
	if err := readJSON(w, r, snapshotBodyLimit, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	// Retention of another source's snapshots is not an agent's to
	// change. A snapshot's source never changes, so checking it before
	// the extension is checking it at the extension.
	snap, err := h.store.GetSnapshot(r.Context(), id)
	if err == nil {
		err = auth.RequireSource(principal(r), snap.Source)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	res, err := h.store.ExtendSnapshot(r.Context(), principal(r).Subject, id, req.RetainUntil)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, extendResponse{snapshotJSON: toSnapshotJSON(res.Snapshot), Changed: res.Changed, ExtendedChunks: res.ExtendedChunks})
}
