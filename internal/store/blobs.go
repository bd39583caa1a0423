package store

import (
	"context"
	"io"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Blobs holds chunk content. The local disk implementation lives in
// store/disk; an object store with Object Lock is the planned second one.
// Every implementation must pass store/blobtest.
//
// Blobs knows nothing of retention or the index: the Store decides what may
// be written or removed and keeps the index in step.
type Blobs interface {
	// Put streams r into the blob store under h. It hashes while writing and
	// returns an error wrapping chunk.ErrHashMismatch, leaving nothing behind,
	// if the content does not hash to h. It returns only once the content is
	// durable (file and directory synced). Writing a blob that already exists
	// is allowed and leaves one intact copy; concurrent Puts of the same blob
	// all succeed. size is the number of bytes written.
	Put(ctx context.Context, h chunk.Hash, r io.Reader) (size int64, err error)

	// Stage is Put without the publishing: it streams r to a temporary
	// place, verifies it against h and makes it durable, with Put's errors
	// and nothing left behind on error, but h is not visible until the
	// returned StagedBlob is published. It lets the store stream a slow
	// body without holding the hash's lock, and take the lock only around
	// publishing and indexing.
	Stage(ctx context.Context, h chunk.Hash, r io.Reader) (StagedBlob, error)

	// Open returns the blob's content and size. It returns an error wrapping
	// ErrNotFound if there is no such blob. The content is not verified:
	// callers verify.
	Open(ctx context.Context, h chunk.Hash) (rc io.ReadSeekCloser, size int64, err error)

	// Stat returns the blob's size, or an error wrapping ErrNotFound.
	Stat(ctx context.Context, h chunk.Hash) (size int64, err error)

	// Walk calls fn for every stored blob, in no particular order. It returns
	// fn's first error, or ctx.Err() if ctx is done.
	Walk(ctx context.Context, fn func(h chunk.Hash, size int64) error) error

	// Quarantine moves a blob whose content is corrupt out of the store,
	// keeping it for inspection. It returns an error wrapping ErrNotFound if
	// there is no such blob.
	Quarantine(ctx context.Context, h chunk.Hash) error

	// Remove deletes a blob durably: once it returns, a crash cannot bring
	// the blob back. Removing an absent blob is not an error (the deletion
	// executor is rerun after a crash). Only the deletion executor calls it.
	Remove(ctx context.Context, h chunk.Hash) error

	// CleanTemp removes leftovers of interrupted writes and reports how many
	// it removed. It must only be called when no Put is in progress.
	CleanTemp(ctx context.Context) (removed int, err error)
}

// StagedBlob is verified, durable content waiting to be published under
// its hash. Call Discard when done with it (deferred is fine): it removes
// the content unless Publish succeeded.
type StagedBlob interface {
	// Size is the content's length in bytes.
	Size() int64
	// Publish makes the blob visible under its hash, durably, as Put's last
	// step; it fails without publishing if ctx is done. Publishing over an
	// existing blob leaves one intact copy. It may be called once.
	Publish(ctx context.Context) error
	// Discard removes the staged content if it was not published.
	Discard()
}
