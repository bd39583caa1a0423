// Package chunk defines the vault's content address: a BLAKE3-256 hash,
// its one canonical text form, and readers that verify content against it.
//
// It is the leaf of the dependency graph and imports only blake3.
package chunk

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/zeebo/blake3"
)

// Size is the length of a Hash in bytes.
const Size = 32

// ErrHashMismatch is returned when content does not hash to the address it
// was stored or requested under.
var ErrHashMismatch = errors.New("chunk: content does not match its hash")

// ErrInvalidHash is returned by ParseHash for anything that is not the
// canonical spelling of a hash.
var ErrInvalidHash = errors.New("chunk: invalid hash")

// Hash is the BLAKE3-256 digest of a chunk's content, and its address.
type Hash [Size]byte

// ParseHash parses the canonical text form of a hash: exactly 64 lowercase
// hexadecimal digits. Uppercase, prefixes and any other spelling are refused
// so that one chunk can never be reached under two names, and so that no
// path component can ever be derived from unchecked input.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*Size {
		return h, fmt.Errorf("%w: want %d lowercase hex digits, got %d characters", ErrInvalidHash, 2*Size, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return h, fmt.Errorf("%w: character %d is not a lowercase hex digit", ErrInvalidHash, i)
		}
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("%w: %w", ErrInvalidHash, err)
	}
	return h, nil
}

// FromBytes converts a 32-byte slice (as stored in the index) to a Hash.
func FromBytes(b []byte) (Hash, error) {
	var h Hash
	if len(b) != Size {
		return h, fmt.Errorf("%w: %d bytes", ErrInvalidHash, len(b))
	}
	copy(h[:], b)
	return h, nil
}

// String returns the canonical text form: 64 lowercase hex digits.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText implements encoding.TextMarshaler with the canonical form.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts only the
// canonical form.
func (h *Hash) UnmarshalText(b []byte) error {
	p, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = p
	return nil
}

// Sum returns the hash of b.
func Sum(b []byte) Hash {
	return Hash(blake3.Sum256(b))
}

// NewHasher returns a streaming BLAKE3-256 hasher.
func NewHasher() hash.Hash { return blake3.New() }

// SumOf returns the hash of a hasher made by NewHasher.
func SumOf(hw hash.Hash) Hash {
	var h Hash
	hw.Sum(h[:0])
	return h
}

// VerifyingReader passes r through and, at EOF, checks that everything read
// hashes to want. If not, the final Read returns ErrHashMismatch instead of
// io.EOF, so a consumer that reads to the end can never mistake corrupt
// content for good.
type VerifyingReader struct {
	r    io.Reader
	want Hash
	hw   hash.Hash
	n    int64
}

// NewVerifyingReader returns a reader that verifies r against want.
func NewVerifyingReader(r io.Reader, want Hash) *VerifyingReader {
	return &VerifyingReader{r: r, want: want, hw: blake3.New()}
}

// Read implements io.Reader.
func (v *VerifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.hw.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF && SumOf(v.hw) != v.want {
		return n, fmt.Errorf("chunk %s: %w", v.want, ErrHashMismatch)
	}
	return n, err
}

// N returns the number of bytes read so far.
func (v *VerifyingReader) N() int64 { return v.n }
