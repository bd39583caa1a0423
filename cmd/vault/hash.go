package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/wormvault/wormvault/internal/chunk"
)

// runHash prints the BLAKE3 address of each file (or stdin for "-"), the
// name a chunk is stored under. It has no flags; "--" ends them, for a file
// whose name starts with "-".
func runHash(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("hash", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) == 0 {
		return errors.New("hash: want one or more files, or - for stdin")
	}
	for _, name := range args {
		h, err := hashFile(name, stdin)
		if err != nil {
			return fmt.Errorf("hash: %w", err)
		}
		if len(args) == 1 {
			fmt.Fprintln(stdout, h)
		} else {
			fmt.Fprintf(stdout, "%s  %s\n", h, name)
		}
	}
	return nil
}

// hashFile hashes one file, or stdin for "-".
func hashFile(name string, stdin io.Reader) (chunk.Hash, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return chunk.Hash{}, err
		}
		defer f.Close()
		r = f
	}
	hw := chunk.NewHasher()
	if _, err := io.Copy(hw, r); err != nil {
		return chunk.Hash{}, fmt.Errorf("%s: %w", name, err)
	}
	return chunk.SumOf(hw), nil
}
