package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Version is the only manifest version this vault reads and writes.
const Version = 1

// ErrInvalid is wrapped by every Parse error: the bytes are not a valid
// manifest.
var ErrInvalid = errors.New("manifest: not a valid manifest")

// Manifest is one node of a snapshot's manifest tree.
type Manifest struct {
	// Chunks are the chunks this manifest references directly: content, and
	// any metadata the agent keeps in chunks of its own (file trees, modes,
	// names). The vault retains them and never interprets them.
	Chunks []chunk.Hash
	// Children are the manifests below this one.
	Children []chunk.Hash
}

// wire is the JSON shape written by Marshal.
type wire struct {
	Version  int          `json:"version"`
	Chunks   []chunk.Hash `json:"chunks"`
	Children []chunk.Hash `json:"children"`
}

// Marshal returns m's canonical encoding: version, chunks, children, in that
// order, with empty lists written as [].
func (m Manifest) Marshal() ([]byte, error) {
	w := wire{Version: Version, Chunks: m.Chunks, Children: m.Children}
	if w.Chunks == nil {
		w.Chunks = []chunk.Hash{}
	}
	if w.Children == nil {
		w.Children = []chunk.Hash{}
	}
	return json.Marshal(w)
}

// Parse decodes a manifest. It accepts exactly one JSON object with the
// fields "version" (the integer 1, required), "chunks" and "children"
// (arrays of hashes in their canonical 64-digit lowercase form, optional,
// possibly empty), and nothing else: no unknown or repeated field, no
// trailing data. Every error wraps ErrInvalid.
func Parse(b []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return m, err
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return m, invalid("%v", err)
		}
		key, _ := tok.(string) // object keys are always strings
		if seen[key] {
			return m, invalid("field %q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "version":
			tok, err := dec.Token()
			if err != nil {
				return m, invalid("%v", err)
			}
			if n, ok := tok.(json.Number); !ok || n.String() != "1" {
				return m, invalid("version must be %d, got %v", Version, tok)
			}
		case "chunks":
			if m.Chunks, err = hashList(dec, key); err != nil {
				return m, err
			}
		case "children":
			if m.Children, err = hashList(dec, key); err != nil {
				return m, err
			}
		default:
			return m, invalid("unknown field %q", key)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return m, err
	}
	if !seen["version"] {
		return m, invalid("version is missing")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return m, invalid("data after the manifest object")
	}
	return m, nil
}

func hashList(dec *json.Decoder, field string) ([]chunk.Hash, error) {
	if err := expectDelim(dec, '['); err != nil {
		return nil, fmt.Errorf("%w (field %q)", err, field)
	}
	out := []chunk.Hash{}
	for i := 0; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalid("%s[%d]: %v", field, i, err)
		}
		s, ok := tok.(string)
		if !ok {
			return nil, invalid("%s[%d]: want a hash string, got %v", field, i, tok)
		}
		h, err := chunk.ParseHash(s)
		if err != nil {
			return nil, invalid("%s[%d]: %v", field, i, err)
		}
		out = append(out, h)
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, err
	}
	return out, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return invalid("want %q: %v", want, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return invalid("want %q, got %v", want, tok)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
