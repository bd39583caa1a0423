package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/audit"
)

// ErrRollback: the database's log is smaller than, or does not extend, a
// checkpoint the vault signed earlier (a restored old database, or rows
// removed or edited). The vault must not sign on top of it.
var ErrRollback = errors.New("store: audit log rolled back or rewritten")

// SignedCheckpoint is a checkpoint with its signed note.
type SignedCheckpoint struct {
	audit.Checkpoint
	Note []byte
}

// LatestCheckpoint returns the latest checkpoint the vault signed.
func (s *Store) LatestCheckpoint(ctx context.Context) (SignedCheckpoint, error) {
	var size int64
	var root []byte
	var msg string
	err := s.pool.QueryRow(ctx, "SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1").Scan(&size, &root, &msg)
	if errors.Is(err, pgx.ErrNoRows) {
		return SignedCheckpoint{}, fmt.Errorf("no checkpoint signed yet: %w", ErrNotFound)
	}
	if err != nil {
		return SignedCheckpoint{}, dbErr("latest checkpoint", err)
	}
	return SignedCheckpoint{Checkpoint: audit.Checkpoint{Size: size, Root: tlog.Hash(root)}, Note: []byte(msg)}, nil
}

// SignCheckpoint signs a checkpoint of the whole log with signer (whose
// name is the origin) unless the latest one already covers it; it reports
// whether it signed. It first checks that the log still extends the last
// checkpoint it signed: it never signs a conflicting history.
func (s *Store) SignCheckpoint(ctx context.Context, signer note.Signer) (SignedCheckpoint, bool, error) {
	n, err := s.AuditTreeSize(ctx)
	if err != nil {
		return SignedCheckpoint{}, false, err
	}
	last, err := s.LatestCheckpoint(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return SignedCheckpoint{}, false, err
	case last.Size >= n:
		if err := s.CheckRollback(ctx, last.Checkpoint); err != nil {
			return SignedCheckpoint{}, false, err
		}
		return last, false, nil
	default:
		if err := s.CheckRollback(ctx, last.Checkpoint); err != nil {
			return SignedCheckpoint{}, false, err
		}
	}
	if n == 0 {
		return SignedCheckpoint{}, false, nil // never sign the empty tree
	}
	root, err := s.AuditTreeHash(ctx, n)
	if err != nil {
		return SignedCheckpoint{}, false, fmt.Errorf("store: checkpoint root: %w", err)
	}
	cp := audit.Checkpoint{Origin: signer.Name(), Size: n, Root: root}
	msg, err := audit.Sign(cp, signer)
	if err != nil {
		return SignedCheckpoint{}, false, fmt.Errorf("store: sign checkpoint: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO audit_checkpoints (size, root, note, signed_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING`, n, root[:], string(msg), s.clk.Now()); err != nil {
		return SignedCheckpoint{}, false, dbErr("store checkpoint", err)
	}
	latest, err := s.LatestCheckpoint(ctx)
	return latest, err == nil, err
}

// CheckRollback is the rollback guard: it returns ErrRollback unless the
// database's log has at least cp.Size entries and its first cp.Size
// entries hash to cp.Root. `vault serve` runs it at start against the
// checkpoint kept in the data directory. It reads O(log n) stored hashes,
// not the entries: an edited entry is for auditors (vault audit verify),
// who recompute every leaf.
func (s *Store) CheckRollback(ctx context.Context, cp audit.Checkpoint) error {
	n, err := s.AuditTreeSize(ctx)
	if err != nil {
		return err
	}
	if n < cp.Size {
		return fmt.Errorf("%w: the database's audit log has %d entries, but the vault signed a checkpoint of %d: "+
			"was an older database restored?", ErrRollback, n, cp.Size)
	}
	root, err := s.AuditTreeHash(ctx, cp.Size)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRollback, err)
	}
	if root != cp.Root {
		return fmt.Errorf("%w: the database's first %d audit entries hash to %s, not to the signed %s", ErrRollback, cp.Size, root, cp.Root)
	}
	return nil
}
