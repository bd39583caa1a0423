package main

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// TestServeFailsFastWhenPortTaken: with the port held by another program
// and the database hung, `vault serve` fails at once with a message naming
// the port, before it touches the database (which would wait forever).
func TestServeFailsFastWhenPortTaken(t *testing.T) {
	t.Parallel()
	dir := mustInitVault(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	db := pgtest.New(t)
	proxy := pgtest.NewProxy(t, db.URL)
	proxy.Freeze()
	defer proxy.Unfreeze()

	r := runCLI(t, nil, nil, "serve", "--data-dir", dir, "--database-url", proxy.URL(db.URL), "--listen", busy.Addr().String())
	if r.err == nil {
		t.Fatalf("serve on a taken port: no error; log:\n%s", r.stderr)
	}
	for _, want := range []string{busy.Addr().String(), "already in use", "--listen"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("serve on a taken port: error %q, want it to mention %q", r.err, want)
		}
	}
	if strings.Contains(r.stderr, "database") || strings.Contains(r.stderr, "migrat") {
		t.Errorf("serve on a taken port reached the database before failing:\n%s", r.stderr)
	}
}

// holdChunkInserts takes an EXCLUSIVE lock on chunks as the schema owner:
// reads go on, inserts wait. It returns the release.
func holdChunkInserts(t *testing.T, dbURL string) func() {
	t.Helper()
	ctx := context.Background()
	owner, err := pgxpool.New(ctx, pgtest.OwnerURL(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE chunks IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			_ = tx.Rollback(ctx)
			owner.Close()
		})
	}
	t.Cleanup(release)
	return release
}

func readyzBody(t *testing.T, c *http.Client, base string) (int, string) {
	t.Helper()
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeAnswersReadsWhileReconciling: a restart finds a chunk file
// whose row a crash lost, and the index refuses inserts (the injected
// hold: the background reconcile cannot adopt it). The vault serves all
// the same: stored chunks read back, /readyz says "degraded" with the
// reconcile's progress, and the orphan reads as absent. An upload made
// durable while the index refuses its row fails (503). Once the index
// accepts inserts again, without a restart, the reconcile completes, the
// orphan and the failed upload's content are adopted and read back.
func TestServeAnswersReadsWhileReconciling(t *testing.T) {
	t.Parallel()
	bin := mustBuildVault(t)
	dbURL := pgtest.NewDatabase(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	agent := mustIssueToken(t, bin, dir, dbURL, "agent", "online-agent")
	reader := mustIssueToken(t, bin, dir, dbURL, "reader", "online-reader")
	serveArgs := []string{"--data-dir", dir, "--database-url", dbURL, "--listen", "127.0.0.1:0",
		"--commit-timeout", "1s", "--db-lock-timeout", "500ms"}
	c := newTestClient(t)
	rng := rand.New(rand.NewPCG(7, 14))

	srv := mustStartVault(t, bin, serveArgs...)
	mustWaitReady(t, c, srv)
	stored := randomChunk(rng, true)
	if status, err := putChunk(c, srv.url, agent, chunk.Sum(stored), stored); err != nil || status != http.StatusCreated {
		t.Fatalf("PUT = %d, %v; want 201", status, err)
	}
	srv.signal(t, syscall.SIGTERM)
	if err := srv.waitExit(t, 60*time.Second); err != nil {
		t.Fatalf("vault serve: %v", err)
	}

	// What a crash between publish and commit leaves: a file, no row.
	orphan := randomChunk(rng, false)
	oh := chunk.Sum(orphan)
	if err := os.MkdirAll(leafDir(dir, oh), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leafDir(dir, oh), oh.String()), orphan, 0o440); err != nil {
		t.Fatal(err)
	}
	release := holdChunkInserts(t, dbURL)

	srv = mustStartVault(t, bin, serveArgs...)
	if status, got := mustGetChunk(t, c, srv.url, reader, chunk.Sum(stored)); status != http.StatusOK || string(got) != string(stored) {
		t.Fatalf("GET of a stored chunk while reconciling = %d (%d bytes), want 200 and its content", status, len(got))
	}
	status, body := readyzBody(t, c, srv.url)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"degraded"`) || !strings.Contains(body, `"reconcile":{"ok":false`) {
		t.Errorf("/readyz while reconciling = %d %s, want 503 degraded with the reconcile check failing", status, body)
	}
	if status, _ := mustHeadChunk(t, c, srv.url, reader, oh); status != http.StatusNotFound {
		t.Errorf("HEAD of the orphan before reconcile reached it = %d, want 404", status)
	}
	if _, ok := srv.log.find("reconciled disk and index"); ok {
		t.Fatalf("reconcile completed while the index refused inserts; log:\n%s", srv.log.String())
	}
	// An upload whose content is durable but whose row the index refuses.
	failed := randomChunk(rng, false)
	if status, err := putChunk(c, srv.url, agent, chunk.Sum(failed), failed); err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("PUT while the index refuses inserts = %d, %v; want 503", status, err)
	}

	release()
	srv.log.wait(t, "reconciled disk and index", 60*time.Second, srv.done)
	// The group commit check stays failed until a commit succeeds again,
	// as an agent's next upload makes it.
	next := randomChunk(rng, true)
	if status, err := putChunk(c, srv.url, agent, chunk.Sum(next), next); err != nil || status != http.StatusCreated {
		t.Fatalf("PUT after the index came back = %d, %v; want 201", status, err)
	}
	mustWaitReady(t, c, srv)
	if status, got := mustGetChunk(t, c, srv.url, reader, oh); status != http.StatusOK || string(got) != string(orphan) {
		t.Errorf("GET of the orphan after reconcile = %d (%d bytes), want 200 and its content", status, len(got))
	}
	srv.log.wait(t, "adopted content whose row failed to commit", 60*time.Second, srv.done)
	if status, got := mustGetChunk(t, c, srv.url, reader, chunk.Sum(failed)); status != http.StatusOK || string(got) != string(failed) {
		t.Errorf("GET of the upload that failed during the outage = %d (%d bytes), want 200 and its content", status, len(got))
	}
	if rep := mustReconcileReport(t, srv); rep.Adopted != 1 || rep.Missing != 0 {
		t.Errorf("reconcile report %+v, want the orphan adopted, nothing missing", rep)
	}
	if _, err := os.Stat(filepath.Join(dir, reconcileCursorFile)); !os.IsNotExist(err) {
		t.Errorf("reconcile cursor after a completed pass: %v, want none", err)
	}
}
