package audit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrCheckpoint: a checkpoint that does not parse, has the wrong origin,
// or is not signed by the pinned key.
var ErrCheckpoint = errors.New("audit: bad checkpoint")

// Checkpoint is the body of a C2SP tlog-checkpoint: the log's origin, its
// size and the RFC 6962 root hash of its first Size entries.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Text is the checkpoint body exactly as signed.
func (c Checkpoint) Text() string {
	return c.Origin + "\n" + strconv.FormatInt(c.Size, 10) + "\n" + c.Root.String() + "\n"
}

// Origin is the log origin (and checkpoint key name) of a vault.
func Origin(vaultID string) string { return "wormvault/" + vaultID }

// ParseCheckpoint reads a checkpoint body strictly: three lines, a
// decimal size without leading zeros, a base64 SHA-256 root. Extension
// lines are refused (the vault never writes any).
func ParseCheckpoint(text string) (Checkpoint, error) {
	var c Checkpoint
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return c, fmt.Errorf("%w: want origin, size and root lines", ErrCheckpoint)
	}
	c.Origin = lines[0]
	if c.Origin == "" || strings.ContainsAny(c.Origin, " +\t") {
		return c, fmt.Errorf("%w: origin %q", ErrCheckpoint, c.Origin)
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return c, fmt.Errorf("%w: size %q", ErrCheckpoint, lines[1])
	}
	c.Size = n
	if c.Root, err = tlog.ParseHash(lines[2]); err != nil {
		return c, fmt.Errorf("%w: root %q", ErrCheckpoint, lines[2])
	}
	return c, nil
}

// Sign returns c as a signed note.
func Sign(c Checkpoint, s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.Text()}, s)
}

// OpenCheckpoint verifies msg's signature with v (the pinned key), parses
// the body and checks that its origin is the key's name.
func OpenCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: signature: %w", ErrCheckpoint, err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("%w: origin %q, pinned key is for %q", ErrCheckpoint, c.Origin, v.Name())
	}
	return c, nil
}
