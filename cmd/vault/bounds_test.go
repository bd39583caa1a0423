package main

// Issue 14, acceptance 4, end to end with the real binary: idle sockets,
// which need no token, never lock out a client that has one.

import (
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// idleFloodSize is how many idle connections the test opens: a few
// thousand, bounded by this process's open-file limit (the acceptance
// figure of 25,000 comes from a manual run, docs/operations.md).
func idleFloodSize(t *testing.T) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	return int(min(3000, (rl.Cur-512)/2))
}

// TestIdleConnectionFloodDoesNotLockOutTokenClient: thousands of idle
// connections from many addresses, far over the vault's connection cap;
// an agent with a token still stores chunks and a reader reads them back,
// and the vault holds no more connections than its cap.
func TestIdleConnectionFloodDoesNotLockOutTokenClient(t *testing.T) {
	t.Parallel()
	bin := mustBuildVault(t)
	db := pgtest.New(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	agent := mustIssueToken(t, bin, dir, db.URL, "agent", "web01")
	reader := mustIssueToken(t, bin, dir, db.URL, "reader", "restore")
	const maxConns = 256
	srv := mustStartVault(t, bin, "--data-dir", dir, "--database-url", db.URL, "--listen", "127.0.0.1:0",
		"--max-conns", strconv.Itoa(maxConns), "--max-conns-per-client", "0")
	c := newTestClient(t)
	mustWaitReady(t, c, srv)
	addr := srv.url[len("http://"):]

	n := idleFloodSize(t)
	var flood []net.Conn
	t.Cleanup(func() {
		for _, fc := range flood {
			fc.Close()
		}
	})
	for i := 0; i < n; i++ {
		// From 127.0.0.2-127.0.0.201: many clients, so the per-client cap
		// (off here anyway) is not what protects the vault.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%200))}, Timeout: 10 * time.Second}
		fc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		flood = append(flood, fc)
	}

	// A fresh client with no idle connections of its own, as an agent that
	// starts its backup during the flood.
	tc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer tc.Transport.(*http.Transport).CloseIdleConnections()
	rng := rand.New(rand.NewPCG(14, 4))
	for i := 0; i < 10; i++ {
		data := randomChunk(rng, i%2 == 0)
		h := chunk.Sum(data)
		status, err := putChunk(tc, srv.url, agent, h, data)
		if err != nil || status != http.StatusCreated {
			t.Fatalf("upload %d during a flood of %d idle connections: %d, %v", i, n, status, err)
		}
		got, body := mustGetChunk(t, tc, srv.url, reader, h)
		if got != http.StatusOK || string(body) != string(data) {
			t.Fatalf("read %d during the flood: %d", i, got)
		}
	}
	metrics := mustGetMetrics(t, tc, srv.url, mustIssueToken(t, bin, dir, db.URL, "metrics", "prometheus"))
	if open := metrics["wormvault_connections_open"]; open > maxConns {
		t.Errorf("vault holds %v connections, cap %d", open, maxConns)
	}
	if ev := metrics[`wormvault_connections_refused_total{reason="evicted"}`]; ev < float64(n-maxConns) {
		t.Errorf("evicted %v idle connections, want at least %d", ev, n-maxConns)
	}
	t.Logf("%d idle connections: %v evicted, %v open at the end", n,
		metrics[`wormvault_connections_refused_total{reason="evicted"}`], metrics["wormvault_connections_open"])
}

// mustGetMetrics reads /metrics (with a metrics-role token) into a map
// from "name{labels}" to value.
func mustGetMetrics(t *testing.T, c *http.Client, base, token string) map[string]float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); i > 0 && err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
