package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Batch uploads (POST /v1/chunks/batch): many small chunks in one request.
// The limits are the vault's (docs/api.md); a batch over them is refused
// whole.
const (
	// BatchContentType is the media type of a batch body.
	BatchContentType = "application/vnd.wormvault.batch"
	// MaxBatchBytes bounds one batch body, frames included.
	MaxBatchBytes = 16 << 20
	// MaxBatchChunk bounds one chunk in a batch.
	MaxBatchChunk = 4 << 20
	// MaxBatchChunks bounds the chunks in one batch.
	MaxBatchChunks = 10_000
	// BatchFrameOverhead is what each chunk adds to a batch body besides
	// its content: its raw hash and its length.
	BatchFrameOverhead = chunk.Size + 4
)

// BatchItem is one chunk of a batch upload.
type BatchItem struct {
	Hash chunk.Hash
	Data []byte
}

// BatchResult is what became of one chunk of a batch. Status is "created"
// or "exists" (both durable) or "refused", with the API's error Code and
// Message.
type BatchResult struct {
	Hash    chunk.Hash `json:"hash"`
	Status  string     `json:"status"`
	Code    string     `json:"code,omitempty"`
	Message string     `json:"message,omitempty"`
}

// Stored reports whether the vault holds the chunk durably.
func (r BatchResult) Stored() bool { return r.Status == "created" || r.Status == "exists" }

// PutBatch uploads small chunks in one request, retained at least until
// retainUntil (zero: the vault's minimum). It returns one result per item,
// in order. Each chunk is verified and stored on its own, so some may be
// refused while others are stored; a refusal of the whole batch (a
// malformed body, a wrong token) is an *Error.
func (c *Client) PutBatch(ctx context.Context, items []BatchItem, retainUntil time.Time) ([]BatchResult, error) {
	if len(items) == 0 {
		return nil, nil
	}
	if len(items) > MaxBatchChunks {
		return nil, fmt.Errorf("client: batch of %d chunks, at most %d", len(items), MaxBatchChunks)
	}
	size := 0
	for _, it := range items {
		if len(it.Data) > MaxBatchChunk {
			return nil, fmt.Errorf("client: chunk %s of %d bytes is too large for a batch (at most %d)", it.Hash, len(it.Data), MaxBatchChunk)
		}
		size += BatchFrameOverhead + len(it.Data)
	}
	if size > MaxBatchBytes {
		return nil, fmt.Errorf("client: batch body of %d bytes, at most %d", size, MaxBatchBytes)
	}
	// The body streams from the items: no copy of the batch is made.
	headers := make([]byte, 0, len(items)*BatchFrameOverhead)
	parts := make([]io.Reader, 0, 2*len(items))
	for _, it := range items {
		off := len(headers)
		headers = append(headers, it.Hash[:]...)
		headers = binary.BigEndian.AppendUint32(headers, uint32(len(it.Data)))
		parts = append(parts, bytes.NewReader(headers[off:off+BatchFrameOverhead]), bytes.NewReader(it.Data))
	}

	u := *c.base
	u.Path += "/v1/chunks/batch"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), io.MultiReader(parts...))
	if err != nil {
		return nil, fmt.Errorf("client: POST /v1/chunks/batch: %w", err)
	}
	req.ContentLength = int64(size)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", BatchContentType)
	if !retainUntil.IsZero() {
		req.Header.Set(HeaderRetainUntil, retainUntil.UTC().Format(time.RFC3339))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: POST /v1/chunks/batch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, decodeError(resp)
	}
	var out struct {
		Results []BatchResult `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: POST /v1/chunks/batch: decode answer: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // let the connection be reused
	if len(out.Results) != len(items) {
		return nil, fmt.Errorf("client: POST /v1/chunks/batch: %d results for %d chunks", len(out.Results), len(items))
	}
	for i, r := range out.Results {
		if r.Hash != items[i].Hash {
			return nil, fmt.Errorf("client: POST /v1/chunks/batch: result %d is for %s, want %s", i, r.Hash, items[i].Hash)
		}
	}
	return out.Results, nil
}
