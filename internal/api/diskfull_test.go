package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/loopfs"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// spaceServerOptions builds a test server with packs, a free-space reader
// and a reserve.
type spaceServerOptions struct {
	root             string // holds the data directory; "" = t.TempDir()
	freeSpace        func() (store.Space, error)
	reserve          store.Reserve
	checkpointMaxAge time.Duration
}

// testPackThreshold: chunks up to it are packed in these tests, larger
// ones become files.
const testPackThreshold = 64 << 10

// newSpaceTestServer is newTestServer with pack files, the data directory
// under o.root, free space read by o.freeSpace (nil: the real statfs of the
// data directory) and a metrics registry the test can read.
func newSpaceTestServer(t testing.TB, o spaceServerOptions) (*testServer, *prometheus.Registry) {
	t.Helper()
	pool := pgtest.NewPool(t)
	if o.root == "" {
		o.root = t.TempDir()
	}
	dataDir := filepath.Join(o.root, "data")
	blobs, err := disk.Open(dataDir, disk.Options{})
	if err != nil {
		t.Fatalf("disk.Open(%s): %v", dataDir, err)
	}
	packs, err := pack.Open(filepath.Join(dataDir, "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { packs.Close() })
	if o.freeSpace == nil {
		o.freeSpace = blobs.Space
	}
	clk := clock.NewFake(t0)
	pgtest.FollowClock(t, pool, clk)
	logs := newTestLog(t)
	jnl, err := journal.Open(filepath.Join(dataDir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jnl.Close() })
	admins, genesis := testGenesis(t)
	reg := prometheus.NewRegistry()
	st := store.New(pool, blobs, clk, logs.logger(), store.NewMetrics(reg), store.Options{
		MaxChunkSize: testMaxChunk, MaxBatch: testMaxBatch, VaultID: testVaultID,
		DatabaseTime: func(context.Context) (time.Time, error) { return clk.Now(), nil },
		Journal:      jnl, Genesis: &genesis,
		Packs: packs, PackThreshold: testPackThreshold,
		FreeSpace: o.freeSpace, Reserve: o.reserve,
	})
	// As in serve: free space, pending deletions and the pool, read at each scrape.
	reg.MustRegister(st.Collector())
	t.Cleanup(st.Close)
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	verifier := auth.NewVerifier(key.Public().(ed25519.PublicKey), testVaultID, st, clk)
	ts := &testServer{
		root: o.root, dataDir: dataDir, pool: pool, blobs: blobs, clk: clk, store: st,
		key: key, verifier: verifier, issuer: auth.NewIssuer(key, testVaultID, clk), logs: logs,
		admins: admins, genesis: genesis,
	}
	tr := newRequestTracker()
	h := NewHandler(Options{Store: st, Verifier: verifier, Log: logs.logger(), Registry: reg, CheckpointMaxAge: o.checkpointMaxAge})
	srv := httptest.NewServer(tr.wrap(h))
	// Runs before st.Close (cleanups run last first): every handler has
	// returned before the committer stops.
	t.Cleanup(srv.Close)
	ts.Server, ts.requests = srv, tr
	return ts, reg
}

// readyzBody is /readyz's answer.
type readyzBody struct {
	Status   string `json:"status"`
	Database struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"database"`
	PackWriter struct {
		OK         bool   `json:"ok"`
		Error      string `json:"error"`
		Enabled    bool   `json:"enabled"`
		ActivePack int64  `json:"active_pack"`
	} `json:"pack_writer"`
	FreeSpace struct {
		OK           bool   `json:"ok"`
		Error        string `json:"error"`
		Checked      bool   `json:"checked"`
		FreeBytes    int64  `json:"free_bytes"`
		TotalBytes   int64  `json:"total_bytes"`
		ReserveBytes int64  `json:"reserve_bytes"`
		ReadOnly     bool   `json:"read_only"`
	} `json:"free_space"`
	Checkpoint struct {
		OK            bool    `json:"ok"`
		Error         string  `json:"error"`
		Size          int64   `json:"size"`
		AgeSeconds    float64 `json:"age_seconds"`
		MaxAgeSeconds float64 `json:"max_age_seconds"`
	} `json:"checkpoint"`
	AuditLog struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"audit_log"`
	GroupCommit struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"group_commit"`
	Reconcile struct {
		OK             bool   `json:"ok"`
		Error          string `json:"error"`
		Phase          string `json:"phase"`
		Checked        int64  `json:"checked"`
		Resumed        bool   `json:"resumed"`
		WritesHeld     bool   `json:"writes_held"`
		OrphansPending int    `json:"orphans_pending"`
	} `json:"reconcile"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeReadyz(t testing.TB, resp response) readyzBody {
	t.Helper()
	var rd readyzBody
	dec := json.NewDecoder(bytes.NewReader(resp.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rd); err != nil {
		t.Fatalf("/readyz body %s: %v", resp.body, err)
	}
	return rd
}

// wantReady checks a 200 "ready" with every check OK.
func wantReady(t testing.TB, resp response) readyzBody {
	t.Helper()
	rd := decodeReadyz(t, resp)
	if resp.StatusCode != http.StatusOK || rd.Status != "ready" || rd.Error != nil ||
		!rd.Database.OK || !rd.PackWriter.OK || !rd.FreeSpace.OK || !rd.Checkpoint.OK || !rd.AuditLog.OK {
		t.Fatalf("/readyz = %d %s, want 200 ready with every check ok", resp.StatusCode, resp.body)
	}
	return rd
}

// wantDegraded checks a 503 "degraded" whose failing checks are exactly
// failing (by JSON name), with Retry-After.
func wantDegraded(t testing.TB, resp response, failing ...string) readyzBody {
	t.Helper()
	rd := decodeReadyz(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || rd.Status != "degraded" || rd.Error == nil || rd.Error.Code != "degraded" {
		t.Fatalf("/readyz = %d %s, want 503 degraded", resp.StatusCode, resp.body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("/readyz 503 without Retry-After")
	}
	got := map[string]bool{"database": !rd.Database.OK, "pack_writer": !rd.PackWriter.OK, "free_space": !rd.FreeSpace.OK,
		"checkpoint": !rd.Checkpoint.OK, "audit_log": !rd.AuditLog.OK, "group_commit": !rd.GroupCommit.OK,
		"reconcile": !rd.Reconcile.OK}
	want := map[string]bool{}
	for _, f := range failing {
		want[f] = true
	}
	for name, failed := range got {
		if failed != want[name] {
			t.Errorf("/readyz check %s failed = %v, want %v; body %s", name, failed, want[name], resp.body)
		}
	}
	return rd
}

// metricValue reads one unlabelled (or the first labelled) sample of a
// metric, -1 if absent.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// postBatch uploads chunks as one batch and returns the response.
func (ts *testServer) postBatch(t testing.TB, chunks ...[]byte) response {
	t.Helper()
	var body []byte
	for _, c := range chunks {
		body = AppendFrame(body, c)
	}
	return ts.do(t, http.MethodPost, "/v1/chunks/batch", ts.token(t, auth.RoleAgent), body,
		http.Header{"Content-Type": {BatchContentType}})
}

type batchAnswer struct {
	Results []batchResultJSON `json:"results"`
}

// wantInsufficientStorage checks a 507 insufficient_storage with its
// Retry-After.
func wantInsufficientStorage(t testing.TB, resp response) {
	t.Helper()
	wantError(t, resp, http.StatusInsufficientStorage, "insufficient_storage")
	if got := resp.Header.Get("Retry-After"); got != retryAfterNoSpace {
		t.Errorf("%s %s: 507 with Retry-After %q, want %q", resp.Request.Method, resp.Request.URL, got, retryAfterNoSpace)
	}
}

// mustVerifyChunk GETs h and checks its bytes hash to h and equal want.
func (ts *testServer) mustVerifyChunk(t testing.TB, h chunk.Hash, want []byte) {
	t.Helper()
	resp := ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
	if resp.StatusCode != http.StatusOK || chunk.Sum(resp.body) != h || !bytes.Equal(resp.body, want) {
		t.Errorf("GET %s: status %d, %d bytes, verifies %v; want 200 and the acknowledged bytes",
			h, resp.StatusCode, len(resp.body), chunk.Sum(resp.body) == h)
	}
}

// TestUploadsRefusedBelowReserve: with free space at or below the reserve
// every upload path answers 507 with Retry-After before storing anything,
// while reads and metadata go on; uploads resume once space is back, at
// the next reading (the cache lasts a second of the store's clock).
func TestUploadsRefusedBelowReserve(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(10 << 20)
	const total = 100 << 20
	ts, reg := newSpaceTestServer(t, spaceServerOptions{
		freeSpace: func() (store.Space, error) { return store.Space{Free: free.Load(), Total: total}, nil },
		reserve:   store.Reserve{Percent: 5}, // 5 MiB of 100
	})
	stored, h := randomChunk(t, 1000)
	ts.put(t, h, stored, http.StatusCreated)
	wantReady(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil))

	free.Store(5 << 20) // exactly the reserve: refused
	ts.clk.Advance(time.Second)
	before := ts.state(t)
	small, hs := randomChunk(t, 1000)
	large, hl := randomChunk(t, testPackThreshold+1)
	agent := ts.token(t, auth.RoleAgent)
	wantInsufficientStorage(t, ts.do(t, http.MethodPut, chunkPath(hs), agent, small, nil))
	wantInsufficientStorage(t, ts.do(t, http.MethodPut, chunkPath(hl), agent, large, nil))
	wantInsufficientStorage(t, ts.do(t, http.MethodPut, chunkPath(hl), agent, bytes.NewReader(large), nil)) // chunked
	wantInsufficientStorage(t, ts.postBatch(t, small, large))
	ts.assertUnchanged(t, before)
	if v := metricValue(t, reg, "wormvault_uploads_refused_insufficient_storage_total"); v != 4 {
		t.Errorf("wormvault_uploads_refused_insufficient_storage_total = %v, want 4", v)
	}
	if v := metricValue(t, reg, "wormvault_data_reserve_bytes"); v != 5<<20 {
		t.Errorf("wormvault_data_reserve_bytes = %v, want %d", v, 5<<20)
	}
	// Reads, HEAD and the missing list go on.
	ts.mustVerifyChunk(t, h, stored)
	if resp := ts.do(t, http.MethodHead, chunkPath(h), agent, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD below the reserve: %d", resp.StatusCode)
	}
	if resp := ts.postJSON(t, "/v1/chunks/missing", agent, map[string]any{"hashes": []string{hs.String()}}); resp.StatusCode != http.StatusOK {
		t.Errorf("POST /v1/chunks/missing below the reserve: %d %s", resp.StatusCode, resp.body)
	}
	rd := wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "free_space")
	if !rd.FreeSpace.Checked || rd.FreeSpace.FreeBytes != 5<<20 || rd.FreeSpace.ReserveBytes != 5<<20 || rd.FreeSpace.TotalBytes != total {
		t.Errorf("/readyz free_space = %+v", rd.FreeSpace)
	}

	// Space returns; the cached reading lasts until the clock moves on.
	free.Store(6 << 20)
	wantInsufficientStorage(t, ts.do(t, http.MethodPut, chunkPath(hs), agent, small, nil))
	ts.clk.Advance(time.Second)
	ts.put(t, hs, small, http.StatusCreated)
	ts.put(t, hl, large, http.StatusCreated)
	ts.mustVerifyChunk(t, hs, small)
	ts.mustVerifyChunk(t, hl, large)
	wantReady(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil))
}

// TestReadOnlyRefusesContent: a store set read-only (start-up could not
// finish on a full disk) refuses content whatever the free space, and
// /readyz says why.
func TestReadOnlyRefusesContent(t *testing.T) {
	t.Parallel()
	ts, _ := newSpaceTestServer(t, spaceServerOptions{})
	stored, h := randomChunk(t, 1000)
	ts.put(t, h, stored, http.StatusCreated)
	ts.store.SetReadOnly(errFakeStartup)
	before := ts.state(t)
	small, hs := randomChunk(t, 1000)
	wantInsufficientStorage(t, ts.do(t, http.MethodPut, chunkPath(hs), ts.token(t, auth.RoleAgent), small, nil))
	ts.assertUnchanged(t, before)
	ts.mustVerifyChunk(t, h, stored)
	if rd := wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "free_space"); !rd.FreeSpace.ReadOnly {
		t.Errorf("/readyz free_space = %+v, want read_only", rd.FreeSpace)
	}
	ts.store.SetReadOnly(nil)
	ts.put(t, hs, small, http.StatusCreated)
	wantReady(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil))
}

var errFakeStartup = errorString("reconcile: no space left on device")

type errorString string

func (e errorString) Error() string { return string(e) }

// TestReadyzCheckpointAge: once checkpoints are expected, /readyz is
// degraded until a signing pass succeeds and again when none has for
// longer than the limit.
func TestReadyzCheckpointAge(t *testing.T) {
	t.Parallel()
	ts, _ := newSpaceTestServer(t, spaceServerOptions{checkpointMaxAge: time.Minute})
	rd := wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "checkpoint")
	if rd.Checkpoint.AgeSeconds != -1 || rd.Checkpoint.MaxAgeSeconds != 60 {
		t.Errorf("checkpoint before any pass = %+v, want age -1, max 60", rd.Checkpoint)
	}
	stored, h := randomChunk(t, 1000)
	ts.put(t, h, stored, http.StatusCreated)
	skey, _, err := note.GenerateKey(rand.Reader, audit.Origin(testVaultID))
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	if _, _, err := ts.store.SignCheckpoint(context.Background(), signer); err != nil {
		t.Fatal(err)
	}
	ts.clk.Advance(30 * time.Second)
	rd = wantReady(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil))
	if rd.Checkpoint.Size < 1 || rd.Checkpoint.AgeSeconds != 30 {
		t.Errorf("checkpoint = %+v, want size >= 1 and age 30", rd.Checkpoint)
	}
	ts.clk.Advance(31 * time.Second)
	wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "checkpoint")
	if !strings.Contains(ts.logs.String(), "not ready") {
		t.Errorf("no 'not ready' log line")
	}
}

// TestUploadsOnFullDisk is issue 14's disk-full run at the API, on a real
// (loop-mounted) filesystem with no reserve: once the disk is full every
// upload path answers 507 with Retry-After, never 500, a refused batch
// costs one log line, /readyz says what fails, and once space is freed
// small (packed), large (file) and batch uploads resume without a restart.
// Every acknowledged chunk then reads back and verifies.
//
// With the real free-space reading, uploads are refused before any write.
// With a stale one (the disk filled within the reading's cache time, or
// statfs and the writes disagree), the writes themselves hit ENOSPC: the
// pack writer, the chunk files and the journal must all answer 507 and
// recover.
func TestUploadsOnFullDisk(t *testing.T) {
	t.Parallel()
	t.Run("free space read", func(t *testing.T) { t.Parallel(); testUploadsOnFullDisk(t, false) })
	t.Run("writes hit ENOSPC", func(t *testing.T) { t.Parallel(); testUploadsOnFullDisk(t, true) })
}

func testUploadsOnFullDisk(t *testing.T, stale bool) {
	mnt := loopfs.Mount(t, 32<<20)
	o := spaceServerOptions{root: mnt}
	if stale {
		o.freeSpace = func() (store.Space, error) { return store.Space{Free: 1 << 30, Total: 2 << 30}, nil }
	}
	ts, reg := newSpaceTestServer(t, o)
	agent := ts.token(t, auth.RoleAgent)
	acked := map[chunk.Hash][]byte{}
	ack := func(b []byte, resp response) {
		t.Helper()
		switch resp.StatusCode {
		case http.StatusCreated, http.StatusOK:
			acked[chunk.Sum(b)] = b
		case http.StatusInsufficientStorage:
			wantInsufficientStorage(t, resp)
		default:
			t.Fatalf("%s %s: status %d %s, want 201, 200 or 507", resp.Request.Method, resp.Request.URL, resp.StatusCode, resp.body)
		}
	}
	for range 4 {
		b, h := randomChunk(t, 16<<10)
		ack(b, ts.do(t, http.MethodPut, chunkPath(h), agent, b, nil))
		b, h = randomChunk(t, 128<<10)
		ack(b, ts.do(t, http.MethodPut, chunkPath(h), agent, b, nil))
	}
	if len(acked) != 8 {
		t.Fatalf("%d of 8 uploads acknowledged before the disk was full", len(acked))
	}
	ballast := filepath.Join(mnt, "ballast")
	loopfs.Fill(t, ballast)
	ts.clk.Advance(time.Second) // past the cached free-space reading

	// Full: each kind of upload is refused with 507 (chunks big enough to
	// need new blocks, not the slack at the end of a pack's last one).
	small, hs := randomChunk(t, 16<<10)
	large, hl := randomChunk(t, 256<<10)
	for range 3 {
		wantInsufficientStorage(t, ts.do(t, http.MethodPut, chunkPath(hs), agent, small, nil))
		wantInsufficientStorage(t, ts.do(t, http.MethodPut, chunkPath(hl), agent, large, nil))
	}
	var batch [][]byte
	for range 20 {
		b, _ := randomChunk(t, 12<<10)
		batch = append(batch, b)
	}
	resp := ts.postBatch(t, batch...)
	if !stale {
		// Refused as a whole, before its chunks are looked at.
		wantInsufficientStorage(t, resp)
		wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "free_space")
	} else {
		var ans batchAnswer
		decodeJSON(t, resp, &ans)
		if resp.StatusCode != http.StatusOK || len(ans.Results) != len(batch) {
			t.Fatalf("batch on a full disk: %d %s", resp.StatusCode, resp.body)
		}
		for i, r := range ans.Results {
			if r.Status != "refused" || r.Code != "insufficient_storage" {
				t.Errorf("batch chunk %d on a full disk: %+v, want refused insufficient_storage", i, r)
			}
		}
		if got := resp.Header.Get("Retry-After"); got != retryAfterNoSpace {
			t.Errorf("batch with chunks refused for space: Retry-After %q, want %q", got, retryAfterNoSpace)
		}
		if v := metricValue(t, reg, "wormvault_batch_chunks_refused_total", "code", "insufficient_storage"); v != float64(len(batch)) {
			t.Errorf("wormvault_batch_chunks_refused_total{code=insufficient_storage} = %v, want %d", v, len(batch))
		}
		if n := strings.Count(ts.logs.String(), "batch chunks refused"); n != 1 {
			t.Errorf("%d 'batch chunks refused' log lines for one batch, want 1", n)
		}
		// The pack writer could not start a pack; free space (as read)
		// looks fine.
		wantDegraded(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), "pack_writer")
	}
	if logs := ts.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("refusals for want of space logged as errors:\n%s", logs)
	}
	// Reads go on.
	for h, b := range acked {
		ts.mustVerifyChunk(t, h, b)
	}

	// Space returns: everything resumes, no restart. The free-space
	// reading is cached for a second of the store's clock.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	ts.clk.Advance(time.Second)
	wantReady(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil))
	ts.put(t, hs, small, http.StatusCreated)
	ts.put(t, hl, large, http.StatusCreated)
	acked[hs], acked[hl] = small, large
	resp = ts.postBatch(t, batch...)
	var ans batchAnswer
	decodeJSON(t, resp, &ans)
	for i, r := range ans.Results {
		if r.Status != "created" {
			t.Errorf("batch chunk %d after space was freed: %+v, want created", i, r)
		}
		acked[chunk.Sum(batch[i])] = batch[i]
	}
	for h, b := range acked {
		ts.mustVerifyChunk(t, h, b)
	}
}
