package main

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/store"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// After `token rotate-key`, new tokens use the new key, tokens of the old
// key still verify (as the server sets it up), and the old private key is
// gone.
func TestTokenRotateKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"VAULT_DATABASE_URL": pgtest.NewDatabase(t)}
	if r := runCLI(t, env, nil, "init", "--data-dir", dir); r.err != nil {
		t.Fatal(r.err)
	}
	issue := func() string {
		r := runCLI(t, env, nil, "token", "issue", "--data-dir", dir, "--role", "agent", "--subject", "a", "--ttl", "1h", "--source", "a")
		if r.err != nil {
			t.Fatal(r.err)
		}
		return strings.TrimSpace(r.stdout)
	}
	oldTok := issue()
	oldKey, _ := os.ReadFile(filepath.Join(dir, config.SigningKeyFile))
	r := runCLI(t, env, nil, "token", "rotate-key", "--data-dir", dir)
	if r.err != nil || !strings.Contains(r.stdout, "rotated") {
		t.Fatalf("rotate-key: %v %s", r.err, r.stdout)
	}
	newKey, _ := os.ReadFile(filepath.Join(dir, config.SigningKeyFile))
	if string(newKey) == string(oldKey) {
		t.Fatal("signing key unchanged")
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*.new")); len(matches) != 0 {
		t.Errorf("leftover temp files: %v", matches)
	}
	newTok := issue()

	v, err := config.ReadVault(dir)
	if err != nil || len(v.RetiredKeys) != 1 {
		t.Fatalf("vault.json retired keys = %+v, %v", v.RetiredKeys, err)
	}
	key, err := auth.ReadKeyFile(v.SigningKeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	verifier := auth.NewVerifier(key.Public().(ed25519.PublicKey), v.ID, noRevocations{}, clock.Real{})
	if _, err := verifier.Verify(context.Background(), oldTok); err == nil {
		t.Error("old token verified before its key was added as retired")
	}
	for _, rk := range v.RetiredKeys {
		if err := verifier.AddRetiredKey(rk.PublicKey, rk.NotAfter); err != nil {
			t.Fatal(err)
		}
	}
	for name, tok := range map[string]string{"old": oldTok, "new": newTok} {
		if _, err := verifier.Verify(context.Background(), tok); err != nil {
			t.Errorf("%s token after rotation: %v", name, err)
		}
	}
}

// The token-signing key is stolen. `token rotate-key --compromised` makes
// the running server refuse, at once, every token of the old key: one
// issued before, and one the thief mints afterwards with any id (401).
// After the restart with the new key, new tokens work and the old key
// stays distrusted (vault.json and the database both say so).
func TestTokenMintedWithCompromisedKeyIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	dir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"VAULT_DATABASE_URL": db.URL}
	if r := runCLI(t, env, nil, "init", "--data-dir", dir); r.err != nil {
		t.Fatal(r.err)
	}
	issue := func() string {
		t.Helper()
		r := runCLI(t, env, nil, "token", "issue", "--data-dir", dir, "--role", "agent", "--subject", "db01", "--ttl", "1h", "--source", "db01")
		if r.err != nil {
			t.Fatal(r.err)
		}
		return strings.TrimSpace(r.stdout)
	}
	v, err := config.ReadVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := auth.ReadKeyFile(v.SigningKeyPath(dir)) // the thief's copy
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	st := store.New(pool, nil, clock.Real{}, log, nil, store.Options{VaultID: v.ID})
	// The running server, as serve builds it.
	serve := func(t *testing.T) *httptest.Server {
		t.Helper()
		v, err := config.ReadVault(dir)
		if err != nil {
			t.Fatal(err)
		}
		key, err := auth.ReadKeyFile(v.SigningKeyPath(dir))
		if err != nil {
			t.Fatal(err)
		}
		verifier, err := newServeVerifier(ctx, st, key.Public().(ed25519.PublicKey), v, clock.Real{}, log)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(api.NewHandler(api.Options{Store: st, Verifier: verifier, Log: log}))
		t.Cleanup(srv.Close)
		return srv
	}
	status := func(srv *httptest.Server, tok string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chunks/missing", strings.NewReader(`{"hashes":[]}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	before := issue()
	running := serve(t)
	if got := status(running, before); got != http.StatusOK {
		t.Fatalf("token before the rotation: %d, want 200", got)
	}

	r := runCLI(t, env, nil, "token", "rotate-key", "--data-dir", dir, "--compromised", "--reason", "key file copied")
	if r.err != nil || !strings.Contains(r.stdout, "distrusted") || !strings.Contains(r.stdout, "reissue every token") {
		t.Fatalf("rotate-key --compromised: %v\n%s", r.err, r.stdout)
	}
	minted, _, err := auth.NewIssuer(stolen, v.ID, clock.Real{}).IssueScoped(auth.RoleAgent, "db01", time.Hour, auth.AllSources())
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"issued before": before, "minted afterwards": minted} {
		if got := status(running, tok); got != http.StatusUnauthorized {
			t.Errorf("running server, %s with the old key: %d, want 401", name, got)
		}
	}

	v, err = config.ReadVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	oldKID := auth.KeyID(stolen.Public().(ed25519.PublicKey))
	if len(v.RetiredKeys) != 0 || len(v.DistrustedKeys) != 1 || v.DistrustedKeys[0].KID != oldKID {
		t.Errorf("vault.json: retired %+v, distrusted %+v; want only %s distrusted", v.RetiredKeys, v.DistrustedKeys, oldKID)
	}
	restarted := serve(t)
	after := issue()
	if got := status(restarted, after); got != http.StatusOK {
		t.Errorf("restarted server, token of the new key: %d, want 200", got)
	}
	for name, tok := range map[string]string{"issued before": before, "minted afterwards": minted} {
		if got := status(restarted, tok); got != http.StatusUnauthorized {
			t.Errorf("restarted server, %s with the old key: %d, want 401", name, got)
		}
	}
	if r := runCLI(t, nil, nil, "token", "rotate-key", "--data-dir", dir, "--compromised"); r.err == nil || !strings.Contains(r.err.Error(), "VAULT_DATABASE_URL") {
		t.Errorf("rotate-key --compromised without a database: %v, want an error naming VAULT_DATABASE_URL", r.err)
	}
}
