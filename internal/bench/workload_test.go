package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/wormvault/wormvault/internal/chunk"
)

func TestIsHitGivesTheExactFraction(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		dedup float64
		n     int
		want  int
	}{
		{0, 1000, 0}, {0.9, 1000, 900}, {0.5, 1000, 500}, {0.25, 100, 25}, {1, 50, 50}, {0.9, 10, 9}, {0.1, 10, 1},
	} {
		hits := 0
		for j := range tt.n {
			if isHit(j, tt.dedup) {
				hits++
			}
		}
		if hits != tt.want {
			t.Errorf("dedup %v over %d PUTs: %d hits, want %d", tt.dedup, tt.n, hits, tt.want)
		}
	}
	if isHit(0, 0.9) {
		t.Error("an agent's first PUT must be new at 90% dedup")
	}
}

func TestChunkSetBodies(t *testing.T) {
	t.Parallel()
	set, err := newChunkSet(t.Context(), 1000, 5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[chunk.Hash]bool{}
	for i := range 5 {
		viaRead, err := io.ReadAll(struct{ io.Reader }{set.body(i)}) // hide WriteTo
		if err != nil {
			t.Fatal(err)
		}
		var viaWriteTo bytes.Buffer
		if n, err := set.body(i).WriteTo(&viaWriteTo); err != nil || n != 1000 {
			t.Fatalf("WriteTo = %d, %v", n, err)
		}
		if len(viaRead) != 1000 || !bytes.Equal(viaRead, viaWriteTo.Bytes()) {
			t.Fatalf("chunk %d: Read gave %d bytes, WriteTo %d, or they differ", i, len(viaRead), viaWriteTo.Len())
		}
		if got := chunk.Hash(blake3.Sum256(viaRead)); got != set.hashes[i] {
			t.Errorf("chunk %d hashes to %s, set says %s", i, got, set.hashes[i])
		}
		seen[set.hashes[i]] = true
		// Reading in small pieces across the prefix boundary gives the same.
		var small bytes.Buffer
		b, p := set.body(i), make([]byte, 7)
		for {
			n, err := b.Read(p)
			small.Write(p[:n])
			if err == io.EOF {
				break
			}
		}
		if !bytes.Equal(small.Bytes(), viaRead) {
			t.Errorf("chunk %d read 7 bytes at a time differs", i)
		}
	}
	if len(seen) != 5 {
		t.Errorf("%d distinct hashes among 5 chunks", len(seen))
	}
	if _, err := newChunkSet(t.Context(), 8, 1); err == nil {
		t.Error("a chunk smaller than its 16-byte prefix: want an error")
	}
}

// fakeVault is a tiny in-memory vault with the PUT and missing semantics
// the workload relies on.
type fakeVault struct {
	mu     sync.Mutex
	stored map[string]bool
	fail   bool
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	if f.fail {
		http.Error(w, `{"error":{"code":"internal"}}`, http.StatusInternalServerError)
		return
	}
	switch {
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/chunks/"):
		body, _ := io.ReadAll(r.Body)
		name := strings.TrimPrefix(r.URL.Path, "/v1/chunks/")
		if chunk.Hash(blake3.Sum256(body)).String() != name || r.ContentLength != int64(len(body)) {
			http.Error(w, "mismatch", http.StatusUnprocessableEntity)
			return
		}
		f.mu.Lock()
		had := f.stored[name]
		f.stored[name] = true
		f.mu.Unlock()
		if had {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusCreated)
		}
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chunks/missing":
		var req struct{ Hashes []string }
		json.NewDecoder(r.Body).Decode(&req)
		missing := []string{}
		f.mu.Lock()
		for _, h := range req.Hashes {
			if !f.stored[h] {
				missing = append(missing, h)
			}
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string][]string{"missing": missing})
	default:
		http.NotFound(w, r)
	}
}

func TestRunCellAndMissing(t *testing.T) {
	t.Parallel()
	fv := &fakeVault{stored: map[string]bool{}}
	srv := httptest.NewServer(fv)
	defer srv.Close()
	c := NewClient(Target{URL: srv.URL, Token: "tok", PID: os.Getpid()}, 3)
	defer c.Close()

	spec := CellSpec{Size: 4096, Agents: 3, Dedup: 0.5, Duration: time.Minute, MaxBytes: 40 * 4096}
	res, stored, err := RunCell(t.Context(), c, spec)
	if err != nil {
		t.Fatal(err)
	}
	// The byte cap ends the cell long before the time cap: exactly 40 PUTs.
	if res.New+res.Hits != 40 || res.Bytes != 40*4096 || res.Elapsed >= time.Minute {
		t.Errorf("cell = %d new + %d hits, %d bytes in %s; want 40 PUTs of 4096 bytes", res.New, res.Hits, res.Bytes, res.Elapsed)
	}
	// Each agent's own PUTs are half hits, rounded down, and it starts new.
	if res.Hits < 40/2-3 || res.Hits > 40/2 {
		t.Errorf("hits = %d, want about half of 40", res.Hits)
	}
	if res.NewLatency.N != int(res.New) || res.HitLatency.N != int(res.Hits) || res.Latency.N != 40 {
		t.Errorf("latency counts %d/%d/%d do not match the PUTs", res.NewLatency.N, res.HitLatency.N, res.Latency.N)
	}
	if res.Server == nil || res.Server.PeakRSS <= 0 {
		t.Errorf("server usage = %+v, want measured", res.Server)
	}
	pool := poolSize(4096)
	if len(stored) != pool+int(res.New) || len(fv.stored) != len(stored) {
		t.Errorf("returned %d stored hashes, vault holds %d, want pool %d + new %d", len(stored), len(fv.stored), pool, res.New)
	}
	for _, h := range stored {
		if !fv.stored[h.String()] {
			t.Fatalf("hash %s reported stored but the vault lacks it", h)
		}
	}

	m, err := RunMissing(t.Context(), c, stored, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	if m.Hashes != 100 || m.Stored != 50 || m.Requests != 2 || m.HashesPerSec() <= 0 {
		t.Errorf("missing = %+v", m)
	}
}

func TestRunCellTimeCap(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&fakeVault{stored: map[string]bool{}})
	defer srv.Close()
	c := NewClient(Target{URL: srv.URL, Token: "tok"}, 2)
	defer c.Close()
	res, _, err := RunCell(t.Context(), c, CellSpec{Size: 1024, Agents: 2, Duration: 50 * time.Millisecond, MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if res.New == 0 || res.Hits != 0 || res.Server != nil {
		t.Errorf("cell = %+v; want some new PUTs, no hits, no server figures", res)
	}
	if res.Elapsed > 5*time.Second {
		t.Errorf("a 50 ms cell took %s", res.Elapsed)
	}
}

func TestRunCellFailsOnBadAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&fakeVault{stored: map[string]bool{}, fail: true})
	defer srv.Close()
	c := NewClient(Target{URL: srv.URL, Token: "tok"}, 2)
	defer c.Close()
	_, _, err := RunCell(t.Context(), c, CellSpec{Size: 1024, Agents: 2, Duration: time.Minute, MaxBytes: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "status 500") {
		t.Fatalf("RunCell against a failing vault: err = %v, want status 500", err)
	}
	if _, err := RunMissing(t.Context(), c, nil, 10, 1); err == nil {
		t.Fatal("RunMissing against a failing vault: want an error")
	}
}

func TestRunCellRefusesWrongToken(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&fakeVault{stored: map[string]bool{}})
	defer srv.Close()
	c := NewClient(Target{URL: srv.URL, Token: "wrong"}, 1)
	defer c.Close()
	if _, _, err := RunCell(t.Context(), c, CellSpec{Size: 1024, Agents: 1, Duration: time.Minute, MaxBytes: 1 << 20}); err == nil {
		t.Fatal("want an error for a 401")
	}
}

func TestDiskBaseline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res, err := DiskBaseline(t.Context(), dir, 4096, 2, time.Minute, 10*4096)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 10 || res.Bytes != 10*4096 || res.Latency.N != 10 || res.FilesPerSec() <= 0 {
		t.Errorf("DiskBaseline = %+v, want 10 files of 4096 bytes", res)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 0 {
		t.Errorf("DiskBaseline left %v behind", left)
	}
}

func TestHashBaseline(t *testing.T) {
	t.Parallel()
	v, err := HashBaseline(t.Context(), 64<<10, 2, 30*time.Millisecond)
	if err != nil || v <= 0 {
		t.Errorf("HashBaseline = %v, %v", v, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := HashBaseline(ctx, 1024, 1, time.Second); err == nil {
		t.Error("HashBaseline with a cancelled context: want its error")
	}
}
