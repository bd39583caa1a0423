package main

// The backup agent's acceptance tests (issue 6), through the CLI, on a real
// vault (the API over a store on PostgreSQL, in process) and, for the
// SIGKILL test, with `vault push` as a subprocess:
//
//  1. a generated tree with a 200 MiB file round-trips: bytes, modes, times;
//  2. pushing it again uploads nothing and commits; one changed byte in the
//     large file uploads only a few chunks;
//  3. a push killed midway completes when rerun, uploading no chunk twice
//     except those in flight at the kill;
//  4. a chunk tampered with on the vault's disk fails the restore loudly,
//     naming the file, which is not written;
//  5. 100 MiB from a pipe (--stdin) round-trips through --stdout.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wormvault/wormvault/internal/agent"
	"github.com/wormvault/wormvault/internal/agent/agenttest"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
)

// runAgentCLI runs the CLI with env only, stdin and stdout as given (nil:
// empty input, output collected), and a generous bound: pushes of hundreds
// of MiB run under the race detector.
func runAgentCLI(t testing.TB, env map[string]string, stdin io.Reader, stdout io.Writer, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errOut bytes.Buffer
	if stdout == nil {
		stdout = &out
	}
	err := run(ctx, args, envOf(env), stdin, stdout, &errOut)
	return cliResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

func mustPushCLI(t testing.TB, env map[string]string, stdin io.Reader, args ...string) pushSummary {
	t.Helper()
	r := runAgentCLI(t, env, stdin, nil, append([]string{"push", "--json"}, args...)...)
	if r.err != nil {
		t.Fatalf("vault push %s: %v\nstderr:\n%s", strings.Join(args, " "), r.err, r.stderr)
	}
	var s pushSummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("vault push --json printed %q: %v", r.stdout, err)
	}
	return s
}

func agentEnv(v *agenttest.Vault, token string) map[string]string {
	return map[string]string{"VAULT_URL": v.URL, "VAULT_TOKEN": token}
}

// plainBinary is the vault command built without the race detector.
var plainBinary struct {
	once sync.Once
	path string
	err  error
}

// mustBuildPlainVault returns the vault binary built without the race
// detector, next to mustBuildVault's (and removed with it by TestMain).
// Under the race detector the content-defined chunker, a dependency whose
// inner loop is instrumented byte by byte, runs at about 30 MB/s; the
// pushes that read hundreds of MiB run this binary instead. The agent's
// concurrency is race-checked by internal/agent's tests and by the
// in-process push of TestPushStdin.
func mustBuildPlainVault(t testing.TB) string {
	t.Helper()
	raced := mustBuildVault(t)
	if !raceEnabled() {
		return raced
	}
	plainBinary.once.Do(func() {
		path := filepath.Join(filepath.Dir(raced), "vault-norace")
		out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			plainBinary.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		plainBinary.path = path
	})
	if plainBinary.err != nil {
		t.Fatal(plainBinary.err)
	}
	return plainBinary.path
}

// mustPushBinary runs `vault push --json ARGS` as a subprocess with the
// vault's URL and token, and returns its summary.
func mustPushBinary(t testing.TB, bin string, v *agenttest.Vault, args ...string) pushSummary {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"push", "--json", "--progress-interval", "0"}, args...)...)
	cmd.Env = append(subprocessEnv(), "VAULT_URL="+v.URL, "VAULT_TOKEN="+v.Agent)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("vault push %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var s pushSummary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("vault push --json printed %q: %v", out, err)
	}
	return s
}

// setTreeTimes gives every path under root a distinct modification time
// with nanoseconds (symbolic links their own), deepest first.
func setTreeTimes(t testing.TB, root string) {
	t.Helper()
	var paths []string
	if err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 2, 29, 23, 59, 58, 999999999, time.UTC)
	for i := len(paths) - 1; i >= 0; i-- {
		mt := base.Add(-time.Duration(i)*time.Minute - time.Duration(i*104729)*time.Nanosecond)
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("set time of %s: %v", paths[i], err)
		}
	}
}

func mkdirMode(t testing.TB, p string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}

func writeMode(t testing.TB, p string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}

// newAcceptanceTree builds the tree of acceptance 1 under a directory
// named "tree": nested directories, empty files, a file of bigSize, many
// small files, symbolic links, assorted modes and times.
func newAcceptanceTree(t testing.TB, bigSize int64, small int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tree")
	for _, d := range []string{"", "docs", "docs/2026", "docs/2026/q4", "docs/2026/q4/deep/deeper", "bin", "empty-dir"} {
		mkdirMode(t, filepath.Join(src, d), 0o755)
	}
	agenttest.WriteRandomFile(t, filepath.Join(src, "big.bin"), bigSize, 20260601, 0o640)
	for _, p := range []string{"empty", "docs/empty", "docs/2026/q4/deep/deeper/empty"} {
		writeMode(t, filepath.Join(src, p), nil, 0o644)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	for i := range small {
		dir := []string{"docs", "docs/2026", "docs/2026/q4"}[i%3]
		agenttest.WriteRandomFile(t, filepath.Join(src, dir, fmt.Sprintf("note-%04d.txt", i)), int64(1+rng.IntN(16<<10)), uint64(i), 0o644)
	}
	writeMode(t, filepath.Join(src, "bin/tool"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	writeMode(t, filepath.Join(src, "docs/secret"), []byte("s3cret"), 0o600)
	writeMode(t, filepath.Join(src, "docs/readonly"), []byte("r"), 0o444)
	for name, target := range map[string]string{"latest": "docs/2026/q4", "bin/sh": "/bin/sh", "docs/dangling": "../gone"} {
		if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
			t.Fatal(err)
		}
	}
	setTreeTimes(t, src)
	for d, perm := range map[string]os.FileMode{"docs/2026": 0o750, "bin": 0o711, "empty-dir": 0o700} {
		if err := os.Chmod(filepath.Join(src, d), perm); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

// TestPushRestoreAcceptance covers acceptance 1 and 2.
func TestPushRestoreAcceptance(t *testing.T) {
	t.Parallel()
	const bigSize = 200 << 20
	up := agenttest.NewUploads()
	v := agenttest.New(t, agenttest.Options{Middleware: up.Middleware})
	src := newAcceptanceTree(t, bigSize, 600)
	readerE := agentEnv(v, v.Reader)

	// 1. Push, restore, compare.
	bin := mustBuildPlainVault(t)
	first := mustPushBinary(t, bin, v, "--source", "ws1", "--snapshot-name", "full-1", "--tag", "kind=daily", src)
	t.Logf("first push: %d files, %d bytes in %.1fs (%.1f MB/s), peak RSS %d MiB",
		first.Files, first.Bytes, first.Seconds, first.MBPerSec, first.PeakRSS>>20)
	if first.Files != 607 || first.Dirs != 8 || first.Symlinks != 3 || first.Bytes < bigSize || first.Warnings != 0 ||
		first.NewBytes < bigSize || first.Snapshot.Source != "ws1" || first.Snapshot.Name != "full-1" {
		t.Errorf("first push summary = %+v", first)
	}
	// Files are streamed: the 200 MiB file is never held whole. (The
	// process's own high-water mark: a child's rusage would count the
	// test process, whose memory it shares until exec.)
	if first.PeakRSS == 0 || first.PeakRSS > 150<<20 {
		t.Errorf("vault push peaked at %d MiB resident pushing a 200 MiB file, want well under 200 MiB", first.PeakRSS>>20)
	}
	dst := filepath.Join(t.TempDir(), "restore")
	r := runAgentCLI(t, readerE, nil, nil, "restore", strconv.FormatInt(first.Snapshot.ID, 10), dst)
	if r.err != nil {
		t.Fatalf("vault restore: %v\n%s", r.err, r.stderr)
	}
	if !strings.Contains(r.stdout, "607 files, 8 directories, 3 symbolic links") {
		t.Errorf("restore printed %q", r.stdout)
	}
	agenttest.CompareTrees(t, src, filepath.Join(dst, "tree"))

	// 2. The same tree again: nothing uploaded, a new snapshot committed.
	up.Reset()
	second := mustPushBinary(t, bin, v, "--source", "ws1", "--snapshot-name", "full-2", src)
	if n := len(up.Counts()); n != 0 || second.UploadedBytes != 0 || second.NewBytes != 0 || second.Snapshot.ID == first.Snapshot.ID ||
		second.Snapshot.ManifestRoot != first.Snapshot.ManifestRoot || second.Dedup != 1 {
		t.Errorf("second push: %d chunks uploaded, summary %+v; want nothing uploaded and a new snapshot of the same root", n, second)
	}

	// One changed byte in the large file: only the chunk(s) around it.
	big := filepath.Join(src, "big.bin")
	f, err := os.OpenFile(big, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 123_456_789); err != nil {
		t.Fatal(err)
	}
	f.Close()
	up.Reset()
	third := mustPushBinary(t, bin, v, "--source", "ws1", "--snapshot-name", "full-3", src)
	tree, err := agent.ReadTree(context.Background(), v.Client(t, v.Reader), third.Snapshot.ManifestRoot, agent.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bigChunks := map[chunk.Hash]bool{}
	for _, e := range tree.Entries {
		if e.Path == "tree/big.bin" {
			for _, h := range e.Chunks {
				bigChunks[h] = true
			}
			if len(e.Chunks) < 100 {
				t.Errorf("200 MiB in %d chunks, want about 200 (1 MiB on average)", len(e.Chunks))
			}
		}
	}
	content := 0
	for h := range up.Counts() {
		if bigChunks[h] {
			content++
		}
	}
	t.Logf("after one changed byte: %d chunks uploaded (%d of big.bin), %d bytes", len(up.Counts()), content, up.Bytes())
	if content < 1 || content > 2 || len(up.Counts()) > content+5 || up.Bytes() > 2*agent.MaxChunkSize+(1<<20) ||
		third.UploadedBytes != up.Bytes() {
		t.Errorf("after one changed byte: %d chunks of big.bin and %d in all uploaded, %d bytes (summary %d); want 1-2 content chunks plus a few metadata chunks",
			content, len(up.Counts()), up.Bytes(), third.UploadedBytes)
	}
}

// TestPushResumesAfterSIGKILL covers acceptance 3: `vault push` killed
// with SIGKILL midway, then run again, completes, and no chunk is uploaded
// twice except those whose upload was in flight at the kill.
func TestPushResumesAfterSIGKILL(t *testing.T) {
	t.Parallel()
	bin := mustBuildVault(t)
	up := agenttest.NewUploads()
	v := agenttest.New(t, agenttest.Options{Middleware: up.Middleware})
	src := filepath.Join(t.TempDir(), "tree")
	mkdirMode(t, filepath.Join(src, "small"), 0o755)
	for i := range 10 {
		agenttest.WriteRandomFile(t, filepath.Join(src, fmt.Sprintf("part-%02d", i)), 3<<20+int64(i), uint64(100+i), 0o644)
	}
	for i := range 300 {
		agenttest.WriteRandomFile(t, filepath.Join(src, "small", fmt.Sprintf("s-%03d", i)), 2048+int64(i), uint64(1000+i), 0o644)
	}

	// After six uploads, hold every further one until the push is dead.
	const passed = 6
	var (
		started  atomic.Int64
		mu       sync.Mutex
		held     = map[chunk.Hash]bool{}
		holding  = make(chan struct{})
		holdOnce sync.Once
		release  = make(chan struct{})
	)
	up.SetBefore(func(w http.ResponseWriter, r *http.Request, hashes []chunk.Hash) bool {
		if started.Add(1) <= passed {
			return true
		}
		mu.Lock()
		for _, h := range hashes {
			held[h] = true
		}
		mu.Unlock()
		holdOnce.Do(func() { close(holding) })
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
		return false
	})

	pushArgs := []string{"push", "--json", "--source", "crashy", "--snapshot-name", "resumed", "--workers", "3", "--progress-interval", "0", src}
	env := append(subprocessEnv(), "VAULT_URL="+v.URL, "VAULT_TOKEN="+v.Agent)
	var errOut bytes.Buffer
	cmd := exec.Command(bin, pushArgs...)
	cmd.Env, cmd.Stderr = env, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-holding:
	case err := <-exited:
		close(release)
		t.Fatalf("vault push exited (%v) before %d uploads; stderr:\n%s", err, passed+1, errOut.String())
	case <-time.After(2 * time.Minute):
		close(release)
		t.Fatalf("no upload held within 2 minutes; stderr:\n%s", errOut.String())
	}
	inFlight := up.InFlight() // uploads not yet answered: held, or still in the vault
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("vault push ended with %v, want death by SIGKILL", err)
	}
	close(release)
	up.SetBefore(nil)
	mu.Lock()
	for h := range held {
		inFlight[h] = true
	}
	mu.Unlock()
	firstRun := up.Counts()
	if len(firstRun) == 0 {
		t.Fatal("the killed push uploaded nothing")
	}

	rerun := exec.Command(bin, pushArgs...)
	rerun.Env = env
	var rerunErr bytes.Buffer
	rerun.Stderr = &rerunErr
	out, err := rerun.Output()
	if err != nil {
		t.Fatalf("vault push after the kill: %v\nstderr:\n%s", err, rerunErr.String())
	}
	var s pushSummary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	if s.Snapshot.ID == 0 || s.KnownChunks == 0 || s.Files != 310 {
		t.Errorf("rerun summary = %+v, want a snapshot of 310 files reusing the chunks uploaded before the kill", s)
	}
	twice := 0
	for h, n := range up.Counts() {
		if n > 1 && !inFlight[h] {
			t.Errorf("chunk %s uploaded %d times, and was not in flight at the kill", h, n)
		}
		if n > 1 {
			twice++
		}
	}
	t.Logf("killed push uploaded %d chunks (%d in flight at the kill); the rerun found %d in the vault; %d uploaded twice",
		len(firstRun), len(inFlight), s.KnownChunks, twice)

	dst := filepath.Join(t.TempDir(), "r")
	if r := runAgentCLI(t, agentEnv(v, v.Reader), nil, nil, "restore", strconv.FormatInt(s.Snapshot.ID, 10), dst); r.err != nil {
		t.Fatalf("restore: %v\n%s", r.err, r.stderr)
	}
	agenttest.CompareTrees(t, src, filepath.Join(dst, "tree"))
}

// TestRestoreTamperedChunk covers acceptance 4.
func TestRestoreTamperedChunk(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	src := filepath.Join(t.TempDir(), "tree")
	mkdirMode(t, src, 0o755)
	data := filepath.Join(src, "data.bin")
	agenttest.WriteRandomFile(t, data, 3<<20, 99, 0o644)
	writeMode(t, filepath.Join(src, "other.txt"), []byte("untouched"), 0o644)
	agentE, readerE := agentEnv(v, v.Agent), agentEnv(v, v.Reader)
	tree := mustPushCLI(t, agentE, nil, "--source", "t", "--snapshot-name", "tree", src)
	single := mustPushCLI(t, agentE, nil, "--source", "t", "--snapshot-name", "single", data)

	rt, err := agent.ReadTree(context.Background(), v.Client(t, v.Reader), tree.Snapshot.ManifestRoot, agent.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []chunk.Hash
	for _, e := range rt.Entries {
		if e.Path == "tree/data.bin" {
			chunks = e.Chunks
		}
	}
	if len(chunks) < 2 {
		t.Fatalf("data.bin in %d chunks, want several", len(chunks))
	}
	// Tamper with the second chunk on the vault's disk (chunks over the
	// pack threshold are files of their own, mode 0440).
	blob := v.BlobPath(chunks[1])
	if err := os.Chmod(blob, 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	f.ReadAt(b[:], 1000)
	b[0] ^= 0x20
	f.WriteAt(b[:], 1000)
	f.Close()

	dst := filepath.Join(t.TempDir(), "r")
	r := runAgentCLI(t, readerE, nil, nil, "restore", strconv.FormatInt(tree.Snapshot.ID, 10), dst)
	if r.err == nil || !strings.Contains(r.err.Error(), "tree/data.bin: chunk 2 of") || !strings.Contains(r.err.Error(), chunks[1].String()) {
		t.Fatalf("restore of a tampered chunk: err %v, want a failure naming tree/data.bin and the chunk", r.err)
	}
	t.Logf("restore error: %v", r.err)
	if _, err := os.Lstat(filepath.Join(dst, "tree/data.bin")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("data.bin was written (err %v)", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "tree/other.txt")); err != nil || string(b) != "untouched" {
		t.Errorf("other.txt = %q, %v", b, err)
	}
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".wvrestore-") {
			t.Errorf("temporary file %s left", p)
		}
		return nil
	})

	// --stdout: stops before the tampered chunk; what was written is the
	// file's correct beginning.
	var out bytes.Buffer
	r = runAgentCLI(t, readerE, nil, &out, "restore", "--stdout", strconv.FormatInt(single.Snapshot.ID, 10))
	if r.err == nil || !strings.Contains(r.err.Error(), "data.bin: chunk 2 of") {
		t.Fatalf("restore --stdout of a tampered chunk: err %v", r.err)
	}
	want, _ := os.ReadFile(data)
	if out.Len() == 0 || out.Len() >= len(want) || !bytes.Equal(out.Bytes(), want[:out.Len()]) {
		t.Errorf("--stdout wrote %d bytes, want a correct prefix of the %d", out.Len(), len(want))
	}
}

// writeDump writes a pg_dump-like text stream of exactly size bytes: a
// header, then COPY rows with increasing ids drawn from a few thousand
// distinct row bodies (cheap to generate under the race detector, and
// never the same 1 MiB twice).
func writeDump(w io.Writer, size int64) error {
	rng := rand.New(rand.NewPCG(5, 432))
	bodies := make([][]byte, 4096)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, "\tcustomer-%d\t%d.%02d\t%016x\n", rng.IntN(50_000), rng.IntN(100_000), rng.IntN(100), rng.Uint64())
	}
	buf := make([]byte, 0, 1<<20)
	buf = append(buf, "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\n"+
		"CREATE TABLE public.orders (id bigint NOT NULL, customer text, amount numeric(12,2), note text);\n\n"+
		"COPY public.orders (id, customer, amount, note) FROM stdin;\n"...)
	for id := int64(1); size > 0; id++ {
		buf = strconv.AppendInt(buf, id, 10)
		buf = append(buf, bodies[rng.IntN(len(bodies))]...)
		if len(buf) >= 1<<20-64 || int64(len(buf)) >= size {
			n := min(int64(len(buf)), size)
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			size -= n
			buf = buf[:0]
		}
	}
	return nil
}

// hashWriter hashes what is written to it.
type hashWriter struct {
	hw interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (h *hashWriter) Write(p []byte) (int, error) { h.n += int64(len(p)); return h.hw.Write(p) }

// TestPushStdin covers acceptance 5: a 100 MiB pg_dump-style stream from a
// pipe, pushed with --stdin, found with snapshots list --source, and
// restored with --stdout, bit for bit.
func TestPushStdin(t *testing.T) {
	t.Parallel()
	const size = 100 << 20
	v := agenttest.New(t, agenttest.Options{})
	pr, pw := io.Pipe()
	in := &hashWriter{hw: chunk.NewHasher()}
	go func() { pw.CloseWithError(writeDump(io.MultiWriter(pw, in), size)) }()
	s := mustPushCLI(t, agentEnv(v, v.Agent), pr, "--stdin", "--name", "db01.sql", "--source", "db01", "--tag", "postgres", "--retain", "400d")
	if s.Files != 1 || s.Bytes != size || s.Snapshot.Source != "db01" || s.Snapshot.RetainUntil.Before(time.Now().Add(399*24*time.Hour)) {
		t.Errorf("push summary = %+v", s)
	}

	readerE := agentEnv(v, v.Reader)
	r := runAgentCLI(t, readerE, nil, nil, "snapshots", "list", "--source", "db01", "--json")
	var list []client.Snapshot
	if r.err != nil || json.Unmarshal([]byte(r.stdout), &list) != nil || len(list) != 1 || list[0].ID != s.Snapshot.ID {
		t.Fatalf("snapshots list --source db01: %v %q", r.err, r.stdout)
	}
	// "latest" of the source finds it; --file names the file.
	out := &hashWriter{hw: chunk.NewHasher()}
	r = runAgentCLI(t, readerE, nil, out, "restore", "--stdout", "--file", "db01.sql", "--source", "db01", "latest")
	if r.err != nil {
		t.Fatalf("restore --stdout: %v\n%s", r.err, r.stderr)
	}
	if out.n != size || !bytes.Equal(out.hw.Sum(nil), in.hw.Sum(nil)) {
		t.Errorf("restored %d bytes hashing to %x, pushed %d hashing to %x", out.n, out.hw.Sum(nil), in.n, in.hw.Sum(nil))
	}
	// By id, a file the snapshot does not have is refused before anything
	// is written.
	var none bytes.Buffer
	if r := runAgentCLI(t, readerE, nil, &none, "restore", "--stdout", "--file", "other.sql", strconv.FormatInt(list[0].ID, 10)); r.err == nil || none.Len() != 0 {
		t.Errorf("restore --stdout --file other.sql: %v, %d bytes written", r.err, none.Len())
	}
}

func TestPushRestoreUsage(t *testing.T) {
	t.Parallel()
	up := agenttest.NewUploads()
	v := agenttest.New(t, agenttest.Options{Middleware: up.Middleware})
	dir := t.TempDir()
	writeMode(t, filepath.Join(dir, "f"), []byte("x"), 0o644)
	tokenFile := filepath.Join(dir, "token")
	writeMode(t, tokenFile, []byte(v.Agent+"\n"), 0o600)
	noToken := map[string]string{"VAULT_URL": v.URL}
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"nothing", agentEnv(v, v.Agent), []string{"push"}, "nothing to push"},
		{"stdin and paths", agentEnv(v, v.Agent), []string{"push", "--stdin", "--name", "x", dir}, "--stdin takes no PATH"},
		{"stdin without name", agentEnv(v, v.Agent), []string{"push", "--stdin"}, "--stdin needs --name"},
		{"name without stdin", agentEnv(v, v.Agent), []string{"push", "--name", "x", dir}, "--name is for --stdin"},
		{"both retentions", agentEnv(v, v.Agent), []string{"push", "--retain", "40d", "--retain-until", "2030-01-01", dir}, "not both"},
		{"past retention", agentEnv(v, v.Agent), []string{"push", "--retain-until", "2020-01-01", dir}, "not in the future"},
		{"bad retention", agentEnv(v, v.Agent), []string{"push", "--retain", "forever", dir}, "want a duration"},
		{"bad tag", agentEnv(v, v.Agent), []string{"push", "--tag", "has space", dir}, "letters, digits"},
		{"no url", map[string]string{"VAULT_TOKEN": v.Agent}, []string{"push", dir}, "VAULT_URL"},
		{"no token", noToken, []string{"push", dir}, "agent token"},
		{"missing token file", noToken, []string{"push", "--token-file", filepath.Join(dir, "nope"), dir}, "token file"},
		{"missing path", agentEnv(v, v.Agent), []string{"push", filepath.Join(dir, "nope")}, "no such file"},
		{"reader pushes", agentEnv(v, v.Reader), []string{"push", "--source", "s", dir}, "this needs an agent token"},
		{"restore args", agentEnv(v, v.Reader), []string{"restore", "1"}, "want SNAPSHOT TARGET_DIR"},
		{"restore bad id", agentEnv(v, v.Reader), []string{"restore", "x", dir}, "not a snapshot id"},
		{"restore unknown", agentEnv(v, v.Reader), []string{"restore", "999", filepath.Join(dir, "new")}, "not_found"},
		{"agent restores", agentEnv(v, v.Agent), []string{"restore", "1", filepath.Join(dir, "new")}, "this needs a reader token"},
		{"file without stdout", agentEnv(v, v.Reader), []string{"restore", "--file", "x", "1", dir}, "--file is for --stdout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runAgentCLI(t, tt.env, nil, nil, tt.args...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.want) {
				t.Errorf("vault %s: err %v, want it to mention %q", strings.Join(tt.args, " "), r.err, tt.want)
			}
		})
	}
	if n := len(up.Counts()); n != 0 {
		t.Errorf("%d chunks uploaded by refused commands", n)
	}
	// The token file works, and the summary is readable.
	r := runAgentCLI(t, noToken, nil, nil, "push", "--token-file", tokenFile, "--source", "s", "--snapshot-name", "n", filepath.Join(dir, "f"))
	if r.err != nil || !strings.Contains(r.stdout, "snapshot:") || !strings.Contains(r.stdout, "deduplicated") {
		t.Errorf("push with --token-file: %v\nstdout %s\nstderr %s", r.err, r.stdout, r.stderr)
	}
}
