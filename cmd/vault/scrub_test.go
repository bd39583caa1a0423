package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/agent/agenttest"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// testServe runs `vault serve` in-process until stop is called, and
// returns its URL.
func testServe(t testing.TB, dir, dbURL string, extra ...string) (url string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sink := newLogSink()
	done := make(chan error, 1)
	args := append([]string{"serve", "--data-dir", dir, "--database-url", dbURL, "--listen", "127.0.0.1:0"}, extra...)
	go func() { done <- run(ctx, args, envOf(nil), strings.NewReader(""), io.Discard, sink) }()
	exited := make(chan struct{})
	go func() { <-done; close(exited) }()
	rec := sink.wait(t, "vault serving", 60*time.Second, exited)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("vault serve did not stop; log:\n%s", sink.String())
		}
	}
	t.Cleanup(stop)
	return rec["url"].(string), stop
}

// servedMetric reads one unlabelled metric from /metrics (metrics role).
func servedMetric(t testing.TB, url, token, name string) float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not served", name)
	return 0
}

// TestScrubHealsBitFlipsEndToEnd is issue 14's acceptance 1: one bit
// flipped in a chunk file and one in a pack record of a small vault. One
// `vault scrub` pass reports both and exits non-zero; after a restart the
// corruption metric still counts them; /chunks/missing lists them; the
// next `vault push` of the same data uploads them again; GET serves
// verified bytes; the audit log shows detection and repair.
func TestScrubHealsBitFlipsEndToEnd(t *testing.T) {
	t.Parallel()
	dir := mustInitVault(t)
	dbURL := pgtest.NewDatabase(t)
	token := func(role string) string {
		args := []string{"token", "issue", "--data-dir", dir, "--database-url", dbURL, "--role", role, "--subject", "e2e-" + role, "--ttl", "1h"}
		if auth.Scoped(auth.Role(role)) {
			args = append(args, "--all-sources")
		}
		return strings.TrimSpace(mustCLI(t, nil, args...))
	}
	agentTok, readerTok := token("agent"), token("reader")

	url, stop := testServe(t, dir, dbURL, "--scrub-bandwidth", "0")
	src := filepath.Join(t.TempDir(), "tree")
	mkdirMode(t, src, 0o755)
	agenttest.WriteRandomFile(t, filepath.Join(src, "big.bin"), 3<<20, 14, 0o644)
	writeMode(t, filepath.Join(src, "small.txt"), []byte(strings.Repeat("a small file, packed. ", 200)), 0o644)
	agentE := map[string]string{"VAULT_URL": url, "VAULT_TOKEN": agentTok}
	first := mustPushCLI(t, agentE, nil, "--source", "e2e", "--snapshot-name", "one", src)
	stop()

	// Pick a chunk file and a packed chunk, and flip one bit in each.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var fileHash, packHash []byte
	var packID, packOff, packSize int64
	if err := conn.QueryRow(ctx, `SELECT hash FROM chunks WHERE pack_id IS NULL ORDER BY seq LIMIT 1`).Scan(&fileHash); err != nil {
		t.Fatalf("no chunk file: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT hash, pack_id, pack_offset, size FROM chunks WHERE pack_id IS NOT NULL ORDER BY seq LIMIT 1`).
		Scan(&packHash, &packID, &packOff, &packSize); err != nil {
		t.Fatalf("no packed chunk: %v", err)
	}
	fh, _ := chunk.FromBytes(fileHash)
	ph, _ := chunk.FromBytes(packHash)
	blob := filepath.Join(dir, "blake3", fh.String()[:2], fh.String()[2:4], fh.String())
	os.Chmod(blob, 0o640)
	flip(t, blob, 4321)
	flip(t, filepath.Join(dir, "packs", packFileName(packID)), packOff+pack.HeaderSize+packSize/2)

	r := runCLI(t, map[string]string{"VAULT_DATABASE_URL": dbURL}, nil, "scrub", "--data-dir", dir)
	if r.err == nil || !strings.Contains(r.stdout, "DAMAGED "+fh.String()) || !strings.Contains(r.stdout, "DAMAGED "+ph.String()) ||
		!strings.Contains(r.stdout, "2 damaged") {
		t.Fatalf("vault scrub = %v, stdout:\n%s\nstderr:\n%s\nwant both chunks reported and a failure", r.err, r.stdout, r.stderr)
	}
	status := runCLI(t, map[string]string{"VAULT_DATABASE_URL": dbURL}, nil, "scrub", "status", "--damaged")
	if status.err != nil || !strings.Contains(status.stdout, "2 awaiting a re-upload") || !strings.Contains(status.stdout, "e2e/one") {
		t.Fatalf("vault scrub status --damaged = %v:\n%s", status.err, status.stdout)
	}

	url, _ = testServe(t, dir, dbURL, "--scrub-bandwidth", "0")
	if got := servedMetric(t, url, token("metrics"), "wormvault_chunk_corrupt_total"); got != 2 {
		t.Errorf("wormvault_chunk_corrupt_total after a restart = %v, want 2", got)
	}
	if got := servedMetric(t, url, token("metrics"), "wormvault_chunks_damaged"); got != 2 {
		t.Errorf("wormvault_chunks_damaged after a restart = %v, want 2", got)
	}
	if got := servedMetric(t, url, token("metrics"), "wormvault_scrub_last_full_pass_timestamp_seconds"); got < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("wormvault_scrub_last_full_pass_timestamp_seconds = %v, want the pass just run", got)
	}
	agent := newAPIClient(t, url, agentTok)
	missing, err := agent.MissingChunks(ctx, []chunk.Hash{fh, ph})
	if err != nil || len(missing) != 2 {
		t.Fatalf("missing = %v, %v; want both damaged chunks", missing, err)
	}

	agentE["VAULT_URL"] = url
	second := mustPushCLI(t, agentE, nil, "--source", "e2e", "--snapshot-name", "two", src)
	if second.UploadedChunks != 2 || second.NewChunks != 0 {
		t.Errorf("second push uploaded %d chunks (%d new), want the 2 damaged ones re-uploaded, none new", second.UploadedChunks, second.NewChunks)
	}
	if second.Snapshot.ManifestRoot != first.Snapshot.ManifestRoot {
		t.Errorf("the same data gave another manifest root")
	}
	reader := newAPIClient(t, url, readerTok)
	for _, h := range []chunk.Hash{fh, ph} {
		rc, err := reader.GetChunk(ctx, h)
		if err != nil {
			t.Fatalf("GET %s after repair: %v", h, err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Errorf("GET %s after repair does not verify: %v", h, err)
		}
		rc.Close()
	}
	var detected, repaired int
	conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE action = 'chunk.damage'), count(*) FILTER (WHERE action = 'chunk.repair') FROM audit_log`).
		Scan(&detected, &repaired)
	if detected != 2 || repaired != 2 {
		t.Errorf("audit log: %d chunk.damage, %d chunk.repair entries; want 2 and 2", detected, repaired)
	}
	if got := servedMetric(t, url, token("metrics"), "wormvault_chunks_damaged"); got != 0 {
		t.Errorf("wormvault_chunks_damaged after repair = %v, want 0", got)
	}
}

func flip(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x04
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func packFileName(id int64) string { return fmt.Sprintf("%016x.pack", id) }

func newAPIClient(t testing.TB, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(url, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestScrubUsage: bad flags and arguments are refused with a clear error,
// and a scrub cannot run beside a serving vault.
func TestScrubUsage(t *testing.T) {
	t.Parallel()
	dir := mustInitVault(t)
	dbURL := pgtest.NewDatabase(t)
	env := map[string]string{"VAULT_DATABASE_URL": dbURL}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"scrub"}, "--data-dir is required"},
		{[]string{"scrub", "--data-dir", dir, "extra"}, "unexpected arguments"},
		{[]string{"scrub", "--data-dir", dir, "--bandwidth", "fast"}, "--bandwidth"},
		{[]string{"scrub", "status", "--all"}, "--all goes with --damaged"},
		{[]string{"scrub", "--data-dir", filepath.Join(dir, "nope")}, "scrub:"},
	} {
		r := runCLI(t, env, nil, tt.args...)
		if r.err == nil || !strings.Contains(r.err.Error(), tt.want) {
			t.Errorf("vault %s = %v, want an error containing %q", strings.Join(tt.args, " "), r.err, tt.want)
		}
	}
	if r := runCLI(t, nil, nil, "scrub", "--data-dir", dir); r.err == nil || !strings.Contains(r.err.Error(), "VAULT_DATABASE_URL") {
		t.Errorf("vault scrub without a database = %v", r.err)
	}
	_, stop := testServe(t, dir, dbURL, "--scrub-bandwidth", "0")
	if r := runCLI(t, env, nil, "scrub", "--data-dir", dir); r.err == nil || !strings.Contains(r.err.Error(), "in use by another vault process") {
		t.Errorf("vault scrub beside vault serve = %v, want refused", r.err)
	}
	// status only reads the database: fine beside serve.
	if r := runCLI(t, env, nil, "scrub", "status"); r.err != nil || !strings.Contains(r.stdout, "last full pass: never") {
		t.Errorf("vault scrub status = %v:\n%s", r.err, r.stdout)
	}
	stop()
	if r := runCLI(t, env, nil, "scrub", "--data-dir", dir); r.err != nil || !strings.Contains(r.stdout, "0 damaged") {
		t.Errorf("vault scrub of an empty vault = %v:\n%s", r.err, r.stdout)
	}
}
