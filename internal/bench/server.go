package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateDatabase creates a fresh database, vault_bench_<random>, on the
// server of adminURL (whose role needs CREATEDB) and returns its URL and a
// function that drops it.
func CreateDatabase(ctx context.Context, adminURL string) (dbURL string, drop func(context.Context) error, err error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("bench: database url: %w", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "vault_bench_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("bench: connect to the database server: %w", err)
	}
	defer conn.Close(ctx)
	// The name is ours, made of [a-z0-9_]: safe to put in the statement.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("bench: create database %s: %w", name, err)
	}
	drop = func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return fmt.Errorf("bench: drop database %s: %w", name, err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("bench: drop database %s: %w", name, err)
		}
		return nil
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// ServerOptions says how to start a vault server for a benchmark.
type ServerOptions struct {
	Exe         string // the vault binary
	Dir         string // an empty directory: the data dir and server log go here
	DatabaseURL string // a fresh database; serve migrates it
	LogLevel    string // serve's --log-level
	Pprof       bool   // serve pprof on a free loopback port
}

// Server is a vault server started by StartServer.
type Server struct {
	Target   Target
	PprofURL string // base URL of the pprof listener, if enabled
	LogPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
}

// StartServer initialises a vault in o.Dir, issues an agent token, starts
// `vault serve` on a free loopback port and waits until /readyz answers.
func StartServer(ctx context.Context, o ServerOptions) (*Server, error) {
	dataDir := filepath.Join(o.Dir, "data")
	env := cleanEnv()
	if out, err := runCmd(ctx, env, o.Exe, "init", "--data-dir", dataDir); err != nil {
		return nil, fmt.Errorf("bench: vault init: %w: %s", err, out)
	}
	tok, err := runCmd(ctx, env, o.Exe, "token", "issue", "--data-dir", dataDir,
		"--role", "agent", "--subject", "bench-agent", "--ttl", "24h")
	if err != nil {
		return nil, fmt.Errorf("bench: vault token issue: %w: %s", err, tok)
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--data-dir", dataDir, "--database-url", o.DatabaseURL,
		"--listen", addr, "--log-format", "text", "--log-level", o.LogLevel}
	s := &Server{LogPath: filepath.Join(o.Dir, "server.log"), exited: make(chan struct{})}
	if o.Pprof {
		paddr, err := freePort()
		if err != nil {
			return nil, err
		}
		args = append(args, "--pprof-listen", paddr)
		s.PprofURL = "http://" + paddr
	}
	logf, err := os.Create(s.LogPath)
	if err != nil {
		return nil, fmt.Errorf("bench: server log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	s.cmd = exec.Command(o.Exe, args...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start vault serve: %w", err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	s.Target = Target{URL: "http://" + addr, Token: strings.TrimSpace(string(tok)), PID: s.cmd.Process.Pid}
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		s.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

// cleanEnv is this process's environment without VAULT_* variables, so the
// server runs with exactly the flags the benchmark gives it.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

func runCmd(ctx context.Context, env []string, exe string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return bytes.TrimSpace(stderr.Bytes()), err
	}
	return stdout.Bytes(), nil
}

// freePort returns a loopback address that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: find a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Target.URL+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("bench: vault serve exited before it was ready (%v); its log:\n%s", s.waitErr, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: vault serve not ready after %s; its log:\n%s", timeout, s.logTail())
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.LogPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// Stop asks the server to shut down (SIGTERM) and kills it if it has not
// exited within 30 s or when ctx is done.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.exited:
		return s.exitErr()
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("bench: stop vault serve: %w", err)
	}
	select {
	case <-s.exited:
		return s.exitErr()
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	s.cmd.Process.Kill()
	<-s.exited
	return fmt.Errorf("bench: vault serve did not stop on SIGTERM; killed")
}

func (s *Server) exitErr() error {
	if s.waitErr != nil {
		return fmt.Errorf("bench: vault serve: %w; its log:\n%s", s.waitErr, s.logTail())
	}
	return nil
}
