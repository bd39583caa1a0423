package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

func TestPolynomial(t *testing.T) {
	t.Parallel()
	if !Polynomial.Irreducible() {
		t.Errorf("Polynomial %v is not irreducible", Polynomial)
	}
	if d := Polynomial.Deg(); d != 53 {
		t.Errorf("Polynomial degree = %d, want 53", d)
	}
}

func TestCheckPath(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		path string
		ok   bool
	}{
		{"a", true},
		{"a/b/c.txt", true},
		{"..a/b..", true},
		{"a b/ünï", true},
		{"a\\b", true}, // a backslash is an ordinary character in a Unix name
		{"", false},
		{"/etc/passwd", false},
		{"..", false},
		{"../x", false},
		{"a/../../x", false},
		{"a/..", false},
		{"a/../b", false},
		{".", false},
		{"./a", false},
		{"a/./b", false},
		{"a//b", false},
		{"a/", false},
		{"a\x00b", false},
	} {
		err := CheckPath(tt.path)
		if (err == nil) != tt.ok {
			t.Errorf("CheckPath(%q) = %v, want ok %v", tt.path, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrUnsafePath) {
			t.Errorf("CheckPath(%q) = %v, want it to wrap ErrUnsafePath", tt.path, err)
		}
	}
}

func hashes(n int, seed uint64) []chunk.Hash {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]chunk.Hash, n)
	for i := range out {
		for j := 0; j < chunk.Size; j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				out[i][j+k] = byte(v >> (8 * k))
			}
		}
	}
	return out
}

// encodeTree runs entries through a treeWriter and returns its chunks.
func encodeTree(t testing.TB, entries []Entry) [][]byte {
	t.Helper()
	var chunks [][]byte
	w := treeWriter{emit: func(_ context.Context, b []byte) error { chunks = append(chunks, b); return nil }}
	for _, e := range entries {
		if err := w.add(context.Background(), e); err != nil {
			t.Fatalf("add %q: %v", e.Path, err)
		}
	}
	if err := w.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return chunks
}

func decodeTree(t testing.TB, chunks [][]byte) []Entry {
	t.Helper()
	var entries []Entry
	for i, c := range chunks {
		var err error
		if entries, err = parseTreeChunk(entries, c); err != nil {
			t.Fatalf("tree chunk %d: %v", i, err)
		}
	}
	return entries
}

func TestTreeRoundTrip(t *testing.T) {
	t.Parallel()
	mt := time.Date(2026, 11, 25, 10, 11, 12, 123456789, time.UTC)
	entries := []Entry{
		{Path: "top", Type: TypeDir, Mode: 0o750, MTime: mt},
		{Path: "top/empty", Type: TypeFile, Mode: 0o600, MTime: mt},
		{Path: "top/setuid", Type: TypeFile, Mode: 0o4755, MTime: mt, Size: 3, Chunks: hashes(1, 1)},
		{Path: "top/big", Type: TypeFile, Mode: 0o644, MTime: mt, Size: 1 << 40, Chunks: hashes(2*ChunksPerLine+7, 2)},
		{Path: "top/\xff\xfe-not-utf8", Type: TypeFile, Mode: 0, MTime: time.Unix(0, 0).UTC(), Size: 1, Chunks: hashes(1, 3)},
		{Path: "top/link", Type: TypeSymlink, MTime: mt, Target: "../elsewhere/\xff"},
		{Path: "top/line\nbreak \"quoted\"", Type: TypeFile, Mode: 0o644, MTime: mt, Size: 0},
	}
	chunks := encodeTree(t, entries)
	got := decodeTree(t, chunks)
	if !reflect.DeepEqual(got, entries) {
		t.Fatalf("round trip:\ngot  %+v\nwant %+v", got[:3], entries[:3])
	}
	if err := checkTree(got); err != nil {
		t.Errorf("checkTree: %v", err)
	}
	for i, c := range chunks {
		if len(c) > MaxTreeChunk {
			t.Errorf("tree chunk %d is %d bytes, over %d", i, len(c), MaxTreeChunk)
		}
	}
}

func TestParseTreeRefuses(t *testing.T) {
	t.Parallel()
	h := hashes(1, 1)[0].String()
	for _, tt := range []struct{ name, tree string }{
		{"dot dot", `{"path":"../x","type":"file","size":0}`},
		{"dot dot inside", `{"path":"a/../../x","type":"file"}`},
		{"absolute", `{"path":"/etc/cron.d/x","type":"file"}`},
		{"empty path", `{"path":"","type":"dir"}`},
		{"both path forms", `{"path":"a","path_b64":"/w==","type":"dir"}`},
		{"utf8 in b64", `{"path_b64":"YQ==","type":"dir"}`},
		{"unknown field", `{"path":"a","type":"dir","owner":"root"}`},
		{"unknown type", `{"path":"a","type":"fifo"}`},
		{"mode too large", `{"path":"a","type":"dir","mode":65535}`},
		{"dir with chunks", `{"path":"a","type":"dir","chunks":["` + h + `"]}`},
		{"symlink without target", `{"path":"a","type":"symlink"}`},
		{"negative size", `{"path":"a","type":"file","size":-1}`},
		{"more without file", `{"path":"a","type":"more","chunks":["` + h + `"]}`},
		{"more of another file", `{"path":"a","type":"file","size":1,"chunks":["` + h + `"]}` + "\n" + `{"path":"b","type":"more","chunks":["` + h + `"]}`},
		{"bad hash", `{"path":"a","type":"file","size":1,"chunks":["ABC"]}`},
		{"no newline", `{"path":"a","type":"dir"}`},
		{"two objects on a line", `{"path":"a","type":"dir"}{"path":"b","type":"dir"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.tree)
			if tt.name != "no newline" {
				b = append(b, '\n')
			}
			if _, err := parseTreeChunk(nil, b); err == nil {
				t.Errorf("parseTreeChunk(%s) = nil error, want a refusal", tt.tree)
			}
		})
	}
}

func TestCheckTree(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		entries []Entry
		ok      bool
	}{
		{"ok", []Entry{{Path: "a", Type: TypeDir}, {Path: "a/b", Type: TypeFile}, {Path: "c", Type: TypeSymlink, Target: "/"}}, true},
		{"duplicate", []Entry{{Path: "a", Type: TypeFile}, {Path: "a", Type: TypeFile}}, false},
		{"dir then file of the same name", []Entry{{Path: "a", Type: TypeDir}, {Path: "a", Type: TypeFile}}, false},
		{"parent missing", []Entry{{Path: "a/b", Type: TypeFile}}, false},
		{"parent after child", []Entry{{Path: "a/b", Type: TypeFile}, {Path: "a", Type: TypeDir}}, false},
		// A link to outside, then a file "through" it: refused, never
		// written through the link.
		{"parent is a symlink", []Entry{{Path: "a", Type: TypeSymlink, Target: "/etc"}, {Path: "a/passwd", Type: TypeFile}}, false},
		{"parent is a file", []Entry{{Path: "a", Type: TypeFile}, {Path: "a/b", Type: TypeFile}}, false},
	} {
		err := checkTree(tt.entries)
		if (err == nil) != tt.ok {
			t.Errorf("%s: checkTree = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrUnsafePath) {
			t.Errorf("%s: checkTree = %v, want ErrUnsafePath", tt.name, err)
		}
	}
}

// TestTreeChunksByContent: inserting one entry into a large tree changes
// only the tree chunk it lands in (content-defined cuts), and no chunk
// exceeds MaxTreeChunk.
func TestTreeChunksByContent(t *testing.T) {
	t.Parallel()
	mt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var entries []Entry
	for i := range 24_000 {
		entries = append(entries, Entry{Path: fmt.Sprintf("d/file-%06d", i), Type: TypeFile, Mode: 0o644, MTime: mt,
			Size: 100, Chunks: hashes(1, uint64(i))})
	}
	entries = append([]Entry{{Path: "d", Type: TypeDir, Mode: 0o755, MTime: mt}}, entries...)
	before := encodeTree(t, entries)
	changed := append(append(append([]Entry{}, entries[:12_000]...),
		Entry{Path: "d/file-011999a", Type: TypeFile, Mode: 0o644, MTime: mt}), entries[12_000:]...)
	after := encodeTree(t, changed)
	if len(before) < 3 {
		t.Fatalf("%d tree chunks for 24,000 entries, want several", len(before))
	}
	old := map[string]bool{}
	for _, c := range before {
		old[string(c)] = true
	}
	fresh := 0
	for _, c := range after {
		if len(c) > MaxTreeChunk {
			t.Errorf("tree chunk of %d bytes, over %d", len(c), MaxTreeChunk)
		}
		if !old[string(c)] {
			fresh++
		}
	}
	if fresh > 2 {
		t.Errorf("one inserted entry made %d of %d tree chunks new, want at most 2", fresh, len(after))
	}
	if got := decodeTree(t, after); !reflect.DeepEqual(got, changed) {
		t.Errorf("decoded tree differs from the one encoded")
	}
}

// TestManifestBuilder: every reference ends up in the tree exactly once,
// nodes stay within maxFanout, and the same references give the same root.
func TestManifestBuilder(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 63, 64, 5000, 25_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			build := func() (map[chunk.Hash][]byte, []chunk.Hash) {
				nodes := map[chunk.Hash][]byte{}
				b := manifestBuilder{emit: func(_ context.Context, h chunk.Hash, data []byte) error {
					if chunk.Sum(data) != h {
						t.Fatalf("emitted node's hash is wrong")
					}
					nodes[h] = data
					return nil
				}}
				for _, h := range hashes(n, 7) {
					if err := b.add(context.Background(), h); err != nil {
						t.Fatal(err)
					}
				}
				top, err := b.finish(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				return nodes, top
			}
			nodes, top := build()
			_, top2 := build()
			if !reflect.DeepEqual(top, top2) {
				t.Errorf("two builds of the same references differ")
			}
			if len(top) == 0 || len(top) >= maxFanout {
				t.Fatalf("top level has %d nodes", len(top))
			}
			var got []chunk.Hash
			var walk func(h chunk.Hash, depth int)
			walk = func(h chunk.Hash, depth int) {
				data, ok := nodes[h]
				if !ok {
					t.Fatalf("node %s was never emitted", h)
				}
				m, err := manifest.Parse(data)
				if err != nil {
					t.Fatal(err)
				}
				if len(m.Chunks)+len(m.Children) > maxFanout || depth > 10 {
					t.Fatalf("node with %d+%d references at depth %d", len(m.Chunks), len(m.Children), depth)
				}
				got = append(got, m.Chunks...)
				for _, c := range m.Children {
					walk(c, depth+1)
				}
			}
			for _, h := range top {
				walk(h, 1)
			}
			if want := hashes(n, 7); !reflect.DeepEqual(got, want) {
				t.Errorf("tree lists %d references, want the %d added, in order", len(got), len(want))
			}
		})
	}
}

// chunkAll cuts data like a push does and returns the chunk hashes.
func chunkAll(t testing.TB, data []byte) []chunk.Hash {
	t.Helper()
	c := newChunker()
	c.ResetWithBoundaries(bytes.NewReader(data), Polynomial, MinChunkSize, MaxChunkSize)
	c.SetAverageBits(AverageBits)
	buf := make([]byte, 0, MaxChunkSize)
	var out []chunk.Hash
	total := 0
	for {
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.Data) > MaxChunkSize {
			t.Fatalf("chunk of %d bytes", len(ch.Data))
		}
		total += len(ch.Data)
		out = append(out, chunk.Sum(ch.Data))
	}
	if total != len(data) {
		t.Fatalf("chunks cover %d of %d bytes", total, len(data))
	}
	return out
}

// TestChunkingIsContentDefined: changing one byte, or inserting bytes,
// changes only the chunks around the change.
func TestChunkingIsContentDefined(t *testing.T) {
	t.Parallel()
	data := make([]byte, 24<<20)
	rand.NewChaCha8([32]byte{42}).Read(data)
	base := chunkAll(t, data)
	if n := len(base); n < 8 || n > 40 {
		t.Errorf("24 MiB cut into %d chunks, want about 24 (1 MiB on average past 512 KiB)", n)
	}
	has := map[chunk.Hash]bool{}
	for _, h := range base {
		has[h] = true
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 1
	inserted := append(append(bytes.Clone(data[:len(data)/3]), []byte("inserted bytes")...), data[len(data)/3:]...)
	for name, changed := range map[string][]byte{"one byte changed": flipped, "bytes inserted": inserted} {
		fresh := 0
		for _, h := range chunkAll(t, changed) {
			if !has[h] {
				fresh++
			}
		}
		if fresh < 1 || fresh > 2 {
			t.Errorf("%s: %d new chunks, want 1 or 2", name, fresh)
		}
	}
}

func TestModeConversion(t *testing.T) {
	t.Parallel()
	for _, u := range []uint32{0, 0o644, 0o755, 0o4755, 0o2750, 0o1777, 0o7777} {
		if got := unixMode(fileMode(u)); got != u {
			t.Errorf("unixMode(fileMode(%o)) = %o", u, got)
		}
	}
}

func TestParseIndex(t *testing.T) {
	t.Parallel()
	good := `{"format":"wormvault-agent","version":1,"tree":[],"entries":0,"files":0,"bytes":0}`
	if _, err := ParseIndex([]byte(good)); err != nil {
		t.Errorf("ParseIndex(%s) = %v", good, err)
	}
	for _, bad := range []string{
		`{"version":1,"chunks":[]}`,
		`{"format":"wormvault-agent","version":2,"tree":[]}`,
		`{"format":"other","version":1,"tree":[]}`,
		strings.Replace(good, `"bytes":0`, `"bytes":0,"x":1`, 1),
		good + good,
	} {
		if _, err := ParseIndex([]byte(bad)); err == nil {
			t.Errorf("ParseIndex(%s) = nil error", bad)
		}
	}
}
