package main

// In-process tests of the CLI through run: init, token issue/revoke, hash,
// migrate, and serve's refusals of unsafe settings.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/zeebo/blake3"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// envOf returns a getenv over vars only, so the developer's environment
// never reaches the command under test.
func envOf(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// cliResult is what one run of the CLI produced.
type cliResult struct {
	stdout, stderr string
	err            error
}

// runCLI calls run with no environment (unless env is given), no stdin
// (unless given), and a bound on its duration.
func runCLI(t testing.TB, env map[string]string, stdin io.Reader, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errOut bytes.Buffer
	err := run(ctx, args, envOf(env), stdin, &out, &errOut)
	return cliResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

// mustInitVault runs `vault init` in a new directory and returns it.
func mustInitVault(t testing.TB, extra ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vault")
	if r := runCLI(t, nil, nil, append([]string{"init", "--data-dir", dir}, extra...)...); r.err != nil {
		t.Fatalf("vault init --data-dir %s: %v\n%s", dir, r.err, r.stderr)
	}
	return dir
}

// mustReadFile returns a file's content.
func mustReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustVaultIdentity reads a data directory's vault id and public key.
func mustVaultIdentity(t testing.TB, dir string) (string, ed25519.PublicKey) {
	t.Helper()
	v, err := config.ReadVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := auth.ReadKeyFile(v.SigningKeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	return v.ID, key.Public().(ed25519.PublicKey)
}

// noRevocations is an auth.Revocations that revokes nothing.
type noRevocations struct{}

func (noRevocations) IsRevoked(context.Context, string) (bool, error) { return false, nil }

// issueAll issues a token as the tests before scopes did: agent and reader
// tokens reach every source.
func issueAll(i *auth.Issuer, role auth.Role, subject string, ttl time.Duration) (string, auth.Claims, error) {
	if auth.Scoped(role) {
		return i.IssueScoped(role, subject, ttl, auth.AllSources())
	}
	return i.Issue(role, subject, ttl)
}

func (noRevocations) IsKeyDistrusted(context.Context, string) (bool, error) { return false, nil }

func TestInit(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "vault")
	r := runCLI(t, nil, nil, "init", "--data-dir", dir, "--vault-id", "wv-test-init")
	if r.err != nil {
		t.Fatalf("vault init: %v\n%s", r.err, r.stderr)
	}
	if !strings.Contains(r.stdout, "wv-test-init") {
		t.Errorf("vault init stdout = %q, want it to name the vault id", r.stdout)
	}

	var v struct {
		ID         string    `json:"vault_id"`
		CreatedAt  time.Time `json:"created_at"`
		SigningKey string    `json:"signing_key"`
	}
	vaultJSON := mustReadFile(t, filepath.Join(dir, config.VaultFile))
	if err := json.Unmarshal(vaultJSON, &v); err != nil {
		t.Fatalf("%s: %v", config.VaultFile, err)
	}
	if v.ID != "wv-test-init" || v.SigningKey != config.SigningKeyFile || v.CreatedAt.IsZero() {
		t.Errorf("%s = %s, want vault_id wv-test-init, signing_key %s and a creation time", config.VaultFile, vaultJSON, config.SigningKeyFile)
	}

	keyPath := filepath.Join(dir, config.SigningKeyFile)
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatalf("signing key: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("signing key mode = %#o, want 0600", perm)
	}
	if _, err := auth.ReadKeyFile(keyPath); err != nil {
		t.Errorf("signing key does not load: %v", err)
	}
	if got := string(mustReadFile(t, filepath.Join(dir, disk.FormatFile))); got != disk.FormatMarker {
		t.Errorf("%s = %q, want %q", disk.FormatFile, got, disk.FormatMarker)
	}

	key := mustReadFile(t, keyPath)
	t.Run("again", func(t *testing.T) {
		r := runCLI(t, nil, nil, "init", "--data-dir", dir, "--vault-id", "wv-other")
		if r.err == nil || !strings.Contains(r.err.Error(), "already holds a vault") {
			t.Errorf("second vault init: error = %v, want a refusal saying the directory already holds a vault", r.err)
		}
		if got := mustReadFile(t, keyPath); !bytes.Equal(got, key) {
			t.Errorf("second vault init changed the signing key")
		}
		if got := mustReadFile(t, filepath.Join(dir, config.VaultFile)); !bytes.Equal(got, vaultJSON) {
			t.Errorf("second vault init changed %s:\n%s\nwant\n%s", config.VaultFile, got, vaultJSON)
		}
	})
	t.Run("identity file lost", func(t *testing.T) {
		// Even without vault.json, an existing key is never replaced.
		lost := mustInitVault(t)
		keyPath := filepath.Join(lost, config.SigningKeyFile)
		key := mustReadFile(t, keyPath)
		if err := os.Remove(filepath.Join(lost, config.VaultFile)); err != nil {
			t.Fatal(err)
		}
		if r := runCLI(t, nil, nil, "init", "--data-dir", lost); r.err == nil {
			t.Errorf("vault init over an existing signing key succeeded, want an error")
		}
		if got := mustReadFile(t, keyPath); !bytes.Equal(got, key) {
			t.Errorf("vault init over an existing signing key changed it")
		}
	})
	t.Run("default id", func(t *testing.T) {
		id, _ := mustVaultIdentity(t, mustInitVault(t))
		if !regexp.MustCompile(`^wv-[0-9a-f]{16}$`).MatchString(id) {
			t.Errorf("default vault id = %q, want wv- and 16 hex digits", id)
		}
	})
	t.Run("no data dir", func(t *testing.T) {
		if r := runCLI(t, nil, nil, "init"); r.err == nil || !strings.Contains(r.err.Error(), "--data-dir") {
			t.Errorf("vault init without a data dir: error = %v, want one naming --data-dir", r.err)
		}
	})
}

func TestTokenIssue(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	env := map[string]string{"VAULT_DATABASE_URL": dbURL}
	dir := mustInitVault(t)
	id, pub := mustVaultIdentity(t, dir)
	verifier := auth.NewVerifier(pub, id, noRevocations{}, clock.Real{})

	for _, role := range []auth.Role{auth.RoleAgent, auth.RoleReader, auth.RoleAuditor, auth.RoleAdmin, auth.RoleMetrics} {
		t.Run(string(role), func(t *testing.T) {
			args := []string{"token", "issue", "--data-dir", dir, "--role", string(role), "--subject", "alice", "--ttl", "2h"}
			if auth.Scoped(role) {
				args = append(args, "--source", "db01,web-*", "--restic-repo", "db01")
			}
			r := runCLI(t, env, nil, args...)
			if r.err != nil {
				t.Fatalf("token issue --role %s: %v\n%s", role, r.err, r.stderr)
			}
			tok, ok := strings.CutSuffix(r.stdout, "\n")
			if !ok || strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
				t.Fatalf("token issue --role %s printed %q, want one JWT on a line", role, r.stdout)
			}
			p, err := verifier.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("token issue --role %s: the vault's verifier refuses the token: %v", role, err)
			}
			if p.Role != role || p.Subject != "alice" || p.JTI == "" {
				t.Errorf("token issue --role %s: principal %+v, want role %s, subject alice and a jti", role, p, role)
			}
			if d := time.Until(p.ExpiresAt); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Minute {
				t.Errorf("token issue --ttl 2h: expires in %s", d)
			}
			if !strings.Contains(r.stderr, p.JTI) {
				t.Errorf("token issue stderr = %q, want it to name the token id %s", r.stderr, p.JTI)
			}
			wantScope := auth.AllSources()
			if auth.Scoped(role) {
				wantScope = auth.Scope{Sources: []string{"db01", "web-*"}, Restic: []string{"db01"}}
			}
			if !reflect.DeepEqual(p.Scope, wantScope) {
				t.Errorf("token issue --role %s: scope %+v, want %+v", role, p.Scope, wantScope)
			}
		})
	}

	t.Run("day ttl", func(t *testing.T) {
		r := runCLI(t, env, nil, "token", "issue", "--data-dir", dir, "--role", "agent", "--subject", "a", "--ttl", "30d", "--all-sources")
		if r.err != nil {
			t.Fatalf("token issue --ttl 30d: %v", r.err)
		}
		p, err := verifier.Verify(context.Background(), strings.TrimSpace(r.stdout))
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Until(p.ExpiresAt); d < 30*24*time.Hour-time.Minute || d > 30*24*time.Hour+time.Minute {
			t.Errorf("token issue --ttl 30d: expires in %s", d)
		}
	})

	bad := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown role", []string{"--role", "root", "--subject", "a"}, "role"},
		{"uppercase role", []string{"--role", "Admin", "--subject", "a"}, "role"},
		{"no role", []string{"--subject", "a"}, "role"},
		{"empty subject", []string{"--role", "agent", "--subject", "", "--source", "a"}, "subject"},
		{"no subject", []string{"--role", "agent", "--source", "a"}, "subject"},
		{"control character in subject", []string{"--role", "agent", "--subject", "a\nb", "--source", "a"}, "subject"},
		{"unparsable ttl", []string{"--role", "agent", "--subject", "a", "--ttl", "forever", "--source", "a"}, "ttl"},
		{"zero ttl", []string{"--role", "agent", "--subject", "a", "--ttl", "0s", "--source", "a"}, "ttl"},
		{"negative ttl", []string{"--role", "agent", "--subject", "a", "--ttl", "-1h", "--source", "a"}, "ttl"},
		{"ttl over the maximum", []string{"--role", "agent", "--subject", "a", "--ttl", "400d", "--source", "a"}, "ttl"},
		{"agent without a scope", []string{"--role", "agent", "--subject", "a"}, "need a scope: --source NAME and/or --restic-repo NAME"},
		{"reader without a scope", []string{"--role", "reader", "--subject", "a"}, "need a scope"},
		{"all sources and a source", []string{"--role", "agent", "--subject", "a", "--all-sources", "--source", "db01"}, "cannot be combined"},
		{"scope on an admin", []string{"--role", "admin", "--subject", "a", "--source", "db01"}, "have no scope"},
		{"all sources on an auditor", []string{"--role", "auditor", "--subject", "a", "--all-sources"}, "have no scope"},
		{"malformed pattern", []string{"--role", "agent", "--subject", "a", "--source", "db[0-"}, "syntax error"},
		{"pattern with a space", []string{"--role", "agent", "--subject", "a", "--restic-repo", "db 01"}, "may use"},
		{"stray argument", []string{"--role", "agent", "--subject", "a", "--source", "a", "extra"}, "unexpected argument"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"token", "issue", "--data-dir", dir}, tt.args...)
			r := runCLI(t, env, nil, args...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Errorf("vault %q: error = %v, want one mentioning %q", args, r.err, tt.wantErr)
			}
			if r.stdout != "" {
				t.Errorf("vault %q printed %q, want no token", args, r.stdout)
			}
		})
	}
	t.Run("uninitialised data dir", func(t *testing.T) {
		r := runCLI(t, env, nil, "token", "issue", "--data-dir", t.TempDir(), "--role", "agent", "--subject", "a", "--source", "a")
		if r.err == nil || r.stdout != "" {
			t.Errorf("token issue in an uninitialised dir: error = %v, stdout %q; want an error and no token", r.err, r.stdout)
		}
	})
	t.Run("data dir from the environment", func(t *testing.T) {
		r := runCLI(t, map[string]string{"VAULT_DATA_DIR": dir, "VAULT_DATABASE_URL": dbURL}, nil, "token", "issue", "--role", "reader", "--subject", "a", "--source", "a")
		if r.err != nil {
			t.Fatalf("token issue with VAULT_DATA_DIR: %v", r.err)
		}
		if _, err := verifier.Verify(context.Background(), strings.TrimSpace(r.stdout)); err != nil {
			t.Errorf("token issued with VAULT_DATA_DIR does not verify: %v", err)
		}
	})
	t.Run("no database", func(t *testing.T) {
		r := runCLI(t, nil, nil, "token", "issue", "--data-dir", dir, "--role", "admin", "--subject", "a")
		if r.err == nil || !strings.Contains(r.err.Error(), "VAULT_DATABASE_URL") || r.stdout != "" {
			t.Errorf("token issue without a database: error = %v, stdout %q; want an error naming VAULT_DATABASE_URL and no token", r.err, r.stdout)
		}
	})
}

// mustCountRevocations returns the rows in revoked_tokens and audit_log.
func mustCountRevocations(t testing.TB, pool *pgxpool.Pool) (revoked, audit int) {
	t.Helper()
	ctx := context.Background()
	if err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM revoked_tokens), (SELECT count(*) FROM audit_log)").Scan(&revoked, &audit); err != nil {
		t.Fatal(err)
	}
	return revoked, audit
}

func TestTokenRevoke(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	dir := mustInitVault(t)
	id, pub := mustVaultIdentity(t, dir)

	issued := runCLI(t, map[string]string{"VAULT_DATABASE_URL": dbURL}, nil, "token", "issue", "--data-dir", dir, "--role", "admin", "--subject", "mallory")
	if issued.err != nil {
		t.Fatal(issued.err)
	}
	tok := strings.TrimSpace(issued.stdout)
	p, err := auth.NewVerifier(pub, id, noRevocations{}, clock.Real{}).Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, nil, nil, "token", "revoke", "--database-url", dbURL, "--reason", "laptop stolen", p.JTI)
	if r.err != nil {
		t.Fatalf("token revoke %s: %v\n%s", p.JTI, r.err, r.stderr)
	}
	if want := "revoked token " + p.JTI + "\n"; r.stdout != want {
		t.Errorf("token revoke stdout = %q, want %q", r.stdout, want)
	}
	var reason, by string
	if err := pool.QueryRow(context.Background(), "SELECT reason, revoked_by FROM revoked_tokens WHERE jti = $1", p.JTI).Scan(&reason, &by); err != nil {
		t.Fatalf("revoked_tokens row for %s: %v", p.JTI, err)
	}
	if reason != "laptop stolen" || !strings.HasPrefix(by, "cli") {
		t.Errorf("revoked_tokens row: reason %q, revoked_by %q; want \"laptop stolen\", cli:<user>", reason, by)
	}
	// The CLI does not hold the data directory's journal, so the server
	// logs the revocation when it hears of it, once.
	st := store.New(pool, nil, clock.Real{}, slog.New(slog.DiscardHandler), nil, store.Options{})
	if n, err := st.LogRevocations(context.Background()); err != nil || n != 1 {
		t.Fatalf("LogRevocations = %d, %v; want 1", n, err)
	}
	if n, err := st.LogRevocations(context.Background()); err != nil || n != 0 {
		t.Fatalf("LogRevocations again = %d, %v; want 0", n, err)
	}
	var action, payload string
	if err := pool.QueryRow(context.Background(), "SELECT action, payload FROM audit_log ORDER BY seq DESC LIMIT 1").Scan(&action, &payload); err != nil {
		t.Fatalf("audit entry of the revocation: %v", err)
	}
	if action != "token.revoke" || !strings.Contains(payload, p.JTI) {
		t.Errorf("last audit entry = %s %s, want token.revoke naming %s", action, payload, p.JTI)
	}
	// The vault now refuses the token.
	if _, err := auth.NewVerifier(pub, id, st, clock.Real{}).Verify(context.Background(), tok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("verifying a revoked token: error = %v, want ErrUnauthenticated", err)
	}

	revoked, audit := mustCountRevocations(t, pool)
	again := runCLI(t, map[string]string{"VAULT_DATABASE_URL": dbURL}, nil, "token", "revoke", p.JTI)
	if again.err == nil || !strings.Contains(again.err.Error(), "already revoked") {
		t.Errorf("second token revoke: error = %v, want one saying it is already revoked", again.err)
	}
	if again.stdout != "" {
		t.Errorf("second token revoke printed %q, want nothing", again.stdout)
	}
	if r2, a2 := mustCountRevocations(t, pool); r2 != revoked || a2 != audit {
		t.Errorf("second token revoke changed the database: %d revocations and %d audit entries, want %d and %d", r2, a2, revoked, audit)
	}

	bad := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"no token id", nil, []string{"--database-url", dbURL}},
		{"two token ids", nil, []string{"--database-url", dbURL, "a", "b"}},
		{"no database", nil, []string{"some-jti"}},
		{"overlong token id", nil, []string{"--database-url", dbURL, strings.Repeat("x", 129)}},
		// A typo during an incident must not report success.
		{"never issued", nil, []string{"--database-url", dbURL, p.JTI[:31] + "0"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.env, nil, append([]string{"token", "revoke"}, tt.args...)...)
			if r.err == nil {
				t.Errorf("token revoke %q succeeded, want an error", tt.args)
			}
			if r2, a2 := mustCountRevocations(t, pool); r2 != revoked || a2 != audit {
				t.Errorf("token revoke %q changed the database", tt.args)
			}
		})
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	content := make([]byte, 300<<10) // more than one BLAKE3 chunk and one copy buffer
	rand.Read(content)
	files := map[string][]byte{"big": content, "empty": nil, "text": []byte("hello, vault\n")}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sum := func(b []byte) string { s := blake3.Sum256(b); return hex.EncodeToString(s[:]) }

	for name, b := range files {
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, nil, nil, "hash", filepath.Join(dir, name))
			if want := sum(b) + "\n"; r.err != nil || r.stdout != want {
				t.Errorf("vault hash %s = %q, %v; want %q", name, r.stdout, r.err, want)
			}
		})
	}
	t.Run("stdin", func(t *testing.T) {
		r := runCLI(t, nil, bytes.NewReader(content), "hash", "-")
		if want := sum(content) + "\n"; r.err != nil || r.stdout != want {
			t.Errorf("vault hash - = %q, %v; want %q", r.stdout, r.err, want)
		}
	})
	t.Run("several files", func(t *testing.T) {
		a, b := filepath.Join(dir, "text"), filepath.Join(dir, "empty")
		r := runCLI(t, nil, nil, "hash", a, b)
		want := fmt.Sprintf("%s  %s\n%s  %s\n", sum(files["text"]), a, sum(nil), b)
		if r.err != nil || r.stdout != want {
			t.Errorf("vault hash %s %s = %q, %v; want %q", a, b, r.stdout, r.err, want)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if r := runCLI(t, nil, nil, "hash", filepath.Join(dir, "nope")); r.err == nil {
			t.Errorf("vault hash of a missing file: stdout %q, want an error", r.stdout)
		}
	})
	t.Run("no arguments", func(t *testing.T) {
		if r := runCLI(t, nil, nil, "hash"); r.err == nil {
			t.Errorf("vault hash without arguments succeeded, want an error")
		}
	})
}

func TestServeRefusesUnsafeSettings(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	dir := mustInitVault(t)

	openKey := mustInitVault(t)
	if err := os.Chmod(filepath.Join(openKey, config.SigningKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()

	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantUnsafe bool   // the error wraps config.ErrUnsafe
		wantErr    string // and mentions this
		untouched  string // a path serve must leave empty or absent
	}{
		{name: "no data dir", args: []string{"--database-url", dbURL}, wantErr: "no data directory"},
		{name: "data dir not initialised", args: []string{"--data-dir", empty, "--database-url", dbURL}, wantErr: "vault init", untouched: empty},
		{name: "data dir does not exist", args: []string{"--data-dir", filepath.Join(empty, "nope"), "--database-url", dbURL}, wantErr: "vault init", untouched: filepath.Join(empty, "nope")},
		{name: "no database", args: []string{"--data-dir", dir}, wantErr: "no database"},
		{name: "short min retention", args: []string{"--data-dir", dir, "--database-url", dbURL, "--min-retention", "1h"}, wantUnsafe: true, wantErr: "--dev"},
		{name: "short min retention from the environment", env: map[string]string{"VAULT_MIN_RETENTION": "1h"},
			args: []string{"--data-dir", dir, "--database-url", dbURL}, wantUnsafe: true, wantErr: "--dev"},
		{name: "zero min retention even in dev mode", args: []string{"--data-dir", dir, "--database-url", dbURL, "--dev", "--min-retention", "0s"}, wantUnsafe: true, wantErr: "min retention"},
		{name: "plaintext on all interfaces", args: []string{"--data-dir", dir, "--database-url", dbURL, "--listen", "0.0.0.0:8420"}, wantUnsafe: true, wantErr: "plain HTTP"},
		{name: "plaintext on all interfaces from the environment", env: map[string]string{"VAULT_LISTEN": "0.0.0.0:8420"},
			args: []string{"--data-dir", dir, "--database-url", dbURL}, wantUnsafe: true, wantErr: "plain HTTP"},
		{name: "signing key readable by others", args: []string{"--data-dir", openKey, "--database-url", dbURL}, wantErr: "too open"},
		{name: "zero max chunk size", args: []string{"--data-dir", dir, "--database-url", dbURL, "--max-chunk-size", "0"}, wantUnsafe: true, wantErr: "max chunk size"},
		{name: "max chunk size over 1GiB", args: []string{"--data-dir", dir, "--database-url", dbURL, "--max-chunk-size", "2GiB"}, wantUnsafe: true, wantErr: "max chunk size"},
		{name: "pack threshold over 16MiB", args: []string{"--data-dir", dir, "--database-url", dbURL, "--pack-threshold", "17MiB"}, wantErr: "pack threshold"},
		{name: "negative pack threshold", args: []string{"--data-dir", dir, "--database-url", dbURL, "--pack-threshold", "-1"}, wantErr: "pack threshold"},
		{name: "tls cert without key", args: []string{"--data-dir", dir, "--database-url", dbURL, "--tls-cert", "/nonexistent.pem"}, wantErr: "tls"},
		{name: "unknown flag", args: []string{"--data-dir", dir, "--database-url", dbURL, "--allow-everything"}, wantErr: "flag"},
		{name: "stray argument", args: []string{"--data-dir", dir, "--database-url", dbURL, "now"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"serve"}, tt.args...)
			if !strings.Contains(strings.Join(args, " "), "--listen") && tt.env["VAULT_LISTEN"] == "" {
				args = append(args, "--listen", "127.0.0.1:0") // should it start after all, never collide
			}
			r := runCLI(t, tt.env, nil, args...)
			if r.err == nil {
				t.Fatalf("vault %q: no error, want a refusal", args)
			}
			if !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Errorf("vault %q: error = %q, want it to mention %q", args, r.err, tt.wantErr)
			}
			if got := errors.Is(r.err, config.ErrUnsafe); got != tt.wantUnsafe {
				t.Errorf("vault %q: errors.Is(err, config.ErrUnsafe) = %v, want %v (err %v)", args, got, tt.wantUnsafe, r.err)
			}
			if strings.Contains(r.stderr, "vault serving") || strings.Contains(r.stderr, "reconciled") {
				t.Errorf("vault %q started before refusing:\n%s", args, r.stderr)
			}
			if tt.untouched != "" {
				if entries, err := os.ReadDir(tt.untouched); len(entries) != 0 || (err != nil && !errors.Is(err, fs.ErrNotExist)) {
					t.Errorf("vault %q left %d entries in %s (err %v), want it untouched", args, len(entries), tt.untouched, err)
				}
			}
		})
	}

	// The control: the same harness sees a server that does start.
	t.Run("dev mode allows a short min retention", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sink := newLogSink()
		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			err = run(ctx, []string{"serve", "--data-dir", dir, "--database-url", dbURL, "--listen", "127.0.0.1:0",
				"--dev", "--min-retention", "1h"}, envOf(nil), strings.NewReader(""), io.Discard, sink)
		}()
		sink.wait(t, "vault serving", 60*time.Second, done)
		if _, ok := sink.find("DEV MODE: safety floors are relaxed; never run a real vault like this"); !ok {
			t.Errorf("serve --dev did not warn about dev mode")
		}
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("serve did not stop within 60s of its context being cancelled")
		}
		if err != nil {
			t.Errorf("serve --dev --min-retention 1h: %v, want nil after a clean stop", err)
		}
	})
}

// mustEmptyDatabase creates a database without any schema, dropped at
// cleanup, and returns its URL.
func mustEmptyDatabase(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	base := pgtest.ServerURL(t)
	b := make([]byte, 8)
	rand.Read(b)
	name := "wv_test_empty_" + hex.EncodeToString(b)
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Logf("drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// mustSchemaState describes a database's schema: the migration version and
// every table, trigger and function in the public schema.
func mustSchemaState(t testing.TB, dbURL string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var version int
	if err := conn.QueryRow(ctx, "SELECT version FROM public.schema_version").Scan(&version); err != nil {
		t.Fatalf("schema_version: %v", err)
	}
	rows, _ := conn.Query(ctx, `
		SELECT 'table ' || tablename FROM pg_tables WHERE schemaname = 'public'
		UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
		ORDER BY 1`)
	objects, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("version %d\n%s", version, strings.Join(objects, "\n"))
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	dbURL := mustEmptyDatabase(t)

	first := runCLI(t, nil, nil, "migrate", "--database-url", dbURL)
	if first.err != nil {
		t.Fatalf("first migrate: %v\n%s", first.err, first.stderr)
	}
	if !strings.Contains(first.stderr, "applying migration") {
		t.Errorf("first migrate of an empty database logged no migration:\n%s", first.stderr)
	}
	after1 := mustSchemaState(t, dbURL)
	if !strings.Contains(after1, "table chunks") || !strings.Contains(after1, "table audit_log") {
		t.Errorf("schema after migrate:\n%s\nwant the chunks and audit_log tables", after1)
	}

	second := runCLI(t, map[string]string{"VAULT_DATABASE_URL": dbURL}, nil, "migrate")
	if second.err != nil {
		t.Fatalf("second migrate: %v\n%s", second.err, second.stderr)
	}
	if strings.Contains(second.stderr, "applying migration") {
		t.Errorf("second migrate applied migrations again:\n%s", second.stderr)
	}
	if !strings.Contains(second.stderr, "up to date") {
		t.Errorf("second migrate stderr = %q, want it to say the database is up to date", second.stderr)
	}
	if after2 := mustSchemaState(t, dbURL); after2 != after1 {
		t.Errorf("schema changed on the second migrate:\n%s\nwant\n%s", after2, after1)
	}

	t.Run("no database", func(t *testing.T) {
		if r := runCLI(t, nil, nil, "migrate"); r.err == nil || !strings.Contains(r.err.Error(), "database-url") {
			t.Errorf("migrate without a database: error = %v, want one naming --database-url", r.err)
		}
	})
	t.Run("unreachable database", func(t *testing.T) {
		// Port 1 on loopback refuses at once.
		r := runCLI(t, nil, nil, "migrate", "--database-url", "postgres://vault@127.0.0.1:1/vault?connect_timeout=5")
		if r.err == nil {
			t.Errorf("migrate against an unreachable database succeeded")
		}
	})
}

func TestRunCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantErr    bool
		wantStdout string
	}{
		{name: "no command", args: nil, wantErr: true},
		{name: "unknown command", args: []string{"destroy"}, wantErr: true},
		{name: "help", args: []string{"help"}, wantStdout: "usage: vault"},
		{name: "version", args: []string{"version"}, wantStdout: "vault "},
		{name: "token without subcommand", args: []string{"token"}, wantErr: true},
		{name: "token unknown subcommand", args: []string{"token", "forge"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, nil, nil, tt.args...)
			if (r.err != nil) != tt.wantErr {
				t.Errorf("vault %q: error = %v, wantErr %v", tt.args, r.err, tt.wantErr)
			}
			if !strings.Contains(r.stdout, tt.wantStdout) {
				t.Errorf("vault %q: stdout = %q, want it to contain %q", tt.args, r.stdout, tt.wantStdout)
			}
		})
	}
}
