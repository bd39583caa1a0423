package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/loopfs"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// diskFullRun drives one vault through issue 14's disk-full run and keeps
// the ack log: every chunk answered 200/201 (or "created"/"exists" in a
// batch), to be verified by GET and re-hash at the end.
type diskFullRun struct {
	t      *testing.T
	c      *http.Client
	rng    *rand.Rand
	agent  string
	reader string

	mu      sync.Mutex
	acked   map[chunk.Hash][]byte
	refused map[string]int // upload kind -> 507s seen
}

// upload kinds
const (
	kindSmall = "small PUT" // packed
	kindLarge = "large PUT" // a file of its own
	kindBatch = "batch"     // packed, many per request
)

// newChunk returns random content of n bytes.
func (r *diskFullRun) newChunk(n int) []byte {
	b := make([]byte, n)
	fillRandom(r.rng, b)
	return b
}

// want507 checks a 507 insufficient_storage with Retry-After.
func want507(t testing.TB, what string, resp *http.Response, body []byte) {
	t.Helper()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusInsufficientStorage || e.Error.Code != "insufficient_storage" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%s: %d %s (Retry-After %q), want 507 insufficient_storage with Retry-After",
			what, resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
}

// put uploads one chunk of n bytes. It fails the test on any answer but
// 201, 200 and 507 with Retry-After (above all a 500), and reports
// whether the chunk was acknowledged.
func (r *diskFullRun) put(base, kind string, n int) bool {
	t := r.t
	t.Helper()
	data := r.newChunk(n)
	h := chunk.Sum(data)
	req, _ := http.NewRequest(http.MethodPut, base+"/v1/chunks/"+h.String(), bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+r.agent)
	resp, err := r.c.Do(req)
	if err != nil {
		t.Fatalf("%s of %d bytes: %v", kind, n, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated, http.StatusOK:
		r.acked[h] = data
		return true
	default:
		want507(t, fmt.Sprintf("%s of %d bytes", kind, n), resp, body)
		r.refused[kind]++
		return false
	}
}

// batch uploads count chunks of n bytes in one batch: each chunk is
// acknowledged or refused for want of space (507 for the whole batch, or
// insufficient_storage for the chunk), nothing else. It reports how many
// were acknowledged.
func (r *diskFullRun) batch(base string, count, n int) int {
	t := r.t
	t.Helper()
	var body []byte
	var chunks [][]byte
	for range count {
		c := r.newChunk(n)
		chunks = append(chunks, c)
		body = api.AppendFrame(body, c)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chunks/batch", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.agent)
	req.Header.Set("Content-Type", api.BatchContentType)
	resp, err := r.c.Do(req)
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		want507(t, "batch", resp, rb)
		r.refused[kindBatch]++
		return 0
	}
	var ans struct {
		Results []struct {
			Hash   chunk.Hash `json:"hash"`
			Status string     `json:"status"`
			Code   string     `json:"code"`
		} `json:"results"`
	}
	if err := json.Unmarshal(rb, &ans); err != nil || len(ans.Results) != count {
		t.Fatalf("batch answer %s: %v", rb, err)
	}
	acked := 0
	for i, res := range ans.Results {
		switch {
		case res.Hash != chunk.Sum(chunks[i]):
			t.Fatalf("batch result %d names %s, want %s", i, res.Hash, chunk.Sum(chunks[i]))
		case res.Status == "created" || res.Status == "exists":
			r.acked[res.Hash] = chunks[i]
			acked++
		case res.Status == "refused" && res.Code == "insufficient_storage":
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("batch with chunks refused for space has no Retry-After")
			}
		default:
			t.Fatalf("batch chunk %d: %s %s, want created, exists or refused insufficient_storage", i, res.Status, res.Code)
		}
	}
	if acked < count {
		r.refused[kindBatch]++
	}
	return acked
}

// verifyAll GETs every acknowledged chunk and re-hashes it.
func (r *diskFullRun) verifyAll(base string) {
	t := r.t
	t.Helper()
	for h, want := range r.acked {
		status, got := mustGetChunk(t, r.c, base, r.reader, h)
		if status != http.StatusOK || chunk.Sum(got) != h || !bytes.Equal(got, want) {
			t.Errorf("acknowledged chunk %s: GET %d, %d bytes, verifies %v; want 200 and its %d bytes",
				h, status, len(got), chunk.Sum(got) == h, len(want))
		}
	}
}

// readyz returns /readyz's status and body.
func readyz(t testing.TB, c *http.Client, base string) (int, string) {
	t.Helper()
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// fill makes the filesystem completely full with a file at path.
func fill(t *testing.T, mnt, name string) string {
	path := filepath.Join(mnt, name)
	loopfs.Fill(t, path)
	if free := loopfs.Available(t, mnt); free != 0 {
		t.Fatalf("%d bytes still available after filling the filesystem", free)
	}
	return path
}

// TestDiskFullEndToEnd is issue 14's acceptance 2, against the real binary
// on a loop-mounted 64 MiB ext4 as its data directory (no reserve, so the
// writes themselves meet the full disk): uploads fill it until small,
// large and batch uploads are refused, always with 507 and Retry-After,
// never 500; once space is freed they resume without a restart; the vault
// then restarts on a completely full filesystem and serves every
// acknowledged chunk (uploads 507), and resumes uploads once space is
// freed, again without a restart. Every acknowledged chunk verifies.
func TestDiskFullEndToEnd(t *testing.T) {
	t.Parallel()
	mnt := loopfs.Mount(t, 64<<20)
	bin := mustBuildVault(t)
	dbURL := pgtest.NewDatabase(t)
	dir := filepath.Join(mnt, "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	r := &diskFullRun{
		t: t, c: newTestClient(t), rng: rand.New(rand.NewPCG(14, 2)),
		agent:  mustIssueToken(t, bin, dir, dbURL, "agent", "diskfull-agent"),
		reader: mustIssueToken(t, bin, dir, dbURL, "reader", "diskfull-reader"),
		acked:  map[chunk.Hash][]byte{}, refused: map[string]int{},
	}
	serveArgs := []string{"--data-dir", dir, "--database-url", dbURL, "--listen", "127.0.0.1:0",
		"--pack-threshold", "256KiB", "--free-space-reserve", "0"}
	// Room to free later, whatever the uploads leave.
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 12<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := mustStartVault(t, bin, serveArgs...)
	mustWaitReady(t, r.c, srv)

	// 1. Fill the disk with uploads until every kind is refused.
	for i := 0; r.refused[kindSmall] == 0 || r.refused[kindLarge] == 0 || r.refused[kindBatch] == 0; i++ {
		if i > 2000 {
			t.Fatalf("after %d rounds (%d acknowledged) refusals %v: the disk never filled", i, len(r.acked), r.refused)
		}
		r.put(srv.url, kindSmall, 32<<10+r.rng.IntN(64<<10))
		r.put(srv.url, kindLarge, 300<<10+r.rng.IntN(700<<10))
		r.batch(srv.url, 16, 16<<10)
	}
	t.Logf("disk full after %d acknowledged chunks; refusals %v", len(r.acked), r.refused)
	// Whatever room the refusals left goes too; each kind is refused again.
	rest := fill(t, mnt, "rest")
	if r.put(srv.url, kindSmall, 64<<10) || r.put(srv.url, kindLarge, 512<<10) || r.batch(srv.url, 8, 16<<10) > 0 {
		t.Fatalf("an upload was acknowledged on a completely full filesystem")
	}
	if status, body := readyz(t, r.c, srv.url); status != http.StatusServiceUnavailable || !strings.Contains(body, `"degraded"`) {
		t.Errorf("/readyz on a full disk = %d %s, want 503 degraded", status, body)
	}
	r.verifyAll(srv.url)

	// 2. Free space: uploads of every kind resume, no restart.
	for _, p := range []string{rest, ballast} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	mustWaitReady(t, r.c, srv)
	before := len(r.acked)
	if !r.put(srv.url, kindSmall, 48<<10) || !r.put(srv.url, kindLarge, 600<<10) || r.batch(srv.url, 16, 16<<10) != 16 {
		t.Fatalf("uploads did not resume after space was freed (refusals %v)", r.refused)
	}
	t.Logf("uploads resumed without a restart: %d more acknowledged", len(r.acked)-before)
	if n := strings.Count(srv.log.String(), `"batch chunks refused"`); n > r.refused[kindBatch] {
		t.Errorf("%d 'batch chunks refused' log lines for %d refused batches: one per request at most", n, r.refused[kindBatch])
	}

	// 3. A restart on a completely full filesystem: the vault starts and
	// serves reads; uploads get 507. Chunk files without their rows (as
	// crashes between publish and commit leave) make the start-up
	// reconcile journal their adoption, more than the slack in the
	// journal's last block holds: the vault must start read-only all the
	// same.
	srv.signal(t, syscall.SIGTERM)
	if err := srv.waitExit(t, 60*time.Second); err != nil {
		t.Fatalf("vault serve exited with %v; log:\n%s", err, srv.log.String())
	}
	checkNo500(t, srv)
	orphans := map[chunk.Hash][]byte{}
	for range 64 {
		b := r.newChunk(4 << 10)
		h := chunk.Sum(b)
		leaf := filepath.Join(dir, "blake3", h.String()[0:2], h.String()[2:4])
		if err := os.MkdirAll(leaf, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(leaf, h.String()), b, 0o440); err != nil {
			t.Fatal(err)
		}
		orphans[h] = b
	}
	full := fill(t, mnt, "full")
	srv = mustStartVault(t, bin, serveArgs...)
	// The adoption runs in the background, after the listener opened.
	srv.log.wait(t, "start-up reconcile could not finish: the data directory's filesystem is full; "+
		"serving reads only (uploads get 507) until it completes; free space to resume", 60*time.Second, srv.done)
	r.verifyAll(srv.url)
	if r.put(srv.url, kindSmall, 64<<10) || r.put(srv.url, kindLarge, 512<<10) || r.batch(srv.url, 8, 16<<10) > 0 {
		t.Fatalf("an upload was acknowledged on a completely full filesystem after the restart")
	}
	if status, body := readyz(t, r.c, srv.url); status != http.StatusServiceUnavailable || !strings.Contains(body, `"degraded"`) {
		t.Errorf("/readyz after a restart on a full disk = %d %s, want 503 degraded", status, body)
	}

	// 4. Space returns: uploads resume without another restart.
	if err := os.Remove(full); err != nil {
		t.Fatal(err)
	}
	srv.log.wait(t, "start-up reconcile completed: uploads are admitted again", 60*time.Second, srv.done)
	mustWaitReady(t, r.c, srv)
	if !r.put(srv.url, kindSmall, 48<<10) || !r.put(srv.url, kindLarge, 600<<10) || r.batch(srv.url, 16, 16<<10) != 16 {
		t.Fatalf("uploads did not resume after space was freed following the restart (refusals %v)", r.refused)
	}
	for h, b := range orphans { // adopted by the reconcile that completed
		r.acked[h] = b
	}
	r.verifyAll(srv.url)
	t.Logf("%d acknowledged chunks verified; refusals %v", len(r.acked), r.refused)
	checkNo500(t, srv)
}

// checkNo500 fails if the server answered any request with a 500.
func checkNo500(t *testing.T, srv *vaultServer) {
	t.Helper()
	if strings.Contains(srv.log.String(), `"status":500`) {
		t.Errorf("a request was answered 500; log:\n%s", srv.log.String())
	}
}
