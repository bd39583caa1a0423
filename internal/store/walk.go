package store

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

// Defaults for the snapshot fields of Options.
const (
	DefaultMaxManifestSize  = 16 << 20
	DefaultMaxManifestDepth = 32
	DefaultMaxManifests     = 100_000
	DefaultRetentionBatch   = 10_000
)

// readManifestFunc reads the manifest stored under h. found is false if no
// chunk h is stored: the walk then reports h as missing instead of
// descending into it.
type readManifestFunc func(ctx context.Context, h chunk.Hash) (m manifest.Manifest, found bool, err error)

// walker visits a manifest tree depth first and hands every hash it
// references, manifests included, to emit. Its memory is bounded by the
// limits, never by the number of references: it holds one manifest at a
// time, the pending child references (at most maxManifests) and the set of
// manifests already visited.
type walker struct {
	read         readManifestFunc
	maxDepth     int
	maxManifests int

	// done holds fully visited manifests: a manifest shared by two parents
	// (identical subtrees) is walked once.
	done map[chunk.Hash]struct{}
	// onPath holds the manifests between the root and the current one. With
	// content addressing a cycle would need a hash preimage, so meeting one
	// means the content is not what its hash says; it is refused all the
	// same rather than trusted to be impossible.
	onPath map[chunk.Hash]struct{}
	// missing are manifests that are not stored.
	missing []chunk.Hash
	refs    int // manifest references followed, shared ones counted each time
}

type walkStep struct {
	hash  chunk.Hash
	depth int
	exit  bool // leaving hash: its subtree is done
}

func newWalker(read readManifestFunc, maxDepth, maxManifests int) *walker {
	return &walker{
		read: read, maxDepth: maxDepth, maxManifests: maxManifests,
		done: map[chunk.Hash]struct{}{}, onPath: map[chunk.Hash]struct{}{},
	}
}

// walk visits the tree under root. It fails with an *InvalidError for a
// manifest that is not valid, a cycle, a tree deeper than maxDepth or one
// with more than maxManifests manifest references; with emit's error; or
// with a read error.
func (w *walker) walk(ctx context.Context, root chunk.Hash, emit func(chunk.Hash) error) error {
	stack := []walkStep{{hash: root, depth: 1}}
	w.refs = 1
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		st := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if st.exit {
			delete(w.onPath, st.hash)
			w.done[st.hash] = struct{}{}
			continue
		}
		if _, ok := w.onPath[st.hash]; ok {
			return invalid("manifest_root", "manifest %s is its own ancestor (a cycle)", st.hash)
		}
		if _, ok := w.done[st.hash]; ok {
			continue
		}
		if st.depth > w.maxDepth {
			return invalid("manifest_root", "manifest tree deeper than %d levels (at %s)", w.maxDepth, st.hash)
		}
		if err := emit(st.hash); err != nil {
			return err
		}
		m, found, err := w.read(ctx, st.hash)
		if err != nil {
			return err
		}
		if !found {
			w.missing = append(w.missing, st.hash)
			w.done[st.hash] = struct{}{}
			continue
		}
		for _, h := range m.Chunks {
			if err := emit(h); err != nil {
				return err
			}
		}
		w.refs += len(m.Children)
		if w.refs > w.maxManifests {
			return invalid("manifest_root", "more than %d manifest references in the tree", w.maxManifests)
		}
		w.onPath[st.hash] = struct{}{}
		stack = append(stack, walkStep{hash: st.hash, exit: true})
		for i := len(m.Children) - 1; i >= 0; i-- {
			stack = append(stack, walkStep{hash: m.Children[i], depth: st.depth + 1})
		}
	}
	return nil
}

// manifests returns how many distinct manifests the walk read.
func (w *walker) manifests() int { return len(w.done) - len(w.missing) }

// readManifest reads and parses the manifest stored as chunk h, looking its
// row up inside tx. It reads the content itself rather than through
// OpenChunk, whose row lookup would take a second pool connection while tx
// holds one: enough concurrent commits would then exhaust the pool and wait
// for each other forever.
func (s *Store) readManifest(ctx context.Context, tx pgx.Tx, h chunk.Hash) (manifest.Manifest, bool, error) {
	rows, _ := tx.Query(ctx, statChunkSQL, h[:])
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[chunkRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return manifest.Manifest{}, false, nil
	}
	if err != nil {
		return manifest.Manifest{}, false, dbErr(fmt.Sprintf("look up manifest %s", h), err)
	}
	c := row.chunk()
	if c.Size > s.opts.MaxManifestSize {
		return manifest.Manifest{}, false, invalid("manifest_root", "chunk %s is %d bytes; a manifest is at most %d", h, c.Size, s.opts.MaxManifestSize)
	}
	b, err := s.readVerified(ctx, c)
	if err != nil {
		return manifest.Manifest{}, false, err
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return manifest.Manifest{}, false, invalid("manifest_root", "chunk %s: %v", h, err)
	}
	return m, true, nil
}

// readVerified returns the whole content of the small chunk c, verified
// against its hash and size.
func (s *Store) readVerified(ctx context.Context, c Chunk) ([]byte, error) {
	var rc io.ReadCloser
	if c.packed() {
		r, _, err := s.openPacked(ctx, c, true) // verifies before returning
		if err != nil {
			return nil, err
		}
		rc = r
	} else {
		f, _, err := s.blobs.Open(ctx, c.Hash)
		if errors.Is(err, ErrNotFound) {
			s.metrics.contentMissing.Inc()
			s.log.ErrorContext(ctx, "data loss: indexed chunk has no content", "hash", c.Hash.String())
			return nil, fmt.Errorf("store: read manifest %s: %w", c.Hash, ErrContentMissing)
		}
		if err != nil {
			return nil, fmt.Errorf("store: read manifest %s: %w", c.Hash, err)
		}
		rc = readCloser{chunk.NewVerifyingReader(io.LimitReader(f, c.Size+1), c.Hash), f}
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil && int64(len(b)) != c.Size {
		err = fmt.Errorf("%d bytes, index says %d", len(b), c.Size)
	}
	if err != nil {
		s.metrics.readsRefused.Inc()
		s.log.ErrorContext(ctx, "corrupt manifest chunk refused", "hash", c.Hash.String(), "err", err)
		s.noteReadDamage(ctx, c, err.Error(), true)
		return nil, fmt.Errorf("store: read manifest %s: %w: %w", c.Hash, ErrCorrupt, err)
	}
	return b, nil
}
