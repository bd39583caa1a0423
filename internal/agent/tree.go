package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wormvault/wormvault/internal/chunk"
)

// The tree metadata format (version 1), described in docs/agent.md.
//
// The root manifest of a snapshot made by the agent lists exactly one
// chunk directly: the index, a JSON object naming the tree chunks in
// order. Tree chunks are JSON lines, one entry per line, in walk order (a
// directory before its contents). Both are ordinary chunks, also listed in
// the manifest tree, so the vault verifies and retains them with the
// content.
const (
	// IndexFormat is the "format" of an index chunk.
	IndexFormat = "wormvault-agent"
	// IndexVersion is the only index version this agent writes and reads.
	IndexVersion = 1

	// MaxTreeChunk bounds a tree chunk: entries are never split, and a
	// chunk is cut before an entry that would take it past this size.
	MaxTreeChunk = 4 << 20
	// minTreeChunk is the least a tree chunk holds before a content-defined
	// cut may end it.
	minTreeChunk = 64 << 10
	// treeCutMask selects the entries after which a tree chunk is cut: an
	// entry whose line's FNV-1a hash has these bits clear (one in 4096).
	// Cutting by content rather than by size keeps the tree chunks of an
	// unchanged part of a tree identical from one push to the next, so a
	// new file costs one new tree chunk, not a shifted copy of the rest.
	treeCutMask = 1<<12 - 1
	// ChunksPerLine bounds the chunk hashes on one line: a larger file
	// continues on "more" lines.
	ChunksPerLine = 10_000
	// maxMode is the largest mode: permission bits, setuid, setgid, sticky.
	maxMode = 0o7777
)

// Entry types.
const (
	TypeDir     = "dir"
	TypeFile    = "file"
	TypeSymlink = "symlink"
	// typeMore is a continuation line: more chunks of the file on the line
	// before, with the same path.
	typeMore = "more"
)

// Index is the root of an agent snapshot's metadata.
type Index struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Tree lists the tree chunks in order.
	Tree []chunk.Hash `json:"tree"`
	// Entries, Files and Bytes summarise the tree.
	Entries int64 `json:"entries"`
	Files   int64 `json:"files"`
	Bytes   int64 `json:"bytes"`
}

// ParseIndex decodes and checks an index chunk.
func ParseIndex(b []byte) (Index, error) {
	var ix Index
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ix); err != nil {
		return ix, fmt.Errorf("agent: index: %w", err)
	}
	if dec.More() {
		return ix, errors.New("agent: index: data after the index object")
	}
	if ix.Format != IndexFormat {
		return ix, fmt.Errorf("agent: index: format %q, want %q (not a snapshot made by vault push)", ix.Format, IndexFormat)
	}
	if ix.Version != IndexVersion {
		return ix, fmt.Errorf("agent: index: version %d, this agent reads version %d", ix.Version, IndexVersion)
	}
	return ix, nil
}

// Entry is one file, directory or symbolic link of a tree.
type Entry struct {
	// Path is relative to the push: slash-separated, never absolute, never
	// with "." or ".." components. The first component is the base name of
	// the path given to push.
	Path string
	// Type is TypeDir, TypeFile or TypeSymlink.
	Type string
	// Mode holds the Unix permission bits with setuid, setgid and sticky
	// (0 to 0o7777); symbolic links have none.
	Mode uint32
	// MTime is the modification time, to the nanosecond.
	MTime time.Time
	// Size is a file's length in bytes.
	Size int64
	// Target is a symbolic link's target, as stored (not resolved).
	Target string
	// Chunks are a file's content, in order.
	Chunks []chunk.Hash
}

// entryJSON is an entry's line. Names that are not valid UTF-8 (Unix file
// names are bytes) are carried base64-encoded in the *_b64 fields, since
// JSON strings cannot hold them losslessly.
type entryJSON struct {
	Path      string       `json:"path,omitzero"`
	PathB64   string       `json:"path_b64,omitzero"`
	Type      string       `json:"type"`
	Mode      uint32       `json:"mode,omitzero"`
	MTime     time.Time    `json:"mtime,omitzero"`
	Size      int64        `json:"size,omitzero"`
	Target    string       `json:"target,omitzero"`
	TargetB64 string       `json:"target_b64,omitzero"`
	Chunks    []chunk.Hash `json:"chunks,omitempty"`
}

func putName(plain, b64 *string, s string) {
	if utf8.ValidString(s) {
		*plain = s
	} else {
		*b64 = base64.StdEncoding.EncodeToString([]byte(s))
	}
}

func getName(field, plain, b64 string) (string, error) {
	switch {
	case plain != "" && b64 != "":
		return "", fmt.Errorf("both %s and %s_b64", field, field)
	case b64 != "":
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return "", fmt.Errorf("%s_b64: %w", field, err)
		}
		if utf8.Valid(b) {
			return "", fmt.Errorf("%s_b64 holds valid UTF-8: it belongs in %s", field, field)
		}
		return string(b), nil
	}
	return plain, nil
}

// appendLines appends e's lines to b: one, or more for a file of more than
// ChunksPerLine chunks.
func appendLines(b []byte, e Entry) ([]byte, error) {
	w := entryJSON{Type: e.Type, Mode: e.Mode, MTime: e.MTime.UTC(), Size: e.Size}
	putName(&w.Path, &w.PathB64, e.Path)
	putName(&w.Target, &w.TargetB64, e.Target)
	rest := e.Chunks
	w.Chunks = rest[:min(len(rest), ChunksPerLine)]
	rest = rest[len(w.Chunks):]
	for {
		line, err := json.Marshal(w)
		if err != nil {
			return b, fmt.Errorf("agent: encode entry %q: %w", e.Path, err)
		}
		b = append(append(b, line...), '\n')
		if len(rest) == 0 {
			return b, nil
		}
		w = entryJSON{Path: w.Path, PathB64: w.PathB64, Type: typeMore, Chunks: rest[:min(len(rest), ChunksPerLine)]}
		rest = rest[len(w.Chunks):]
	}
}

// parseTreeChunk decodes the entries of one tree chunk and appends them to
// entries, joining "more" lines (also across chunks) to their file.
func parseTreeChunk(entries []Entry, b []byte) ([]Entry, error) {
	for n := 1; len(b) > 0; n++ {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		if !ok {
			return entries, fmt.Errorf("line %d: not terminated by a newline", n)
		}
		b = rest
		var w entryJSON
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil {
			return entries, fmt.Errorf("line %d: %w", n, err)
		}
		if dec.More() {
			return entries, fmt.Errorf("line %d: data after the entry", n)
		}
		e, err := w.entry()
		if err != nil {
			return entries, fmt.Errorf("line %d: %w", n, err)
		}
		if e.Type == typeMore {
			if len(entries) == 0 || entries[len(entries)-1].Type != TypeFile || entries[len(entries)-1].Path != e.Path {
				return entries, fmt.Errorf("line %d: %q continues no file", n, e.Path)
			}
			last := &entries[len(entries)-1]
			last.Chunks = append(last.Chunks, e.Chunks...)
			continue
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func (w entryJSON) entry() (Entry, error) {
	p, err := getName("path", w.Path, w.PathB64)
	if err != nil {
		return Entry{}, err
	}
	if err := CheckPath(p); err != nil {
		return Entry{}, err
	}
	target, err := getName("target", w.Target, w.TargetB64)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Path: p, Type: w.Type, Mode: w.Mode, MTime: w.MTime, Size: w.Size, Target: target, Chunks: w.Chunks}
	bad := func(format string, args ...any) (Entry, error) {
		return Entry{}, fmt.Errorf("entry %q (%s): %s", p, w.Type, fmt.Sprintf(format, args...))
	}
	if e.Mode > maxMode {
		return bad("mode %o is more than permission bits", e.Mode)
	}
	switch e.Type {
	case TypeDir:
		if e.Size != 0 || e.Target != "" || len(e.Chunks) != 0 {
			return bad("a directory has no size, target or chunks")
		}
	case TypeFile:
		if e.Size < 0 || e.Target != "" {
			return bad("a file has a size of 0 or more and no target")
		}
		if e.Size == 0 && len(e.Chunks) != 0 {
			return bad("an empty file has no chunks")
		}
	case TypeSymlink:
		if e.Target == "" || e.Size != 0 || len(e.Chunks) != 0 || e.Mode != 0 {
			return bad("a symbolic link has a target and nothing else")
		}
	case typeMore:
		if e.Mode != 0 || !e.MTime.IsZero() || e.Size != 0 || e.Target != "" || len(e.Chunks) == 0 {
			return bad("a continuation line has a path and chunks only")
		}
	default:
		return bad("unknown type")
	}
	if len(e.Chunks) > ChunksPerLine {
		return bad("%d chunks on one line, at most %d", len(e.Chunks), ChunksPerLine)
	}
	return e, nil
}

// ErrUnsafePath is wrapped by CheckPath's errors: a tree path that could
// write outside the restore's target directory, or that no file could
// have.
var ErrUnsafePath = errors.New("agent: unsafe path in tree")

// CheckPath accepts only what the agent writes: a relative, clean,
// slash-separated path, without "." or ".." components, empty components,
// or NUL bytes. Everything else is refused, so that a restore can never be
// led outside its target directory by a crafted tree.
func CheckPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty path", ErrUnsafePath)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%w: %q contains a NUL byte", ErrUnsafePath, p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: %q is absolute", ErrUnsafePath, p)
	case path.Clean(p) != p:
		return fmt.Errorf("%w: %q is not clean (empty, \".\" or \"..\" components, or a trailing slash)", ErrUnsafePath, p)
	case !filepath.IsLocal(filepath.FromSlash(p)):
		return fmt.Errorf("%w: %q leaves the target directory", ErrUnsafePath, p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." || c == "." {
			return fmt.Errorf("%w: %q has a %q component", ErrUnsafePath, p, c)
		}
	}
	return nil
}

// checkTree checks what CheckPath cannot see alone: every path appears
// once, and every entry's parent is a directory listed before it (or the
// entry is at the top). A restore creates parents before their contents and
// never follows a link it created, so a tree with a symbolic link "a" and a
// file "a/x" is refused rather than written through the link.
func checkTree(entries []Entry) error {
	types := make(map[string]string, len(entries))
	for _, e := range entries {
		if _, dup := types[e.Path]; dup {
			return fmt.Errorf("%w: %q appears twice", ErrUnsafePath, e.Path)
		}
		if parent := path.Dir(e.Path); parent != "." && types[parent] != TypeDir {
			return fmt.Errorf("%w: %q: its parent %q is not a directory listed before it", ErrUnsafePath, e.Path, parent)
		}
		types[e.Path] = e.Type
	}
	return nil
}

// treeWriter collects entries into tree chunks.
type treeWriter struct {
	buf []byte
	// emit takes a finished tree chunk; it may keep the slice.
	emit func(ctx context.Context, data []byte) error
}

func (w *treeWriter) add(ctx context.Context, e Entry) error {
	line, err := appendLines(nil, e)
	if err != nil {
		return err
	}
	for len(line) > 0 {
		// One line at a time: a file's continuation lines may be cut
		// apart like any others.
		i := bytes.IndexByte(line, '\n') + 1
		if err := w.addLine(ctx, line[:i]); err != nil {
			return err
		}
		line = line[i:]
	}
	return nil
}

func (w *treeWriter) addLine(ctx context.Context, line []byte) error {
	if len(w.buf) > 0 && len(w.buf)+len(line) > MaxTreeChunk {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.buf = append(w.buf, line...)
	h := fnv.New64a()
	h.Write(line)
	if len(w.buf) >= minTreeChunk && h.Sum64()&treeCutMask == 0 {
		return w.flush(ctx)
	}
	return nil
}

func (w *treeWriter) flush(ctx context.Context) error {
	if len(w.buf) == 0 {
		return nil
	}
	b := w.buf
	w.buf = nil
	return w.emit(ctx, b)
}

// unixMode converts a Go file mode to the stored Unix mode bits.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// fileMode converts stored Unix mode bits to a Go file mode.
func fileMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}
