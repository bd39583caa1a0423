package store

import (
	"errors"
	"fmt"
)

// The store's sentinel errors. The API maps each to one HTTP status in one
// place (internal/api/errors.go).
var (
	// ErrNotFound: the chunk, token or record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: the change contradicts the current state.
	ErrConflict = errors.New("store: conflict")
	// ErrRetentionShortened: an attempt to move retain_until earlier.
	ErrRetentionShortened = errors.New("store: retention can only be extended")
	// ErrImmutable: an attempt to change a stored chunk's identity or to
	// delete it outside the deletion executor.
	ErrImmutable = errors.New("store: stored chunks are immutable")
	// ErrUnavailable: the index database cannot be reached; retry later.
	ErrUnavailable = errors.New("store: index unavailable")
	// ErrCorrupt: stored content no longer matches its hash.
	ErrCorrupt = errors.New("store: stored content is corrupt")
	// ErrContentMissing: the index has a row whose content is gone (data
	// loss, reported loudly).
	ErrContentMissing = errors.New("store: indexed content is missing")
	// ErrTooLarge: a chunk over the configured maximum size.
	ErrTooLarge = errors.New("store: chunk too large")
)

// InvalidError reports bad input: which field and why.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("store: invalid %s: %s", e.Field, e.Reason)
}

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
