package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

// A token verified once is remembered, but its lifetime and revocation are
// checked on every use.
func TestVerifiedTokenCache(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	ctx := context.Background()
	tok, c := e.mustIssue(t, RoleAgent, "agent-1", time.Hour)
	for range 3 {
		if p, err := e.verifier.Verify(ctx, tok); err != nil || p.JTI != c.ID {
			t.Fatalf("Verify = %+v, %v", p, err)
		}
	}
	if n := e.revs.calls.Load(); n != 3 {
		t.Errorf("revocation lookups = %d, want one per request (3)", n)
	}
	// Edited tokens are different keys: never a cache hit.
	if _, err := e.verifier.Verify(ctx, malleateSignature(t, tok)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("malleated signature after caching: %v", err)
	}

	e.revs.revoked = map[string]bool{c.ID: true}
	if _, err := e.verifier.Verify(ctx, tok); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("revoked cached token: %v, want ErrUnauthenticated", err)
	}
	e.revs.revoked = map[string]bool{}

	e.verClk.Advance(time.Hour + leeway)
	if _, err := e.verifier.Verify(ctx, tok); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("expired cached token: %v, want ErrUnauthenticated", err)
	}
}

// After a key rotation, tokens of the retired key verify until its
// not-after time; tokens of unknown keys never do.
func TestRetiredKey(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	ctx := context.Background()
	oldKey := mustGenerateKey(t)
	oldTok, _, err := NewIssuer(oldKey, testVault, e.issClk).IssueScoped(RoleAgent, "agent-1", 2*time.Hour, AllSources())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.verifier.Verify(ctx, oldTok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("token of a key not yet known: %v", err)
	}
	if err := e.verifier.AddRetiredKey(oldKey.Public().(ed25519.PublicKey), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.verifier.Verify(ctx, oldTok); err != nil {
		t.Fatalf("token of a retired key before its not-after: %v", err)
	}
	// A fresh token is needed: the verified one is remembered.
	oldTok2, _, _ := NewIssuer(oldKey, testVault, e.issClk).IssueScoped(RoleAgent, "agent-2", 2*time.Hour, AllSources())
	e.verClk.Advance(time.Hour)
	if _, err := e.verifier.Verify(ctx, oldTok2); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("token of a retired key after its not-after: %v", err)
	}
	newTok, _ := e.mustIssue(t, RoleAgent, "agent-3", time.Hour)
	if _, err := e.verifier.Verify(ctx, newTok); err != nil {
		t.Errorf("token of the current key: %v", err)
	}
}
