package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// TestRestoredDatabaseDumpCatchesUp follows docs/operations.md, "Backing
// up the vault": the database is restored from a pg_dump taken before
// more uploads were acknowledged. serve refuses the older index, naming
// the way out; `vault reindex` replays what the data directory holds
// beyond the dump; serve then serves every acknowledged chunk, those from
// after the dump included.
func TestRestoredDatabaseDumpCatchesUp(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s (Debian package postgresql-client, installed with postgresql): %v", tool, err)
		}
	}
	bin := mustBuildVault(t)
	dir := mustInitVault(t)
	db1 := pgtest.New(t)
	serveArgs := func(dbURL string) []string {
		return []string{"--data-dir", dir, "--database-url", dbURL, "--listen", "127.0.0.1:0", "--pack-threshold", "256KiB"}
	}
	v := mustStartVault(t, bin, serveArgs(db1.URL)...)
	c := newTestClient(t)
	mustWaitReady(t, c, v)
	agent := mustIssueToken(t, bin, dir, db1.URL, "agent", "backup-agent")
	reader := mustIssueToken(t, bin, dir, db1.URL, "reader", "restore")

	rng := rand.New(rand.NewPCG(16, 3))
	acked := map[chunk.Hash][]byte{}
	upload := func(n int) {
		for i := range n {
			data := randomChunk(rng, i%3 != 0) // packed and file chunks both
			h := chunk.Sum(data)
			status, err := putChunk(c, v.url, agent, h, data)
			if err != nil || status != http.StatusCreated {
				t.Fatalf("PUT chunk: %d %v", status, err)
			}
			acked[h] = data
		}
	}
	upload(12)
	dump := filepath.Join(t.TempDir(), "vault.dump")
	if out, err := exec.Command("pg_dump", "--format=custom", "--file", dump, db1.OwnerURL).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	upload(12) // acknowledged after the dump: only the data directory has them
	// and a change that is not a chunk commit, which start-up cannot roll
	// forward by itself: a retention extension.
	var some []string
	for h := range acked {
		some = append(some, `"`+h.String()+`"`)
		break
	}
	req, _ := http.NewRequest(http.MethodPost, v.url+"/v1/chunks/retain", strings.NewReader(
		`{"hashes":[`+strings.Join(some, ",")+`],"retain_until":"`+time.Now().AddDate(2, 0, 0).UTC().Format(time.RFC3339)+`"}`))
	req.Header.Set("Authorization", "Bearer "+agent)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("retain: %v %v", resp, err)
	}
	resp.Body.Close()
	v.signal(t, syscall.SIGTERM)
	if err := v.waitExit(t, 60*time.Second); err != nil {
		t.Fatalf("vault serve: %v", err)
	}

	// The database is lost; a new one is restored from the dump.
	db2 := pgtest.NewEmpty(t)
	if out, err := exec.Command("pg_restore", "--exit-on-error", "--single-transaction", "--dbname", db2.OwnerURL, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []byte
	refused := exec.CommandContext(ctx, bin, append([]string{"serve"}, serveArgs(db2.URL)...)...)
	refused.Env = subprocessEnv()
	refused.Cancel = func() error { return refused.Process.Signal(syscall.SIGQUIT) } // a hang shows its goroutines
	out, err = refused.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("serve did not refuse a database older than its data directory (%v):\n%s", err, string(out))
	}
	if !strings.Contains(string(out), "older than the data directory") || !strings.Contains(string(out), "vault reindex") {
		t.Errorf("serve refused an older database without saying so and naming vault reindex:\n%s", lastLines(string(out), 5))
	}

	mustRunVault(t, bin, "reindex", "--data-dir", dir, "--database-url", db2.OwnerURL)
	v2 := mustStartVault(t, bin, serveArgs(db2.URL)...)
	mustWaitReady(t, c, v2)
	for h, want := range acked {
		status, got := mustGetChunk(t, c, v2.url, reader, h)
		if status != http.StatusOK || !bytes.Equal(got, want) {
			t.Errorf("chunk %s after restore and reindex: status %d, %d bytes (want %d)", h, status, len(got), len(want))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
