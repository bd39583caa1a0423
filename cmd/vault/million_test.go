package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// TestRestartMillionChunks is acceptance 5 of issue 14, a benchmark
// behind an environment variable (it takes minutes): a vault holding
// WORMVAULT_BENCH_CHUNKS chunks (default 1,000,000) is killed (SIGKILL,
// so its open pack is left unsealed and unindexed, as after a crash) and
// restarted; the test reports the time to the listener opening, to the
// first successful GET of a stored chunk, and to the background reconcile
// completing. The fixture goes through the real write path (the batch
// endpoint: pack append, group commit, journal); the restart is the real
// `vault serve`. Figures are reported, not asserted. Run with
//
//	WORMVAULT_BENCH_MILLION=1 go test -run TestRestartMillionChunks -v -timeout 60m ./cmd/vault/
func TestRestartMillionChunks(t *testing.T) {
	if os.Getenv("WORMVAULT_BENCH_MILLION") == "" {
		t.Skip("set WORMVAULT_BENCH_MILLION=1 to run (minutes; see docs/benchmarks.md)")
	}
	n := 1_000_000
	if v := os.Getenv("WORMVAULT_BENCH_CHUNKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("WORMVAULT_BENCH_CHUNKS=%q", v)
		}
	}
	bin := mustBuildVault(t)
	dbURL := pgtest.NewDatabase(t)
	dir := t.TempDir() + "/data"
	mustRunVault(t, bin, "init", "--data-dir", dir)
	agent := mustIssueToken(t, bin, dir, dbURL, "agent", "bench-agent")
	reader := mustIssueToken(t, bin, dir, dbURL, "reader", "bench-reader")
	serveArgs := []string{"--data-dir", dir, "--database-url", dbURL, "--log-level", "debug", "--listen", "127.0.0.1:0"}
	c := newTestClient(t)

	srv := mustStartVault(t, bin, serveArgs...)
	mustWaitReady(t, c, srv)
	start := time.Now()
	const size, perRequest, agents = 512, 4096, 2
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first chunk.Hash
		fails []error
	)
	content := func(i int) []byte {
		b := make([]byte, size)
		binary.BigEndian.PutUint64(b, uint64(i))
		binary.BigEndian.PutUint64(b[size-8:], uint64(i)*0x9e3779b97f4a7c15)
		return b
	}
	for a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := a * perRequest; lo < n; lo += agents * perRequest {
				var body []byte
				for i := lo; i < min(lo+perRequest, n); i++ {
					body = api.AppendFrame(body, content(i))
				}
				if err := postBatch(c, srv.url, agent, body, min(perRequest, n-lo)); err != nil {
					mu.Lock()
					fails = append(fails, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(fails) > 0 {
		t.Fatalf("fixture: %v", fails[0])
	}
	first = chunk.Sum(content(n / 2))
	t.Logf("fixture: %d chunks of %d bytes stored through the batch endpoint in %s", n, size, time.Since(start))

	srv.signal(t, syscall.SIGKILL)
	_ = srv.waitExit(t, 60*time.Second)
	// A crash first (the open pack is left unsealed and unindexed), then a
	// graceful restart once the first reconcile has completed.
	srv = timeRestart(t, bin, serveArgs, "after SIGKILL", n, first, reader, c)
	srv.signal(t, syscall.SIGTERM)
	if err := srv.waitExit(t, 5*time.Minute); err != nil {
		t.Fatalf("vault serve after SIGTERM: %v", err)
	}
	timeRestart(t, bin, serveArgs, "after SIGTERM", n, first, reader, c)
}

// timeRestart starts `vault serve` on a fixed port, reads h as soon as it
// can, waits for the background reconcile, and logs the times from the
// process start.
func timeRestart(t *testing.T, bin string, serveArgs []string, how string, n int, h chunk.Hash, reader string, c *http.Client) *vaultServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"serve"}, serveArgs...)
	args[len(args)-1] = addr
	s := &vaultServer{log: newLogSink(), done: make(chan struct{}), url: "http://" + addr}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = subprocessEnv()
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	restart := time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	var firstGet time.Duration
	for {
		req, _ := http.NewRequest(http.MethodGet, s.url+"/v1/chunks/"+h.String(), nil)
		req.Header.Set("Authorization", "Bearer "+reader)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				firstGet = time.Since(restart)
				break
			}
		}
		select {
		case <-s.done:
			t.Fatalf("vault serve exited: %v; log:\n%s", s.err, s.log.String())
		default:
		}
		if time.Since(restart) > 30*time.Minute {
			t.Fatalf("no successful GET within 30 minutes of the restart")
		}
		time.Sleep(time.Millisecond) // polling the server under test, not waiting out a delay
	}
	s.log.wait(t, "reconciled disk and index", 60*time.Minute, s.done)
	listening := logTime(t, s, "listening").Sub(restart)
	serving := logTime(t, s, "vault serving").Sub(restart)
	reconciled := logTime(t, s, "reconciled disk and index").Sub(restart)
	rep := mustReconcileReport(t, s)
	t.Logf("restart %s of a vault of %d chunks: listener open %s, first successful GET %s, uploads admitted %s, reconcile done %s (%+v)",
		how, n, listening.Round(time.Millisecond), firstGet.Round(time.Millisecond), serving.Round(time.Millisecond),
		reconciled.Round(time.Millisecond), rep)
	for _, l := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(l, `"start-up step done"`) {
			var rec struct {
				Step     string        `json:"step"`
				Duration time.Duration `json:"duration"`
			}
			if json.Unmarshal([]byte(l), &rec) == nil {
				t.Logf("  start-up step %q: %s", rec.Step, rec.Duration.Round(time.Millisecond))
			}
		}
	}
	if rep.Missing != 0 {
		t.Errorf("reconcile found %d chunks missing, want none", rep.Missing)
	}
	return s
}

// postBatch stores count chunks framed in body and checks every one was
// stored.
func postBatch(c *http.Client, base, token string, body []byte, count int) error {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chunks/batch", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", api.BatchContentType)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("batch: status %d: %s", resp.StatusCode, rb)
	}
	var ans struct {
		Results []struct {
			Status string `json:"status"`
		} `json:"results"`
	}
	if err := json.Unmarshal(rb, &ans); err != nil || len(ans.Results) != count {
		return fmt.Errorf("batch answer (%v): %.200s", err, rb)
	}
	for i, r := range ans.Results {
		if r.Status != "created" && r.Status != "exists" {
			return fmt.Errorf("batch result %d: %s", i, r.Status)
		}
	}
	return nil
}

// logTime returns the time of the first log record whose msg is msg.
func logTime(t *testing.T, s *vaultServer, msg string) time.Time {
	t.Helper()
	rec, ok := s.log.find(msg)
	if !ok {
		t.Fatalf("no %q log record", msg)
	}
	ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"]))
	if err != nil {
		t.Fatalf("%q record time %v: %v", msg, rec["time"], err)
	}
	return ts
}
