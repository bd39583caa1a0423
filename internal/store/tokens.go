package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RevokeToken records that the token with id jti is revoked, with its audit
// entry. Revoking an already revoked token returns ErrConflict.
func (s *Store) RevokeToken(ctx context.Context, actor, jti, reason string) error {
	if jti == "" || len(jti) > 128 {
		return invalid("jti", "must be 1 to 128 characters")
	}
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO revoked_tokens (jti, revoked_at, revoked_by, reason)
			VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING`, jti, now, actor, reason)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("token %s already revoked: %w", jti, ErrConflict)
		}
		return appendAudit(ctx, tx, now, actor, "token.revoke", map[string]any{"jti": jti, "reason": reason})
	})
	return dbErr("revoke token", err)
}

// IsRevoked reports whether the token with id jti was revoked. It
// implements auth.Revocations.
func (s *Store) IsRevoked(ctx context.Context, jti string) (bool, error) {
	var revoked bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM revoked_tokens WHERE jti = $1)", jti).Scan(&revoked)
	if err != nil {
		return false, dbErr("check revocation", err)
	}
	return revoked, nil
}
