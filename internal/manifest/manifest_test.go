package manifest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
)

func TestParse(t *testing.T) {
	a, b := chunk.Sum([]byte("a")), chunk.Sum([]byte("b"))
	tests := []struct {
		name         string
		in           string
		wantChunks   []chunk.Hash
		wantChildren []chunk.Hash
		wantErr      bool
	}{
		{name: "full", in: `{"version":1,"chunks":["` + a.String() + `"],"children":["` + b.String() + `"]}`,
			wantChunks: []chunk.Hash{a}, wantChildren: []chunk.Hash{b}},
		{name: "any field order and spacing", in: " {\n \"children\" : [], \"chunks\": [\"" + a.String() + "\"], \"version\": 1 }\n",
			wantChunks: []chunk.Hash{a}, wantChildren: []chunk.Hash{}},
		{name: "lists optional", in: `{"version":1}`},
		{name: "duplicates kept", in: `{"version":1,"chunks":["` + a.String() + `","` + a.String() + `"]}`,
			wantChunks: []chunk.Hash{a, a}},
		{name: "empty", in: ``, wantErr: true},
		{name: "not json", in: `hello`, wantErr: true},
		{name: "array", in: `[]`, wantErr: true},
		{name: "version missing", in: `{"chunks":[]}`, wantErr: true},
		{name: "version 2", in: `{"version":2}`, wantErr: true},
		{name: "version 1.0", in: `{"version":1.0}`, wantErr: true},
		{name: "version string", in: `{"version":"1"}`, wantErr: true},
		{name: "unknown field", in: `{"version":1,"files":[]}`, wantErr: true},
		{name: "repeated field", in: `{"version":1,"chunks":[],"chunks":["` + a.String() + `"]}`, wantErr: true},
		{name: "chunks null", in: `{"version":1,"chunks":null}`, wantErr: true},
		{name: "chunks not a list", in: `{"version":1,"chunks":"` + a.String() + `"}`, wantErr: true},
		{name: "uppercase hash", in: `{"version":1,"chunks":["` + strings.ToUpper(a.String()) + `"]}`, wantErr: true},
		{name: "short hash", in: `{"version":1,"children":["` + a.String()[1:] + `"]}`, wantErr: true},
		{name: "number in list", in: `{"version":1,"chunks":[1]}`, wantErr: true},
		{name: "nested list", in: `{"version":1,"chunks":[[]]}`, wantErr: true},
		{name: "trailing data", in: `{"version":1} {}`, wantErr: true},
		{name: "truncated", in: `{"version":1,"chunks":["` + a.String() + `"`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse(%q) error = %v, want ErrInvalid", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tt.in, err)
			}
			if !slices.Equal(m.Chunks, tt.wantChunks) || !slices.Equal(m.Children, tt.wantChildren) {
				t.Errorf("Parse(%q) = %v / %v, want %v / %v", tt.in, m.Chunks, m.Children, tt.wantChunks, tt.wantChildren)
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	a, b := chunk.Sum([]byte("a")), chunk.Sum([]byte("b"))
	for _, m := range []Manifest{{}, {Chunks: []chunk.Hash{a, b}}, {Chunks: []chunk.Hash{a}, Children: []chunk.Hash{b}}} {
		enc, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(enc), `{"version":1,"chunks":[`) {
			t.Errorf("Marshal(%v) = %s, want version then chunks first", m, enc)
		}
		got, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Marshal(%v)) error = %v", m, err)
		}
		if !slices.Equal(got.Chunks, orEmpty(m.Chunks)) || !slices.Equal(got.Children, orEmpty(m.Children)) {
			t.Errorf("round trip of %v gave %v", m, got)
		}
	}
}

func orEmpty(hs []chunk.Hash) []chunk.Hash {
	if hs == nil {
		return []chunk.Hash{}
	}
	return hs
}
