package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/chunk"
)

// batchFrameHeader is the size of a batch frame's header: the raw hash and
// a 4-byte big-endian length.
const batchFrameHeader = chunk.Size + 4

// BatchSpec is one batch-endpoint cell: Agents agents each POST batches of
// Frames fresh chunks of Size to /v1/chunks/batch.
type BatchSpec struct {
	Size     int64
	Agents   int
	Frames   int           // chunks per request; BatchFrames caps it to what fits a request
	Duration time.Duration // time cap
	MaxBytes int64         // byte cap over all chunks sent
}

func (s BatchSpec) String() string {
	return fmt.Sprintf("%s/%d, %d per batch", FormatSize(s.Size), s.Agents, s.Frames)
}

// BatchFrames is how many chunks of size one batch request carries when
// want are asked for: no more than fit the endpoint's body limit.
func BatchFrames(size int64, want int) int {
	fit := int64(api.MaxBatchBytes) / (size + batchFrameHeader)
	return int(max(0, min(int64(want), fit)))
}

// appendFrames appends the batch frames of chunks first..first+n-1 of the
// set to b: for each, its precomputed hash, its length and its content, as
// api.AppendFrame does but without hashing while the clock runs.
func (s *chunkSet) appendFrames(b []byte, first, n int) []byte {
	var prefix [16]byte
	for i := first; i < first+n; i++ {
		b = append(b, s.hashes[i][:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(s.base)))
		s.prefix(i, prefix[:])
		b = append(b, prefix[:]...)
		b = append(b, s.base[16:]...)
	}
	return b
}

// batchAnswer is the JSON answer of the batch endpoint.
type batchAnswer struct {
	Results []struct {
		Hash    chunk.Hash `json:"hash"`
		Status  string     `json:"status"`
		Code    string     `json:"code"`
		Message string     `json:"message"`
	} `json:"results"`
}

// postBatch sends one batch body and checks that every chunk in it, want
// in order, is reported with status (created or exists).
func (c *Client) postBatch(ctx context.Context, hc *http.Client, body []byte, want []chunk.Hash, status string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.target.URL+"/v1/chunks/batch", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.target.Token)
	req.Header.Set("Content-Type", api.BatchContentType)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("POST batch: %w", err)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("POST batch: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST batch: status %d, want 200: %s", resp.StatusCode, bytes.TrimSpace(answer[:min(len(answer), 4096)]))
	}
	var got batchAnswer
	if err := json.Unmarshal(answer, &got); err != nil {
		return fmt.Errorf("POST batch: decode answer: %w", err)
	}
	if len(got.Results) != len(want) {
		return fmt.Errorf("POST batch: %d results for %d chunks", len(got.Results), len(want))
	}
	for i, r := range got.Results {
		switch {
		case r.Hash != want[i]:
			return fmt.Errorf("POST batch: result %d names %s, want %s", i, r.Hash, want[i])
		case r.Status != status:
			return fmt.Errorf("POST batch: chunk %s: %s, want %s: %s %s", r.Hash, r.Status, status, r.Code, r.Message)
		}
	}
	return nil
}

// RunBatchCell runs one batch-endpoint cell against the target: each agent,
// with its own http.Client on the shared transport, POSTs batches of fresh
// chunks until spec.Duration has passed or spec.MaxBytes of chunks have
// been sent. Every chunk must come back created. Chunks are prepared and
// hashed before the clock starts; each request's body is assembled from
// them while it runs (a copy, no hashing).
func RunBatchCell(ctx context.Context, c *Client, spec BatchSpec) (BatchCellResult, error) {
	switch {
	case spec.Size > api.MaxBatchChunk:
		return BatchCellResult{}, fmt.Errorf("bench: batch cell %s: chunks over %s go through PUT, not batches", spec, FormatSize(api.MaxBatchChunk))
	case spec.Frames < 1:
		return BatchCellResult{}, fmt.Errorf("bench: batch cell %s: want at least one chunk per batch", spec)
	}
	spec.Frames = BatchFrames(spec.Size, spec.Frames)
	perReq := int64(spec.Frames) * spec.Size
	maxReqs := max(int64(spec.Agents), spec.MaxBytes/perReq)
	set, err := newChunkSet(ctx, spec.Size, int(maxReqs+int64(spec.Agents))*spec.Frames)
	if err != nil {
		return BatchCellResult{}, err
	}
	flushDisks()

	var watch *procWatch
	if c.target.PID > 0 {
		if watch, err = watchProc(c.target.PID, 100*time.Millisecond); err != nil {
			return BatchCellResult{}, err
		}
	}
	var (
		sent, next atomic.Int64
		wg         sync.WaitGroup
		mu         sync.Mutex
		lats       []time.Duration
		cellErr    error
	)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cpu0 := selfCPU()
	start := time.Now()
	deadline := start.Add(spec.Duration)
	for range spec.Agents {
		wg.Go(func() {
			hc := c.agent()
			body := make([]byte, 0, int64(spec.Frames)*(spec.Size+batchFrameHeader))
			var local []time.Duration
			defer func() {
				mu.Lock()
				lats = append(lats, local...)
				mu.Unlock()
			}()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if sent.Add(perReq) > spec.MaxBytes {
					return
				}
				first := int(next.Add(int64(spec.Frames))) - spec.Frames
				if first+spec.Frames > len(set.hashes) {
					return
				}
				body = set.appendFrames(body[:0], first, spec.Frames)
				t0 := time.Now()
				if err := c.postBatch(ctx, hc, body, set.hashes[first:first+spec.Frames], "created"); err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						cellErr = firstErr(cellErr, err)
						mu.Unlock()
						cancel()
					}
					return
				}
				local = append(local, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	clientCPU := selfCPU() - cpu0
	var usage *ProcUsage
	if watch != nil {
		u, err := watch.finish()
		if err != nil {
			return BatchCellResult{}, err
		}
		usage = &u
	}
	if cellErr != nil {
		return BatchCellResult{}, fmt.Errorf("bench: batch cell %s: %w", spec, cellErr)
	}
	if err := parent.Err(); err != nil {
		return BatchCellResult{}, err
	}
	if len(lats) == 0 {
		return BatchCellResult{}, fmt.Errorf("bench: batch cell %s: no request completed (raise --max-bytes or --duration)", spec)
	}
	reqs := int64(len(lats))
	return BatchCellResult{
		Size: spec.Size, Agents: spec.Agents, Frames: spec.Frames,
		Requests: reqs, Chunks: reqs * int64(spec.Frames), Bytes: reqs * perReq,
		Elapsed: elapsed, Latency: Summarize(lats), Server: usage, ClientCPU: clientCPU,
	}, nil
}
