package audit

import "golang.org/x/mod/sumdb/tlog"

// Tree recomputes an RFC 6962 root from leaves appended in order, keeping
// only the roots of its perfect subtrees (O(log n) memory): the "compact
// range" of [0, n).
type Tree struct {
	n      int64
	hashes []tlog.Hash
	sizes  []int64
}

// Append adds a leaf hash (tlog.RecordHash of the entry's bytes).
func (t *Tree) Append(h tlog.Hash) {
	t.hashes = append(t.hashes, h)
	t.sizes = append(t.sizes, 1)
	t.n++
	for k := len(t.sizes); k >= 2 && t.sizes[k-1] == t.sizes[k-2]; k = len(t.sizes) {
		t.hashes[k-2] = tlog.NodeHash(t.hashes[k-2], t.hashes[k-1])
		t.sizes[k-2] *= 2
		t.hashes, t.sizes = t.hashes[:k-1], t.sizes[:k-1]
	}
}

// Size is the number of leaves.
func (t *Tree) Size() int64 { return t.n }

// Root is the tree hash of the leaves so far; like tlog.TreeHash, the
// empty tree's is all zeros.
func (t *Tree) Root() tlog.Hash {
	if t.n == 0 {
		return tlog.Hash{}
	}
	h := t.hashes[len(t.hashes)-1]
	for i := len(t.hashes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(t.hashes[i], h)
	}
	return h
}
