package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// openFDs counts this process's open file descriptors (sockets included).
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files here: %v", err)
	}
	return len(ents)
}

// settle returns the goroutine and fd counts once they stop falling (or
// after a bound): what is left after clients leave.
func settle(t *testing.T, goroutines, fds int) (int, int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	g, f := runtime.NumGoroutine(), openFDs(t)
	for (g > goroutines || f > fds) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		g, f = runtime.NumGoroutine(), openFDs(t)
	}
	return g, f
}

// TestLockedChunksTableFailsUploadsWithin503AndReleasesWork: with the
// chunks table locked (LOCK TABLE, held far longer than the deadline),
// every upload is answered 503 unavailable with Retry-After within the
// commit deadline, instead of waiting for the lock; clients that give up
// early leave no goroutine or socket behind once their requests end; the
// store reports the stall (a readiness signal); after the lock, uploads
// succeed.
func TestLockedChunksTableFailsUploadsWithin503AndReleasesWork(t *testing.T) {
	t.Parallel()
	const deadline = 500 * time.Millisecond
	ts := newTestServer(t)
	packs, err := pack.Open(filepath.Join(ts.dataDir, "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(ts.pool, ts.blobs, ts.clk, slog.New(slog.DiscardHandler), nil, store.Options{
		MaxChunkSize: testMaxChunk, MaxBatch: testMaxBatch, VaultID: testVaultID,
		Packs: packs, PackThreshold: 64 << 10, CommitTimeout: deadline,
	})
	t.Cleanup(func() { st.Close(); packs.Close() })
	tr := newRequestTracker()
	srv := httptest.NewServer(tr.wrap(NewHandler(Options{Store: st, Verifier: ts.verifier, Log: ts.logs.logger()})))
	t.Cleanup(srv.Close)
	tok := ts.token(t, auth.RoleAgent)

	// Warm up: one of each upload, so pools and buffers exist before the
	// baseline is taken.
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, n := range []int{4 << 10, 200 << 10} {
		data, h := randomChunk(t, n)
		if resp := doRequest(t, srv, http.MethodPut, chunkPath(h), tok, data, nil); resp.StatusCode != http.StatusCreated {
			t.Fatalf("warm-up upload: %d %s", resp.StatusCode, resp.body)
		}
	}
	client.CloseIdleConnections()
	// The baseline: the lowest counts seen over a short quiet period.
	baseG, baseF := runtime.NumGoroutine(), openFDs(t)
	for i := 0; i < 25; i++ {
		time.Sleep(20 * time.Millisecond)
		baseG, baseF = min(baseG, runtime.NumGoroutine()), min(baseF, openFDs(t))
	}

	owner := pgtest.OwnerPool(t, ts.pool)
	ctx := context.Background()
	lock, err := owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, "LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var unlockOnce sync.Once
	unlock := func() { unlockOnce.Do(func() { _ = lock.Rollback(ctx) }) }
	t.Cleanup(unlock)

	const patient, impatient = 40, 40
	type result struct {
		status     int
		retryAfter string
		code       string
		took       time.Duration
		err        error
	}
	results := make(chan result, patient+impatient)
	var wg sync.WaitGroup
	for i := 0; i < patient+impatient; i++ {
		size := 4 << 10
		if i%4 == 0 {
			size = 200 << 10 // a file chunk
		}
		data, h := randomChunk(t, size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx := context.Background()
			if i >= patient {
				// Gives up long before the deadline, as a client with a
				// short timeout would.
				var cancel context.CancelFunc
				rctx, cancel = context.WithTimeout(rctx, deadline/5)
				defer cancel()
			}
			req, _ := http.NewRequestWithContext(rctx, http.MethodPut, srv.URL+chunkPath(h), bytes.NewReader(data))
			req.Header.Set("Authorization", "Bearer "+tok)
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				results <- result{err: err, took: time.Since(start)}
				return
			}
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			code := ""
			if i := strings.Index(body.String(), `"code":"`); i >= 0 {
				code = strings.SplitN(body.String()[i+8:], `"`, 2)[0]
			}
			results <- result{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), code: code, took: time.Since(start)}
		}()
	}
	wg.Wait()
	close(results)
	bound := deadline + 10*time.Second // generous for a loaded machine; the lock is held until unlock below
	answered, gaveUp := 0, 0
	for r := range results {
		switch {
		case r.err != nil && errors.Is(r.err, context.DeadlineExceeded):
			gaveUp++
		case r.err != nil:
			t.Errorf("upload under the lock: %v", r.err)
		case r.status != http.StatusServiceUnavailable || r.code != "unavailable" || r.retryAfter == "":
			t.Errorf("upload under the lock: %d %q Retry-After %q, want 503 unavailable with Retry-After", r.status, r.code, r.retryAfter)
		case r.took > bound:
			t.Errorf("upload under the lock answered after %s, want within %s", r.took, bound)
		default:
			answered++
		}
	}
	if answered < patient || gaveUp < impatient/2 {
		t.Errorf("%d answered 503, %d gave up; want %d and most of %d", answered, gaveUp, patient, impatient)
	}
	if err := st.CommitHealth(); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("CommitHealth under the lock = %v, want ErrUnavailable (readiness must degrade)", err)
	}
	if ok, status := groupCommitReady(t, srv); ok || status != http.StatusServiceUnavailable {
		t.Errorf("/readyz under the lock: %d, group_commit ok %v; want 503 and group_commit failing", status, ok)
	}

	// Every client has left (the lock is still held): the server's work
	// for them must be gone too, within a tolerance for runtime noise.
	client.CloseIdleConnections()
	const tolerance = 20 // runtime and pool noise; a leak would be one or more per request (80)
	g, f := settle(t, baseG+tolerance, baseF+tolerance)
	t.Logf("after %d uploads under the lock: goroutines %d -> %d, fds %d -> %d", patient+impatient, baseG, g, baseF, f)
	if g > baseG+tolerance {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines grew from %d to %d after the clients left:\n%s", baseG, g, buf[:runtime.Stack(buf, true)])
	}
	if f > baseF+tolerance {
		t.Errorf("open files grew from %d to %d after the clients left", baseF, f)
	}

	unlock()
	data, h := randomChunk(t, 4<<10)
	if resp := doRequest(t, srv, http.MethodPut, chunkPath(h), tok, data, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload after the lock: %d %s", resp.StatusCode, resp.body)
	}
	if err := st.CommitHealth(); err != nil {
		t.Errorf("CommitHealth after the lock = %v, want nil", err)
	}
	if ok, _ := groupCommitReady(t, srv); !ok {
		t.Errorf("/readyz after the lock: group_commit still failing")
	}
}

// groupCommitReady asks /readyz and returns its group_commit check and
// status.
func groupCommitReady(t *testing.T, srv *httptest.Server) (bool, int) {
	t.Helper()
	resp := doRequest(t, srv, http.MethodGet, "/readyz", "", nil, nil)
	var rd struct {
		GroupCommit struct {
			OK bool `json:"ok"`
		} `json:"group_commit"`
	}
	if err := json.Unmarshal([]byte(resp.body), &rd); err != nil {
		t.Fatalf("/readyz: %v: %s", err, resp.body)
	}
	return rd.GroupCommit.OK, resp.StatusCode
}
