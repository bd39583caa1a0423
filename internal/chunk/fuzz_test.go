package chunk

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzParseHash attacks the one parser every hash from the network goes
// through: whatever it accepts must be the canonical spelling (so no chunk
// has two names, and no path is built from unchecked text), and everything
// else must be ErrInvalidHash.
func FuzzParseHash(f *testing.F) {
	f.Add(Sum([]byte("seed")).String())
	f.Add(strings.ToUpper(Sum([]byte("seed")).String()))
	f.Add("../" + Sum([]byte("seed")).String()[3:])
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHash(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidHash) {
				t.Fatalf("ParseHash(%q): error %v does not wrap ErrInvalidHash", s, err)
			}
			return
		}
		if h.String() != s {
			t.Fatalf("ParseHash(%q) accepted a non-canonical spelling (canonical %s)", s, h)
		}
		var u Hash
		if err := u.UnmarshalText([]byte(s)); err != nil || u != h {
			t.Fatalf("UnmarshalText(%q) = %v, %v; ParseHash gave %v", s, u, err, h)
		}
	})
}

// FuzzVerifyingReader: content reaches the reader's caller as a success
// only if it hashes to the address it was read under.
func FuzzVerifyingReader(f *testing.F) {
	f.Add([]byte("chunk"), []byte("chunk"))
	f.Add([]byte("chunk"), []byte("chunK"))
	f.Add([]byte{}, []byte{0})
	f.Fuzz(func(t *testing.T, want, got []byte) {
		b, err := io.ReadAll(NewVerifyingReader(bytes.NewReader(got), Sum(want)))
		if bytes.Equal(want, got) {
			if err != nil || !bytes.Equal(b, got) {
				t.Fatalf("matching content refused: %v", err)
			}
			return
		}
		if !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("content %q read under the address of %q: err %v, want ErrHashMismatch", got, want, err)
		}
	})
}
