package main

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
)

// After `token rotate-key`, new tokens use the new key, tokens of the old
// key still verify (as the server sets it up), and the old private key is
// gone.
func TestTokenRotateKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{}
	if r := runCLI(t, env, nil, "init", "--data-dir", dir); r.err != nil {
		t.Fatal(r.err)
	}
	issue := func() string {
		r := runCLI(t, env, nil, "token", "issue", "--data-dir", dir, "--role", "agent", "--subject", "a", "--ttl", "1h")
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
