package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditEntry is one entry of the hash-linked audit log.
type AuditEntry struct {
	Seq      int64     `json:"seq" db:"seq"`
	At       time.Time `json:"at" db:"at"`
	Actor    string    `json:"actor" db:"actor"`
	Action   string    `json:"action" db:"action"`
	Payload  string    `json:"payload" db:"payload"`
	PrevHash []byte    `json:"prev_hash" db:"prev_hash"`
	Hash     []byte    `json:"hash" db:"hash"`
}

// auditLock serialises appends so the chain has no forks or gaps.
const auditLock = 0x61756474 // "audt"

// ErrAuditChainBroken is returned by VerifyAudit when an entry does not
// link to or hash as it should.
var ErrAuditChainBroken = errors.New("store: audit chain broken")

// auditPayload is the canonical JSON that is hashed: fixed field order from
// the struct, details with sorted keys (encoding/json sorts map keys).
type auditPayload struct {
	Seq     int64     `json:"seq"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Details any       `json:"details"`
}

func auditHash(prev []byte, payload string) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write([]byte(payload))
	return h.Sum(nil)
}

// appendAudit writes one audit entry inside tx, the transaction of the
// change it records (invariant 6): the entry and the change commit together
// or not at all.
func appendAudit(ctx context.Context, tx pgx.Tx, at time.Time, actor, action string, details any) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", auditLock); err != nil {
		return fmt.Errorf("audit: lock: %w", err)
	}
	var seq int64
	prev := make([]byte, sha256.Size)
	err := tx.QueryRow(ctx, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").Scan(&seq, &prev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("audit: last entry: %w", err)
	}
	seq++
	b, err := json.Marshal(auditPayload{Seq: seq, At: at.UTC(), Actor: actor, Action: action, Details: details})
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	payload := string(b)
	_, err = tx.Exec(ctx, `INSERT INTO audit_log (seq, at, actor, action, payload, prev_hash, hash)
		VALUES (@seq, @at, @actor, @action, @payload, @prev, @hash)`, pgx.NamedArgs{
		"seq": seq, "at": at, "actor": actor, "action": action, "payload": payload,
		"prev": prev, "hash": auditHash(prev, payload),
	})
	if err != nil {
		return fmt.Errorf("audit: append: %w", err)
	}
	return nil
}

// AuditEntries returns up to limit entries with seq > after, in order.
func (s *Store) AuditEntries(ctx context.Context, after int64, limit int) ([]AuditEntry, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	rows, _ := s.pool.Query(ctx, `SELECT seq, at, actor, action, payload, prev_hash, hash
		FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	entries, err := pgx.CollectRows(rows, pgx.RowToStructByName[AuditEntry])
	if err != nil {
		return nil, dbErr("audit entries", err)
	}
	return entries, nil
}

// VerifyAuditChain checks that entries link and hash correctly, starting
// from prev (32 zero bytes for the first entry). It returns the last hash.
func VerifyAuditChain(prev []byte, entries []AuditEntry) ([]byte, error) {
	for _, e := range entries {
		if !bytes.Equal(e.PrevHash, prev) {
			return nil, fmt.Errorf("%w: entry %d does not link to its predecessor", ErrAuditChainBroken, e.Seq)
		}
		if !bytes.Equal(auditHash(prev, e.Payload), e.Hash) {
			return nil, fmt.Errorf("%w: entry %d does not match its hash", ErrAuditChainBroken, e.Seq)
		}
		var p auditPayload
		if err := json.Unmarshal([]byte(e.Payload), &p); err != nil || p.Seq != e.Seq || p.Actor != e.Actor || p.Action != e.Action {
			return nil, fmt.Errorf("%w: entry %d payload disagrees with its columns", ErrAuditChainBroken, e.Seq)
		}
		prev = e.Hash
	}
	return prev, nil
}

// VerifyAudit re-walks the whole audit log and returns the number of
// entries checked.
func (s *Store) VerifyAudit(ctx context.Context) (int64, error) {
	prev := make([]byte, sha256.Size)
	var after, n int64
	for {
		entries, err := s.AuditEntries(ctx, after, 1000)
		if err != nil {
			return n, err
		}
		if len(entries) == 0 {
			return n, nil
		}
		for i, e := range entries {
			if e.Seq != after+int64(i)+1 {
				return n, fmt.Errorf("%w: gap before entry %d", ErrAuditChainBroken, e.Seq)
			}
		}
		if prev, err = VerifyAuditChain(prev, entries); err != nil {
			return n, err
		}
		n += int64(len(entries))
		after = entries[len(entries)-1].Seq
	}
}
