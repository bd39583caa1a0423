package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Keyset pagination cursors. A cursor is opaque to clients: base64url of
//
//	version (1 byte) | kind (1) | query digest (8) | key (kind-specific) | check (8)
//
// where the query digest binds the cursor to the filters of the query that
// produced it and check is the first 8 bytes of SHA-256 over everything
// before it. It is not a secret or a signature (a caller may read any page
// anyway); it makes a cursor that was altered, truncated, or taken from
// another list or another filter fail with a clear InvalidError instead of
// silently returning some other page.
const cursorVersion = 1

type cursorKind byte

const (
	cursorSnapshots cursorKind = iota + 1
	cursorExpiringSnapshots
	cursorExpiringChunks
	cursorHolds
)

// cursorKey is the last row of a page. Only the fields of its kind are
// encoded.
type cursorKey struct {
	At   time.Time  // snapshots: taken_at; expiring lists: retain_until
	ID   int64      // snapshots, holds
	Hash chunk.Hash // expiring chunks
}

func (k cursorKind) keyLen() int {
	switch k {
	case cursorSnapshots, cursorExpiringSnapshots:
		return 8 + 8
	case cursorExpiringChunks:
		return 8 + chunk.Size
	case cursorHolds:
		return 8
	}
	return -1
}

func queryDigest(query string) []byte {
	sum := sha256.Sum256([]byte(query))
	return sum[:8]
}

func encodeCursor(kind cursorKind, query string, k cursorKey) string {
	b := []byte{cursorVersion, byte(kind)}
	b = append(b, queryDigest(query)...)
	switch kind {
	case cursorSnapshots, cursorExpiringSnapshots:
		b = binary.BigEndian.AppendUint64(b, uint64(k.At.UnixMicro()))
		b = binary.BigEndian.AppendUint64(b, uint64(k.ID))
	case cursorExpiringChunks:
		b = binary.BigEndian.AppendUint64(b, uint64(k.At.UnixMicro()))
		b = append(b, k.Hash[:]...)
	case cursorHolds:
		b = binary.BigEndian.AppendUint64(b, uint64(k.ID))
	}
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(append(b, sum[:8]...))
}

// decodeCursor returns the key in s, which must have been made by
// encodeCursor for the same kind and query.
func decodeCursor(kind cursorKind, query, s string) (cursorKey, error) {
	var k cursorKey
	bad := invalid("cursor", "malformed or altered; start again without a cursor")
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != 2+8+kind.keyLen()+8 {
		return k, bad
	}
	body, check := b[:len(b)-8], b[len(b)-8:]
	sum := sha256.Sum256(body)
	if !bytes.Equal(sum[:8], check) || body[0] != cursorVersion {
		return k, bad
	}
	if cursorKind(body[1]) != kind || !bytes.Equal(body[2:10], queryDigest(query)) {
		return k, invalid("cursor", "belongs to a different list or filter; start again without a cursor")
	}
	key := body[10:]
	switch kind {
	case cursorSnapshots, cursorExpiringSnapshots:
		k.At = time.UnixMicro(int64(binary.BigEndian.Uint64(key))).UTC()
		k.ID = int64(binary.BigEndian.Uint64(key[8:]))
	case cursorExpiringChunks:
		k.At = time.UnixMicro(int64(binary.BigEndian.Uint64(key))).UTC()
		copy(k.Hash[:], key[8:])
	case cursorHolds:
		k.ID = int64(binary.BigEndian.Uint64(key))
	}
	if k.ID < 0 {
		return k, bad
	}
	return k, nil
}

// Page limits shared by every list.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

func pageLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultPageLimit, nil
	case n < 0 || n > MaxPageLimit:
		return 0, invalid("limit", "must be 1 to %d", MaxPageLimit)
	}
	return n, nil
}
