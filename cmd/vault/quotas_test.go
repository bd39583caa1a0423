package main

// Issue 15, part 4, end to end with the real binary: quotas set through
// `vault admin quotas`, refused uploads, and slow bodies cut by the read
// timeout.

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// TestAdminQuotasThroughTheCLI: an admin sets a subject's quota with the
// CLI; the subject is refused past it (507 total quota), another subject
// is not; show and list report the usage; bad input and a non-admin
// token are refused and change nothing.
func TestAdminQuotasThroughTheCLI(t *testing.T) {
	t.Parallel()
	bin := mustBuildVault(t)
	db := pgtest.New(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	web, db01 := mustIssueToken(t, bin, dir, db.URL, "agent", "web01"), mustIssueToken(t, bin, dir, db.URL, "agent", "db01")
	admin := mustIssueToken(t, bin, dir, db.URL, "admin", "alice")
	auditor := mustIssueToken(t, bin, dir, db.URL, "auditor", "carol")
	srv := mustStartVault(t, bin, "--data-dir", dir, "--database-url", db.URL, "--listen", "127.0.0.1:0")
	c := newTestClient(t)
	mustWaitReady(t, c, srv)
	env := func(tok string) map[string]string { return map[string]string{"VAULT_URL": srv.url, "VAULT_TOKEN": tok} }

	for _, bad := range [][]string{
		{"web01", "--daily", "-1", "--total", "none"},
		{"web01", "--daily", "lots", "--total", "none"},
		{"web01", "--total", "1KiB"}, // --daily missing
		{"--daily", "1KiB", "--total", "1KiB"},
	} {
		if r := runCLI(t, env(admin), nil, append([]string{"admin", "quotas", "set"}, bad...)...); r.err == nil {
			t.Errorf("admin quotas set %q: no error", bad)
		}
	}
	r := runCLI(t, env(auditor), nil, "admin", "quotas", "set", "web01", "--daily", "none", "--total", "1KiB")
	if r.err == nil || !strings.Contains(r.err.Error(), "admin token") {
		t.Errorf("set with an auditor token: %v, want refused (admin token)", r.err)
	}
	if r := runCLI(t, env(admin), nil, "admin", "quotas", "show", "web01"); r.err != nil || !strings.Contains(strings.Join(strings.Fields(r.stdout), " "), "total quota: none") {
		t.Errorf("show before any quota: %v\n%s", r.err, r.stdout)
	}

	r = runCLI(t, env(admin), nil, "admin", "quotas", "set", "web01", "--daily", "none", "--total", "1KiB", "--reason", "trial")
	if r.err != nil || !strings.Contains(r.stdout, "1.0 KiB") {
		t.Fatalf("admin quotas set: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	rng := rand.New(rand.NewPCG(15, 4))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	first, second := data(900), data(300)
	if st, err := putChunk(c, srv.url, web, chunk.Sum(first), first); err != nil || st != http.StatusCreated {
		t.Fatalf("web01 within its quota: %d, %v", st, err)
	}
	if st, err := putChunk(c, srv.url, web, chunk.Sum(second), second); err != nil || st != http.StatusInsufficientStorage {
		t.Fatalf("web01 past its total quota: %d, %v; want 507", st, err)
	}
	if st, err := putChunk(c, srv.url, db01, chunk.Sum(second), second); err != nil || st != http.StatusCreated {
		t.Fatalf("db01, no quota: %d, %v", st, err)
	}
	if st, err := putChunk(c, srv.url, web, chunk.Sum(second), second); err != nil || st != http.StatusOK {
		t.Fatalf("web01 uploading what db01 stored (a dedup hit) past its quota: %d, %v; want 200", st, err)
	}
	r = runCLI(t, env(auditor), nil, "admin", "quotas", "list")
	if r.err != nil || !strings.Contains(r.stdout, "web01") || !strings.Contains(r.stdout, "db01") {
		t.Errorf("admin quotas list: %v\n%s", r.err, r.stdout)
	}
	r = runCLI(t, env(auditor), nil, "admin", "quotas", "show", "--json", "web01")
	if r.err != nil || !strings.Contains(r.stdout, `"used_total": 900`) || !strings.Contains(r.stdout, `"total_bytes": 1024`) {
		t.Errorf("admin quotas show --json: %v\n%s", r.err, r.stdout)
	}
	metrics := mustGetMetrics(t, c, srv.url, mustIssueToken(t, bin, dir, db.URL, "metrics", "prometheus"))
	if v := metrics[`wormvault_quota_refusals_total{kind="total",scope="web01"}`]; v != 1 {
		t.Errorf("wormvault_quota_refusals_total{kind=total,scope=web01} = %v, want 1", v)
	}
}

// TestSlowBodyConnectionClosedAfterReadTimeout: with the minimum body
// rate off, a client that sends part of a body and stops is cut by
// --read-timeout: the connection is closed once it has passed, and
// nothing is stored.
func TestSlowBodyConnectionClosedAfterReadTimeout(t *testing.T) {
	t.Parallel()
	bin := mustBuildVault(t)
	db := pgtest.New(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	agent := mustIssueToken(t, bin, dir, db.URL, "agent", "web01")
	const timeout = 2 * time.Second
	srv := mustStartVault(t, bin, "--data-dir", dir, "--database-url", db.URL, "--listen", "127.0.0.1:0",
		"--min-body-rate", "0", "--read-timeout", timeout.String())
	c := newTestClient(t)
	mustWaitReady(t, c, srv)

	body := make([]byte, 1000)
	h := chunk.Sum(body)
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "PUT /v1/chunks/%s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", h, agent, len(body))
	conn.Write(body[:100]) // then nothing
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	// Whatever the server answers, it must then close the connection.
	_, err = io.Copy(io.Discard, bufio.NewReader(conn))
	elapsed := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %s (read timeout %s)", elapsed, timeout)
	}
	if elapsed < timeout-100*time.Millisecond {
		t.Errorf("connection closed after %s, before the read timeout of %s", elapsed, timeout)
	}
	t.Logf("closed after %s (read timeout %s)", elapsed.Round(time.Millisecond), timeout)
	req, _ := http.NewRequest(http.MethodHead, srv.url+"/v1/chunks/"+h.String(), nil)
	req.Header.Set("Authorization", "Bearer "+agent)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after the cut body: %d, want 404 (nothing stored)", resp.StatusCode)
	}
}
