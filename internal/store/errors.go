package store

import (
	"errors"
	"fmt"

	"github.com/wormvault/wormvault/internal/chunk"
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
	// ErrStarting: the vault is starting; reads are served, but new
	// content waits until the start-up reconcile has checked the pack
	// tails (online.go). Retry shortly.
	ErrStarting = errors.New("store: starting")
	// ErrCorrupt: stored content no longer matches its hash.
	ErrCorrupt = errors.New("store: stored content is corrupt")
	// ErrContentMissing: the index has a row whose content is gone (data
	// loss, reported loudly).
	ErrContentMissing = errors.New("store: indexed content is missing")
	// ErrSelfApproval: the requester of a deletion tried to approve it.
	ErrSelfApproval = errors.New("store: the requester cannot approve their own deletion request")
	// ErrClockSkew: the server's and the database's clocks disagree, so
	// nothing time-locked is executed.
	ErrClockSkew = errors.New("store: server and database clocks disagree")
	// ErrIntegrity: the index disagrees with the data directory's journal,
	// or the audit log does not extend what the vault signed: an alarm,
	// never something to retry.
	ErrIntegrity = errors.New("store: integrity check failed")
	// ErrDamaged: the chunk is indexed but its stored copy was found
	// damaged; it awaits a re-upload and is reported as not stored.
	ErrDamaged = errors.New("store: chunk is damaged and awaits a re-upload")
	// ErrTooLarge: a chunk over the configured maximum size.
	ErrTooLarge = errors.New("store: chunk too large")
	// ErrInsufficientStorage: the data directory's free space is below
	// the reserve (or the filesystem is full), so new content is refused
	// until space is freed; reads and everything else go on.
	ErrInsufficientStorage = errors.New("store: insufficient storage")
	// ErrSignerNotCaller: a signed request, approval or cancel whose signer
	// is not the admin the calling token names. One insider's token and
	// another admin's stolen key must not make two approvals.
	ErrSignerNotCaller = errors.New("store: the signer is not the admin the token names")
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

// ErrRequiresApproval: the action is destructive and goes through the
// multi-party approval of a deletion request, which it cannot bypass (for
// now: releasing a legal hold).
var ErrRequiresApproval = errors.New("store: requires approval through a deletion request")

// MissingChunksError reports that a snapshot or hold names chunks that are
// not stored. Hashes lists the first of them, in hash order (at most
// MaxMissingReported); Total counts them all.
type MissingChunksError struct {
	Hashes []chunk.Hash
	Total  int64
}

// MaxMissingReported bounds MissingChunksError.Hashes, so that the error
// stays small whatever the snapshot's size.
const MaxMissingReported = 1000

func (e *MissingChunksError) Error() string {
	if len(e.Hashes) == 0 {
		return fmt.Sprintf("store: %d referenced chunks are not stored", e.Total)
	}
	return fmt.Sprintf("store: %d referenced chunks are not stored, first %s", e.Total, e.Hashes[0])
}
