package disk_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/blobtest"
	"github.com/wormvault/wormvault/internal/store/disk"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) store.Blobs {
		return mustOpen(t, t.TempDir(), disk.Options{})
	})
}

func mustOpen(t testing.TB, dir string, opts disk.Options) *disk.Disk {
	t.Helper()
	d, err := disk.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", dir, err)
	}
	return d
}

func mustPut(t testing.TB, d *disk.Disk, data []byte) chunk.Hash {
	t.Helper()
	h := chunk.Sum(data)
	if _, err := d.Put(t.Context(), h, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put(%s) error = %v", h, err)
	}
	return h
}

func blobPath(dir string, h chunk.Hash) string {
	s := h.String()
	return filepath.Join(dir, "blake3", s[0:2], s[2:4], s)
}

// tempFiles lists every file under dir whose name starts with ".tmp-".
func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), ".tmp-") {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// mustLeaveNothing checks that a failed Put of h left no trace: no blob, no
// temp file, nothing for Walk.
func mustLeaveNothing(t testing.TB, d *disk.Disk, h chunk.Hash) {
	t.Helper()
	if size, err := d.Stat(t.Context(), h); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat(%s) after failed Put = %d, %v; want ErrNotFound", h, size, err)
	}
	if tmps := tempFiles(t, d.Dir()); len(tmps) != 0 {
		t.Errorf("temp files left after failed Put: %v", tmps)
	}
	n := 0
	if err := d.Walk(t.Context(), func(chunk.Hash, int64) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("Walk after failed Put = %d blobs, %v; want 0, nil", n, err)
	}
}

var errInjected = errors.New("injected fault")

// faultFS wraps the real filesystem and fails the operations for which fail
// returns true. It records every operation it sees.
type faultFS struct {
	disk.VFS
	mu   sync.Mutex
	fail func(op, path string) bool
	ops  []string
}

func newFaultFS() *faultFS { return &faultFS{VFS: disk.OSFS{}} }

func (f *faultFS) arm(fail func(op, path string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
	f.ops = nil
}

func (f *faultFS) check(op, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, op+" "+path)
	if f.fail != nil && f.fail(op, path) {
		return fmt.Errorf("%s %s: %w", op, path, errInjected)
	}
	return nil
}

func (f *faultFS) called(op string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.ops {
		if o == op {
			return true
		}
	}
	return false
}

func (f *faultFS) MkdirAll(path string, perm fs.FileMode) error {
	if err := f.check("mkdir", path); err != nil {
		return err
	}
	return f.VFS.MkdirAll(path, perm)
}

func (f *faultFS) CreateTemp(dir, pattern string) (disk.File, error) {
	if err := f.check("create", dir); err != nil {
		return nil, err
	}
	file, err := f.VFS.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f}, nil
}

func (f *faultFS) Rename(oldpath, newpath string) error {
	if err := f.check("rename", newpath); err != nil {
		return err
	}
	return f.VFS.Rename(oldpath, newpath)
}

func (f *faultFS) Remove(name string) error {
	if err := f.check("remove", name); err != nil {
		return err
	}
	return f.VFS.Remove(name)
}

func (f *faultFS) SyncDir(path string) error {
	if err := f.check("syncdir", path); err != nil {
		return err
	}
	return f.VFS.SyncDir(path)
}

type faultFile struct {
	disk.File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fs.check("write", f.Name()); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *faultFile) Chmod(mode fs.FileMode) error {
	if err := f.fs.check("chmod", f.Name()); err != nil {
		return err
	}
	return f.File.Chmod(mode)
}

func (f *faultFile) Sync() error {
	if err := f.fs.check("sync", f.Name()); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	err := f.File.Close() // always release the descriptor
	if ferr := f.fs.check("close", f.Name()); ferr != nil {
		return ferr
	}
	return err
}

func TestPutFaults(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("wormvault "), 300_000) // 3 MB: several buffer-sized writes
	h := chunk.Sum(data)
	hex := h.String()
	leafOf := func(dir string) string { return filepath.Dir(blobPath(dir, h)) }

	tests := []struct {
		name string
		fail func(dir string) func(op, path string) bool
	}{
		{"mkdir", func(string) func(string, string) bool {
			return func(op, _ string) bool { return op == "mkdir" }
		}},
		{"create temp", func(string) func(string, string) bool {
			return func(op, _ string) bool { return op == "create" }
		}},
		{"first write", func(string) func(string, string) bool {
			return func(op, _ string) bool { return op == "write" }
		}},
		{"later write", func(string) func(string, string) bool {
			n := 0
			return func(op, _ string) bool {
				if op == "write" {
					n++
				}
				return op == "write" && n == 2
			}
		}},
		{"chmod", func(string) func(string, string) bool {
			return func(op, _ string) bool { return op == "chmod" }
		}},
		{"sync", func(string) func(string, string) bool {
			return func(op, _ string) bool { return op == "sync" }
		}},
		{"close", func(string) func(string, string) bool {
			return func(op, _ string) bool { return op == "close" }
		}},
		{"rename", func(string) func(string, string) bool {
			return func(op, _ string) bool { return op == "rename" }
		}},
		{"sync leaf directory after rename", func(dir string) func(string, string) bool {
			return func(op, path string) bool { return op == "syncdir" && path == leafOf(dir) }
		}},
		{"sync new fan-out directory", func(dir string) func(string, string) bool {
			return func(op, path string) bool { return op == "syncdir" && path == filepath.Join(dir, "blake3", hex[0:2]) }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ffs := newFaultFS()
			d := mustOpen(t, dir, disk.Options{FS: ffs})

			ffs.arm(tt.fail(dir))
			_, err := d.Put(t.Context(), h, bytes.NewReader(data))
			if !errors.Is(err, errInjected) {
				t.Fatalf("Put with failing %s: error = %v, want the injected fault", tt.name, err)
			}
			if !strings.Contains(err.Error(), hex) {
				t.Errorf("Put error %q does not name the hash", err)
			}
			mustLeaveNothing(t, d, h)

			// The store recovers: the same Put succeeds once the fault is gone,
			// and redoes any directory sync that failed.
			ffs.arm(nil)
			if n, err := d.Put(t.Context(), h, bytes.NewReader(data)); err != nil || n != int64(len(data)) {
				t.Fatalf("Put after the fault = %d, %v; want %d, nil", n, err, len(data))
			}
			if !ffs.called("syncdir " + leafOf(dir)) {
				t.Error("Put did not sync the leaf directory")
			}
			if strings.HasPrefix(tt.name, "sync new") {
				if !ffs.called("syncdir " + filepath.Join(dir, "blake3", hex[0:2])) {
					t.Error("after a failed fan-out sync, the retry did not sync the parent again")
				}
			}
			if size, err := d.Stat(t.Context(), h); err != nil || size != int64(len(data)) {
				t.Errorf("Stat after recovery = %d, %v", size, err)
			}
			if tmps := tempFiles(t, dir); len(tmps) != 0 {
				t.Errorf("temp files left: %v", tmps)
			}
		})
	}
}

// A failed directory sync must never remove a blob that was there before:
// an earlier Put may have been acknowledged and indexed.
func TestPutFailedDirSyncKeepsExisting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ffs := newFaultFS()
	d := mustOpen(t, dir, disk.Options{FS: ffs})
	data := []byte("acknowledged earlier")
	h := mustPut(t, d, data)

	leaf := filepath.Dir(blobPath(dir, h))
	ffs.arm(func(op, path string) bool { return op == "syncdir" && path == leaf })
	if _, err := d.Put(t.Context(), h, bytes.NewReader(data)); !errors.Is(err, errInjected) {
		t.Fatalf("re-Put with failing directory sync: error = %v, want the injected fault", err)
	}
	got, err := os.ReadFile(blobPath(dir, h))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("existing blob after failed re-Put = %q, %v; want %q", got, err, data)
	}
	if tmps := tempFiles(t, dir); len(tmps) != 0 {
		t.Errorf("temp files left: %v", tmps)
	}
}

// The stored file is verified content under its final name, read-only.
func TestPutLayoutAndMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := mustOpen(t, dir, disk.Options{})
	data := []byte("hello, vault")
	h := mustPut(t, d, data)

	path := blobPath(dir, h)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("blob not at %s: %v", path, err)
	}
	if got := fi.Mode(); got != 0o440 {
		t.Errorf("blob mode = %v, want -r--r-----", got)
	}
	for _, sub := range []string{filepath.Dir(path), filepath.Dir(filepath.Dir(path))} {
		fi, err := os.Stat(sub)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&^0o750 != 0 {
			t.Errorf("%s mode = %v, want at most 0750", sub, perm)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("blob content = %q, %v; want %q", got, err, data)
	}
}

func TestOpenCreatesMarker(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "new", "data")
	mustOpen(t, dir, disk.Options{})
	got, err := os.ReadFile(filepath.Join(dir, "FORMAT"))
	if err != nil || string(got) != "wormvault-disk 1\n" {
		t.Fatalf("FORMAT = %q, %v; want %q", got, err, "wormvault-disk 1\n")
	}
	for _, sub := range []string{"blake3", "quarantine"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Errorf("%s/ missing after Open: %v", sub, err)
		}
	}
	if tmps := tempFiles(t, dir); len(tmps) != 0 {
		t.Errorf("Open left temp files (probe, marker): %v", tmps)
	}
}

func TestOpenReopens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := []byte("survives reopen")
	h := mustPut(t, mustOpen(t, dir, disk.Options{}), data)
	d := mustOpen(t, dir, disk.Options{})
	if size, err := d.Stat(t.Context(), h); err != nil || size != int64(len(data)) {
		t.Errorf("Stat after reopen = %d, %v; want %d, nil", size, err, len(data))
	}
}

func TestOpenAcceptsOtherFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vault.toml"), []byte("x = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, dir, disk.Options{})
	if _, err := os.Stat(filepath.Join(dir, "FORMAT")); err != nil {
		t.Errorf("FORMAT not created beside other files: %v", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr error // nil: any error
	}{
		{"wrong marker", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "FORMAT"), "wormvault-disk 2\n")
		}, disk.ErrFormat},
		{"marker without newline", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "FORMAT"), "wormvault-disk 1")
		}, disk.ErrFormat},
		{"empty marker", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "FORMAT"), "")
		}, disk.ErrFormat},
		{"blake3 without marker", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "blake3"), 0o750); err != nil {
				t.Fatal(err)
			}
		}, disk.ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tt.setup(t, dir)
			_, err := disk.Open(dir, disk.Options{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open error = %v, want %v", err, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Join(dir, "quarantine")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("refused Open still created quarantine/ (%v)", err)
			}
		})
	}

	t.Run("not a directory", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "file")
		mustWrite(t, path, "x")
		if _, err := disk.Open(path, disk.Options{}); err == nil {
			t.Fatal("Open of a regular file succeeded")
		}
	})
}

// A filesystem that refuses writes fails Open, not the first upload.
func TestOpenProbeFails(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"create", "write", "sync", "rename", "remove", "syncdir"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			mustOpen(t, dir, disk.Options{}) // marker exists; only the probe runs
			ffs := newFaultFS()
			ffs.arm(func(o, _ string) bool { return o == op })
			_, err := disk.Open(dir, disk.Options{FS: ffs})
			if !errors.Is(err, errInjected) {
				t.Fatalf("Open with failing %s = %v, want the injected fault", op, err)
			}
		})
	}
	t.Run("read-only filesystem", func(t *testing.T) {
		t.Parallel()
		ffs := newFaultFS()
		ffs.arm(func(string, string) bool { return true })
		ro := &errnoFS{faultFS: ffs, errno: syscall.EROFS}
		_, err := disk.Open(t.TempDir(), disk.Options{FS: ro})
		if !errors.Is(err, syscall.EROFS) {
			t.Fatalf("Open on a read-only filesystem = %v, want EROFS", err)
		}
	})
}

// errnoFS turns faultFS's injected faults into a real errno.
type errnoFS struct {
	*faultFS
	errno syscall.Errno
}

func (e *errnoFS) conv(err error) error {
	if errors.Is(err, errInjected) {
		return &fs.PathError{Op: "open", Path: "x", Err: e.errno}
	}
	return err
}

func (e *errnoFS) MkdirAll(path string, perm fs.FileMode) error {
	return e.conv(e.faultFS.MkdirAll(path, perm))
}

func (e *errnoFS) CreateTemp(dir, pattern string) (disk.File, error) {
	f, err := e.faultFS.CreateTemp(dir, pattern)
	return f, e.conv(err)
}

func (e *errnoFS) Rename(o, n string) error { return e.conv(e.faultFS.Rename(o, n)) }
func (e *errnoFS) Remove(n string) error    { return e.conv(e.faultFS.Remove(n)) }
func (e *errnoFS) SyncDir(p string) error   { return e.conv(e.faultFS.SyncDir(p)) }

func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCleanTemp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := mustOpen(t, dir, disk.Options{})
	data := []byte("keep me")
	h := mustPut(t, d, data)
	leaf := filepath.Dir(blobPath(dir, h))

	leftovers := []string{
		filepath.Join(leaf, ".tmp-123456"),                   // interrupted Put
		filepath.Join(dir, "blake3", ".tmp-probe-99"),        // interrupted probe
		filepath.Join(dir, "blake3", "00", "00", ".tmp-abc"), // in another leaf
	}
	for _, p := range leftovers {
		mustWrite(t, p, "partial")
	}
	other := filepath.Join(dir, "vault.toml") // not under blake3/: not ours
	mustWrite(t, other, "x")

	n, err := d.CleanTemp(t.Context())
	if err != nil || n != len(leftovers) {
		t.Fatalf("CleanTemp = %d, %v; want %d, nil", n, err, len(leftovers))
	}
	if tmps := tempFiles(t, dir); len(tmps) != 0 {
		t.Errorf("temp files left after CleanTemp: %v", tmps)
	}
	if got, err := os.ReadFile(blobPath(dir, h)); err != nil || !bytes.Equal(got, data) {
		t.Errorf("blob after CleanTemp = %q, %v", got, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("CleanTemp touched a file outside blake3/: %v", err)
	}
	if n, err := d.CleanTemp(t.Context()); err != nil || n != 0 {
		t.Errorf("second CleanTemp = %d, %v; want 0, nil", n, err)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWalkSkipsStrays(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs syncBuffer
	d := mustOpen(t, dir, disk.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h := mustPut(t, d, []byte("the only blob"))
	hex := h.String()
	leaf := filepath.Dir(blobPath(dir, h))
	other := chunk.Sum([]byte("elsewhere")).String()
	b3 := filepath.Join(dir, "blake3")

	strays := []string{
		filepath.Join(b3, "README"),                            // file at the top
		filepath.Join(b3, "zz", "00", strings.Repeat("0", 64)), // bad fan-out name
		filepath.Join(b3, "AB", "CD", strings.Repeat("A", 64)), // uppercase fan-out
		filepath.Join(b3, hex[0:2], "notes.txt"),               // file at the middle
		filepath.Join(leaf, "notes.txt"),                       // not a hash
		filepath.Join(leaf, strings.ToUpper(hex)),              // uppercase hash
		filepath.Join(leaf, hex+".bak"),                        // suffix
		filepath.Join(leaf, other),                             // hash in the wrong fan-out
		filepath.Join(leaf, hex[:63]),                          // too short
	}
	for _, p := range strays {
		mustWrite(t, p, "stray")
	}
	// A directory named like a blob.
	dirBlob := chunk.Sum([]byte("dir")).String()
	if err := os.MkdirAll(filepath.Join(b3, dirBlob[0:2], dirBlob[2:4], dirBlob), 0o750); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(leaf, ".tmp-999"), "in progress") // silently skipped

	var got []chunk.Hash
	err := d.Walk(t.Context(), func(h chunk.Hash, _ int64) error {
		got = append(got, h)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk error = %v", err)
	}
	if len(got) != 1 || got[0] != h {
		t.Errorf("Walk = %v, want only %s", got, h)
	}
	// One warning per stray, plus the blob-named directory; zz/ and AB/ are
	// reported once each, without descending into them.
	wantWarnings := len(strays) + 1
	if n := strings.Count(logs.String(), "stray entry"); n != wantWarnings {
		t.Errorf("Walk logged %d stray warnings, want %d:\n%s", n, wantWarnings, logs.String())
	}
	if strings.Contains(logs.String(), ".tmp-999") {
		t.Error("Walk warned about a temp file")
	}
}

func TestQuarantineLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clock.NewFake(time.Unix(1700000000, 42))
	d := mustOpen(t, dir, disk.Options{Clock: clk})
	data := []byte("gone bad")
	h := mustPut(t, d, data)

	if err := d.Quarantine(t.Context(), h); err != nil {
		t.Fatalf("Quarantine error = %v", err)
	}
	first := filepath.Join(dir, "quarantine", fmt.Sprintf("%s.%d", h, int64(1700000000_000000042)))
	if got, err := os.ReadFile(first); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("quarantined copy at %s = %q, %v; want %q", first, got, err, data)
	}
	if _, err := os.Lstat(blobPath(dir, h)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob still at its address after Quarantine: %v", err)
	}

	// Same hash, same instant: the earlier evidence is not overwritten.
	mustPut(t, d, data)
	if err := d.Quarantine(t.Context(), h); err != nil {
		t.Fatalf("second Quarantine error = %v", err)
	}
	second := filepath.Join(dir, "quarantine", fmt.Sprintf("%s.%d", h, int64(1700000000_000000043)))
	for _, p := range []string{first, second} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("quarantined copy missing: %v", err)
		}
	}
}

// Put must report a client's read error as itself, not as a write failure.
func TestPutReadErrorWrapped(t *testing.T) {
	t.Parallel()
	d := mustOpen(t, t.TempDir(), disk.Options{})
	h := chunk.Sum([]byte("whatever"))
	_, err := d.Put(t.Context(), h, io.MultiReader(strings.NewReader("what"), iotestErrReader{syscall.ECONNRESET}))
	if !errors.Is(err, syscall.ECONNRESET) || !strings.Contains(err.Error(), "read body") {
		t.Errorf("Put error = %v, want ECONNRESET described as a read failure", err)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func BenchmarkPut(b *testing.B) {
	// Point TMPDIR at the filesystem to measure: on tmpfs fsync is free.
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20, 8 << 20} {
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			d := mustOpen(b, b.TempDir(), disk.Options{})
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := uint64(0); b.Loop(); i++ {
				// Each iteration stores a new blob, as uploads do.
				b.StopTimer()
				for j := range 8 {
					data[j] = byte(i >> (8 * j))
				}
				h := chunk.Sum(data)
				b.StartTimer()
				if _, err := d.Put(b.Context(), h, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
