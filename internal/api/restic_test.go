package api

import (
	"fmt"
	"testing"

	"github.com/wormvault/wormvault/internal/restic"
	"github.com/wormvault/wormvault/internal/store"
)

// The rows errors.go has for the restic protocol, bare and wrapped.
func TestResticErrorStatus(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{store.ErrNotDeletable, 403, "not_deletable"},
		{restic.ErrRangeNotSatisfiable, 416, "range_not_satisfiable"},
		{restic.ErrMethodNotAllowed, 405, "method_not_allowed"},
	} {
		for _, err := range []error{c.err, fmt.Errorf("store: delete restic data file x of r: %w", c.err)} {
			if status, code := errorStatus(err); status != c.status || code != c.code {
				t.Errorf("errorStatus(%v) = %d %q, want %d %q", err, status, code, c.status, c.code)
			}
		}
	}
}
