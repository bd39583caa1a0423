package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// revokedChannel is the LISTEN/NOTIFY channel on which revocations are
// announced, with the token id as payload.
const revokedChannel = "wormvault_revoked"

// revocations is an in-memory copy of the revocation list, kept complete by
// WatchRevocations. While it is not live, lookups go to the database.
type revocations struct {
	mu   sync.RWMutex
	live bool
	set  map[string]struct{}
}

// RevokeToken records that the token with id jti is revoked, with its audit
// entry, and announces it to every vault process. Revoking an already
// revoked token returns ErrConflict.
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
		// Delivered at commit, to every listening server.
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", revokedChannel, jti); err != nil {
			return err
		}
		return appendAudit(ctx, tx, now, actor, "token.revoke", map[string]any{"jti": jti, "reason": reason})
	})
	if err != nil {
		return dbErr("revoke token", err)
	}
	s.rev.add(jti) // at once in this process, whatever the notification's timing
	return nil
}

func (r *revocations) add(jti string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set != nil {
		r.set[jti] = struct{}{}
	}
}

// IsRevoked reports whether the token with id jti was revoked. It
// implements auth.Revocations. With WatchRevocations running it answers
// from memory; otherwise it asks the database.
func (s *Store) IsRevoked(ctx context.Context, jti string) (bool, error) {
	s.rev.mu.RLock()
	if s.rev.live {
		_, ok := s.rev.set[jti]
		s.rev.mu.RUnlock()
		return ok, nil
	}
	s.rev.mu.RUnlock()
	var revoked bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM revoked_tokens WHERE jti = $1)", jti).Scan(&revoked)
	if err != nil {
		return false, dbErr("check revocation", err)
	}
	return revoked, nil
}

// WatchRevocations keeps an in-memory copy of the revocation list so that
// checking a token costs no database round trip: it listens for
// revocations (from this process, other servers, or `vault token revoke`),
// loads the whole list after every (re)connection, and falls back to
// database lookups whenever it is not connected. It runs until ctx is done.
func (s *Store) WatchRevocations(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.watchRevocations(ctx)
		s.rev.mu.Lock()
		s.rev.live = false
		s.rev.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		s.log.WarnContext(ctx, "revocation listener lost; checking revocations in the database until it is back", "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *Store) watchRevocations(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// Listen first, then load: a revocation committed in between is in
	// the load or arrives as a notification, never lost.
	if _, err := conn.Exec(ctx, "LISTEN "+revokedChannel); err != nil {
		return err
	}
	rows, _ := conn.Query(ctx, "SELECT jti FROM revoked_tokens")
	jtis, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	set := make(map[string]struct{}, len(jtis))
	for _, j := range jtis {
		set[j] = struct{}{}
	}
	s.rev.mu.Lock()
	s.rev.set, s.rev.live = set, true
	s.rev.mu.Unlock()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		s.rev.add(n.Payload)
	}
}
