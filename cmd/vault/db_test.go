package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wormvault/wormvault/internal/pgtest"
)

// fastRetry keeps the tests' waits short; the behaviour under test is the
// same with the defaults.
func fastRetry() dbOptions {
	return dbOptions{
		MaxConns: 4, ConnectTimeout: 300 * time.Millisecond,
		StatementTimeout: 2 * time.Second, LockTimeout: time.Second,
		RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	}
}

// retryLog counts the "retrying" lines openServeDB logs, and signals each.
type retryLog struct {
	attempts chan struct{}
}

func (r *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (r *retryLog) Handle(_ context.Context, rec slog.Record) error {
	if rec.Message == "database unreachable; retrying" {
		select {
		case r.attempts <- struct{}{}:
		default:
		}
	}
	return nil
}
func (r *retryLog) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *retryLog) WithGroup(string) slog.Handler      { return r }

// TestOpenDBWaitsForHungDatabase: a database that accepts TCP and never
// answers (a stopped postmaster) makes the start retry, one log line per
// attempt, each bounded by the connect timeout, and the pool is returned
// as soon as the database answers again.
func TestOpenDBWaitsForHungDatabase(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	proxy := pgtest.NewProxy(t, db.URL)
	proxy.Freeze()
	rl := &retryLog{attempts: make(chan struct{}, 1)}

	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		start := time.Now()
		pool, err := openServeDB(ctx, proxy.URL(db.URL), fastRetry(), slog.New(rl))
		if err == nil {
			err = pool.Ping(ctx)
			pool.Close()
		}
		done <- result{err, time.Since(start)}
	}()
	for i := 0; i < 3; i++ {
		select {
		case <-rl.attempts:
		case r := <-done:
			t.Fatalf("openServeDB returned %v while the database was hung", r.err)
		case <-ctx.Done():
			t.Fatal("no retry logged: the connect attempt is not bounded")
		}
	}
	proxy.Unfreeze()
	r := <-done
	if r.err != nil {
		t.Fatalf("after the database returned: %v", r.err)
	}
}

// TestOpenDBRetriesWhileDatabaseDown: a refused connection is retried too,
// not a reason to exit; cancelling ends the wait.
func TestOpenDBRetriesWhileDatabaseDown(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rl := &retryLog{attempts: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := openServeDB(ctx, "postgres://vault@"+addr+"/vault?sslmode=disable", fastRetry(), slog.New(rl))
		done <- err
	}()
	for i := 0; i < 2; i++ {
		select {
		case <-rl.attempts:
		case err := <-done:
			t.Fatalf("openServeDB gave up on a refused connection: %v", err)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v, want context.Canceled", err)
	}
}

// TestOpenDBDoesNotRetryBadPassword: a refused login is final; retrying
// would only hide the mistake.
func TestOpenDBDoesNotRetryBadPassword(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	cfg, err := pgconn.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(db.URL, ":"+cfg.Password+"@", ":wrong-password@", 1)
	if bad == db.URL {
		t.Skip("the test database URL has no password to get wrong")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = openServeDB(ctx, bad, fastRetry(), slog.New(&retryLog{attempts: make(chan struct{}, 1)}))
	if err == nil || ctx.Err() != nil {
		t.Fatalf("openServeDB with a wrong password = %v (ctx %v), want an error at once", err, ctx.Err())
	}
}

// TestPoolSetsStatementAndLockTimeouts: every pooled connection of the
// runtime role carries the configured timeouts.
func TestPoolSetsStatementAndLockTimeouts(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := fastRetry()
	o.StatementTimeout, o.LockTimeout = 7*time.Second, 1500*time.Millisecond
	pool, err := openServeDB(ctx, db.URL, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var st, lt string
	if err := pool.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&st, &lt); err != nil {
		t.Fatal(err)
	}
	if st != "7s" || lt != "1500ms" {
		t.Errorf("statement_timeout %q, lock_timeout %q; want 7s, 1500ms", st, lt)
	}
}

// TestServeStartsWhenHungDatabaseReturns is the same end to end with the
// real binary: `vault serve` against a hung database logs a line per
// attempt and serves once the database answers.
func TestServeStartsWhenHungDatabaseReturns(t *testing.T) {
	t.Parallel()
	bin := mustBuildVault(t)
	db := pgtest.New(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	proxy := pgtest.NewProxy(t, db.URL)
	proxy.Freeze()

	s := &vaultServer{log: newLogSink(), done: make(chan struct{})}
	s.cmd = exec.Command(bin, "serve", "--data-dir", dir, "--database-url", proxy.URL(db.URL),
		"--listen", "127.0.0.1:0", "--db-connect-timeout", "300ms")
	s.cmd.Env = subprocessEnv()
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("log of vault serve:\n%s", s.log.String())
		}
	})
	// Retries come after 1s, 2s, 4s ...: wait for two logged attempts.
	mustWaitUntil(t, 60*time.Second, "two logged retries", func() bool {
		select {
		case <-s.done:
			t.Fatalf("vault serve exited while its database was hung: %v", s.err)
		default:
		}
		lines, _ := s.log.snapshot()
		return strings.Count(strings.Join(lines, "\n"), `"msg":"database unreachable; retrying"`) >= 2
	})
	if _, ok := s.log.find("vault serving"); ok {
		t.Fatal("vault serve started while its database was hung")
	}
	proxy.Unfreeze()
	s.log.wait(t, "database reachable", 60*time.Second, s.done)
	rec := s.log.wait(t, "vault serving", 60*time.Second, s.done)
	s.url, _ = rec["url"].(string)
	mustWaitReady(t, newTestClient(t), s)
}
