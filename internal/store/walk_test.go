package store

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

// The walker is tested here on made-up trees, because some of the trees it
// must refuse cannot be built from real chunks: a cycle would need a manifest
// that contains its own hash (or an ancestor's).
func TestWalker(t *testing.T) {
	h := func(s string) chunk.Hash { return chunk.Sum([]byte(s)) }
	tree := func(m map[string]manifest.Manifest) readManifestFunc {
		byHash := map[chunk.Hash]manifest.Manifest{}
		for k, v := range m {
			byHash[h(k)] = v
		}
		return func(_ context.Context, x chunk.Hash) (manifest.Manifest, bool, error) {
			m, ok := byHash[x]
			return m, ok, nil
		}
	}
	tests := []struct {
		name         string
		tree         map[string]manifest.Manifest
		depth, max   int
		wantEmit     []chunk.Hash
		wantMissing  []chunk.Hash
		wantInvalid  bool
		wantManifest int
	}{
		{
			name: "tree in order",
			tree: map[string]manifest.Manifest{
				"root": {Chunks: []chunk.Hash{h("a")}, Children: []chunk.Hash{h("m1"), h("m2")}},
				"m1":   {Chunks: []chunk.Hash{h("b"), h("c")}},
				"m2":   {Chunks: []chunk.Hash{h("d")}},
			},
			depth: 32, max: 100,
			wantEmit:     []chunk.Hash{h("root"), h("a"), h("m1"), h("b"), h("c"), h("m2"), h("d")},
			wantManifest: 3,
		},
		{
			name: "shared subtree walked once",
			tree: map[string]manifest.Manifest{
				"root": {Children: []chunk.Hash{h("m1"), h("m1")}},
				"m1":   {Chunks: []chunk.Hash{h("b")}},
			},
			depth: 32, max: 100,
			wantEmit:     []chunk.Hash{h("root"), h("m1"), h("b")},
			wantManifest: 2,
		},
		{
			name: "missing child reported, not descended",
			tree: map[string]manifest.Manifest{
				"root": {Chunks: []chunk.Hash{h("a")}, Children: []chunk.Hash{h("gone")}},
			},
			depth: 32, max: 100,
			wantEmit:     []chunk.Hash{h("root"), h("a"), h("gone")},
			wantMissing:  []chunk.Hash{h("gone")},
			wantManifest: 1,
		},
		{
			name:  "self cycle",
			tree:  map[string]manifest.Manifest{"root": {Children: []chunk.Hash{h("root")}}},
			depth: 32, max: 100, wantInvalid: true,
		},
		{
			name: "longer cycle",
			tree: map[string]manifest.Manifest{
				"root": {Children: []chunk.Hash{h("m1")}},
				"m1":   {Children: []chunk.Hash{h("m2")}},
				"m2":   {Children: []chunk.Hash{h("m1")}},
			},
			depth: 32, max: 100, wantInvalid: true,
		},
		{
			name: "too deep",
			tree: map[string]manifest.Manifest{
				"root": {Children: []chunk.Hash{h("m1")}},
				"m1":   {Children: []chunk.Hash{h("m2")}},
				"m2":   {},
			},
			depth: 2, max: 100, wantInvalid: true,
		},
		{
			name: "exactly deep enough",
			tree: map[string]manifest.Manifest{
				"root": {Children: []chunk.Hash{h("m1")}},
				"m1":   {},
			},
			depth: 2, max: 100, wantEmit: []chunk.Hash{h("root"), h("m1")}, wantManifest: 2,
		},
		{
			name: "too many manifest references, shared ones counted",
			tree: map[string]manifest.Manifest{
				"root": {Children: []chunk.Hash{h("m1"), h("m1"), h("m1")}},
				"m1":   {},
			},
			depth: 32, max: 3, wantInvalid: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWalker(tree(tt.tree), tt.depth, tt.max)
			var got []chunk.Hash
			err := w.walk(context.Background(), h("root"), func(x chunk.Hash) error {
				got = append(got, x)
				return nil
			})
			var inv *InvalidError
			if tt.wantInvalid {
				if !errors.As(err, &inv) {
					t.Fatalf("walk error = %v, want InvalidError", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("walk error = %v", err)
			}
			if !slices.Equal(got, tt.wantEmit) {
				t.Errorf("emitted %v, want %v", got, tt.wantEmit)
			}
			if !slices.Equal(w.missing, tt.wantMissing) {
				t.Errorf("missing %v, want %v", w.missing, tt.wantMissing)
			}
			if w.manifests() != tt.wantManifest {
				t.Errorf("manifests() = %d, want %d", w.manifests(), tt.wantManifest)
			}
		})
	}
}

func TestWalkerStopsOnEmitError(t *testing.T) {
	boom := errors.New("boom")
	w := newWalker(func(context.Context, chunk.Hash) (manifest.Manifest, bool, error) {
		return manifest.Manifest{Chunks: []chunk.Hash{{1}, {2}}}, true, nil
	}, 32, 100)
	n := 0
	err := w.walk(context.Background(), chunk.Hash{}, func(chunk.Hash) error {
		n++
		if n == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n != 2 {
		t.Errorf("walk = %v after %d emits, want boom after 2", err, n)
	}
}
