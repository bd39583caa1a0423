package restic_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

const (
	testVaultID  = "test-vault"
	testMaxChunk = 8 << 20
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// testServer is the vault's real router on a real store: PostgreSQL index,
// disk blobs and packs in a temp directory.
type testServer struct {
	*httptest.Server
	pool     *pgxpool.Pool
	store    *store.Store
	verifier *auth.Verifier
	issuer   *auth.Issuer
	key      ed25519.PrivateKey
	logs     *syncBuffer
}

// newTestServer builds a server. clk is shared by store and verifier: a
// fake one for handler tests, the real one for restic runs.
func newTestServer(t testing.TB, clk clock.Clock) *testServer {
	return newTestServerSize(t, clk, testMaxChunk)
}

// newTestServerSize is newTestServer with another maximum chunk size.
func newTestServerSize(t testing.TB, clk clock.Clock, maxChunk int64) *testServer {
	t.Helper()
	pool := pgtest.NewPool(t)
	root := t.TempDir()
	blobs, err := disk.Open(filepath.Join(root, "data"), disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := pack.Open(filepath.Join(root, "data", "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs := newTestLog(t)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := store.New(pool, blobs, clk, log, nil, store.Options{MaxChunkSize: maxChunk, Packs: packs})
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	verifier := auth.NewVerifier(key.Public().(ed25519.PublicKey), testVaultID, st, clk)
	srv := httptest.NewServer(api.NewHandler(api.Options{Store: st, Verifier: verifier, Log: log}))
	// Registered after the pool's and before the store's end: Close waits
	// for every handler, which may still use both.
	t.Cleanup(func() { srv.Close(); st.Close(); packs.Close() })
	return &testServer{Server: srv, pool: pool, store: st, verifier: verifier, issuer: auth.NewIssuer(key, testVaultID, clk), key: key, logs: logs}
}

// token issues a token for role with subject "test-<role>".
func (ts *testServer) token(t testing.TB, role auth.Role) string {
	t.Helper()
	if auth.Scoped(role) {
		return ts.scopedToken(t, role, "test-"+string(role), auth.AllSources())
	}
	tok, _, err := ts.issuer.Issue(role, "test-"+string(role), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// scopedToken issues an agent or reader token for subject limited to scope.
func (ts *testServer) scopedToken(t testing.TB, role auth.Role, subject string, scope auth.Scope) string {
	t.Helper()
	tok, _, err := ts.issuer.IssueScoped(role, subject, time.Hour, scope)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// newTestLog collects the server's log, printed if the test fails.
func newTestLog(t testing.TB) *syncBuffer {
	b := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			defer b.mu.Unlock()
			t.Logf("server log:\n%s", b.buf.String())
		}
	})
	return b
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// response is a finished request: status, headers and the whole body.
type response struct {
	*http.Response
	body []byte
}

// cred says how a request authenticates.
type cred struct {
	basic  string // token as basic-auth password
	bearer string // token as bearer
}

func basic(tok string) cred  { return cred{basic: tok} }
func bearer(tok string) cred { return cred{bearer: tok} }

func (ts *testServer) do(t testing.TB, method, path string, c cred, body []byte, header http.Header) response {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, ts.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	switch {
	case c.basic != "":
		req.SetBasicAuth("restic", c.basic)
	case c.bearer != "":
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{resp, b}
}

// want checks a response's status, and for errors the JSON error code.
func want(t testing.TB, resp response, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, resp.body)
	}
	if code == "" || resp.Request.Method == http.MethodHead {
		return
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.body, &e); err != nil || e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("%s %s: error body %s, want code %q and a message", resp.Request.Method, resp.Request.URL.Path, resp.body, code)
	}
}

// content returns n random bytes and their restic name (SHA-256, hex).
func content(t testing.TB, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// count returns the rows of a table; table is a constant chosen by the test.
func (ts *testServer) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
