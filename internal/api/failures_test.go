package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/store"
)

// TestMalformedChunkedBody: a body whose chunked encoding is broken is the
// client's error, and leaves nothing behind.
func TestMalformedChunkedBody(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 300)
	tests := []struct{ name, encoded string }{
		{"bad chunk size", "zz\r\n" + string(body) + "\r\n0\r\n\r\n"},
		{"chunk longer than declared", "10\r\n" + string(body) + "\r\n0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.state(t)
			req := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n%s",
				chunkPath(h), ts.token(t, auth.RoleAgent), tt.encoded)
			resp := rawRequest(t, ts.Server, req)
			ts.assertUnchanged(t, before)
			wantError(t, resp, http.StatusBadRequest, "invalid")
		})
	}
}

// TestClientDisconnectMidUpload: a client that goes away in the middle of
// a body leaves nothing behind, and a retry then succeeds.
func TestClientDisconnectMidUpload(t *testing.T) {
	t.Parallel()
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t)
			body, h := randomChunk(t, 512<<10)
			before := ts.state(t)

			conn, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			head := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\n", chunkPath(h), ts.token(t, auth.RoleAgent))
			part := body[:200<<10]
			if chunked {
				head += "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n", len(part))
			} else {
				head += fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
			}
			if _, err := io.WriteString(conn, head); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(part); err != nil {
				t.Fatal(err)
			}
			// Mid-upload for sure: the server is streaming into its temp file.
			waitFor(t, "temp file of the upload", func() bool { return len(ts.tempFiles(t)) == 1 })
			client := conn.LocalAddr().String()
			conn.Close()
			ts.requests.waitDone(t, client, 1)

			ts.assertUnchanged(t, before)
			status := accessLogStatus(t, ts.logs.String(), http.MethodPut)

			ts.put(t, h, body, http.StatusCreated)
			if got := ts.blobFiles(t); !slices.Equal(got, []string{blobFile(h)}) {
				t.Errorf("blob files after retry = %v, want [%s]", got, blobFile(h))
			}

			if status != http.StatusBadRequest && status != statusClientClosed {
				t.Errorf("aborted upload logged as status %d, want 400 or %d: a client going away is not a server failure", status, statusClientClosed)
			}
		})
	}
}

var accessLogRE = regexp.MustCompile(`msg=request .*?method=(\w+) route=\S+ status=(\d+)`)

// accessLogStatus returns the status of the first access-log line for
// method.
func accessLogStatus(t *testing.T, log, method string) int {
	t.Helper()
	for _, m := range accessLogRE.FindAllStringSubmatch(log, -1) {
		if m[1] == method {
			var status int
			fmt.Sscan(m[2], &status)
			return status
		}
	}
	t.Fatalf("no access log line for %s in:\n%s", method, log)
	return 0
}

// deadPool returns a pool whose server does not exist: connecting is
// refused at once.
func deadPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more
	pool, err := pgxpool.New(context.Background(), "postgres://vault:none@"+addr+"/vault?connect_timeout=5&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestDatabaseDown: with the index unreachable, uploads get 503
// "unavailable" with Retry-After and nothing reaches the disk; once the
// database is back, the same upload succeeds.
func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 64<<10)
	pub := ts.key.Public().(ed25519.PublicKey)
	opts := ts.store.Options()

	down := store.New(deadPool(t), ts.blobs, ts.clk, ts.logs.logger(), nil, opts)
	tests := []struct {
		name     string
		verifier *auth.Verifier
	}{
		// The revocation lookup fails first: a token that cannot be checked
		// gets 503, never a pass.
		{"whole database down", auth.NewVerifier(pub, testVaultID, down, ts.clk)},
		// Authentication works (revocations from the live index); the
		// store's own index lookup fails before any disk work.
		{"chunk index down", ts.verifier},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := startServer(t, down, tt.verifier, ts.logs, nil)
			before := ts.state(t)
			agent := ts.token(t, auth.RoleAgent)
			for _, req := range []struct {
				method, path string
				body         any
			}{
				{http.MethodPut, chunkPath(h), body},
				{http.MethodPut, chunkPath(h), bytes.NewReader(body)},
				{http.MethodPost, "/v1/chunks/missing", `{"hashes":["` + h.String() + `"]}`},
				{http.MethodPost, "/v1/chunks/retain", `{"hashes":["` + h.String() + `"],"retain_until":"2027-01-01T00:00:00Z"}`},
			} {
				resp := doRequest(t, srv, req.method, req.path, agent, req.body, nil)
				msg := wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
				if resp.Header.Get("Retry-After") == "" {
					t.Errorf("%s %s: 503 without Retry-After", req.method, req.path)
				}
				if strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "connect") {
					t.Errorf("message %q reveals the cause", msg)
				}
			}
			wantError(t, doRequest(t, srv, http.MethodGet, "/readyz", "", nil, nil), http.StatusServiceUnavailable, "degraded")
			if resp := doRequest(t, srv, http.MethodGet, "/healthz", "", nil, nil); resp.StatusCode != http.StatusOK {
				t.Errorf("/healthz with the database down: status %d, want 200 (liveness is not readiness)", resp.StatusCode)
			}
			ts.assertUnchanged(t, before)
		})
	}

	// The retry against the working server succeeds.
	ts.put(t, h, body, http.StatusCreated)
	resp := ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(resp.body, body) {
		t.Fatalf("GET after retry: status %d, %d bytes", resp.StatusCode, len(resp.body))
	}
}

// TestDatabaseLostDuringUpload: the index goes away after the upload has
// started (its lookup succeeded, the body is streaming). The upload gets
// 503 and no index row; the content file, whole and verified, may stay
// without a row (store.PutChunk documents this: invisible to readers,
// adopted by a retry or the next reconcile), but no temp file does. The
// retry succeeds and serves the content.
func TestDatabaseLostDuringUpload(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 512<<10)

	pool, err := pgxpool.NewWithConfig(context.Background(), ts.pool.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	failing := store.New(pool, ts.blobs, ts.clk, ts.logs.logger(), nil, ts.store.Options())
	srv, _ := startServer(t, failing, ts.verifier, ts.logs, nil)
	before := ts.state(t)

	pr, pw := io.Pipe()
	type result struct {
		response
		err error
	}
	done := make(chan result, 1)
	agent := ts.token(t, auth.RoleAgent)
	go func() {
		r, err := send(srv, http.MethodPut, chunkPath(h), agent, pr, nil)
		done <- result{r, err}
	}()
	if _, err := pw.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "temp file of the upload", func() bool { return len(ts.tempFiles(t)) == 1 })
	pool.Close() // no connection is in use while the body streams
	if _, err := pw.Write(body[len(body)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantError(t, r.response, http.StatusServiceUnavailable, "unavailable")
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	if n := ts.countRows(t, "chunks"); n != before.Chunk {
		t.Errorf("chunks rows = %d, want %d", n, before.Chunk)
	}
	if tmp := ts.tempFiles(t); len(tmp) != 0 {
		t.Errorf("temp files left: %v", tmp)
	}
	if got := ts.blobFiles(t); len(got) > 1 || len(got) == 1 && got[0] != blobFile(h) {
		t.Errorf("blob files = %v, want at most the whole chunk %s", got, blobFile(h))
	}
	// Invisible without its row.
	wantError(t, ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil), http.StatusNotFound, "not_found")

	ts.put(t, h, body, http.StatusCreated)
	resp := ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(resp.body, body) {
		t.Fatalf("GET after retry: status %d, %d bytes", resp.StatusCode, len(resp.body))
	}
}
