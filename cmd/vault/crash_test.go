package main

// End-to-end tests that run the real vault binary as a subprocess: a SIGKILL
// in the middle of a burst of concurrent uploads (invariant 4), and a
// graceful SIGTERM while an upload is half sent.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/zeebo/blake3"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// vaultBinary is the vault command, built once per test binary by
// mustBuildVault and removed by TestMain.
var vaultBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if vaultBinary.dir != "" {
		os.RemoveAll(vaultBinary.dir)
	}
	os.Exit(code)
}

// raceEnabled reports whether this test binary was built with -race, so the
// server binary can be built the same way and its data races fail the tests
// (a race-enabled binary exits 66 after reporting one).
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// mustBuildVault builds ./cmd/vault once and returns the binary's path.
func mustBuildVault(t testing.TB) string {
	t.Helper()
	vaultBinary.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			vaultBinary.err = fmt.Errorf("the go tool is needed to build the vault binary for end-to-end tests: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "vault-e2e-bin-")
		if err != nil {
			vaultBinary.err = err
			return
		}
		vaultBinary.dir = dir
		path := filepath.Join(dir, "vault")
		args := []string{"build", "-o", path}
		if raceEnabled() {
			args = append(args, "-race")
		}
		args = append(args, ".") // the test runs in cmd/vault
		cmd := exec.Command(goTool, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			vaultBinary.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		vaultBinary.path = path
	})
	if vaultBinary.err != nil {
		t.Fatal(vaultBinary.err)
	}
	return vaultBinary.path
}

// subprocessEnv is this process's environment without VAULT_* variables, so
// that a developer's settings never leak into a server under test: every
// setting is passed as a flag.
func subprocessEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

// mustRunVault runs a short vault command to completion and returns its
// standard output and standard error.
func mustRunVault(t testing.TB, bin string, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = subprocessEnv()
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("vault %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String()
}

// mustIssueToken issues a token with the vault binary, registered in the
// database dbURL; agent and reader tokens reach every source.
func mustIssueToken(t testing.TB, bin, dir, dbURL, role, subject string) string {
	t.Helper()
	args := []string{"token", "issue", "--data-dir", dir, "--database-url", dbURL, "--role", role, "--subject", subject, "--ttl", "1h"}
	if auth.Scoped(auth.Role(role)) {
		args = append(args, "--all-sources")
	}
	out, _ := mustRunVault(t, bin, args...)
	tok := strings.TrimSpace(out)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("vault token issue --role %s printed %q, want a JWT", role, out)
	}
	return tok
}

// logSink collects a process's log output line by line and lets tests wait
// for a given JSON log record. It is safe for concurrent use.
type logSink struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced whenever a line is added
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.lines = append(s.lines, string(s.partial[:i]))
		s.partial = s.partial[i+1:]
		added = true
	}
	if added {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	return len(p), nil
}

func (s *logSink) snapshot() ([]string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...), s.changed
}

// String returns everything logged so far.
func (s *logSink) String() string {
	lines, _ := s.snapshot()
	return strings.Join(lines, "\n")
}

// find returns the first JSON record whose msg is msg.
func (s *logSink) find(msg string) (map[string]any, bool) {
	lines, _ := s.snapshot()
	return findRecord(lines, msg)
}

func findRecord(lines []string, msg string) (map[string]any, bool) {
	for _, l := range lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			return rec, true
		}
	}
	return nil, false
}

// wait returns the first JSON record whose msg is msg, waiting at most
// timeout for it, and failing early once exited is closed without it.
func (s *logSink) wait(t testing.TB, msg string, timeout time.Duration, exited <-chan struct{}) map[string]any {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		lines, changed := s.snapshot()
		if rec, ok := findRecord(lines, msg); ok {
			return rec
		}
		select {
		case <-changed:
		case <-exited:
			if rec, ok := s.find(msg); ok {
				return rec
			}
			t.Fatalf("process exited without logging %q; log:\n%s", msg, s.String())
		case <-timer.C:
			t.Fatalf("no %q log record within %s; log:\n%s", msg, timeout, s.String())
		}
	}
}

// vaultServer is a `vault serve` subprocess.
type vaultServer struct {
	cmd  *exec.Cmd
	log  *logSink
	done chan struct{} // closed once the process has exited
	err  error         // Wait's result; read only after done is closed
	url  string        // base URL, from the "vault serving" log record
}

// mustStartVault starts `vault serve` with args and waits until it logs the
// address it serves on. The process is killed at cleanup if still running.
func mustStartVault(t testing.TB, bin string, args ...string) *vaultServer {
	t.Helper()
	s := &vaultServer{log: newLogSink(), done: make(chan struct{})}
	s.cmd = exec.Command(bin, append([]string{"serve"}, args...)...)
	s.cmd.Env = subprocessEnv()
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start vault serve: %v", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("log of vault serve (pid %d):\n%s", s.cmd.Process.Pid, s.log.String())
		}
	})
	rec := s.log.wait(t, "vault serving", 60*time.Second, s.done)
	u, ok := rec["url"].(string)
	if !ok || !strings.HasPrefix(u, "http://") {
		t.Fatalf("vault serving record has url %v, want http://host:port", rec["url"])
	}
	s.url = u
	return s
}

// signal sends sig to the server process.
func (s *vaultServer) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to vault serve: %v", sig, err)
	}
}

// waitExit waits at most timeout for the process to exit and returns Wait's
// error.
func (s *vaultServer) waitExit(t testing.TB, timeout time.Duration) error {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-s.done:
		return s.err
	case <-timer.C:
		t.Fatalf("vault serve did not exit within %s; log:\n%s", timeout, s.log.String())
		return nil
	}
}

// newTestClient returns an HTTP client with a bound on every request.
func newTestClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// mustWaitUntil polls cond every few milliseconds for at most timeout.
func mustWaitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// mustWaitReady polls /readyz until it answers 200.
func mustWaitReady(t testing.TB, c *http.Client, s *vaultServer) {
	t.Helper()
	mustWaitUntil(t, 30*time.Second, s.url+"/readyz to answer 200", func() bool {
		select {
		case <-s.done:
			t.Fatalf("vault serve exited while waiting for readiness: %v; log:\n%s", s.err, s.log.String())
		default:
		}
		resp, err := c.Get(s.url + "/readyz")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// putChunk uploads data under h and returns the response status. A status
// that arrived counts even if the body was then cut off: the server only
// writes a 2xx status after the chunk is durable.
func putChunk(c *http.Client, base, token string, h chunk.Hash, data []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPut, base+"/v1/chunks/"+h.String(), bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// mustHeadChunk returns the status and Content-Length of HEAD /v1/chunks/{h}.
func mustHeadChunk(t testing.TB, c *http.Client, base, token string, h chunk.Hash) (int, int64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, base+"/v1/chunks/"+h.String(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", h, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.ContentLength
}

// mustGetChunk returns the status and body of GET /v1/chunks/{h}.
func mustGetChunk(t testing.TB, c *http.Client, base, token string, h chunk.Hash) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/chunks/"+h.String(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", h, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", h, err)
	}
	return resp.StatusCode, body
}

// randomChunk returns random content of a size between 4 KiB and 2 MiB,
// spread evenly over the powers of two in between; with small, between
// 1 KiB and 64 KiB, all of which go to pack files.
func randomChunk(rng *rand.Rand, small bool) []byte {
	minSize, maxSize, steps := 4<<10, 2<<20, 9 // 4 KiB .. 1 MiB
	if small {
		minSize, maxSize, steps = 1<<10, 64<<10, 6 // 1 KiB .. 32 KiB
	}
	size := minSize << rng.IntN(steps)
	size += rng.IntN(size + 1) // .. up to twice that
	size = min(size, maxSize)
	b := make([]byte, size)
	fillRandom(rng, b)
	return b
}

// fillRandom fills b from rng.
func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// reconcileReport reads the numbers of the "reconciled disk and index" log
// record.
type reconcileReport struct {
	TempRemoved, Adopted, Quarantined, Missing int
	PacksScanned, TornTails, CorruptRecords    int
}

func mustReconcileReport(t testing.TB, s *vaultServer) reconcileReport {
	t.Helper()
	rec, ok := s.log.find("reconciled disk and index")
	if !ok {
		t.Fatalf("vault serve logged no reconcile report; log:\n%s", s.log.String())
	}
	num := func(k string) int {
		v, ok := rec[k].(float64)
		if !ok {
			t.Fatalf("reconcile record has %s = %v, want a number: %v", k, rec[k], rec)
		}
		return int(v)
	}
	return reconcileReport{
		TempRemoved: num("temp_removed"), Adopted: num("adopted"),
		Quarantined: num("quarantined"), Missing: num("missing"),
		PacksScanned: num("packs_scanned"), TornTails: num("torn_tails"), CorruptRecords: num("corrupt_records"),
	}
}

// diskBlob is what the data directory holds for one chunk.
type diskBlob struct {
	size int64
}

// leafDir is the fan-out directory that holds h and its upload's temp file.
func leafDir(dataDir string, h chunk.Hash) string {
	return filepath.Join(dataDir, "blake3", h.String()[0:2], h.String()[2:4])
}

// mustCountEntries returns the number of entries in dir, which may not exist
// yet.
func mustCountEntries(t testing.TB, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read %s: %v", dir, err)
	}
	return len(entries)
}

// mustScanBlobs walks dir/blake3 and returns every blob by hash. It reports
// temp files (the restart's reconcile must have removed them), misplaced
// files, and blobs whose content does not hash to their name.
func mustScanBlobs(t testing.TB, dir string) map[chunk.Hash]diskBlob {
	t.Helper()
	root := filepath.Join(dir, "blake3")
	blobs := map[chunk.Hash]diskBlob{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temp file %s is still there after the restart's reconcile", path)
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		h, err := chunk.ParseHash(d.Name())
		if err != nil || rel != filepath.Join(d.Name()[0:2], d.Name()[2:4], d.Name()) {
			t.Errorf("unexpected file %s in the blob store", path)
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		hw := blake3.New()
		n, err := io.Copy(hw, f)
		if err != nil {
			return err
		}
		if got := chunk.Hash(hw.Sum(nil)); got != h {
			t.Errorf("blob %s holds content hashing to %s: torn or wrong chunk on disk", path, got)
		}
		blobs[h] = diskBlob{size: n}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return blobs
}

// indexRow is one row of the chunks table.
type indexRow struct {
	size       int64
	uploadedBy string
	packed     bool     // the chunk is a record in a pack file, not a file of its own
	loc        packSpot // where, if packed
}

// packSpot locates a pack record: the pack's id and its header's offset.
type packSpot struct {
	pack, offset int64
}

// mustReadIndex reads the whole chunks table.
func mustReadIndex(t testing.TB, dbURL string) map[chunk.Hash]indexRow {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, "SELECT hash, size, uploaded_by, pack_id, pack_offset FROM chunks")
	index := map[chunk.Hash]indexRow{}
	var (
		key          []byte
		size         int64
		by           string
		packID, offs *int64
	)
	_, err = pgx.ForEachRow(rows, []any{&key, &size, &by, &packID, &offs}, func() error {
		h, err := chunk.FromBytes(key)
		if err != nil {
			return err
		}
		row := indexRow{size: size, uploadedBy: by}
		if packID != nil && offs != nil {
			row.packed, row.loc = true, packSpot{*packID, *offs}
		}
		index[h] = row
		return nil
	})
	if err != nil {
		t.Fatalf("read the chunks table: %v", err)
	}
	return index
}

// The pack file format (internal/store/pack), parsed here independently of
// the code under test.
const (
	packFileMagic   = "WVPACK1\n"
	packRecordMagic = "WVR1"
	packHeaderSize  = 40
)

// packRecord is a record found in a pack file.
type packRecord struct {
	hash chunk.Hash
	size int64
}

// mustScanPacks reads every pack in dir/packs and returns its records by
// location. It reports records whose data does not hash to the name in
// their header, and bytes after the last whole record: after the restart's
// reconcile no pack may keep a torn tail.
func mustScanPacks(t testing.TB, dir string) map[packSpot]packRecord {
	t.Helper()
	root := filepath.Join(dir, "packs")
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read %s: %v", root, err)
	}
	records := map[packSpot]packRecord{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pack")
		var id int64
		if _, err := fmt.Sscanf(name, "%016x", &id); !ok || len(name) != 16 || err != nil {
			t.Errorf("unexpected entry %s in the pack directory", e.Name())
			continue
		}
		b := mustReadFile(t, filepath.Join(root, e.Name()))
		if len(b) == 0 {
			continue // created, then the crash came before its magic
		}
		if !bytes.HasPrefix(b, []byte(packFileMagic)) {
			t.Errorf("pack %s does not start with %q", e.Name(), packFileMagic)
			continue
		}
		off := int64(len(packFileMagic))
		for off+packHeaderSize <= int64(len(b)) {
			hdr := b[off : off+packHeaderSize]
			n := int64(binary.BigEndian.Uint32(hdr[4:8]))
			if string(hdr[:4]) != packRecordMagic || off+packHeaderSize+n > int64(len(b)) {
				break
			}
			h := chunk.Hash(hdr[8:packHeaderSize])
			if got := chunk.Hash(blake3.Sum256(b[off+packHeaderSize : off+packHeaderSize+n])); got != h {
				t.Errorf("pack %s offset %d: record of %s holds content hashing to %s: torn or wrong chunk", e.Name(), off, h, got)
			}
			records[packSpot{id, off}] = packRecord{hash: h, size: n}
			off += packHeaderSize + n
		}
		if off != int64(len(b)) {
			t.Errorf("pack %s: %d bytes after the last whole record at offset %d: a torn tail the restart's reconcile left", e.Name(), int64(len(b))-off, off)
		}
	}
	return records
}

// checkDiskMatchesIndex checks that every chunk file and pack record has a
// row pointing at it, and every row has its content where it says, and
// returns the counts of files and records. Chunks must have been uploaded
// once each: a chunk uploaded twice could leave a second, unindexed record.
func checkDiskMatchesIndex(t testing.TB, dir string, index map[chunk.Hash]indexRow) (files, records int) {
	t.Helper()
	onDisk := mustScanBlobs(t, dir)
	inPacks := mustScanPacks(t, dir)
	for h, b := range onDisk {
		row, ok := index[h]
		switch {
		case !ok:
			t.Errorf("file of chunk %s (%d bytes) has no row in chunks", h, b.size)
		case row.packed:
			t.Errorf("chunk %s has a file, but its row points into pack %d", h, row.loc.pack)
		case row.size != b.size:
			t.Errorf("chunk %s: %d bytes on disk, the index says %d", h, b.size, row.size)
		}
	}
	for spot, rec := range inPacks {
		row, ok := index[rec.hash]
		switch {
		case !ok:
			t.Errorf("pack %d offset %d: record of %s (%d bytes) has no row in chunks", spot.pack, spot.offset, rec.hash, rec.size)
		case !row.packed || row.loc != spot:
			t.Errorf("pack %d offset %d: record of %s, but its row says packed %v at %+v", spot.pack, spot.offset, rec.hash, row.packed, row.loc)
		}
	}
	for h, row := range index {
		if !row.packed {
			if _, ok := onDisk[h]; !ok {
				t.Errorf("row for %s (%d bytes) has no file on disk", h, row.size)
			}
			continue
		}
		rec, ok := inPacks[row.loc]
		if !ok || rec.hash != h || rec.size != row.size {
			t.Errorf("row for %s (%d bytes) points at pack %d offset %d, which holds %+v (found %v)", h, row.size, row.loc.pack, row.loc.offset, rec, ok)
		}
	}
	return len(onDisk), len(inPacks)
}

// TestCrashDuringUploads kills the server with SIGKILL during a burst of
// concurrent uploads, restarts it, and checks invariant 4: every
// acknowledged chunk is present and verifies, nothing unacknowledged is
// half-present, and the index and the disk agree.
func TestCrashDuringUploads(t *testing.T) {
	t.Parallel()
	t.Run("mixed sizes", func(t *testing.T) { t.Parallel(); testCrashDuringUploads(t, false, 50) })
	// A burst of small chunks only: every one goes through a pack and the
	// group committer.
	t.Run("small chunks", func(t *testing.T) { t.Parallel(); testCrashDuringUploads(t, true, 300) })
}

func testCrashDuringUploads(t *testing.T, small bool, killAfter int64) {
	const (
		workers      = 8
		maxPerWorker = 2000 // bounds the test if the kill never comes
		agentSubject = "crash-agent"
	)
	bin := mustBuildVault(t)
	dbURL := pgtest.NewDatabase(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	agent := mustIssueToken(t, bin, dir, dbURL, "agent", agentSubject)
	reader := mustIssueToken(t, bin, dir, dbURL, "reader", "crash-reader")
	// Chunks up to 256 KiB go to pack files with group commit, larger ones
	// to files of their own: the burst exercises both paths.
	serveArgs := []string{"--data-dir", dir, "--database-url", dbURL, "--listen", "127.0.0.1:0", "--pack-threshold", "256KiB"}

	srv := mustStartVault(t, bin, serveArgs...)
	client := newTestClient(t)
	mustWaitReady(t, client, srv)

	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)

	var (
		mu        sync.Mutex
		attempted = map[chunk.Hash]int64{} // every upload started, by hash
		acked     = map[chunk.Hash]int64{} // uploads answered 2xx
		failures  []string                 // answers or errors that must not happen
		ackCount  atomic.Int64
		inFlight  atomic.Int64
		killed    atomic.Bool
		killNow   = make(chan struct{})
		killOnce  sync.Once
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range maxPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				data := randomChunk(rng, small)
				h := chunk.Sum(data)
				mu.Lock()
				attempted[h] = int64(len(data))
				mu.Unlock()
				inFlight.Add(1)
				status, err := putChunk(client, srv.url, agent, h, data)
				inFlight.Add(-1)
				switch {
				case err != nil:
					if !killed.Load() {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("PUT %s (%d bytes) before the kill: %v", h, len(data), err))
						mu.Unlock()
					}
					return // the server is gone
				case status == http.StatusCreated || status == http.StatusOK:
					mu.Lock()
					acked[h] = int64(len(data))
					mu.Unlock()
					if ackCount.Add(1) >= killAfter {
						killOnce.Do(func() { close(killNow) })
					}
				default:
					mu.Lock()
					failures = append(failures, fmt.Sprintf("PUT %s (%d bytes): status %d", h, len(data), status))
					mu.Unlock()
					return
				}
			}
		}()
	}
	// One upload stalls halfway through its body, so that whatever the
	// timing of the others, the kill finds a chunk half written: its temp
	// file is on disk and its handler is reading. At 2 MiB it is over the
	// pack threshold, so it is streamed to a file, not buffered.
	stalled := make([]byte, 2<<20)
	fillRandom(rand.New(rand.NewPCG(seed, workers)), stalled)
	stalledHash := chunk.Sum(stalled)
	mu.Lock()
	attempted[stalledHash] = int64(len(stalled))
	mu.Unlock()
	stalledBody, stalledWriter := io.Pipe()
	stalledErr := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, srv.url+"/v1/chunks/"+stalledHash.String(), stalledBody)
		req.ContentLength = int64(len(stalled))
		req.Header.Set("Authorization", "Bearer "+agent)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		stalledErr <- err
	}()
	go stalledWriter.Write(stalled[:len(stalled)/2]) // returns once sent, or with an error once the pipe is closed
	t.Cleanup(func() { stalledWriter.CloseWithError(errors.New("test over")) })

	workersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(workersDone)
	}()

	select {
	case <-killNow:
	case <-workersDone:
		t.Fatalf("all uploaders stopped after %d acknowledgements, before the kill: %v", ackCount.Load(), failures)
	case <-time.After(90 * time.Second):
		t.Fatalf("only %d of %d acknowledgements within 90s", ackCount.Load(), killAfter)
	}
	// Its content reaching the disk (normally as a temp file in its fan-out
	// directory) shows its handler is writing.
	mustWaitUntil(t, 30*time.Second, "the stalled upload's content on disk", func() bool {
		return mustCountEntries(t, leafDir(dir, stalledHash)) > 0
	})
	// Kill with most uploaders mid-request, not between two requests.
	mustWaitUntil(t, 10*time.Second, "uploads in flight", func() bool { return inFlight.Load() >= workers/2 })
	killed.Store(true)
	inFlightAtKill := inFlight.Load()
	ackedAtKill := ackCount.Load()
	srv.signal(t, syscall.SIGKILL)
	if err := srv.waitExit(t, 30*time.Second); err == nil {
		t.Fatalf("vault serve exited cleanly after SIGKILL")
	}
	close(stop)
	<-workersDone // every request fails fast once the server is gone
	stalledWriter.CloseWithError(errors.New("server killed"))
	if err := <-stalledErr; err == nil || strings.HasPrefix(err.Error(), "status") {
		t.Errorf("the upload stalled halfway got an answer (%v), want a broken connection", err)
	}
	for _, f := range failures {
		t.Error(f)
	}

	srv2 := mustStartVault(t, bin, serveArgs...)
	client2 := newTestClient(t)
	mustWaitReady(t, client2, srv2)
	rep := mustReconcileReport(t, srv2)
	if rep.Missing != 0 || rep.Quarantined != 0 || rep.CorruptRecords != 0 {
		t.Errorf("reconcile after the crash: %d chunks missing, %d quarantined, %d corrupt pack records; want none (%+v)",
			rep.Missing, rep.Quarantined, rep.CorruptRecords, rep)
	}
	if rep.TempRemoved < 1 {
		t.Errorf("reconcile after the crash removed %d temp files, want at least the stalled upload's", rep.TempRemoved)
	}
	if status, _ := mustHeadChunk(t, client2, srv2.url, agent, stalledHash); status != http.StatusNotFound {
		t.Errorf("chunk %s, killed halfway through its body: HEAD = %d, want 404", stalledHash, status)
	}

	// Every acknowledged chunk is present and verifies.
	for h, size := range acked {
		if status, n := mustHeadChunk(t, client2, srv2.url, agent, h); status != http.StatusOK || n != size {
			t.Errorf("acknowledged chunk %s: HEAD = %d, Content-Length %d; want 200, %d", h, status, n, size)
			continue
		}
		status, body := mustGetChunk(t, client2, srv2.url, reader, h)
		if status != http.StatusOK || int64(len(body)) != size || blake3.Sum256(body) != h {
			t.Errorf("acknowledged chunk %s: GET = %d with %d bytes hashing to %x; want 200, %d bytes hashing to its name",
				h, status, len(body), blake3.Sum256(body), size)
		}
	}
	// Nothing unacknowledged is half-present: it is whole, or absent.
	unackedPresent, unackedAbsent := 0, 0
	for h, size := range attempted {
		if _, ok := acked[h]; ok {
			continue
		}
		switch status, n := mustHeadChunk(t, client2, srv2.url, agent, h); {
		case status == http.StatusNotFound:
			unackedAbsent++
		case status == http.StatusOK && n == size:
			unackedPresent++
			status, body := mustGetChunk(t, client2, srv2.url, reader, h)
			if status != http.StatusOK || blake3.Sum256(body) != h || int64(len(body)) != size {
				t.Errorf("unacknowledged chunk %s is visible but GET = %d with %d bytes hashing to %x; want it whole or absent",
					h, status, len(body), blake3.Sum256(body))
			}
		default:
			t.Errorf("unacknowledged chunk %s: HEAD = %d, Content-Length %d; want 404, or 200 with %d", h, status, n, size)
		}
	}

	// The index and the disk agree, and the disk holds only whole chunks.
	index := mustReadIndex(t, dbURL)
	files, records := checkDiskMatchesIndex(t, dir, index)
	adoptedRows := 0
	for h, row := range index {
		if _, ok := attempted[h]; !ok {
			t.Errorf("row for %s: a chunk nobody uploaded", h)
		}
		if row.uploadedBy == "reconcile" {
			adoptedRows++
		}
	}
	for h := range acked {
		// A 2xx must come after the row commit, so the crash can never
		// leave an acknowledged chunk for reconcile to adopt.
		if by := index[h].uploadedBy; by != agentSubject {
			t.Errorf("acknowledged chunk %s has uploaded_by %q, want %q: it was acknowledged before its row committed", h, by, agentSubject)
		}
	}
	if adoptedRows != rep.Adopted {
		t.Errorf("%d rows are uploaded by reconcile, but reconcile reported adopting %d", adoptedRows, rep.Adopted)
	}
	if q, err := os.ReadDir(filepath.Join(dir, "quarantine")); err != nil || len(q) != 0 {
		t.Errorf("quarantine holds %d entries (err %v); a crash must not corrupt content", len(q), err)
	}
	t.Logf("acknowledged %d (%d when the kill was sent), uploads started %d, in flight at kill %d (and 1 stalled halfway); "+
		"unacknowledged after restart: %d present whole, %d absent; reconcile: %d temp files removed, %d adopted; "+
		"disk: %d chunk files, %d pack records (%d packs scanned, %d torn tails cut); index %d rows",
		len(acked), ackedAtKill, len(attempted), inFlightAtKill, unackedPresent, unackedAbsent,
		rep.TempRemoved, rep.Adopted, files, records, rep.PacksScanned, rep.TornTails, len(index))

	srv2.signal(t, syscall.SIGTERM)
	if err := srv2.waitExit(t, 30*time.Second); err != nil {
		t.Errorf("vault serve after SIGTERM: %v, want exit status 0", err)
	}
}

// TestGracefulShutdown sends SIGTERM while an upload is half sent: the
// server stops accepting connections but lets the upload finish with 201,
// then exits 0, and the chunk is there after a restart.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	bin := mustBuildVault(t)
	dbURL := pgtest.NewDatabase(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	agent := mustIssueToken(t, bin, dir, dbURL, "agent", "graceful-agent")
	reader := mustIssueToken(t, bin, dir, dbURL, "reader", "graceful-reader")
	serveArgs := []string{"--data-dir", dir, "--database-url", dbURL, "--listen", "127.0.0.1:0", "--shutdown-timeout", "60s"}

	srv := mustStartVault(t, bin, serveArgs...)
	client := newTestClient(t)
	mustWaitReady(t, client, srv)

	data := randomChunk(rand.New(rand.NewPCG(1, 2)), false)
	data = append(data, make([]byte, 1<<20)...) // at least 1 MiB
	h := chunk.Sum(data)
	addr := strings.TrimPrefix(srv.url, "http://")
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	half := len(data) / 2
	header := fmt.Sprintf("PUT /v1/chunks/%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", h, addr, agent, len(data))
	if _, err := io.WriteString(conn, header); err != nil {
		t.Fatalf("send request header: %v", err)
	}
	if _, err := conn.Write(data[:half]); err != nil {
		t.Fatalf("send first half of the body: %v", err)
	}
	// The handler is streaming the body once the blob store has made the
	// upload's temp file.
	mustWaitUntil(t, 30*time.Second, "the upload's content on disk", func() bool { return mustCountEntries(t, leafDir(dir, h)) > 0 })

	srv.signal(t, syscall.SIGTERM)
	srv.log.wait(t, "shutting down: waiting for in-flight requests", 30*time.Second, srv.done)
	mustWaitUntil(t, 30*time.Second, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case <-srv.done:
		t.Fatalf("vault serve exited (%v) with an upload in flight; log:\n%s", srv.err, srv.log.String())
	default:
	}

	if _, err := conn.Write(data[half:]); err != nil {
		t.Fatalf("send second half of the body after SIGTERM: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response to the upload: %v", err)
	}
	var body struct {
		Hash    chunk.Hash `json:"hash"`
		Size    int64      `json:"size"`
		Created *bool      `json:"created"`
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload finished during shutdown: status %d (%s), want 201", resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Hash != h || body.Size != int64(len(data)) || body.Created == nil || !*body.Created {
		t.Errorf("upload response %s (err %v); want hash %s, size %d, created true", raw, err, h, len(data))
	}
	if err := srv.waitExit(t, 30*time.Second); err != nil {
		t.Fatalf("vault serve after SIGTERM: %v, want exit status 0; log:\n%s", err, srv.log.String())
	}
	if _, ok := srv.log.find("stopped"); !ok {
		t.Errorf("vault serve exited without logging \"stopped\"")
	}

	srv2 := mustStartVault(t, bin, serveArgs...)
	client2 := newTestClient(t)
	mustWaitReady(t, client2, srv2)
	// The last run's open pack is scanned once; nothing else is left to do.
	if rep := mustReconcileReport(t, srv2); rep != (reconcileReport{PacksScanned: rep.PacksScanned}) {
		t.Errorf("reconcile after a graceful shutdown: %+v, want nothing to repair", rep)
	}
	if status, n := mustHeadChunk(t, client2, srv2.url, agent, h); status != http.StatusOK || n != int64(len(data)) {
		t.Errorf("HEAD after restart = %d, Content-Length %d; want 200, %d", status, n, len(data))
	}
	if status, got := mustGetChunk(t, client2, srv2.url, reader, h); status != http.StatusOK || !bytes.Equal(got, data) {
		t.Errorf("GET after restart = %d with %d bytes; want 200 with the %d uploaded bytes", status, len(got), len(data))
	}
	if index := mustReadIndex(t, dbURL); len(index) != 1 || index[h].uploadedBy != "graceful-agent" {
		t.Errorf("index after restart = %v, want one row for %s uploaded by graceful-agent", index, h)
	}
}
