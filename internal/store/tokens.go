package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// revokedChannel is the LISTEN/NOTIFY channel on which revocations are
// announced, with the token id as payload, and distrusted signing keys,
// with keyPayload and the key id (token ids are hex: no confusion).
const (
	revokedChannel = "wormvault_revoked"
	keyPayload     = "key:"
)

// revocations is an in-memory copy of the revocation list and of the
// distrusted keys, kept complete by WatchRevocations. While it is not
// live, lookups go to the database.
type revocations struct {
	mu   sync.RWMutex
	live bool
	set  map[string]struct{}
	keys map[string]struct{}
}

// RevokeOptions qualify RevokeToken.
type RevokeOptions struct {
	// Unregistered lets a token id that is not in the register be revoked:
	// only for tokens issued before the register existed. Without it, an
	// unknown id (a typo during an incident) is refused with ErrNotFound.
	Unregistered bool
}

// RevokeToken records that the token with id jti is revoked and announces
// it to every vault process. An id that is not in the register of issued
// tokens is refused with ErrNotFound (unless o.Unregistered); revoking an
// already revoked token returns ErrConflict.
//
// Its audit entry is written in the same transaction by a store that holds
// the data directory's journal (the server). `vault token revoke` is a
// separate process that does not: the server logs its revocations when it
// hears of them (LogRevocations), so that only the server appends to the
// log and the journal stays the log's copy.
func (s *Store) RevokeToken(ctx context.Context, actor, jti, reason string, o RevokeOptions) error {
	if jti == "" || len(jti) > 128 {
		return invalid("jti", "must be 1 to 128 characters")
	}
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if !o.Unregistered {
			var issued bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM issued_tokens WHERE jti = $1)`, jti).Scan(&issued); err != nil {
				return err
			}
			if !issued {
				return fmt.Errorf("token %s was never issued by this vault (vault token list shows the issued tokens): %w", jti, ErrNotFound)
			}
		}
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
		if s.opts.Journal == nil {
			return nil
		}
		return s.appendAudit(ctx, tx, now, actor, "token.revoke", map[string]any{"jti": jti, "reason": reason})
	})
	if err != nil {
		return dbErr("revoke token", err)
	}
	s.rev.add(jti) // at once in this process, whatever the notification's timing
	return nil
}

// LogRevocations appends a token.revoke entry for every revocation that has
// none (those `vault token revoke` wrote), and a key.distrust entry for
// every distrusted key that has none (`vault token rotate-key
// --compromised`), and returns how many. The server runs it when it hears
// of a revocation and at start.
func (s *Store) LogRevocations(ctx context.Context) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT kid, distrusted_at, distrusted_by, reason FROM distrusted_keys k
			WHERE NOT EXISTS (SELECT FROM audit_log a WHERE a.action = 'key.distrust'
			                  AND a.payload::jsonb #>> '{details,kid}' = k.kid)
			ORDER BY distrusted_at, kid`)
		type keyRow struct {
			KID          string    `db:"kid"`
			DistrustedAt time.Time `db:"distrusted_at"`
			DistrustedBy string    `db:"distrusted_by"`
			Reason       string    `db:"reason"`
		}
		keys, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			recs := make([]auditRecord, len(keys))
			for i, k := range keys {
				recs[i] = auditRecord{at: k.DistrustedAt, actor: k.DistrustedBy, action: "key.distrust",
					details: map[string]any{"kid": k.KID, "reason": k.Reason}}
			}
			if _, err := s.appendAuditBatch(ctx, tx, recs); err != nil {
				return err
			}
			n += len(recs)
		}
		rows, _ = tx.Query(ctx, `SELECT jti, revoked_at, revoked_by, reason FROM revoked_tokens r
			WHERE NOT EXISTS (SELECT FROM audit_log a WHERE a.action = 'token.revoke'
			                  AND a.payload::jsonb #>> '{details,jti}' = r.jti)
			ORDER BY revoked_at, jti`)
		type row struct {
			JTI       string    `db:"jti"`
			RevokedAt time.Time `db:"revoked_at"`
			RevokedBy string    `db:"revoked_by"`
			Reason    string    `db:"reason"`
		}
		todo, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
		if err != nil {
			return err
		}
		recs := make([]auditRecord, len(todo))
		for i, r := range todo {
			recs[i] = auditRecord{at: r.RevokedAt, actor: r.RevokedBy, action: "token.revoke",
				details: map[string]any{"jti": r.JTI, "reason": r.Reason}}
		}
		n += len(recs)
		if len(recs) == 0 {
			return nil
		}
		_, err = s.appendAuditBatch(ctx, tx, recs)
		return err
	})
	if err != nil {
		return 0, dbErr("log revocations", err)
	}
	return n, nil
}

func (r *revocations) add(jti string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set != nil {
		r.set[jti] = struct{}{}
	}
}

func (r *revocations) addKey(kid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys != nil {
		r.keys[kid] = struct{}{}
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
	rows, _ = conn.Query(ctx, "SELECT kid FROM distrusted_keys")
	kids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	keys := make(map[string]struct{}, len(kids))
	for _, k := range kids {
		keys[k] = struct{}{}
	}
	s.rev.mu.Lock()
	s.rev.set, s.rev.keys, s.rev.live = set, keys, true
	s.rev.mu.Unlock()
	s.logRevocations(ctx)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if kid, ok := strings.CutPrefix(n.Payload, keyPayload); ok {
			s.rev.addKey(kid)
			s.log.WarnContext(ctx, "token-signing key distrusted: every token it signed is refused", "kid", kid)
		} else {
			s.rev.add(n.Payload)
		}
		s.logRevocations(ctx)
	}
}

// logRevocations is LogRevocations for the watcher: only a store with the
// journal logs, and a failure is logged and retried at the next event.
func (s *Store) logRevocations(ctx context.Context) {
	if s.opts.Journal == nil {
		return
	}
	if n, err := s.LogRevocations(ctx); err != nil {
		s.log.ErrorContext(ctx, "cannot log revocations in the audit log", "err", err)
	} else if n > 0 {
		s.log.InfoContext(ctx, "logged revocations made outside the server", "count", n)
	}
}
