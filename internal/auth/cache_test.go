package auth

import (
	"context"
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
