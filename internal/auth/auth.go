package auth

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The package's sentinel errors. The API maps each to one HTTP status in one
// place (internal/api/errors.go).
var (
	// ErrUnauthenticated: the token is missing, malformed, forged, expired,
	// meant for another vault, or revoked.
	ErrUnauthenticated = errors.New("auth: unauthenticated")
	// ErrForbidden: the caller is authenticated but its role may not do this.
	ErrForbidden = errors.New("auth: forbidden")
)

// Role is what a caller may do. Only the constants below are valid.
type Role string

// The roles, from narrowest to broadest trust.
const (
	// RoleAgent uploads chunks and snapshots.
	RoleAgent Role = "agent"
	// RoleReader reads and restores.
	RoleReader Role = "reader"
	// RoleAuditor reads the audit log and checks consistency.
	RoleAuditor Role = "auditor"
	// RoleAdmin administers the vault. It never suffices on its own to
	// delete data.
	RoleAdmin Role = "admin"
	// RoleMetrics reads /metrics and nothing else (a Prometheus scraper).
	RoleMetrics Role = "metrics"
	// RoleReplicator is a second vault pulling from this one: it lists
	// snapshots and holds, reads chunks and the audit log's checkpoints
	// and proofs, and asks which chunks are gone. It writes nothing.
	RoleReplicator Role = "replicator"
)

// ParseRole returns the Role named s. It accepts exactly "agent", "reader",
// "auditor", "admin", "metrics" and "replicator" (case-sensitive) and
// returns an error otherwise.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAgent, RoleReader, RoleAuditor, RoleAdmin, RoleMetrics, RoleReplicator:
		return r, nil
	}
	return "", fmt.Errorf("auth: unknown role %q", s)
}

// Principal is an authenticated caller.
type Principal struct {
	Subject   string
	Role      Role
	JTI       string
	ExpiresAt time.Time
	// KeyID names the signing key that issued the token.
	KeyID string
	// Scope is what an agent, reader or replicator may reach; roles without a scope
	// (auditor, admin, metrics) get AllSources, as they write no backups.
	Scope Scope
}

// RequireSource returns nil if p's scope covers source, and otherwise an
// error wrapping ErrForbidden that names both.
func RequireSource(p Principal, source string) error {
	if p.Scope.AllowsSource(source) {
		return nil
	}
	return fmt.Errorf("auth: the token of %q (scope: %s) may not reach source %q: %w", p.Subject, p.Scope, source, ErrForbidden)
}

// RequireRestic returns nil if p's scope covers the restic repository
// repo, and otherwise an error wrapping ErrForbidden that names both.
func RequireRestic(p Principal, repo string) error {
	if p.Scope.AllowsRestic(repo) {
		return nil
	}
	return fmt.Errorf("auth: the token of %q (scope: %s) may not reach restic repository %q: %w", p.Subject, p.Scope, repo, ErrForbidden)
}

// Require returns nil if p's role is one of roles, and otherwise an error
// wrapping ErrForbidden that names the role. With no roles it always refuses.
func Require(p Principal, roles ...Role) error {
	for _, r := range roles {
		if p.Role == r {
			// An invalid role never matches, even if a caller listed it.
			if _, err := ParseRole(string(r)); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("auth: role %q may not do this: %w", p.Role, ErrForbidden)
}

// principalKey is the context key for a Principal; unexported so that only
// this package can set or read it.
type principalKey struct{}

// NewContext returns a copy of ctx carrying p. It also records p in the
// slot of WithPrincipalSlot, if ctx has one.
func NewContext(ctx context.Context, p Principal) context.Context {
	if s, ok := ctx.Value(slotKey{}).(*principalSlot); ok {
		s.p, s.ok = p, true
	}
	return context.WithValue(ctx, principalKey{}, p)
}

// slotKey is the context key of a principalSlot.
type slotKey struct{}

// principalSlot receives the principal authenticated further down a
// request's handler chain. A request is served by one goroutine, so it
// needs no lock.
type principalSlot struct {
	p  Principal
	ok bool
}

// WithPrincipalSlot returns a copy of ctx with an empty slot, and a
// function that returns the principal NewContext later put in it (false
// if none). It lets a middleware that wraps authentication, such as the
// access log, say who made the request: the principal itself travels in a
// context derived inside, which the outer middleware never sees.
func WithPrincipalSlot(ctx context.Context) (context.Context, func() (Principal, bool)) {
	s := &principalSlot{}
	return context.WithValue(ctx, slotKey{}, s), func() (Principal, bool) { return s.p, s.ok }
}

// FromContext returns the Principal stored by NewContext, and false if there
// is none.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
