package store

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// The register of issued tokens and the distrusted signing keys
// (migrations/011_token_scopes.sql). `vault token issue` registers each
// token before printing it, through the database the server uses, so that
// the server's register lists every token it may see and a revocation can
// be checked against it. Both tables are insert-only.

// IssuedToken is a row of the register.
type IssuedToken struct {
	JTI     string `db:"jti"`
	Role    string `db:"role"`
	Subject string `db:"subject"`
	// Scope is the token's scope claim as JSON (auth.Scope), or nil for
	// the roles that carry none.
	Scope     json.RawMessage `db:"scope"`
	KeyID     string          `db:"key_id"`
	IssuedAt  time.Time       `db:"issued_at"`
	ExpiresAt time.Time       `db:"expires_at"`
	IssuedBy  string          `db:"issued_by"`
	// RevokedAt is set once the token is revoked.
	RevokedAt *time.Time `db:"revoked_at"`
}

var (
	jtiPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
	kidPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// RegisterToken records an issued token. It returns an *InvalidError for a
// malformed row (the database checks the same), ErrConflict if the id is
// registered already.
func (s *Store) RegisterToken(ctx context.Context, t IssuedToken) error {
	switch {
	case !jtiPattern.MatchString(t.JTI):
		return invalid("jti", "must be 32 lowercase hex digits")
	case !kidPattern.MatchString(t.KeyID):
		return invalid("key_id", "must be 16 lowercase hex digits")
	case t.Subject == "" || t.IssuedBy == "":
		return invalid("subject", "subject and issuer are required")
	case !t.ExpiresAt.After(t.IssuedAt):
		return invalid("expires_at", "must be after issued_at")
	}
	var scope any
	if len(t.Scope) > 0 {
		scope = string(t.Scope)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO issued_tokens (jti, role, subject, scope, key_id, issued_at, expires_at, issued_by)
		VALUES (@jti, @role, @subject, @scope::jsonb, @kid, @iat, @exp, @by)`, pgx.NamedArgs{
		"jti": t.JTI, "role": t.Role, "subject": t.Subject, "scope": scope, "kid": t.KeyID,
		"iat": t.IssuedAt, "exp": t.ExpiresAt, "by": t.IssuedBy,
	})
	return dbErr(fmt.Sprintf("register token %s", t.JTI), err)
}

// TokenQuery filters ListTokens.
type TokenQuery struct {
	// Active: only tokens neither revoked nor expired at now.
	Active bool
	Now    time.Time
}

const listTokensSQL = `
SELECT t.jti, t.role, t.subject, t.scope, t.key_id, t.issued_at, t.expires_at, t.issued_by, r.revoked_at
FROM issued_tokens t LEFT JOIN revoked_tokens r ON r.jti = t.jti
WHERE NOT @active OR (r.jti IS NULL AND t.expires_at > @now)
ORDER BY t.issued_at, t.jti`

// ListTokens returns the registered tokens, oldest first.
func (s *Store) ListTokens(ctx context.Context, q TokenQuery) ([]IssuedToken, error) {
	rows, _ := s.pool.Query(ctx, listTokensSQL, pgx.NamedArgs{"active": q.Active, "now": q.Now})
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[IssuedToken])
	if err != nil {
		return nil, dbErr("list tokens", err)
	}
	return list, nil
}

// DistrustKey records that the token-signing key kid (public key pub) is
// compromised: from the commit on, every server refuses every token it
// signed (IsKeyDistrusted), whatever its id or issue time. Distrusting a
// key twice changes nothing and is not an error. Like RevokeToken, it is
// audited in the same transaction by the server's store, and by the
// server when it hears of it otherwise (LogRevocations).
func (s *Store) DistrustKey(ctx context.Context, actor, kid string, pub []byte, reason string) error {
	if !kidPattern.MatchString(kid) {
		return invalid("kid", "must be 16 lowercase hex digits")
	}
	if len(pub) != 32 {
		return invalid("public_key", "must be an Ed25519 public key")
	}
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO distrusted_keys (kid, public_key, distrusted_at, distrusted_by, reason)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid) DO NOTHING`, kid, pub, now, actor, reason)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", revokedChannel, keyPayload+kid); err != nil {
			return err
		}
		if s.opts.Journal == nil {
			return nil
		}
		return s.appendAudit(ctx, tx, now, actor, "key.distrust", map[string]any{"kid": kid, "reason": reason})
	})
	if err != nil {
		return dbErr("distrust signing key "+kid, err)
	}
	s.rev.addKey(kid)
	return nil
}

// IsKeyDistrusted reports whether the signing key kid was distrusted. It
// implements auth.Revocations, like IsRevoked: from memory while
// WatchRevocations is live, otherwise from the database.
func (s *Store) IsKeyDistrusted(ctx context.Context, kid string) (bool, error) {
	s.rev.mu.RLock()
	if s.rev.live {
		_, ok := s.rev.keys[kid]
		s.rev.mu.RUnlock()
		return ok, nil
	}
	s.rev.mu.RUnlock()
	var distrusted bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM distrusted_keys WHERE kid = $1)", kid).Scan(&distrusted)
	if err != nil {
		return false, dbErr("check signing key", err)
	}
	return distrusted, nil
}

// DistrustedKeys returns the kids of every distrusted signing key.
func (s *Store) DistrustedKeys(ctx context.Context) ([]string, error) {
	rows, _ := s.pool.Query(ctx, "SELECT kid FROM distrusted_keys ORDER BY kid")
	kids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbErr("list distrusted keys", err)
	}
	return kids, nil
}
