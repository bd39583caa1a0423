package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// HeaderRetainUntil carries an RFC 3339 time: on PUT, the retention the
// agent asks for; on HEAD and GET responses, the chunk's retention.
const HeaderRetainUntil = "Vault-Retain-Until"

// HeaderDamaged is set ("true") on a 404 answer to HEAD for a chunk that is
// indexed but damaged, awaiting a re-upload.
const HeaderDamaged = "Vault-Damaged"

var (
	errNoRoute = fmt.Errorf("%w: no such route", store.ErrNotFound)
)

// clientBody marks errors reading a request body as the client's: a broken
// chunked encoding or a connection closed mid-body is bad input (400), not
// a server failure. Only the handler can tell them apart from the same
// errors reading a file on disk, which stay 500s.
type clientBody struct{ io.ReadCloser }

func (b clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		var tooBig *http.MaxBytesError
		if !errors.As(err, &tooBig) {
			err = fmt.Errorf("%w: reading request body: %w", errBadRequest, err)
		}
	}
	return n, err
}

type chunkJSON struct {
	Hash    chunk.Hash `json:"hash"`
	Size    int64      `json:"size"`
	Created *bool      `json:"created,omitempty"`
	// Repaired: the chunk was stored but damaged, and this upload's
	// verified bytes repaired it.
	Repaired    bool      `json:"repaired,omitempty"`
	StoredAt    time.Time `json:"stored_at"`
	RetainUntil time.Time `json:"retain_until"`
	UploadedBy  string    `json:"uploaded_by,omitempty"`
}

func hashParam(r *http.Request) (chunk.Hash, error) {
	return chunk.ParseHash(chi.URLParam(r, "hash"))
}

func principal(r *http.Request) auth.Principal {
	p, _ := auth.FromContext(r.Context()) // set by authenticate on every /v1 route
	return p
}

func (h *handler) putChunk(w http.ResponseWriter, r *http.Request) {
	hash, err := hashParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// Refuse a declared oversize body before reading a byte of it; the
	// MaxBytesReader also stops a body that lies about its length, and makes
	// the server close the connection rather than drain it.
	if r.ContentLength > h.maxChunk {
		h.writeError(w, r, &http.MaxBytesError{Limit: h.maxChunk})
		return
	}
	r.Body = clientBody{http.MaxBytesReader(w, r.Body, h.maxChunk)}
	var until time.Time
	if v := r.Header.Get(HeaderRetainUntil); v != "" {
		if until, err = time.Parse(time.RFC3339, v); err != nil {
			h.writeError(w, r, &store.InvalidError{Field: HeaderRetainUntil, Reason: "not an RFC 3339 time"})
			return
		}
	}
	// The declared length lets the store refuse what the uploader's quota
	// cannot take before a byte of the body is read.
	res, err := h.store.PutChunkSized(r.Context(), principal(r).Subject, hash, r.Body, r.ContentLength, until)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, chunkJSON{
		Hash: res.Chunk.Hash, Size: res.Chunk.Size, Created: &res.Created, Repaired: res.Repaired,
		StoredAt: res.Chunk.StoredAt.UTC(), RetainUntil: res.Chunk.RetainUntil.UTC(),
	})
}

func (h *handler) headChunk(w http.ResponseWriter, r *http.Request) {
	hash, err := hashParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// A damaged chunk is not stored as far as agents go: they upload it
	// again, which repairs it. HEAD has no body, so a header says why.
	c, err := h.store.StatHealthy(r.Context(), hash)
	if errors.Is(err, store.ErrDamaged) {
		w.Header().Set(HeaderDamaged, "true")
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(c.Size, 10))
	w.Header().Set(HeaderRetainUntil, c.RetainUntil.UTC().Format(time.RFC3339))
	w.WriteHeader(http.StatusOK)
}

func (h *handler) getChunk(w http.ResponseWriter, r *http.Request) {
	hash, err := hashParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// A scoped reader reads only what its sources' snapshots reference.
	if p := principal(r); !p.Scope.All {
		ok, err := h.store.ChunkInSources(r.Context(), hash, p.Scope.SourceRegexps())
		if err == nil && !ok {
			err = fmt.Errorf("api: chunk %s is not referenced by a snapshot of the token's sources (%s): %w", hash, p.Scope, auth.ErrForbidden)
		}
		if err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	rc, c, err := h.store.OpenChunk(r.Context(), hash)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(c.Size, 10))
	w.Header().Set(HeaderRetainUntil, c.RetainUntil.UTC().Format(time.RFC3339))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		if errors.Is(err, chunk.ErrHashMismatch) {
			h.log.ErrorContext(r.Context(), "chunk changed on disk while being served; response cut short", "hash", hash.String())
		}
		// The status is gone; cutting the connection short is the only way
		// left to tell the client the body is not good.
		panic(http.ErrAbortHandler)
	}
}

type hashesRequest struct {
	Hashes []string `json:"hashes"`
}

// parseHashes checks every hash, naming the first bad one.
func parseHashes(in []string, max int) ([]chunk.Hash, error) {
	if len(in) > max {
		return nil, &store.InvalidError{Field: "hashes", Reason: fmt.Sprintf("%d hashes, at most %d per request", len(in), max)}
	}
	out := make([]chunk.Hash, len(in))
	for i, s := range in {
		h, err := chunk.ParseHash(s)
		if err != nil {
			return nil, &store.InvalidError{Field: fmt.Sprintf("hashes[%d]", i), Reason: err.Error()}
		}
		out[i] = h
	}
	return out, nil
}

// batchBodyLimit bounds a JSON body listing up to max hashes.
func batchBodyLimit(max int) int64 { return int64(max)*(2*chunk.Size+4) + 4096 }

func (h *handler) missingChunks(w http.ResponseWriter, r *http.Request) {
	var req hashesRequest
	if err := readJSON(w, r, batchBodyLimit(h.maxBatch), &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	hashes, err := parseHashes(req.Hashes, h.maxBatch)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	missing, err := h.store.Missing(r.Context(), hashes)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]chunk.Hash{"missing": missing})
}

type retainRequest struct {
	Hashes      []string  `json:"hashes"`
	RetainUntil time.Time `json:"retain_until"`
}

type retainResponse struct {
	RetainUntil time.Time    `json:"retain_until"`
	Extended    int          `json:"extended"`
	Unchanged   int          `json:"unchanged"`
	NotFound    []chunk.Hash `json:"not_found"`
}

func (h *handler) retainChunks(w http.ResponseWriter, r *http.Request) {
	var req retainRequest
	if err := readJSON(w, r, batchBodyLimit(h.maxBatch), &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	hashes, err := parseHashes(req.Hashes, h.maxBatch)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if req.RetainUntil.IsZero() {
		h.writeError(w, r, &store.InvalidError{Field: "retain_until", Reason: "is required"})
		return
	}
	res, err := h.store.Retain(r.Context(), principal(r).Subject, hashes, req.RetainUntil)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if res.NotFound == nil {
		res.NotFound = []chunk.Hash{}
	}
	writeJSON(w, http.StatusOK, retainResponse{
		RetainUntil: res.RetainUntil.UTC(), Extended: res.Extended, Unchanged: res.Unchanged, NotFound: res.NotFound,
	})
}

func (h *handler) chunkRetention(w http.ResponseWriter, r *http.Request) {
	hash, err := hashParam(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	cr, err := h.store.ChunkRetention(r.Context(), hash)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toChunkRetentionJSON(cr))
}
