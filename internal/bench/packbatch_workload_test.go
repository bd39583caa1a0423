package bench

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/chunk"
)

func TestBatchFrames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		size int64
		want int
		got  int
	}{
		{4 * KiB, 256, 256},
		// 256 frames of 64 KiB and their headers are just over 16 MiB.
		{64 * KiB, 256, 255},
		{MiB, 256, 15},
		{4 * MiB, 256, 3},
		{4 * KiB, 10, 10},
		{32 * MiB, 256, 0},
	} {
		if got := BatchFrames(tt.size, tt.want); got != tt.got {
			t.Errorf("BatchFrames(%s, %d) = %d, want %d", FormatSize(tt.size), tt.want, got, tt.got)
		}
		if n := BatchFrames(tt.size, tt.want); int64(n)*(tt.size+batchFrameHeader) > api.MaxBatchBytes {
			t.Errorf("%d frames of %s exceed the body limit", n, FormatSize(tt.size))
		}
	}
}

// The frames the bench sends are exactly what api.AppendFrame builds.
func TestAppendFramesMatchesAPI(t *testing.T) {
	t.Parallel()
	set, err := newChunkSet(t.Context(), 1000, 4)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := 1; i < 4; i++ {
		content, err := io.ReadAll(set.body(i))
		if err != nil {
			t.Fatal(err)
		}
		want = api.AppendFrame(want, content)
	}
	if got := set.appendFrames([]byte("junk")[:0], 1, 3); !bytes.Equal(got, want) {
		t.Errorf("appendFrames differs from api.AppendFrame (%d vs %d bytes)", len(got), len(want))
	}
}

// batchVault answers the batch endpoint like the vault, over an in-memory
// set; answer, if set, overrides every status.
type batchVault struct {
	mu     sync.Mutex
	stored map[chunk.Hash]bool
	answer string
}

func (v *batchVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok" || r.Method != http.MethodPost || r.URL.Path != "/v1/chunks/batch" ||
		r.Header.Get("Content-Type") != api.BatchContentType {
		http.Error(w, "no", http.StatusBadRequest)
		return
	}
	body, _ := io.ReadAll(r.Body)
	type result struct {
		Hash   chunk.Hash `json:"hash"`
		Status string     `json:"status"`
	}
	var out []result
	for off := 0; off < len(body); {
		var h chunk.Hash
		copy(h[:], body[off:])
		n := int(binary.BigEndian.Uint32(body[off+chunk.Size:]))
		data := body[off+batchFrameHeader : off+batchFrameHeader+n]
		off += batchFrameHeader + n
		status := "created"
		v.mu.Lock()
		switch {
		case chunk.Sum(data) != h:
			status = "refused"
		case v.stored[h]:
			status = "exists"
		}
		v.stored[h] = true
		v.mu.Unlock()
		if v.answer != "" {
			status = v.answer
		}
		out = append(out, result{h, status})
	}
	json.NewEncoder(w).Encode(map[string]any{"results": out})
}

func TestRunBatchCell(t *testing.T) {
	t.Parallel()
	v := &batchVault{stored: map[chunk.Hash]bool{}}
	srv := httptest.NewServer(v)
	defer srv.Close()
	c := NewClient(Target{URL: srv.URL, Token: "tok"}, 2)
	defer c.Close()
	// The byte cap allows 5 requests of 10 chunks.
	res, err := RunBatchCell(t.Context(), c, BatchSpec{Size: 4096, Agents: 2, Frames: 10, Duration: time.Minute, MaxBytes: 50 * 4096})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 5 || res.Chunks != 50 || res.Bytes != 50*4096 || res.Frames != 10 || res.Latency.N != 5 || res.Server != nil {
		t.Errorf("batch cell = %+v, want 5 requests of 10 chunks, no server figures", res)
	}
	if len(v.stored) != 50 {
		t.Errorf("the vault got %d distinct chunks, want 50", len(v.stored))
	}
	if res.ChunksPerSec() <= 0 || res.Elapsed >= time.Minute {
		t.Errorf("rate %v over %s", res.ChunksPerSec(), res.Elapsed)
	}
}

func TestRunBatchCellFailsUnlessCreated(t *testing.T) {
	t.Parallel()
	for _, answer := range []string{"exists", "refused"} {
		srv := httptest.NewServer(&batchVault{stored: map[chunk.Hash]bool{}, answer: answer})
		c := NewClient(Target{URL: srv.URL, Token: "tok"}, 1)
		_, err := RunBatchCell(t.Context(), c, BatchSpec{Size: 1024, Agents: 1, Frames: 4, Duration: time.Minute, MaxBytes: 1 << 20})
		if err == nil || !strings.Contains(err.Error(), answer+", want created") {
			t.Errorf("answer %q: err = %v", answer, err)
		}
		c.Close()
		srv.Close()
	}
	srv := httptest.NewServer(&batchVault{stored: map[chunk.Hash]bool{}})
	defer srv.Close()
	c := NewClient(Target{URL: srv.URL, Token: "wrong"}, 1)
	defer c.Close()
	if _, err := RunBatchCell(t.Context(), c, BatchSpec{Size: 1024, Agents: 1, Frames: 4, Duration: time.Minute, MaxBytes: 1 << 20}); err == nil || !strings.Contains(err.Error(), "status 400") {
		t.Errorf("refused request: err = %v", err)
	}
	if _, err := RunBatchCell(t.Context(), c, BatchSpec{Size: 8 * MiB, Agents: 1, Frames: 4, Duration: time.Minute, MaxBytes: 1 << 30}); err == nil {
		t.Error("chunks over the batch limit: want an error")
	}
}

func TestPackBaseline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res, err := PackBaseline(t.Context(), dir, 4096, 2, 1, time.Minute, 10*4096)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 10 || res.Bytes != 10*4096 || res.Latency.N != 10 || res.InFlight != 1 || res.RecordsPerSec() <= 0 {
		t.Errorf("PackBaseline = %+v, want 10 records of 4096 bytes", res)
	}
	if res.Groups < 5 || res.Groups > 10 {
		t.Errorf("%d groups for 10 records from 2 agents one at a time, want 5 to 10", res.Groups)
	}
	// Four records per hand-over: 2 agents × 2 hand-overs.
	res, err = PackBaseline(t.Context(), dir, 4096, 2, 4, time.Minute, 16*4096)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 16 || res.Latency.N != 4 || res.InFlight != 4 || res.Groups > 4 {
		t.Errorf("batched PackBaseline = %+v, want 16 records in 4 hand-overs, at most 4 groups", res)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 0 {
		t.Errorf("PackBaseline left %v behind", left)
	}
	if _, err := PackBaseline(t.Context(), dir, 32*MiB, 1, 1, time.Second, 1<<30); err == nil {
		t.Error("records over the pack limit: want an error")
	}
}

func TestConfigSizes(t *testing.T) {
	t.Parallel()
	c := Config{Sizes: []int64{MiB, 4 * KiB}, BatchSizes: []int64{4 * KiB, 64 * KiB}, BaselineSizes: []int64{256 * KiB},
		Agents: []int{1}, Dedup: []float64{0}, Duration: time.Second, MaxBytes: MiB, Target: Target{URL: "http://x"}, WorkDir: "/tmp"}
	got := c.allSizes()
	want := []int64{4 * KiB, 64 * KiB, 256 * KiB, MiB}
	if len(got) != len(want) {
		t.Fatalf("allSizes = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allSizes = %v, want %v", got, want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate = %v", err)
	}
	c.BatchSizes = []int64{8 * MiB}
	if err := c.Validate(); err == nil {
		t.Error("batch chunks over the endpoint's limit: want an error")
	}
	c.BatchSizes, c.BaselineSizes = nil, []int64{10}
	if err := c.Validate(); err == nil {
		t.Error("a baseline size below 64 bytes: want an error")
	}
}
