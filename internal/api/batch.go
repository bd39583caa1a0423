package api

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// Batch uploads: many small chunks in one request, for agents that want
// fewer round trips. The body is a sequence of frames, each
//
//	32 bytes  the chunk's BLAKE3 hash (raw, not hex)
//	 4 bytes  the content length, big-endian
//	 n bytes  the content
//
// and the answer lists, in order, what became of each chunk.
const (
	// BatchContentType is the media type of a batch body.
	BatchContentType = "application/vnd.wormvault.batch"
	// MaxBatchBytes bounds a batch body: it is held in memory whole, and
	// the bytes of all batch bodies held at once are bounded by
	// Options.BatchMemory.
	MaxBatchBytes = 16 << 20
	// MaxBatchChunk bounds one chunk in a batch: batches are for small
	// chunks; large ones stream through PUT.
	MaxBatchChunk = 4 << 20
	frameHeader   = chunk.Size + 4
)

type batchResultJSON struct {
	Hash   chunk.Hash `json:"hash"`
	Status string     `json:"status"` // created, exists or refused
	// Repaired (with status exists): the chunk was damaged and this
	// batch's verified bytes repaired it.
	Repaired bool   `json:"repaired,omitempty"`
	Code     string `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
}

func (h *handler) putBatch(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > MaxBatchBytes {
		h.writeError(w, r, &http.MaxBytesError{Limit: MaxBatchBytes})
		return
	}
	var until time.Time
	if v := r.Header.Get(HeaderRetainUntil); v != "" {
		var err error
		if until, err = time.Parse(time.RFC3339, v); err != nil {
			h.writeError(w, r, &store.InvalidError{Field: HeaderRetainUntil, Reason: "not an RFC 3339 time"})
			return
		}
	}
	// Reserve the body's memory before reading a byte of it: its declared
	// length, or the largest batch if it declares none. Many slow or large
	// batches then wait (and are told to retry) instead of growing the heap.
	reserve := int64(MaxBatchBytes)
	if r.ContentLength >= 0 {
		reserve = r.ContentLength
	}
	release, err := h.batchMem.acquire(r.Context(), reserve)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	defer release()
	items, err := readBatch(clientBody{http.MaxBytesReader(w, r.Body, MaxBatchBytes)}, reserve, h.maxBatch)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	results, err := h.store.PutBatch(r.Context(), principal(r).Subject, items, until)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	out := make([]batchResultJSON, len(results))
	var refused batchRefusals
	for i, res := range results {
		out[i] = batchResultJSON{Hash: res.Hash, Status: "exists", Repaired: res.Repaired}
		switch {
		case res.Err != nil:
			status, code := errorStatus(res.Err)
			out[i].Status, out[i].Code, out[i].Message = "refused", code, publicMessage(status, code, res.Err)
			refused.add(status, code, res.Hash, res.Err)
			h.metrics.batchRefused.WithLabelValues(code).Inc()
		case res.Created:
			out[i].Status = "created"
		}
	}
	refused.log(r, h, len(results))
	// The batch as a whole succeeded (each chunk has its answer), but a
	// client that resends the refused chunks is told when, as a refused
	// PUT would be.
	if refused.retryAfter != "" {
		w.Header().Set("Retry-After", refused.retryAfter)
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

// batchRefusals summarises the refused chunks of one batch, so that a
// batch refused on a full disk costs one log line, not one per chunk.
type batchRefusals struct {
	count      int
	codes      map[string]int
	severity   int    // of the worst refusal: see refusalSeverity
	retryAfter string // the Retry-After of a refusal that means "retry later" (503, 507, a daily quota), if any
	firstHash  chunk.Hash
	firstErr   error // of the first refusal of the worst severity
}

// refusalSeverity ranks a refused chunk's status for the summary: a
// server fault (2) is logged at Error, a condition that passes (1: index
// unavailable, disk full) at Warn, bad input (0) at Debug.
func refusalSeverity(status int) int {
	switch {
	case retryAfter(status) != "":
		return 1
	case status >= 500:
		return 2
	}
	return 0
}

func (b *batchRefusals) add(status int, code string, h chunk.Hash, err error) {
	if b.codes == nil {
		b.codes = make(map[string]int)
	}
	sev := refusalSeverity(status)
	if b.count == 0 || sev > b.severity {
		b.severity, b.firstHash, b.firstErr = sev, h, err
	}
	b.count++
	b.codes[code]++
	if v := errRetryAfter(err, status); v != "" {
		b.retryAfter = v
	}
}

// log writes the one summary line.
func (b *batchRefusals) log(r *http.Request, h *handler, total int) {
	if b.count == 0 {
		return
	}
	level := [...]slog.Level{slog.LevelDebug, slog.LevelWarn, slog.LevelError}[b.severity]
	h.log.Log(r.Context(), level, "batch chunks refused", "refused", b.count, "chunks", total, "codes", b.codes,
		"first_hash", b.firstHash.String(), "err", b.firstErr, "request_id", middleware.GetReqID(r.Context()))
}

// readBatch parses a whole batch body of at most size bytes into items
// whose Data share one buffer of exactly that size: the memory reserved
// for it, never grown.
func readBatch(body io.Reader, size int64, max int) ([]store.BatchItem, error) {
	buf := make([]byte, size)
	n, err := io.ReadFull(body, buf)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		buf = buf[:n]
	case err != nil:
		return nil, err
	default:
		// Full: the body must end here. (A declared length is enforced
		// by the server; an undeclared one by the MaxBytesReader.)
		var extra [1]byte
		if k, err := body.Read(extra[:]); k > 0 {
			return nil, &http.MaxBytesError{Limit: size}
		} else if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	var items []store.BatchItem
	for off := 0; off < len(buf); {
		if len(buf)-off < frameHeader {
			return nil, fmt.Errorf("%w: batch frame %d: truncated header", errBadRequest, len(items))
		}
		var h chunk.Hash
		copy(h[:], buf[off:])
		n := int(binary.BigEndian.Uint32(buf[off+chunk.Size:]))
		off += frameHeader
		if n > MaxBatchChunk {
			return nil, &store.InvalidError{Field: fmt.Sprintf("chunks[%d]", len(items)),
				Reason: fmt.Sprintf("%d bytes, at most %d in a batch (use PUT for large chunks)", n, MaxBatchChunk)}
		}
		if len(buf)-off < n {
			return nil, fmt.Errorf("%w: batch frame %d: truncated content", errBadRequest, len(items))
		}
		items = append(items, store.BatchItem{Hash: h, Data: buf[off : off+n : off+n]})
		off += n
		if len(items) > max {
			return nil, &store.InvalidError{Field: "chunks", Reason: fmt.Sprintf("more than %d chunks in a batch", max)}
		}
	}
	if len(items) == 0 {
		return nil, errors.Join(errBadRequest, errors.New("api: empty batch"))
	}
	return items, nil
}

// AppendFrame appends one batch frame for data to b: a helper for clients.
func AppendFrame(b []byte, data []byte) []byte {
	h := chunk.Sum(data)
	b = append(b, h[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}
