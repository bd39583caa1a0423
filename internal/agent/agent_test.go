package agent

// Push and restore against a real vault (agenttest: the API handler over a
// store on PostgreSQL), small trees. The acceptance tests at full size
// (a 200 MiB file, SIGKILL, 100 MiB on stdin) are in cmd/vault.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wormvault/wormvault/internal/agent/agenttest"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/manifest"
)

var testTime = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// fastRetry keeps retry tests quick.
var fastRetry = client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: 10 * time.Second}

func pushOptions(name string) PushOptions {
	now := time.Now().UTC()
	return PushOptions{Source: "test-host", Name: name, TakenAt: now, RetainUntil: now.Add(31 * 24 * time.Hour), Tags: []string{"kind=test"}, Retry: fastRetry}
}

func mustMkdir(t testing.TB, p string, perm os.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t testing.TB, p string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}

// setTimes gives every path under root a distinct modification time with
// nanoseconds, deepest first so that directories keep theirs.
func setTimes(t testing.TB, root string) {
	t.Helper()
	var paths []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		return nil
	})
	for i := len(paths) - 1; i >= 0; i-- {
		mt := testTime.Add(time.Duration(i)*time.Hour + time.Duration(i*7919)*time.Nanosecond)
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		// Symbolic links get a time of their own.
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("set time of %s: %v", paths[i], err)
		}
	}
}

// newSmallTree builds a tree with every kind of entry push handles, and
// returns its path (base name "tree").
func newSmallTree(t testing.TB) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tree")
	mustMkdir(t, src, 0o755)
	for _, d := range []string{"a", "a/b", "a/b/c", "ro-dir", "empty-dir"} {
		mustMkdir(t, filepath.Join(src, d), 0o750)
	}
	mustWrite(t, filepath.Join(src, "empty"), nil, 0o644)
	mustWrite(t, filepath.Join(src, "a/b/c/empty"), nil, 0o600)
	for i := range 40 {
		agenttest.WriteRandomFile(t, filepath.Join(src, "a", "small-"+string(rune('a'+i%26))+string(rune('a'+i/26))), int64(1+i*517), uint64(i), 0o640)
	}
	agenttest.WriteRandomFile(t, filepath.Join(src, "a/b/medium"), 3<<20+12345, 1000, 0o644)
	mustWrite(t, filepath.Join(src, "a/b/exec"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	mustWrite(t, filepath.Join(src, "a/b/setgid"), []byte("x"), 0o2750)
	mustWrite(t, filepath.Join(src, "readonly"), []byte("read only"), 0o444)
	mustWrite(t, filepath.Join(src, "\xff\xfe not utf-8"), []byte("bytes"), 0o644)
	mustWrite(t, filepath.Join(src, "ro-dir/inside"), []byte("in a read-only directory"), 0o644)
	for name, target := range map[string]string{"link": "a/b/medium", "abs-link": "/etc/hostname", "a/dangling": "../nowhere"} {
		if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
			t.Fatal(err)
		}
	}
	setTimes(t, src)
	if err := os.Chmod(filepath.Join(src, "ro-dir"), 0o555); err != nil {
		t.Fatal(err)
	}
	return src
}

func mustPush(t testing.TB, c *client.Client, paths []string, o PushOptions) PushResult {
	t.Helper()
	res, err := Push(context.Background(), c, paths, o)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	return res
}

func mustRestore(t testing.TB, c *client.Client, root chunk.Hash, target string) RestoreResult {
	t.Helper()
	ctx := context.Background()
	tree, err := ReadTree(ctx, c, root, RestoreOptions{})
	if err != nil {
		t.Fatalf("ReadTree: %v", err)
	}
	res, err := Restore(ctx, c, tree, target, RestoreOptions{})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return res
}

func TestPushRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	src := newSmallTree(t)
	res := mustPush(t, v.Client(t, v.Agent), []string{src}, pushOptions("first"))
	if res.Snapshot.ID == 0 || res.Snapshot.Source != "test-host" || res.Snapshot.Name != "first" || !slices.Equal(res.Snapshot.Tags, []string{"kind=test"}) {
		t.Errorf("snapshot = %+v", res.Snapshot)
	}
	if c := res.Counts; c.Files != 48 || c.Dirs != 6 || c.Symlinks != 3 || c.Warnings != 0 || c.NewChunks == 0 || c.NewBytes < 3<<20 {
		t.Errorf("counts = %+v", c)
	}
	dst := filepath.Join(t.TempDir(), "restore")
	rr := mustRestore(t, v.Client(t, v.Reader), res.Root, dst)
	if rr.Files != 48 || rr.Dirs != 6 || rr.Symlinks != 3 {
		t.Errorf("restore counts = %+v", rr.Counts)
	}
	agenttest.CompareTrees(t, src, filepath.Join(dst, "tree"))
}

// TestPushAgain: the same tree again uploads nothing and commits; one
// changed byte in a large file uploads only the chunk(s) around it.
func TestPushAgain(t *testing.T) {
	t.Parallel()
	up := agenttest.NewUploads()
	v := agenttest.New(t, agenttest.Options{Middleware: up.Middleware})
	c := v.Client(t, v.Agent)
	src := newSmallTree(t)
	big := filepath.Join(src, "a/b/big")
	agenttest.WriteRandomFile(t, big, 12<<20, 77, 0o644)
	first := mustPush(t, c, []string{src}, pushOptions("one"))

	up.Reset()
	second := mustPush(t, c, []string{src}, pushOptions("two"))
	if n := len(up.Counts()); n != 0 || second.UploadedBytes != 0 || second.NewBytes != 0 {
		t.Errorf("second push uploaded %d chunks, %d bytes (%d new), want none", n, second.UploadedBytes, second.NewBytes)
	}
	if second.Snapshot.ID == first.Snapshot.ID || second.Root != first.Root {
		t.Errorf("second push: snapshot %d root %s, first %d root %s: want a new snapshot of the same tree",
			second.Snapshot.ID, second.Root, first.Snapshot.ID, first.Root)
	}

	f, err := os.OpenFile(big, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0x42}, 7<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	up.Reset()
	third := mustPush(t, c, []string{src}, pushOptions("three"))
	tree, err := ReadTree(context.Background(), v.Client(t, v.Reader), third.Root, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bigChunks := map[chunk.Hash]bool{}
	for _, e := range tree.Entries {
		if e.Path == "tree/a/b/big" {
			for _, h := range e.Chunks {
				bigChunks[h] = true
			}
		}
	}
	content := 0
	for h := range up.Counts() {
		if bigChunks[h] {
			content++
		}
	}
	// The content chunk(s) around the change, plus metadata: a tree
	// chunk, the index, a leaf and the root manifest.
	if content < 1 || content > 2 || len(up.Counts()) > content+5 || up.Bytes() > 2*MaxChunkSize+(1<<20) {
		t.Errorf("after a one-byte change: %d chunks of the file and %d in all uploaded, %d bytes; want 1-2 content chunks and a few metadata chunks",
			content, len(up.Counts()), up.Bytes())
	}
	dst := filepath.Join(t.TempDir(), "r")
	mustRestore(t, v.Client(t, v.Reader), third.Root, dst)
	agenttest.CompareTrees(t, src, filepath.Join(dst, "tree"))
}

func TestPushSkipsSpecialAndUnreadableFiles(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	src := filepath.Join(t.TempDir(), "tree")
	mustMkdir(t, src, 0o755)
	mustWrite(t, filepath.Join(src, "ok"), []byte("fine"), 0o644)
	mustWrite(t, filepath.Join(src, "secret"), []byte("unreadable"), 0o600)
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(src, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	skipped := []string{"fifo", "sock", "secret"}
	wantWarnings := 3
	if os.Geteuid() != 0 {
		// Root reads everything; others can be locked out of a directory.
		mustMkdir(t, filepath.Join(src, "locked"), 0o755)
		mustWrite(t, filepath.Join(src, "locked/x"), []byte("x"), 0o644)
		os.Chmod(filepath.Join(src, "locked"), 0)
		t.Cleanup(func() { os.Chmod(filepath.Join(src, "locked"), 0o755) })
		wantWarnings++
	}
	var mu sync.Mutex
	var warnings []string
	o := pushOptions("special")
	o.Warn = func(msg string) { mu.Lock(); warnings = append(warnings, msg); mu.Unlock() }
	// Open as root would, except that "secret" is refused.
	o.openFile = func(name string) (*os.File, error) {
		if filepath.Base(name) == "secret" {
			return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EACCES}
		}
		return openNoFollow(name)
	}
	res := mustPush(t, v.Client(t, v.Agent), []string{src}, o)
	if res.Warnings != int64(wantWarnings) || len(warnings) != wantWarnings {
		t.Fatalf("warnings = %d %q, want %d", res.Warnings, warnings, wantWarnings)
	}
	all := strings.Join(warnings, "\n")
	for _, want := range []string{"fifo: named pipe skipped", "sock: socket skipped", "secret: cannot open, skipped: open " + filepath.Join(src, "secret") + ": permission denied"} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings %q lack %q", all, want)
		}
	}
	dst := filepath.Join(t.TempDir(), "r")
	mustRestore(t, v.Client(t, v.Reader), res.Root, dst)
	got := filepath.Join(dst, "tree")
	for _, s := range skipped {
		if _, err := os.Lstat(filepath.Join(got, s)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: restored (err %v), want it skipped", s, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(got, "ok")); err != nil || string(b) != "fine" {
		t.Errorf("ok = %q, %v", b, err)
	}

	// A push of nothing but skipped files commits nothing.
	if _, err := Push(context.Background(), v.Client(t, v.Agent), []string{filepath.Join(src, "fifo")}, pushOptions("nothing")); err == nil ||
		!strings.Contains(err.Error(), "nothing to back up") {
		t.Errorf("push of a named pipe alone: %v, want a refusal", err)
	}
}

// failFirst answers the first n requests of every method and path kind
// with a transient failure: 503s, then a connection closed without an
// answer.
func failFirst(n int) (func(http.Handler) http.Handler, *atomic.Int64) {
	var mu sync.Mutex
	seen := map[string]int{}
	var failed atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			kind := r.Method + " " + r.URL.Path
			if strings.HasPrefix(r.URL.Path, "/v1/chunks/") && len(r.URL.Path) == len("/v1/chunks/")+64 {
				kind = r.Method + " chunk"
			}
			mu.Lock()
			seen[kind]++
			k := seen[kind]
			mu.Unlock()
			switch {
			case k < n:
				failed.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"error":{"code":"unavailable","message":"index database unreachable"}}`)
				return
			case k == n:
				failed.Add(1)
				io.Copy(io.Discard, r.Body)
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
			next.ServeHTTP(w, r)
		})
	}, &failed
}

func TestPushAndRestoreRetryTransientFailures(t *testing.T) {
	t.Parallel()
	mw, failed := failFirst(3)
	v := agenttest.New(t, agenttest.Options{Middleware: mw})
	src := newSmallTree(t)
	var retries atomic.Int64
	o := pushOptions("retried")
	o.Retry.OnRetry = func(error, int, time.Duration) { retries.Add(1) }
	res := mustPush(t, v.Client(t, v.Agent), []string{src}, o)
	if failed.Load() == 0 || retries.Load() < failed.Load() {
		t.Errorf("%d requests failed, %d retries", failed.Load(), retries.Load())
	}
	dst := filepath.Join(t.TempDir(), "r")
	ctx := context.Background()
	rc := v.Client(t, v.Reader)
	ro := RestoreOptions{Retry: fastRetry}
	tree, err := ReadTree(ctx, rc, res.Root, ro)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, rc, tree, dst, ro); err != nil {
		t.Fatal(err)
	}
	agenttest.CompareTrees(t, src, filepath.Join(dst, "tree"))
}

func TestPushStopsOnPermanentErrors(t *testing.T) {
	t.Parallel()
	tooLarge := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusRequestEntityTooLarge)
				io.WriteString(w, `{"error":{"code":"too_large","message":"request body too large"}}`)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	v := agenttest.New(t, agenttest.Options{Middleware: tooLarge})
	src := newSmallTree(t)
	bogus, err := client.New(v.URL, "not-a-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		c    *client.Client
		code string
		want string
	}{
		{"reader token", v.Client(t, v.Reader), "forbidden", "ask the vault which"},
		{"bad token", bogus, "unauthenticated", "ask the vault which"},
		{"chunk too large", v.Client(t, v.Agent), "too_large", "of tree/a/b/medium"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := pushOptions("refused")
			o.Retry.OnRetry = func(err error, _ int, _ time.Duration) { t.Errorf("retried a permanent failure: %v", err) }
			_, err := Push(context.Background(), tt.c, []string{src}, o)
			if !client.IsCode(err, tt.code) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Push error = %v, want code %s mentioning %q", err, tt.code, tt.want)
			}
		})
	}
	// Nothing was committed.
	page, err := v.Client(t, v.Reader).Snapshots(context.Background(), client.SnapshotFilter{}, client.Page{})
	if err != nil || len(page.Snapshots) != 0 {
		t.Errorf("snapshots after refused pushes: %+v, %v", page.Snapshots, err)
	}
}

func TestPushNameConflict(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	c := v.Client(t, v.Agent)
	src := filepath.Join(t.TempDir(), "f.txt")
	mustWrite(t, src, []byte("x"), 0o644)
	mustPush(t, c, []string{src}, pushOptions("same"))
	_, err := Push(context.Background(), c, []string{src}, pushOptions("same"))
	if !client.IsCode(err, "conflict") || !strings.Contains(err.Error(), `already has a snapshot named "same"`) {
		t.Errorf("second push with the same name: %v", err)
	}
}

func TestPushStream(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	data := make([]byte, 5<<20+3)
	for i := range data {
		data[i] = byte(i*7 + i/1000)
	}
	o := pushOptions("dump")
	res, err := PushStream(context.Background(), v.Client(t, v.Agent), bytes.NewReader(data), "db.sql", o)
	if err != nil {
		t.Fatal(err)
	}
	rc := v.Client(t, v.Reader)
	tree, err := ReadTree(context.Background(), rc, res.Root, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Entries) != 1 || tree.Entries[0].Path != "db.sql" || tree.Entries[0].Mode != 0o600 || tree.Entries[0].Size != int64(len(data)) {
		t.Fatalf("entries = %+v", tree.Entries)
	}
	var out bytes.Buffer
	if err := WriteFile(context.Background(), rc, tree.Entries[0], &out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Errorf("stream round trip: %d bytes back, %d pushed, equal %v", out.Len(), len(data), bytes.Equal(out.Bytes(), data))
	}
	for _, bad := range []string{"", "a/b", "..", "."} {
		if _, err := PushStream(context.Background(), v.Client(t, v.Agent), bytes.NewReader(nil), bad, o); err == nil {
			t.Errorf("PushStream(name %q) = nil error", bad)
		}
	}
}

// commitCrafted stores a snapshot whose tree is the given JSON lines, as a
// hostile or broken agent could, and returns its manifest root.
func commitCrafted(t testing.TB, v *agenttest.Vault, name, treeLines string) chunk.Hash {
	t.Helper()
	ctx := context.Background()
	c := v.Client(t, v.Agent)
	put := func(b []byte) chunk.Hash {
		h := chunk.Sum(b)
		if _, err := c.PutChunk(ctx, h, bytes.NewReader(b), time.Time{}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	content := put([]byte("pwned"))
	tree := put([]byte(strings.ReplaceAll(treeLines, "CONTENT", content.String())))
	ix, _ := json.Marshal(Index{Format: IndexFormat, Version: IndexVersion, Tree: []chunk.Hash{tree}, Entries: int64(strings.Count(treeLines, "\n"))})
	ixHash := put(ix)
	leaf, _ := manifest.Manifest{Chunks: []chunk.Hash{tree, content}}.Marshal()
	root, _ := manifest.Manifest{Chunks: []chunk.Hash{ixHash}, Children: []chunk.Hash{put(leaf)}}.Marshal()
	rootHash := put(root)
	now := time.Now().UTC()
	if _, err := c.CommitSnapshot(ctx, client.NewSnapshot{Source: "evil", Name: name, TakenAt: now, RetainUntil: now.Add(31 * 24 * time.Hour), ManifestRoot: rootHash}); err != nil {
		t.Fatal(err)
	}
	return rootHash
}

func TestRestoreRefusesUnsafeTrees(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	rc := v.Client(t, v.Reader)
	file := func(p string) string {
		return `{"path":"` + p + `","type":"file","mode":420,"size":5,"chunks":["CONTENT"]}` + "\n"
	}
	for i, tt := range []struct{ name, tree string }{
		{"dot dot", file("../escape")},
		{"absolute", file("/tmp/escape")},
		{"dot dot inside", `{"path":"a","type":"dir","mode":493}` + "\n" + file("a/../../escape")},
		{"through a symlink", `{"path":"a","type":"symlink","target":"/tmp"}` + "\n" + file("a/escape")},
		{"duplicate", file("x") + file("x")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := commitCrafted(t, v, "crafted-"+string(rune('a'+i)), tt.tree)
			parent := t.TempDir()
			_, err := ReadTree(context.Background(), rc, root, RestoreOptions{})
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("ReadTree = %v, want ErrUnsafePath", err)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Errorf("files written: %v", entries)
			}
		})
	}
	// A snapshot that vault push did not make is refused as such.
	c := v.Client(t, v.Agent)
	data := []byte("plain chunk")
	h := chunk.Sum(data)
	c.PutChunk(context.Background(), h, bytes.NewReader(data), time.Time{})
	m, _ := manifest.Manifest{Chunks: []chunk.Hash{h}}.Marshal()
	mh := chunk.Sum(m)
	c.PutChunk(context.Background(), mh, bytes.NewReader(m), time.Time{})
	if _, err := ReadTree(context.Background(), rc, mh, RestoreOptions{}); !errors.Is(err, ErrNotAgentSnapshot) {
		t.Errorf("ReadTree of a foreign manifest = %v, want ErrNotAgentSnapshot", err)
	}
}

// lyingVault flips a byte in every GET of the chunk named by *bad: the
// agent must notice by itself, whatever the vault checked.
func lyingVault(bad *atomic.Value) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h, _ := bad.Load().(chunk.Hash)
			if r.Method != http.MethodGet || r.URL.Path != "/v1/chunks/"+h.String() {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			body[len(body)/2] ^= 0x01
			for k, vs := range rec.Header() {
				w.Header()[k] = vs
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}
}

func TestRestoreVerifiesEveryChunk(t *testing.T) {
	t.Parallel()
	var bad atomic.Value
	v := agenttest.New(t, agenttest.Options{Middleware: lyingVault(&bad)})
	src := newSmallTree(t)
	res := mustPush(t, v.Client(t, v.Agent), []string{src}, pushOptions("verified"))
	rc := v.Client(t, v.Reader)
	ctx := context.Background()
	tree, err := ReadTree(ctx, rc, res.Root, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var medium Entry
	for _, e := range tree.Entries {
		if e.Path == "tree/a/b/medium" {
			medium = e
		}
	}
	if len(medium.Chunks) < 2 {
		t.Fatalf("medium has %d chunks, want several", len(medium.Chunks))
	}
	bad.Store(medium.Chunks[1])

	dst := filepath.Join(t.TempDir(), "r")
	_, err = Restore(ctx, rc, tree, dst, RestoreOptions{})
	var re *RestoreError
	if !errors.As(err, &re) || len(re.Failed) != 1 || !errors.Is(err, chunk.ErrHashMismatch) ||
		!strings.Contains(err.Error(), "tree/a/b/medium: chunk 2 of") {
		t.Fatalf("Restore error = %v, want a RestoreError naming tree/a/b/medium, chunk 2", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "tree/a/b/medium")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("medium exists after its chunk failed (err %v)", err)
	}
	// Everything else was restored, and no temporary file is left.
	agenttest.CompareTrees(t, src, filepath.Join(dst, "tree"), "a/b/medium")

	// To standard output: the bytes before the bad chunk, never the bad
	// chunk itself.
	var out bytes.Buffer
	err = WriteFile(ctx, rc, medium, &out, RestoreOptions{})
	if !errors.Is(err, chunk.ErrHashMismatch) {
		t.Fatalf("WriteFile error = %v, want ErrHashMismatch", err)
	}
	want, _ := os.ReadFile(filepath.Join(src, "a/b/medium"))
	if out.Len() == 0 || out.Len() >= len(want) || !bytes.Equal(out.Bytes(), want[:out.Len()]) {
		t.Errorf("WriteFile wrote %d bytes, want a correct prefix shorter than %d", out.Len(), len(want))
	}
}

func TestRestoreTargetMustBeEmpty(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	src := filepath.Join(t.TempDir(), "f.txt")
	mustWrite(t, src, []byte("x"), 0o644)
	res := mustPush(t, v.Client(t, v.Agent), []string{src}, pushOptions("one"))
	rc := v.Client(t, v.Reader)
	tree, err := ReadTree(context.Background(), rc, res.Root, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	mustWrite(t, filepath.Join(dst, "f.txt"), []byte("mine"), 0o644)
	if _, err := Restore(context.Background(), rc, tree, dst, RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Restore into a non-empty directory = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "f.txt")); string(b) != "mine" {
		t.Errorf("existing file changed to %q", b)
	}
	if _, err := Restore(context.Background(), rc, tree, filepath.Join(dst, "f.txt"), RestoreOptions{}); err == nil {
		t.Errorf("Restore onto a file = nil error")
	}
}

func TestPushRefusesBadInput(t *testing.T) {
	t.Parallel()
	c, _ := client.New("http://127.0.0.1:1", "t", nil)
	dir := t.TempDir()
	for _, d := range []string{"x/same", "y/same"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	for name, paths := range map[string][]string{
		"none":            nil,
		"missing":         {filepath.Join(dir, "nope")},
		"same base names": {filepath.Join(dir, "x/same"), filepath.Join(dir, "y/same")},
		"root":            {"/"},
	} {
		if _, err := Push(context.Background(), c, paths, pushOptions("x")); err == nil {
			t.Errorf("%s: Push(%q) = nil error", name, paths)
		}
	}
	if _, err := Push(context.Background(), c, []string{dir}, PushOptions{}); err == nil {
		t.Errorf("Push without snapshot options = nil error")
	}
}
