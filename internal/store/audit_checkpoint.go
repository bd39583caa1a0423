package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

// checkpointGuard is what this process knows of the log it signs,
// independently of the database: the latest checkpoint it signed, or was
// given from the data directory at start (PinCheckpoint), and the rollback
// it found under it, if any. Whoever can write the database can remove
// entries and checkpoint rows; they cannot make the process forget either.
type checkpointGuard struct {
	sign sync.Mutex // serialises SignCheckpoint and PinCheckpoint

	mu     sync.Mutex
	pinned *SignedCheckpoint
	broken error // wraps ErrRollback; never cleared: a restart re-checks from the data directory

	// The last SignCheckpoint: when one last succeeded (the signed
	// checkpoint then covered the whole log), and the error of the last
	// one if it failed. /readyz reports them.
	passAt  time.Time
	passErr error
}

func (g *checkpointGuard) notePass(now time.Time, cp SignedCheckpoint, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.passErr = err
	if err == nil {
		g.passAt = now
	}
}

// CheckpointStatus is the state of checkpoint signing, as /readyz reports
// it.
type CheckpointStatus struct {
	// Size is the size of the latest checkpoint signed or pinned (0: none).
	Size int64
	// CurrentAt is when a signing pass last found the log covered by a
	// signed checkpoint (signing a new one if it had grown); zero if none
	// has yet.
	CurrentAt time.Time
	// Age is the time since CurrentAt, by the store's clock.
	Age time.Duration
	// Err is the last pass's error, if it failed.
	Err error
}

// CheckpointStatus returns the state of checkpoint signing.
func (s *Store) CheckpointStatus() CheckpointStatus {
	g := &s.ckpt
	g.mu.Lock()
	defer g.mu.Unlock()
	st := CheckpointStatus{CurrentAt: g.passAt, Err: g.passErr}
	if g.pinned != nil {
		st.Size = g.pinned.Size
	}
	if !g.passAt.IsZero() {
		st.Age = s.clk.Now().Sub(g.passAt)
	}
	return st
}

func (g *checkpointGuard) state() (*SignedCheckpoint, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pinned, g.broken
}

func (g *checkpointGuard) pin(cp SignedCheckpoint) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pinned == nil || cp.Size >= g.pinned.Size {
		g.pinned = &cp
	}
}

// rolledBack records a rollback found under the pinned checkpoint: logged
// as an alert, counted, shown by AuditIntegrity and /readyz, and returned
// by every later SignCheckpoint until the process restarts. Only the
// first one is reported; err must wrap ErrRollback.
func (s *Store) rolledBack(ctx context.Context, err error) error {
	g := &s.ckpt
	g.mu.Lock()
	first := g.broken == nil
	if first {
		g.broken = fmt.Errorf("%w (checkpoint signing stopped until the vault restarts)", err)
	} else {
		err = g.broken
	}
	g.mu.Unlock()
	if first {
		s.metrics.auditRollbacks.Inc()
		s.metrics.auditConsistent.Set(0)
		s.log.ErrorContext(ctx, "ALERT: the audit log does not extend the last checkpoint this vault signed: "+
			"entries were removed or rewritten in the database; no checkpoint is signed until an operator "+
			"restores the log and restarts the vault", "err", err)
	}
	return err
}

// AuditIntegrity returns nil unless this process found the database's
// audit log rolled back under a checkpoint it signed (an error wrapping
// ErrRollback). It does not query the database.
func (s *Store) AuditIntegrity() error {
	_, broken := s.ckpt.state()
	return broken
}

// PinCheckpoint makes cp, a checkpoint this vault signed and kept outside
// the database (the data directory's latest-checkpoint), the floor of
// every later signing: SignCheckpoint never signs a tree that does not
// extend it, and LatestCheckpoint never serves anything older. It returns
// an error wrapping ErrRollback, and raises the alarm, if the database's
// log does not extend cp. Pinning a checkpoint smaller than the one held
// checks it and keeps the larger.
func (s *Store) PinCheckpoint(ctx context.Context, cp SignedCheckpoint) error {
	s.ckpt.sign.Lock()
	defer s.ckpt.sign.Unlock()
	if _, broken := s.ckpt.state(); broken != nil {
		return broken
	}
	if err := s.CheckRollback(ctx, cp.Checkpoint); err != nil {
		if errors.Is(err, ErrRollback) {
			return s.rolledBack(ctx, err)
		}
		return err
	}
	s.ckpt.pin(cp)
	s.metrics.auditConsistent.Set(1)
	return nil
}

// LatestCheckpoint returns the latest checkpoint the vault signed: the one
// this process holds (PinCheckpoint, SignCheckpoint) if any, else the
// database's latest. Rows removed from audit_checkpoints therefore never
// make the vault serve an older checkpoint.
func (s *Store) LatestCheckpoint(ctx context.Context) (SignedCheckpoint, error) {
	if p, _ := s.ckpt.state(); p != nil {
		return *p, nil
	}
	return s.StoredCheckpoint(ctx)
}

// StoredCheckpoint returns the database's latest checkpoint row, whatever
// this process holds; ErrNotFound if there is none. Its note is as the
// database says: verify it before trusting it.
func (s *Store) StoredCheckpoint(ctx context.Context) (SignedCheckpoint, error) {
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
	if len(root) != tlog.HashSize {
		return SignedCheckpoint{}, fmt.Errorf("store: latest checkpoint: %w: root of %d bytes", ErrAuditTree, len(root))
	}
	return SignedCheckpoint{Checkpoint: audit.Checkpoint{Size: size, Root: tlog.Hash(root)}, Note: []byte(msg)}, nil
}

// SignCheckpoint signs a checkpoint of the whole log with signer (whose
// name is the origin) unless the latest one already covers it; it reports
// whether it signed. It never signs a tree that does not extend the
// checkpoint it holds (pinned from the data directory, or the last one it
// signed; without either, the database's latest): it first checks that
// the log still has that checkpoint's root at its size, then proves the
// new tree consistent with it. If either fails, it signs nothing, raises
// the alarm and returns an error wrapping ErrRollback, now and on every
// later call (see AuditIntegrity). A database it cannot reach is
// ErrUnavailable and changes nothing.
func (s *Store) SignCheckpoint(ctx context.Context, signer note.Signer) (SignedCheckpoint, bool, error) {
	cp, signed, err := s.signCheckpoint(ctx, signer)
	s.ckpt.notePass(s.clk.Now(), cp, err)
	return cp, signed, err
}

func (s *Store) signCheckpoint(ctx context.Context, signer note.Signer) (SignedCheckpoint, bool, error) {
	s.ckpt.sign.Lock()
	defer s.ckpt.sign.Unlock()
	floor, broken := s.ckpt.state()
	if broken != nil {
		return SignedCheckpoint{}, false, broken
	}
	if floor == nil {
		last, err := s.StoredCheckpoint(ctx)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return SignedCheckpoint{}, false, err
		default:
			floor = &last
		}
	}
	n, err := s.AuditTreeSize(ctx)
	if err != nil {
		return SignedCheckpoint{}, false, err
	}
	if floor != nil {
		if err := s.CheckRollback(ctx, floor.Checkpoint); err != nil {
			if errors.Is(err, ErrRollback) {
				return SignedCheckpoint{}, false, s.rolledBack(ctx, err)
			}
			return SignedCheckpoint{}, false, err
		}
		if n <= floor.Size {
			s.ckpt.pin(*floor)
			s.metrics.auditConsistent.Set(1)
			return *floor, false, nil
		}
	}
	if n == 0 {
		s.metrics.auditConsistent.Set(1)
		return SignedCheckpoint{}, false, nil // never sign the empty tree
	}
	root, err := s.AuditTreeHash(ctx, n)
	if err != nil {
		if errors.Is(err, ErrAuditTree) && floor != nil {
			return SignedCheckpoint{}, false, s.rolledBack(ctx, fmt.Errorf("%w: the tree of size %d cannot be computed: %w", ErrRollback, n, err))
		}
		return SignedCheckpoint{}, false, fmt.Errorf("store: checkpoint root: %w", err)
	}
	if floor != nil {
		// The proof is checked against the root about to be signed: whatever
		// the database did between the reads, what is signed extends floor.
		proof, err := tlog.ProveTree(n, floor.Size, s.hashReader(ctx))
		if err != nil && !errors.Is(err, ErrAuditTree) {
			return SignedCheckpoint{}, false, dbErr("checkpoint consistency proof", err)
		}
		if err == nil {
			err = tlog.CheckTree(proof, n, root, floor.Size, floor.Root)
		}
		if err != nil {
			return SignedCheckpoint{}, false, s.rolledBack(ctx, fmt.Errorf("%w: the tree of size %d does not extend the checkpoint of size %d: %w",
				ErrRollback, n, floor.Size, err))
		}
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
	signed := SignedCheckpoint{Checkpoint: cp, Note: msg}
	s.ckpt.pin(signed)
	s.metrics.auditConsistent.Set(1)
	return signed, true, nil
}

// CheckRollback is the rollback guard: it returns an error wrapping
// ErrRollback unless the database's log has at least cp.Size entries and
// its first cp.Size entries hash to cp.Root (a missing stored hash counts:
// the log cannot be shown to extend cp). A database it cannot reach is
// ErrUnavailable, not a rollback. `vault serve` runs it at start against
// the checkpoint kept in the data directory. It reads O(log n) stored
// hashes, not the entries: an edited entry is for auditors (vault audit
// verify), who recompute every leaf.
func (s *Store) CheckRollback(ctx context.Context, cp audit.Checkpoint) error {
	n, err := s.AuditTreeSize(ctx)
	if err != nil {
		return err
	}
	if n < cp.Size {
		return fmt.Errorf("%w: the database's audit log has %d entries, but the vault signed a checkpoint of %d: "+
			"was an older database restored, or were entries removed?", ErrRollback, n, cp.Size)
	}
	root, err := s.AuditTreeHash(ctx, cp.Size)
	if err != nil {
		if errors.Is(err, ErrAuditTree) {
			return fmt.Errorf("%w: the tree of the first %d entries cannot be computed: %w", ErrRollback, cp.Size, err)
		}
		return err
	}
	if root != cp.Root {
		return fmt.Errorf("%w: the database's first %d audit entries hash to %s, not to the signed %s", ErrRollback, cp.Size, root, cp.Root)
	}
	return nil
}
