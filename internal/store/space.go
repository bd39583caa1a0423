package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"syscall"
	"time"
)

// Free space. New content is refused (ErrInsufficientStorage, 507 at the
// API) while the data directory's free space is below a reserve, before
// the filesystem is actually full: the reserve is what start-up, reconcile,
// the journal, the audit log's checkpoints, reads and restores need, and a
// full filesystem would take it from them.

// DefaultSpaceCacheTTL is how long a free-space reading is reused: statfs
// is cheap, but not free at every upload of a busy vault.
const DefaultSpaceCacheTTL = time.Second

// Space is the size of the filesystem holding the data directory and the
// bytes on it available to the vault.
type Space struct {
	Free  int64
	Total int64
}

// Reserve is the free space kept back from new content: Bytes, or, if
// Percent is set, that share of the filesystem's size.
type Reserve struct {
	Bytes   int64
	Percent float64
}

// Of returns the reserve in bytes on a filesystem of total bytes.
func (r Reserve) Of(total int64) int64 {
	if r.Percent > 0 {
		return int64(math.Ceil(float64(total) * r.Percent / 100))
	}
	return r.Bytes
}

func (r Reserve) String() string {
	if r.Percent > 0 {
		return fmt.Sprintf("%g%%", r.Percent)
	}
	return fmt.Sprintf("%d bytes", r.Bytes)
}

// SpaceStatus is the free-space check as /readyz reports it.
type SpaceStatus struct {
	// Checked is false when the store has no way to read free space
	// (Options.FreeSpace is nil): nothing is refused for want of it.
	Checked bool
	Free    int64
	Total   int64
	Reserve int64
	// Err is why free space could not be read, if it could not.
	Err error
	// ReadOnly is why new content is refused whatever the free space says
	// (see SetReadOnly), if it is.
	ReadOnly error
}

// OK reports whether new content is admitted: free space above the reserve
// (or not checked), and not read-only. A failed statfs does not refuse
// uploads (the write would report its own error) but is not OK for
// readiness.
func (st SpaceStatus) OK() bool {
	return st.ReadOnly == nil && st.Err == nil && (!st.Checked || st.Free > st.Reserve)
}

// NoSpace reports whether err means the data directory is short of space:
// the filesystem is full (ENOSPC), a quota is reached (EDQUOT), or free
// space is below the reserve. It passes once space is freed.
func NoSpace(err error) bool {
	return errors.Is(err, ErrInsufficientStorage) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// spaceGuard caches the last free-space reading and holds the read-only
// state.
type spaceGuard struct {
	mu       sync.Mutex
	at       time.Time
	space    Space
	err      error
	readOnly error
}

// SpaceStatus returns the free-space check, from a reading at most
// Options.SpaceCacheTTL old.
func (s *Store) SpaceStatus() SpaceStatus {
	g := &s.space
	g.mu.Lock()
	defer g.mu.Unlock()
	st := SpaceStatus{ReadOnly: g.readOnly}
	if s.opts.FreeSpace == nil {
		return st
	}
	now := s.clk.Now()
	if g.at.IsZero() || now.Sub(g.at) >= s.opts.SpaceCacheTTL || now.Before(g.at) {
		g.space, g.err = s.opts.FreeSpace()
		g.at = now
	}
	st.Checked = true
	st.Free, st.Total, st.Err = g.space.Free, g.space.Total, g.err
	st.Reserve = s.opts.Reserve.Of(g.space.Total)
	return st
}

// SetReadOnly makes the store refuse new content with
// ErrInsufficientStorage, for the reason given, until it is called with
// nil: `vault serve` sets it when start-up could not finish on a full
// disk, and clears it once it has.
func (s *Store) SetReadOnly(reason error) {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	s.space.readOnly = reason
}

// admitContent refuses new content, before anything is read or written,
// while the store is read-only or free space is below the reserve.
func (s *Store) admitContent(ctx context.Context) error {
	st := s.SpaceStatus()
	if st.ReadOnly == nil {
		// Read-only (507) says more than "starting" (503): it lasts until
		// an operator frees space.
		if err := s.writeHold(); err != nil {
			return err
		}
	}
	switch {
	case st.ReadOnly != nil:
		s.metrics.spaceRefusals.Inc()
		// The reason is text only: its causes must not turn the 507 into
		// something else.
		return fmt.Errorf("store: new content refused while read-only (%v): %w", st.ReadOnly, ErrInsufficientStorage)
	case st.Err != nil:
		// Cannot tell: let the write go on and fail on its own if the
		// disk is full. The failure is reported by /readyz.
		s.log.DebugContext(ctx, "free space unknown; admitting the upload", "err", st.Err)
		return nil
	case st.Checked && st.Free <= st.Reserve:
		s.metrics.spaceRefusals.Inc()
		return fmt.Errorf("store: %d bytes free, at or below the reserve of %d (%s): %w",
			st.Free, st.Reserve, s.opts.Reserve, ErrInsufficientStorage)
	}
	return nil
}
