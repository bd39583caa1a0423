package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Target is a running vault to push to.
type Target struct {
	URL   string // base URL, e.g. http://127.0.0.1:8420
	Token string // an agent token
	// PID is the server process, whose RSS and CPU are measured; 0 when it
	// is not known (a remote vault).
	PID int
}

// Client talks to a Target. All agents share its Transport, which keeps
// enough idle connections for every agent to reuse its own.
type Client struct {
	target    Target
	transport *http.Transport
}

// NewClient returns a client for up to conns concurrent requests.
func NewClient(t Target, conns int) *Client {
	return &Client{target: t, transport: &http.Transport{
		Proxy:               nil, // loopback benchmarks must not detour through a proxy
		MaxIdleConns:        2 * conns,
		MaxIdleConnsPerHost: 2 * conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      16 << 10,
	}}
}

// Close closes idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// agent returns an http.Client of its own for one agent.
func (c *Client) agent() *http.Client {
	return &http.Client{Transport: c.transport, Timeout: 10 * time.Minute}
}

// put sends one chunk and checks the status is want.
func (c *Client) put(ctx context.Context, hc *http.Client, h chunk.Hash, body *chunkBody, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.target.URL+"/v1/chunks/"+h.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = body.size()
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body.clone()), nil }
	req.Header.Set("Authorization", "Bearer "+c.target.Token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("PUT chunk %s: %w", h, err)
	}
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("PUT chunk %s: read answer: %w", h, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("PUT chunk %s: status %d, want %d: %s", h, resp.StatusCode, want, bytes.TrimSpace(msg))
	}
	return nil
}

// chunkSet is a family of distinct chunks of one size that share everything
// but their first 16 bytes (a per-set nonce and the chunk's index), so that
// preparing and sending any number of them takes the memory of one. The
// shared part is random, so nothing downstream can compress it.
type chunkSet struct {
	base   []byte
	nonce  uint64
	hashes []chunk.Hash
}

// newChunkSet prepares n chunks of size bytes and their hashes, hashing on
// every core: this happens before a cell's clock starts, so that the bench
// client's hashing does not compete with the server it measures.
func newChunkSet(ctx context.Context, size int64, n int) (*chunkSet, error) {
	if size < 16 {
		return nil, fmt.Errorf("bench: chunk size %d is below the 16-byte minimum", size)
	}
	s := &chunkSet{base: make([]byte, size), hashes: make([]chunk.Hash, n)}
	rand.Read(s.base)
	var nb [8]byte
	rand.Read(nb[:])
	s.nonce = binary.LittleEndian.Uint64(nb[:])
	workers := runtime.NumCPU()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := bytes.Clone(s.base)
			for i := w; i < n && ctx.Err() == nil; i += workers {
				s.prefix(i, buf)
				s.hashes[i] = blake3.Sum256(buf)
			}
		})
	}
	wg.Wait()
	return s, ctx.Err()
}

func (s *chunkSet) prefix(i int, dst []byte) {
	binary.LittleEndian.PutUint64(dst[0:8], s.nonce)
	binary.LittleEndian.PutUint64(dst[8:16], uint64(i))
}

// body returns a reader of chunk i's content.
func (s *chunkSet) body(i int) *chunkBody {
	b := &chunkBody{rest: s.base[16:]}
	s.prefix(i, b.prefix[:])
	return b
}

// chunkBody reads a chunk of a chunkSet: its own 16-byte prefix, then the
// shared rest.
type chunkBody struct {
	prefix [16]byte
	rest   []byte
	off    int
}

func (b *chunkBody) size() int64 { return int64(len(b.prefix) + len(b.rest)) }

func (b *chunkBody) clone() *chunkBody { return &chunkBody{prefix: b.prefix, rest: b.rest} }

func (b *chunkBody) Read(p []byte) (int, error) {
	if int64(b.off) >= b.size() {
		return 0, io.EOF
	}
	n := 0
	if b.off < len(b.prefix) {
		n = copy(p, b.prefix[b.off:])
		b.off += n
		p = p[n:]
	}
	if b.off < len(b.prefix) {
		return n, nil // p was smaller than the rest of the prefix
	}
	m := copy(p, b.rest[b.off-len(b.prefix):])
	b.off += m
	return n + m, nil
}

// WriteTo writes the rest in one call, sparing the copy through a buffer.
func (b *chunkBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if b.off < len(b.prefix) {
		n, err := w.Write(b.prefix[b.off:])
		total += int64(n)
		b.off += n
		if err != nil {
			return total, err
		}
	}
	n, err := w.Write(b.rest[b.off-len(b.prefix):])
	total += int64(n)
	b.off += n
	return total, err
}

// isHit tells whether an agent's j-th PUT re-sends a stored chunk, so that
// exactly ⌊(j+1)·dedup⌋ of its first j+1 PUTs are hits.
func isHit(j int, dedup float64) bool {
	return math.Floor(float64(j+1)*dedup+1e-9) > math.Floor(float64(j)*dedup+1e-9)
}

// CellSpec is one cell of the vault matrix.
type CellSpec struct {
	Size     int64
	Agents   int
	Dedup    float64       // fraction of PUTs that re-send a stored chunk
	Duration time.Duration // time cap
	MaxBytes int64         // byte cap over all PUTs
}

// String names the cell as --pprof-cell spells it: SIZE/AGENTS/DEDUP.
func (s CellSpec) String() string {
	return fmt.Sprintf("%s/%d/%g", FormatSize(s.Size), s.Agents, s.Dedup)
}

// poolSize is how many chunks are stored before a cell for its dedup hits
// to re-send: enough to spread over the fan-out, at most 64 MiB.
func poolSize(size int64) int {
	return int(max(4, min(64, 64*MiB/size)))
}

// RunCell runs one cell against the target: spec.Agents agents, each with
// its own http.Client on the shared transport, PUT chunks of spec.Size until
// spec.Duration has passed or spec.MaxBytes have been sent. A fraction
// spec.Dedup of the PUTs re-send chunks stored before the clock started.
// Any answer but 201 for a new chunk and 200 for a stored one fails the
// cell. It also returns the hashes the vault now holds.
func RunCell(ctx context.Context, c *Client, spec CellSpec) (CellResult, []chunk.Hash, error) {
	return runCell(ctx, c, spec, nil)
}

// runCell is RunCell that calls started, if not nil, when the cell's clock
// starts (after the chunks are prepared and the dedup pool is stored).
func runCell(ctx context.Context, c *Client, spec CellSpec, started func()) (CellResult, []chunk.Hash, error) {
	pool := 0
	if spec.Dedup > 0 {
		pool = poolSize(spec.Size)
	}
	maxPuts := max(int64(spec.Agents), spec.MaxBytes/spec.Size)
	fresh := int(math.Ceil(float64(maxPuts)*(1-spec.Dedup))) + spec.Agents + 1
	set, err := newChunkSet(ctx, spec.Size, pool+fresh)
	if err != nil {
		return CellResult{}, nil, err
	}
	if err := seed(ctx, c, set, pool, spec.Agents); err != nil {
		return CellResult{}, nil, fmt.Errorf("bench: cell %s: seed stored chunks: %w", spec, err)
	}
	flushDisks()

	var watch *procWatch
	if c.target.PID > 0 {
		if watch, err = watchProc(c.target.PID, 100*time.Millisecond); err != nil {
			return CellResult{}, nil, err
		}
	}
	var (
		sent, next, hitNext atomic.Int64
		wg                  sync.WaitGroup
		mu                  sync.Mutex
		newLat, hitLat      []time.Duration
		cellErr             error
	)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if started != nil {
		started()
	}
	cpu0 := selfCPU()
	start := time.Now()
	deadline := start.Add(spec.Duration)
	for range spec.Agents {
		wg.Go(func() {
			hc := c.agent()
			var nl, hl []time.Duration
			defer func() {
				mu.Lock()
				newLat, hitLat = append(newLat, nl...), append(hitLat, hl...)
				mu.Unlock()
			}()
			for j := 0; ctx.Err() == nil && time.Now().Before(deadline); j++ {
				if sent.Add(spec.Size) > spec.MaxBytes {
					return
				}
				hit := pool > 0 && isHit(j, spec.Dedup)
				i, want := 0, http.StatusCreated
				if hit {
					i, want = int(hitNext.Add(1)-1)%pool, http.StatusOK
				} else if i = pool + int(next.Add(1)-1); i >= len(set.hashes) {
					return
				}
				t0 := time.Now()
				if err := c.put(ctx, hc, set.hashes[i], set.body(i), want); err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						cellErr = firstErr(cellErr, err)
						mu.Unlock()
						cancel()
					}
					return
				}
				if hit {
					hl = append(hl, time.Since(t0))
				} else {
					nl = append(nl, time.Since(t0))
				}
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
			return CellResult{}, nil, err
		}
		usage = &u
	}
	if cellErr != nil {
		return CellResult{}, nil, fmt.Errorf("bench: cell %s: %w", spec, cellErr)
	}
	if err := parent.Err(); err != nil {
		return CellResult{}, nil, err
	}
	all := append(append([]time.Duration(nil), newLat...), hitLat...)
	res := CellResult{
		Size: spec.Size, Agents: spec.Agents, Dedup: spec.Dedup,
		New: int64(len(newLat)), Hits: int64(len(hitLat)),
		Bytes:   int64(len(newLat)+len(hitLat)) * spec.Size,
		Elapsed: elapsed, Latency: Summarize(all),
		NewLatency: Summarize(newLat), HitLatency: Summarize(hitLat),
		Server: usage, ClientCPU: clientCPU,
	}
	// The PUTs of new chunks took consecutive indexes after the pool, and
	// every one of them succeeded (any failure fails the cell).
	return res, set.hashes[:pool+len(newLat)], nil
}

// seed stores chunks 0..n-1 of set with up to agents concurrent PUTs.
func seed(ctx context.Context, c *Client, set *chunkSet, n, agents int) error {
	var next atomic.Int64
	errs := make([]error, agents)
	var wg sync.WaitGroup
	for a := range agents {
		wg.Go(func() {
			hc := c.agent()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := c.put(ctx, hc, set.hashes[i], set.body(i), http.StatusCreated); err != nil {
					errs[a] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RunMissing asks the target which of n hashes are missing, repeats times,
// with one request of n hashes each time: up to n/2 of them from stored
// (chunks the vault holds), the rest random. The answer is checked.
func RunMissing(ctx context.Context, c *Client, stored []chunk.Hash, n, repeats int) (MissingResult, error) {
	k := min(len(stored), n/2)
	hashes := make([]string, 0, n)
	for _, h := range stored[:k] {
		hashes = append(hashes, h.String())
	}
	for len(hashes) < n {
		var h chunk.Hash
		rand.Read(h[:])
		hashes = append(hashes, h.String())
	}
	body, err := json.Marshal(map[string][]string{"hashes": hashes})
	if err != nil {
		return MissingResult{}, err
	}
	hc := c.agent()
	var lats []time.Duration
	var total time.Duration
	for range repeats {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.target.URL+"/v1/chunks/missing", bytes.NewReader(body))
		if err != nil {
			return MissingResult{}, err
		}
		req.Header.Set("Authorization", "Bearer "+c.target.Token)
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return MissingResult{}, fmt.Errorf("bench: missing: %w", err)
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		lat := time.Since(t0)
		if err != nil {
			return MissingResult{}, fmt.Errorf("bench: missing: read answer: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return MissingResult{}, fmt.Errorf("bench: missing: status %d: %s", resp.StatusCode, bytes.TrimSpace(answer))
		}
		var got struct {
			Missing []string `json:"missing"`
		}
		if err := json.Unmarshal(answer, &got); err != nil {
			return MissingResult{}, fmt.Errorf("bench: missing: decode answer: %w", err)
		}
		if len(got.Missing) != n-k {
			return MissingResult{}, fmt.Errorf("bench: missing: %d hashes reported missing, want %d", len(got.Missing), n-k)
		}
		lats = append(lats, lat)
		total += lat
	}
	return MissingResult{Hashes: n, Stored: k, Requests: repeats, Total: total, Latency: Summarize(lats)}, nil
}
