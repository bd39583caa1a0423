package store

import (
	"context"
	"errors"
)

// Readiness probes: each subsystem the vault needs to take uploads,
// checked on its own so that /readyz can say which one fails.

// ProbeIndex runs a real query on the chunks table, as the runtime role:
// unlike a ping it fails when the table is locked, unreadable or its
// privileges are gone. Callers bound it with ctx's deadline.
func (s *Store) ProbeIndex(ctx context.Context) error {
	var any bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM chunks LIMIT 1)").Scan(&any); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return dbErr("probe index", errors.Join(ErrUnavailable, err))
		}
		return dbErr("probe index", err)
	}
	return nil
}

// PackWriterStatus reports whether small chunks can be packed: nil if a
// pack is open (or packing is off), else why not. If no pack is open it
// tries to start one, as the next upload would, so that the writer shows
// ready as soon as space returns after a full disk.
func (s *Store) PackWriterStatus() (enabled bool, active int64, err error) {
	if s.packs == nil {
		return false, 0, nil
	}
	err = s.packs.Ready()
	return true, s.packs.Active(), err
}
