package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

const (
	testVaultID  = "test-vault"
	testMaxChunk = 1 << 20 // small, so oversize tests are cheap
	testMaxBatch = 100
	tokenTTL     = time.Hour
	// minRetention is store.DefaultMinRetention, the retention a chunk gets
	// when the agent asks for nothing (or for less).
	minRetention = store.DefaultMinRetention
	// waitLimit bounds every wait for the server; reaching it is a failure,
	// never a timing assumption.
	waitLimit = 30 * time.Second
)

// t0 is a whole second, so that timestamps survive PostgreSQL's microsecond
// precision and JWT NumericDate truncation unchanged.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// testServer is the real router on a real store: PostgreSQL index, disk
// blobs in a temp directory, and a fake clock shared by store and verifier.
type testServer struct {
	*httptest.Server
	root     string // t.TempDir(): the data dir and nothing else lives here
	dataDir  string
	pool     *pgxpool.Pool
	blobs    *disk.Disk
	clk      *clock.Fake
	store    *store.Store
	key      ed25519.PrivateKey
	verifier *auth.Verifier
	issuer   *auth.Issuer
	logs     *syncBuffer
	requests *requestTracker
	// admins and genesis are the genesis admin set pinned for the store
	// (seeded in the index by seedAdmins).
	admins  adminKeys
	genesis store.Genesis
}

// newTestServer builds a server with its own database and data directory.
func newTestServer(t testing.TB) *testServer {
	t.Helper()
	pool := pgtest.NewPool(t)
	root := t.TempDir()
	dataDir := filepath.Join(root, "data")
	blobs, err := disk.Open(dataDir, disk.Options{})
	if err != nil {
		t.Fatalf("disk.Open(%s): %v", dataDir, err)
	}
	clk := clock.NewFake(t0)
	pgtest.FollowClock(t, pool, clk)
	logs := newTestLog(t)
	jnl, err := journal.Open(filepath.Join(dataDir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jnl.Close() })
	admins, genesis := testGenesis(t)
	// The store's metrics and its collector go to the registry /metrics
	// serves, as in serve.
	reg := prometheus.NewRegistry()
	st := store.New(pool, blobs, clk, logs.logger(), store.NewMetrics(reg), store.Options{MaxChunkSize: testMaxChunk, MaxBatch: testMaxBatch, VaultID: testVaultID,
		// The database's clock as the executor sees it: the fake clock, so
		// that tests can let a deletion's delay pass without sleeping.
		DatabaseTime: func(context.Context) (time.Time, error) { return clk.Now(), nil },
		Journal:      jnl, Genesis: &genesis})
	reg.MustRegister(st.Collector())
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatalf("auth.GenerateKey: %v", err)
	}
	verifier := auth.NewVerifier(key.Public().(ed25519.PublicKey), testVaultID, st, clk)
	ts := &testServer{
		root: root, dataDir: dataDir, pool: pool, blobs: blobs, clk: clk, store: st,
		key: key, verifier: verifier, issuer: auth.NewIssuer(key, testVaultID, clk), logs: logs,
		admins: admins, genesis: genesis,
	}
	ts.Server, ts.requests = startServer(t, st, verifier, logs, reg)
	return ts
}

// startServer serves api.NewHandler over st and v. The returned tracker
// tells when a request's handler has returned.
// reg, if not nil, is the registry /metrics serves.
func startServer(t testing.TB, st *store.Store, v *auth.Verifier, logs *syncBuffer, reg *prometheus.Registry) (*httptest.Server, *requestTracker) {
	t.Helper()
	tr := newRequestTracker()
	h := NewHandler(Options{Store: st, Verifier: v, Log: logs.logger(), Registry: reg})
	srv := httptest.NewUnstartedServer(tr.wrap(h))
	srv.Start()
	// Registered after the pool's cleanup, so it runs before it: Close
	// waits for every handler, which may still use the pool.
	t.Cleanup(srv.Close)
	return srv, tr
}

// syncBuffer collects the server's log; it is printed if the test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newTestLog(t testing.TB) *syncBuffer {
	b := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", b.String())
		}
	})
	return b
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// requestTracker counts finished requests per client address, so a test
// can wait for exactly the handler it provoked instead of sleeping.
type requestTracker struct {
	mu      sync.Mutex
	done    map[string]int
	changed chan struct{} // closed and replaced on every finished request
}

func newRequestTracker() *requestTracker {
	return &requestTracker{done: map[string]int{}, changed: make(chan struct{})}
}

func (tr *requestTracker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer tr.finish(r.RemoteAddr) // also on panic(http.ErrAbortHandler)
		h.ServeHTTP(w, r)
	})
}

func (tr *requestTracker) finish(addr string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.done[addr]++
	close(tr.changed)
	tr.changed = make(chan struct{})
}

// waitDone blocks until n requests from the client address addr have
// finished in the handler.
func (tr *requestTracker) waitDone(t testing.TB, addr string, n int) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		tr.mu.Lock()
		got, changed := tr.done[addr], tr.changed
		tr.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("request from %s: %d of %d finished after %v", addr, got, n, waitLimit)
		}
	}
}

// waitFor polls cond with a short, bounded loop. It is for conditions the
// server gives no signal for (a temp file appearing on disk).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: not reached after %v", what, waitLimit)
		}
	}
}

// token issues a token for role with subject "test-<role>".
func (ts *testServer) token(t testing.TB, role auth.Role) string {
	t.Helper()
	tok, _ := ts.tokenClaims(t, role)
	return tok
}

func (ts *testServer) tokenClaims(t testing.TB, role auth.Role) (string, auth.Claims) {
	t.Helper()
	if auth.Scoped(role) {
		return ts.scopedToken(t, role, "test-"+string(role), auth.AllSources())
	}
	tok, c, err := ts.issuer.Issue(role, "test-"+string(role), tokenTTL)
	if err != nil {
		t.Fatalf("Issue(%s): %v", role, err)
	}
	return tok, c
}

// scopedToken issues an agent or reader token for subject limited to scope.
func (ts *testServer) scopedToken(t testing.TB, role auth.Role, subject string, scope auth.Scope) (string, auth.Claims) {
	t.Helper()
	tok, c, err := ts.issuer.IssueScoped(role, subject, tokenTTL, scope)
	if err != nil {
		t.Fatalf("IssueScoped(%s, %+v): %v", role, scope, err)
	}
	return tok, c
}

// The token format the verifier expects, repeated here so that tests can
// forge tokens that differ from a valid one in exactly one respect.
const (
	tokenIssuer = "wormvault"
	tokenType   = "vault-access+jwt"
)

// keyID is auth's kid: the first 16 hex digits of SHA-256 of the public key.
func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])[:16]
}

func (ts *testServer) pub() ed25519.PublicKey { return ts.key.Public().(ed25519.PublicKey) }

// validHeader and validClaims describe a token the server accepts when
// signed with ts.key.
func (ts *testServer) validHeader() map[string]any {
	return map[string]any{"typ": tokenType, "kid": keyID(ts.pub())}
}

func (ts *testServer) validClaims(role auth.Role) jwt.MapClaims {
	now := ts.clk.Now()
	c := jwt.MapClaims{
		"iss":  tokenIssuer,
		"aud":  []string{testVaultID},
		"sub":  "forger",
		"role": string(role),
		"iat":  now.Unix(),
		"nbf":  now.Unix(),
		"exp":  now.Add(time.Hour).Unix(),
		"jti":  "00112233445566778899aabbccddeeff",
	}
	if auth.Scoped(role) {
		c["scope"] = map[string]any{"all": true}
	}
	return c
}

// forgeToken signs claims with header entries replacing jwt's defaults.
func forgeToken(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	delete(tok.Header, "typ")
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s token: %v", method.Alg(), err)
	}
	return s
}

// randomChunk returns n random bytes and their hash.
func randomChunk(t testing.TB, n int) ([]byte, chunk.Hash) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, chunk.Sum(b)
}

func chunkPath(h chunk.Hash) string { return "/v1/chunks/" + h.String() }

// response is a finished request: status, headers and the whole body.
type response struct {
	*http.Response
	body []byte
}

// do sends a request. body may be nil, a []byte (sent with its
// Content-Length) or an io.Reader (sent chunked, without Content-Length).
func (ts *testServer) do(t testing.TB, method, path, token string, body any, header http.Header) response {
	t.Helper()
	return doRequest(t, ts.Server, method, path, token, body, header)
}

func doRequest(t testing.TB, srv *httptest.Server, method, path, token string, body any, header http.Header) response {
	t.Helper()
	resp, err := send(srv, method, path, token, body, header)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// send is doRequest for goroutines other than the test's, which must not
// call t.Fatal.
func send(srv *httptest.Server, method, path, token string, body any, header http.Header) (response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	case io.Reader:
		r = readerOnly{b} // hide the concrete type: no Content-Length
	default:
		return response{}, fmt.Errorf("unsupported body type %T", body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, srv.URL+path, r)
	if err != nil {
		return response{}, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("read body: %w", err)
	}
	return response{resp, b}, nil
}

type readerOnly struct{ io.Reader }

func (ts *testServer) postJSON(t testing.TB, path, token string, v any) response {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return ts.do(t, http.MethodPost, path, token, b, http.Header{"Content-Type": {"application/json"}})
}

// put uploads body under h as an agent and requires the given status.
func (ts *testServer) put(t testing.TB, h chunk.Hash, body []byte, wantStatus int) chunkResponse {
	t.Helper()
	resp := ts.do(t, http.MethodPut, chunkPath(h), ts.token(t, auth.RoleAgent), body, nil)
	if resp.StatusCode != wantStatus {
		t.Fatalf("PUT %s: status %d, want %d; body %s", h, resp.StatusCode, wantStatus, resp.body)
	}
	var c chunkResponse
	decodeJSON(t, resp, &c)
	return c
}

type chunkResponse struct {
	Hash        string    `json:"hash"`
	Size        int64     `json:"size"`
	Created     *bool     `json:"created"`
	StoredAt    time.Time `json:"stored_at"`
	RetainUntil time.Time `json:"retain_until"`
	UploadedBy  string    `json:"uploaded_by"`
}

type retainResult struct {
	RetainUntil time.Time `json:"retain_until"`
	Extended    int       `json:"extended"`
	Unchanged   int       `json:"unchanged"`
	NotFound    []string  `json:"not_found"`
}

func decodeJSON(t testing.TB, resp response, v any) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json; body %q", resp.Request.Method, resp.Request.URL, ct, resp.body)
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		t.Fatalf("%s %s: decode %q: %v", resp.Request.Method, resp.Request.URL, resp.body, err)
	}
}

// wantError checks the status and the JSON error body, and returns its
// message.
func wantError(t testing.TB, resp response, status int, code string) string {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, status, resp.body)
	}
	if resp.Request.Method == http.MethodHead {
		return "" // no body to check
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	decodeJSON(t, resp, &e)
	if e.Error.Code != code {
		t.Fatalf("%s %s: error code %q, want %q; body %s", resp.Request.Method, resp.Request.URL, e.Error.Code, code, resp.body)
	}
	if e.Error.Message == "" {
		t.Fatalf("%s %s: empty error message", resp.Request.Method, resp.Request.URL)
	}
	return e.Error.Message
}

// countRows returns the number of rows of table.
func (ts *testServer) countRows(t testing.TB, table string) int {
	t.Helper()
	var n int
	// table is a constant chosen by the test, never input.
	if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// retainUntil reads a chunk's retain_until straight from the index.
func (ts *testServer) retainUntil(t testing.TB, h chunk.Hash) time.Time {
	t.Helper()
	var until time.Time
	if err := ts.pool.QueryRow(context.Background(), "SELECT retain_until FROM chunks WHERE hash = $1", h[:]).Scan(&until); err != nil {
		t.Fatalf("retain_until of %s: %v", h, err)
	}
	return until.UTC()
}

// files lists every file under the test's temp root (the data directory
// and anything a path escape could reach next to it), relative to it,
// sorted. Temp files are included.
func (ts *testServer) files(t testing.TB) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(ts.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(ts.root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", ts.root, err)
	}
	slices.Sort(out)
	return out
}

// blobFiles lists the files under data/blake3, temp files included.
func (ts *testServer) blobFiles(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, f := range ts.files(t) {
		if strings.HasPrefix(f, "data/blake3/") {
			out = append(out, f)
		}
	}
	return out
}

// tempFiles lists the leftovers of writes under data/blake3.
func (ts *testServer) tempFiles(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, f := range ts.blobFiles(t) {
		if strings.HasPrefix(filepath.Base(f), ".tmp-") {
			out = append(out, f)
		}
	}
	return out
}

// blobFile is the final file of h, relative to the temp root.
func blobFile(h chunk.Hash) string {
	s := h.String()
	return "data/blake3/" + s[0:2] + "/" + s[2:4] + "/" + s
}

func (ts *testServer) absPath(rel string) string {
	return filepath.Join(ts.root, filepath.FromSlash(rel))
}

// state is everything a request could change: index rows with their
// retention, audit entries, revocations and files.
type state struct {
	Chunks  map[string]string // hash -> retain_until
	Chunk   int               // SELECT count(*) FROM chunks
	Audit   int               // SELECT count(*) FROM audit_log
	Revoked int
	Files   []string
}

func (ts *testServer) state(t testing.TB) state {
	t.Helper()
	s := state{
		Chunks:  map[string]string{},
		Chunk:   ts.countRows(t, "chunks"),
		Audit:   ts.countRows(t, "audit_log"),
		Revoked: ts.countRows(t, "revoked_tokens"),
		Files:   ts.files(t),
	}
	rows, err := ts.pool.Query(context.Background(), "SELECT encode(hash, 'hex'), retain_until FROM chunks")
	if err != nil {
		t.Fatalf("list chunks: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h string
		var until time.Time
		if err := rows.Scan(&h, &until); err != nil {
			t.Fatal(err)
		}
		s.Chunks[h] = until.UTC().Format(time.RFC3339Nano)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// assertUnchanged fails if anything in the store differs from before.
func (ts *testServer) assertUnchanged(t testing.TB, before state) {
	t.Helper()
	after := ts.state(t)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("store changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if tmp := ts.tempFiles(t); len(tmp) != 0 {
		t.Errorf("temp files left: %v", tmp)
	}
}

// rawRequest writes req verbatim on a new connection and reads one
// response. It is for requests net/http's client would not send as given.
func rawRequest(t testing.TB, srv *httptest.Server, req string) response {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	method, _, _ := strings.Cut(req, " ")
	hreq := &http.Request{Method: method}
	resp, err := http.ReadResponse(bufio.NewReader(conn), hreq)
	if err != nil {
		t.Fatalf("read response to %q: %v", firstLine(req), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	// For messages only: the request-target exactly as sent.
	target := strings.Fields(firstLine(req))
	hreq.URL = &url.URL{Opaque: target[min(1, len(target)-1)]}
	resp.Request = hreq
	return response{resp, b}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}
