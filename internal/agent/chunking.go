package agent

import (
	"context"

	"github.com/restic/chunker"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

// Content-defined chunking (restic/chunker: a Rabin fingerprint over a
// 64-byte window). A cut is made where the fingerprint's low AverageBits
// bits are zero, so chunks average 2^20 bytes (1 MiB) past the minimum,
// and never fall below MinChunkSize (except a file's last chunk) or exceed
// MaxChunkSize. Because cuts depend on content only, an insertion or a
// changed byte moves the boundaries of the chunks around it alone, and the
// rest of a file deduplicates against the previous push.
const (
	// Polynomial is the irreducible polynomial of degree 53 over GF(2) of
	// the fingerprint. It is fixed for every agent and every version: a
	// different polynomial cuts the same content elsewhere, and every
	// chunk would then be new once. (restic draws one at random per
	// repository to hide chunk boundaries from whoever stores the
	// encrypted chunks; the vault stores content in the clear and sees the
	// boundaries anyway, so a fixed public one costs nothing.) This is the
	// polynomial of restic/chunker's own tests; TestPolynomial checks
	// that it is irreducible and of degree 53.
	Polynomial = chunker.Pol(0x3DA3358B4DC173)
	// AverageBits sets the average chunk size past the minimum: 2^20.
	AverageBits = 20
	// MinChunkSize and MaxChunkSize bound a chunk.
	MinChunkSize = 512 << 10
	MaxChunkSize = 8 << 20
)

// newChunker returns a chunker to Reset onto each file in turn; its
// tables are computed once per process.
func newChunker() *chunker.Chunker {
	c := chunker.NewWithBoundaries(nil, Polynomial, MinChunkSize, MaxChunkSize)
	c.SetAverageBits(AverageBits)
	return c
}

// Manifest tree shape. Nodes are cut by content too: after a hash whose
// first 10 bits are zero (one in 1024) once a node holds minFanout
// references, and always at maxFanout. An unchanged run of chunks then
// yields the same leaves as the previous push, which the vault already
// has; a leaf of 1024 hashes is about 67 KB, well under the vault's 16 MiB
// manifest limit, and the vault's limit of 100,000 manifests per snapshot
// allows some 10^8 chunks (100 TB at 1 MiB).
const (
	minFanout = 64
	maxFanout = 10_000
)

func cutAfter(h chunk.Hash) bool { return h[0] == 0 && h[1]&0xc0 == 0 }

// manifestBuilder streams chunk references into a manifest tree: leaves
// list chunks, inner nodes list leaves, and so on up.
type manifestBuilder struct {
	levels [][]chunk.Hash
	// emit takes a finished manifest node to upload.
	emit func(ctx context.Context, h chunk.Hash, data []byte) error
}

// add adds a chunk reference.
func (b *manifestBuilder) add(ctx context.Context, h chunk.Hash) error { return b.addAt(ctx, 0, h) }

func (b *manifestBuilder) addAt(ctx context.Context, level int, h chunk.Hash) error {
	for len(b.levels) <= level {
		b.levels = append(b.levels, nil)
	}
	b.levels[level] = append(b.levels[level], h)
	if n := len(b.levels[level]); n >= maxFanout || n >= minFanout && cutAfter(h) {
		return b.closeLevel(ctx, level)
	}
	return nil
}

// closeLevel emits the node being filled at level and references it one
// level up.
func (b *manifestBuilder) closeLevel(ctx context.Context, level int) error {
	var m manifest.Manifest
	if level == 0 {
		m.Chunks = b.levels[level]
	} else {
		m.Children = b.levels[level]
	}
	b.levels[level] = nil
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	h := chunk.Sum(data)
	if err := b.emit(ctx, h, data); err != nil {
		return err
	}
	return b.addAt(ctx, level+1, h)
}

// finish emits the partly filled nodes, bottom up, and returns the top
// level's references (fewer than maxFanout): the root's children.
func (b *manifestBuilder) finish(ctx context.Context) ([]chunk.Hash, error) {
	for level := 0; level < len(b.levels); level++ {
		// Level 0 lists chunks, so it is always closed into a leaf.
		if level > 0 && level == len(b.levels)-1 {
			return b.levels[level], nil
		}
		if len(b.levels[level]) > 0 {
			if err := b.closeLevel(ctx, level); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}
