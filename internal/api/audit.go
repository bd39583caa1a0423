package api

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/chunk"
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

// The Merkle log (issue 9): signed checkpoints, entries by leaf index,
// inclusion and consistency proofs. Admins may read them too, so that an
// admin CLI can check the log on every interaction.

func (h *handler) auditCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := h.store.LatestCheckpoint(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(cp.Note)
}

func (h *handler) auditKey(w http.ResponseWriter, r *http.Request) {
	if h.ckptKey == "" {
		h.writeError(w, r, fmt.Errorf("this vault has no checkpoint key: %w", store.ErrNotFound))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, h.ckptKey+"\n")
}

// int64Param reads a required non-negative integer query parameter.
func int64Param(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if v == "" || err != nil || n < 0 {
		return 0, &store.InvalidError{Field: name, Reason: "must be a non-negative integer"}
	}
	return n, nil
}

// rangeParams reads the required from and to of a range of the log.
func rangeParams(r *http.Request) (from, to int64, err error) {
	if from, err = int64Param(r, "from"); err == nil {
		to, err = int64Param(r, "to")
	}
	return from, to, err
}

func (h *handler) auditLeaves(w http.ResponseWriter, r *http.Request) {
	from, to, err := rangeParams(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	leaves, err := h.store.AuditLeaves(r.Context(), from, to)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if leaves == nil {
		leaves = []store.AuditLeaf{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": leaves})
}

func (h *handler) auditInclusion(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	size, err := int64Param(r, "size")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var index int64
	if c := r.URL.Query().Get("chunk"); c != "" {
		hash, err := chunk.ParseHash(c)
		if err != nil {
			h.writeError(w, r, &store.InvalidError{Field: "chunk", Reason: "must be a BLAKE3 hash in lowercase hex"})
			return
		}
		if index, err = h.store.AuditChunkLeaf(ctx, hash); err != nil {
			h.writeError(w, r, err)
			return
		}
		if index >= size {
			h.writeError(w, r, &store.InvalidError{Field: "size", Reason: fmt.Sprintf("the chunk is entry %d, after a tree of size %d", index+1, size)})
			return
		}
	} else if index, err = int64Param(r, "index"); err != nil {
		h.writeError(w, r, err)
		return
	}
	proof, err := h.store.AuditInclusionProof(ctx, index, size)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	leaves, err := h.store.AuditLeaves(ctx, index, index+1)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if len(leaves) != 1 {
		h.writeError(w, r, fmt.Errorf("audit entry %d: %w", index+1, store.ErrNotFound))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"index": index, "size": size, "proof": proof, "payload": leaves[0].Payload})
}

func (h *handler) auditConsistency(w http.ResponseWriter, r *http.Request) {
	from, to, err := rangeParams(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	proof, err := h.store.AuditConsistencyProof(r.Context(), from, to)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if proof == nil {
		proof = tlog.TreeProof{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"from": from, "to": to, "proof": proof})
}
