package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
)

// newLimitedServer is newTestServer whose handler has the given limits.
func newLimitedServer(t *testing.T, o Options) *testServer {
	t.Helper()
	ts := newTestServer(t)
	o.Store, o.Verifier, o.Log = ts.store, ts.verifier, ts.logs.logger()
	tr := newRequestTracker()
	srv := httptest.NewServer(tr.wrap(NewHandler(o)))
	t.Cleanup(srv.Close)
	ts.Server, ts.requests = srv, tr
	return ts
}

// rawConn opens a TCP connection to the test server.
func rawConn(t *testing.T, ts *testServer) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ts.Listener.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readResponse reads one response from c, within timeout.
func readResponse(t *testing.T, c net.Conn, timeout time.Duration) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response within %s: %v", timeout, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestStalledChunkBodyIsCut: a client that declares a chunk and then
// stops sending is cut with 408 once the grace period is over, instead of
// holding its connection for the server's whole read timeout; nothing is
// stored and no temp file is left.
func TestStalledChunkBodyIsCut(t *testing.T) {
	t.Parallel()
	ts := newLimitedServer(t, Options{MinBodyRate: 1 << 10, BodyRateGrace: 200 * time.Millisecond})
	before := ts.state(t)
	_, h := randomChunk(t, 300<<10)
	c := rawConn(t, ts)
	fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
		chunkPath(h), ts.token(t, auth.RoleAgent), 300<<10)
	c.Write(make([]byte, 100)) // then nothing
	start := time.Now()
	resp, body := readResponse(t, c, 30*time.Second)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, `"too_slow"`) {
		t.Fatalf("stalled body: %d %s, want 408 too_slow", resp.StatusCode, body)
	}
	t.Logf("cut after %s", time.Since(start).Round(time.Millisecond))
	ts.requests.waitDone(t, c.LocalAddr().String(), 1)
	ts.assertUnchanged(t, before)
	if tmp := ts.tempFiles(t); len(tmp) != 0 {
		t.Errorf("temp files left: %v", tmp)
	}
}

// TestTricklingChunkBodyIsCut: a body that keeps arriving, but far below
// the minimum rate, is cut too (a deadline per read alone would not).
func TestTricklingChunkBodyIsCut(t *testing.T) {
	t.Parallel()
	ts := newLimitedServer(t, Options{MinBodyRate: 4 << 10, BodyRateGrace: 200 * time.Millisecond})
	before := ts.state(t)
	_, h := randomChunk(t, 1<<20)
	c := rawConn(t, ts)
	fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
		chunkPath(h), ts.token(t, auth.RoleAgent), 1<<20)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write(make([]byte, 10)); err != nil { // 500 B/s
					return
				}
			}
		}
	}()
	resp, body := readResponse(t, c, 30*time.Second)
	close(stop)
	wg.Wait()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, `"too_slow"`) {
		t.Fatalf("trickling body: %d %s, want 408 too_slow", resp.StatusCode, body)
	}
	ts.requests.waitDone(t, c.LocalAddr().String(), 1)
	ts.assertUnchanged(t, before)
}

// TestMinBodyRateLetsNormalUploadsThrough: a body sent at once, and a
// slow but fast-enough one, are stored; the connection is then reused for
// another request (the rate's deadline does not outlive the body).
func TestMinBodyRateLetsNormalUploadsThrough(t *testing.T) {
	t.Parallel()
	ts := newLimitedServer(t, Options{MinBodyRate: 1 << 10, BodyRateGrace: 100 * time.Millisecond})
	data, h := randomChunk(t, 200<<10)
	ts.put(t, h, data, http.StatusCreated)
	small, sh := randomChunk(t, 4<<10)
	c := rawConn(t, ts)
	tok := ts.token(t, auth.RoleAgent)
	fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", chunkPath(sh), tok, len(small))
	c.Write(small[:2048])
	time.Sleep(300 * time.Millisecond) // past the grace, still above 1 KiB/s on average
	c.Write(small[2048:])
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("slow but fast-enough body: %d", resp.StatusCode)
	}
	// Idle past the moment the body's deadline would have fallen: the
	// connection must still take a request.
	time.Sleep(2 * time.Second)
	fmt.Fprintf(c, "HEAD %s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\n\r\n", chunkPath(sh), tok)
	resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodHead})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("next request on the same connection: %v, %v", resp, err)
	}
}

// heapInuse returns the heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestSlowBatchBodiesStayWithinBatchMemory: 200 batch uploads that each
// declare the largest body and then stall hold at most the batch memory
// bound between them; the others are told to retry (503 busy with
// Retry-After) without a byte read, and the heap stays within the bound.
func TestSlowBatchBodiesStayWithinBatchMemory(t *testing.T) {
	t.Parallel()
	const limit = 2 * MaxBatchBytes
	ts := newLimitedServer(t, Options{BatchMemory: limit, batchWait: 500 * time.Millisecond,
		MinBodyRate: 1 << 10, BodyRateGrace: 2 * time.Second})
	tok := ts.token(t, auth.RoleAgent)
	base := heapInuse()

	const n = 200
	type result struct {
		status     int
		retryAfter string
		body       string
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c := rawConn(t, ts)
		fmt.Fprintf(c, "POST /v1/chunks/batch HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
			tok, BatchContentType, MaxBatchBytes)
		c.Write(make([]byte, 1000)) // then stall
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- result{status: -1, body: err.Error()}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			results <- result{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
		}()
	}
	// While they wait: the heap holds at most the bound (plus slack for
	// 200 connections' buffers and the test's own garbage).
	peak := uint64(0)
	waitFor(t, "every batch answered", func() bool {
		peak = max(peak, heapInuse())
		return len(results) == n
	})
	wg.Wait()
	close(results)
	busy, slow := 0, 0
	for r := range results {
		switch {
		case r.status == http.StatusServiceUnavailable && strings.Contains(r.body, `"busy"`) && r.retryAfter != "":
			busy++
		case r.status == http.StatusRequestTimeout:
			slow++
		default:
			t.Errorf("stalled batch: %d %q", r.status, r.body)
		}
	}
	if busy < n-limit/MaxBatchBytes || slow > limit/MaxBatchBytes {
		t.Errorf("%d told busy, %d cut as too slow; want at most %d admitted", busy, slow, limit/MaxBatchBytes)
	}
	if growth := int64(peak) - int64(base); growth > limit+32<<20 {
		t.Errorf("heap grew by %d MiB under %d stalled batches, bound %d MiB", growth>>20, n, limit>>20)
	} else {
		t.Logf("heap growth at peak: %d MiB (bound %d MiB); %d busy, %d cut as too slow", growth>>20, limit>>20, busy, slow)
	}
}
