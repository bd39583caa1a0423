package manifest

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
)

// FuzzParse attacks the manifest parser with whatever an agent may upload
// as a snapshot's root: it must never panic, every refusal must wrap
// ErrInvalid, and whatever it accepts must survive its canonical encoding
// unchanged (so the vault retains exactly the chunks the agent named).
func FuzzParse(f *testing.F) {
	a, b := chunk.Sum([]byte("a")), chunk.Sum([]byte("b"))
	for _, m := range []Manifest{{}, {Chunks: []chunk.Hash{a, b}}, {Chunks: []chunk.Hash{a}, Children: []chunk.Hash{b}}} {
		enc, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte(`{"version":1,"chunks":[],"chunks":[]}`))
	f.Add([]byte(`{"version":1.0}`))
	f.Add([]byte(`{"version":1} {}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrInvalid", in, err)
			}
			return
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed manifest: %v", err)
		}
		again, err := Parse(enc)
		if err != nil {
			t.Fatalf("the canonical encoding %q of accepted %q does not parse: %v", enc, in, err)
		}
		if !slices.Equal(again.Chunks, m.Chunks) || !slices.Equal(again.Children, m.Children) {
			t.Fatalf("round trip changed the manifest: %q → %+v → %+v", in, m, again)
		}
		if enc2, _ := again.Marshal(); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not canonical: %q then %q", enc, enc2)
		}
	})
}
