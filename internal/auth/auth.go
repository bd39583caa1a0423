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
)

// ParseRole returns the Role named s. It accepts exactly "agent", "reader",
// "auditor" and "admin" (case-sensitive) and returns an error otherwise.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAgent, RoleReader, RoleAuditor, RoleAdmin:
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

// NewContext returns a copy of ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal stored by NewContext, and false if there
// is none.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
