package api

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// queryParams returns the request's query, refusing parameters that are
// not in allowed and repeats of any but "tag": a misspelt filter must fail,
// not silently return everything.
func queryParams(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &store.InvalidError{Field: "query", Reason: "malformed query string"}
	}
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			return nil, &store.InvalidError{Field: k, Reason: fmt.Sprintf("unknown query parameter (known: %v)", allowed)}
		}
		if len(vs) > 1 && k != "tag" {
			return nil, &store.InvalidError{Field: k, Reason: "given more than once"}
		}
	}
	return q, nil
}

// queryTime parses a time parameter: RFC 3339, or a date (YYYY-MM-DD,
// midnight UTC). Absent: the zero time.
func queryTime(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, &store.InvalidError{Field: name, Reason: "want an RFC 3339 time or a YYYY-MM-DD date"}
}

// queryLimit parses the page size; absent: 0, the store's default.
func queryLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > store.MaxPageLimit {
		return 0, &store.InvalidError{Field: "limit", Reason: fmt.Sprintf("must be 1 to %d", store.MaxPageLimit)}
	}
	return n, nil
}

// idParam parses the {id} of a snapshot or hold route.
func idParam(r *http.Request) (int64, error) {
	v := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != v {
		return 0, &store.InvalidError{Field: "id", Reason: "must be a positive integer"}
	}
	return id, nil
}

type countJSON struct {
	Chunks int64 `json:"chunks"`
	Bytes  int64 `json:"bytes"`
}

type monthJSON struct {
	Month  string `json:"month"` // YYYY-MM, UTC
	Chunks int64  `json:"chunks"`
	Bytes  int64  `json:"bytes"`
}

type summaryJSON struct {
	At              time.Time   `json:"at"`
	Total           countJSON   `json:"total"`
	Months          []monthJSON `json:"months"`
	Expired         countJSON   `json:"expired"`
	Held            countJSON   `json:"held"`
	PendingDeletion countJSON   `json:"pending_deletion"`
	Snapshots       struct {
		Total   int64 `json:"total"`
		Expired int64 `json:"expired"`
		Held    int64 `json:"held"`
	} `json:"snapshots"`
	ActiveHolds int64 `json:"active_holds"`
}

func (h *handler) retentionSummary(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		h.writeError(w, r, err)
		return
	}
	s, err := h.store.RetentionSummary(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := summaryJSON{
		At: s.At.UTC(), Total: countJSON(s.Total), Months: make([]monthJSON, len(s.Months)),
		Expired: countJSON(s.Expired), Held: countJSON(s.Held), PendingDeletion: countJSON(s.PendingDeletion),
		ActiveHolds: s.ActiveHolds,
	}
	for i, m := range s.Months {
		out.Months[i] = monthJSON{Month: m.Month.Format("2006-01"), Chunks: m.Chunks, Bytes: m.Bytes}
	}
	out.Snapshots.Total, out.Snapshots.Expired, out.Snapshots.Held = s.Snapshots.Total, s.Snapshots.Expired, s.Snapshots.Held
	writeJSON(w, http.StatusOK, out)
}

// expiringParams reads the required "before" and the page parameters.
func expiringParams(r *http.Request) (before time.Time, limit int, cursor string, err error) {
	q, err := queryParams(r, "before", "limit", "cursor")
	if err != nil {
		return
	}
	if before, err = queryTime(q, "before"); err != nil {
		return
	}
	if before.IsZero() {
		return before, 0, "", &store.InvalidError{Field: "before", Reason: "is required"}
	}
	limit, err = queryLimit(q)
	return before, limit, q.Get("cursor"), err
}

type expiringChunkJSON struct {
	Hash        chunk.Hash `json:"hash"`
	Size        int64      `json:"size"`
	StoredAt    time.Time  `json:"stored_at"`
	RetainUntil time.Time  `json:"retain_until"`
	UploadedBy  string     `json:"uploaded_by"`
	Held        bool       `json:"held"`
}

type chunkPageJSON struct {
	Chunks []expiringChunkJSON `json:"chunks"`
	Next   string              `json:"next"`
}

func (h *handler) expiringChunks(w http.ResponseWriter, r *http.Request) {
	before, limit, cursor, err := expiringParams(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	page, err := h.store.ExpiringChunks(r.Context(), before, limit, cursor)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := chunkPageJSON{Chunks: make([]expiringChunkJSON, len(page.Chunks)), Next: page.Next}
	for i, c := range page.Chunks {
		out.Chunks[i] = expiringChunkJSON{Hash: c.Hash, Size: c.Size, StoredAt: c.StoredAt.UTC(),
			RetainUntil: c.RetainUntil.UTC(), UploadedBy: c.UploadedBy, Held: c.Held}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) expiringSnapshots(w http.ResponseWriter, r *http.Request) {
	before, limit, cursor, err := expiringParams(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	page, err := h.store.ExpiringSnapshots(r.Context(), before, limit, cursor)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, snapshotPageJSON{Snapshots: toSnapshotsJSON(page.Snapshots), Next: page.Next})
}

type snapshotRefJSON struct {
	ID          int64     `json:"id"`
	Source      string    `json:"source"`
	Name        string    `json:"name"`
	RetainUntil time.Time `json:"retain_until"`
}

// chunkRetentionJSON answers GET /v1/chunks/{hash}/retention: the chunk's
// row and everything that keeps it stored.
type chunkRetentionJSON struct {
	Hash          chunk.Hash        `json:"hash"`
	Size          int64             `json:"size"`
	StoredAt      time.Time         `json:"stored_at"`
	RetainUntil   time.Time         `json:"retain_until"`
	UploadedBy    string            `json:"uploaded_by"`
	Expired       bool              `json:"expired"`
	Held          bool              `json:"held"`
	Holds         []holdRefJSON     `json:"holds"`
	Snapshots     []snapshotRefJSON `json:"snapshots"`
	SnapshotCount int64             `json:"snapshot_count"`
	DeletionState string            `json:"deletion_state"`
}

func toChunkRetentionJSON(cr store.ChunkRetention) chunkRetentionJSON {
	out := chunkRetentionJSON{
		Hash: cr.Hash, Size: cr.Size, StoredAt: cr.StoredAt.UTC(), RetainUntil: cr.RetainUntil.UTC(),
		UploadedBy: cr.UploadedBy, Expired: cr.Expired, Held: len(cr.Holds) > 0, Holds: toHoldRefsJSON(cr.Holds),
		Snapshots: make([]snapshotRefJSON, len(cr.Snapshots)), SnapshotCount: cr.SnapshotCount, DeletionState: cr.Deletion,
	}
	for i, s := range cr.Snapshots {
		out.Snapshots[i] = snapshotRefJSON{ID: s.ID, Source: s.Source, Name: s.Name, RetainUntil: s.RetainUntil.UTC()}
	}
	return out
}
