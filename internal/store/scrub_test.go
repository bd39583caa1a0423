package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// flipFileByte flips one bit of the chunk file of h, as a failing disk or
// someone with the server's OS account would.
func flipFileByte(t testing.TB, dir string, h chunk.Hash, at int64) {
	t.Helper()
	s := h.String()
	path := filepath.Join(dir, "blake3", s[:2], s[2:4], s)
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	flipAt(t, path, at)
	os.Chmod(path, 0o440)
}

// flipPackByte flips one bit of the data of c's pack record.
func flipPackByte(t testing.TB, dir string, c store.Chunk, at int64) {
	t.Helper()
	flipAt(t, filepath.Join(dir, "packs", packName(c.PackID)), c.PackOffset+pack.HeaderSize+at)
}

func flipAt(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func (ts *testStore) actions(t testing.TB, action string) int {
	t.Helper()
	var n int
	if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE action = $1", action).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func mustRead(t testing.TB, ts *testStore, h chunk.Hash) []byte {
	t.Helper()
	rc, _, err := ts.OpenChunk(context.Background(), h)
	if err != nil {
		t.Fatalf("OpenChunk(%s): %v", h, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatalf("read %s: %v", h, err)
	}
	return buf.Bytes()
}

// One pass finds a flipped bit in a chunk file and one in a pack record;
// both are then missing to agents and absent to HEAD, refused to readers,
// and a re-upload of the right bytes repairs them, audited, with their
// retention unchanged.
func TestScrubFindsFlippedFileAndPackRecord(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, "")
	ctx := context.Background()
	large, lh := randomChunk(t, 200_000) // above the pack threshold: a file
	ts.mustPut(t, large)
	var small [][]byte
	for range 4 {
		b, _ := randomChunk(t, 3000)
		ts.mustPut(t, b)
		small = append(small, b)
	}
	sh := chunk.Sum(small[1])
	sc, err := ts.Stat(ctx, sh)
	if err != nil || sc.PackID == 0 {
		t.Fatalf("small chunk not packed: %+v, %v", sc, err)
	}
	lc, _ := ts.Stat(ctx, lh)
	if lc.PackID != 0 {
		t.Fatalf("large chunk packed: %+v", lc)
	}

	clean, err := ts.Scrub(ctx, store.ScrubOptions{})
	if err != nil || !clean.Finished || len(clean.Damaged) != 0 || clean.Chunks != 5 {
		t.Fatalf("scrub of a healthy vault = %+v, %v; want 5 chunks, finished, nothing damaged", clean, err)
	}

	flipFileByte(t, ts.dir, lh, 123_456)
	flipPackByte(t, ts.dir, sc, 1000)
	ts.clk.Advance(time.Hour)
	rep, err := ts.Scrub(ctx, store.ScrubOptions{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Finished || len(rep.Damaged) != 2 || rep.Status.LastPassDamaged != 2 || rep.Status.Damage.Open != 2 {
		t.Fatalf("scrub after two flips = %+v; want both found in one pass", rep)
	}
	got := map[chunk.Hash]bool{rep.Damaged[0]: true, rep.Damaged[1]: true}
	if !got[lh] || !got[sh] {
		t.Fatalf("damaged = %v, want %s and %s", rep.Damaged, lh, sh)
	}

	missing, err := ts.Missing(ctx, []chunk.Hash{lh, sh, chunk.Sum(small[0])})
	if err != nil || len(missing) != 2 || missing[0] != lh || missing[1] != sh {
		t.Errorf("Missing = %v, %v; want the two damaged chunks", missing, err)
	}
	for _, h := range []chunk.Hash{lh, sh} {
		if _, err := ts.StatHealthy(ctx, h); !errors.Is(err, store.ErrDamaged) {
			t.Errorf("StatHealthy(%s) = %v, want ErrDamaged", h, err)
		}
		if _, _, err := ts.OpenChunk(ctx, h); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("OpenChunk(%s) = %v, want ErrCorrupt", h, err)
		}
	}
	// The bad file is kept in quarantine, never at its address.
	if len(ts.files(t)) != 0 {
		t.Errorf("chunk files after the scrub: %v, want the damaged one quarantined", ts.files(t))
	}
	if q, _ := os.ReadDir(filepath.Join(ts.dir, "quarantine")); len(q) != 1 || !strings.HasPrefix(q[0].Name(), lh.String()) {
		t.Errorf("quarantine holds %v, want the damaged file", q)
	}

	// A second pass finds the same damage, and opens no second record.
	ts.clk.Advance(time.Hour)
	again, err := ts.Scrub(ctx, store.ScrubOptions{})
	if err != nil || len(again.Damaged) != 2 || again.Status.Damage.Detected != 2 {
		t.Fatalf("second scrub = %+v, %v; want the same two, still two records", again, err)
	}

	// Wrong bytes under a damaged address repair nothing.
	if _, err := ts.PutChunk(ctx, "agent-1", sh, bytes.NewReader(small[2]), time.Time{}); !errors.Is(err, chunk.ErrHashMismatch) {
		t.Errorf("wrong bytes for a damaged chunk: %v, want ErrHashMismatch", err)
	}
	before := map[chunk.Hash]time.Time{lh: lc.RetainUntil, sh: sc.RetainUntil}
	for _, b := range [][]byte{large, small[1]} {
		res, err := ts.PutChunk(ctx, "agent-2", chunk.Sum(b), bytes.NewReader(b), time.Time{})
		if err != nil || res.Created || !res.Repaired {
			t.Fatalf("re-upload of a damaged chunk = %+v, %v; want repaired, not created", res, err)
		}
		if !bytes.Equal(mustRead(t, ts, chunk.Sum(b)), b) {
			t.Fatalf("repaired chunk %s serves other bytes", chunk.Sum(b))
		}
		c, _ := ts.Stat(ctx, chunk.Sum(b))
		if !c.RetainUntil.Equal(before[c.Hash]) {
			t.Errorf("retention of %s changed by the repair: %s, was %s", c.Hash, c.RetainUntil, before[c.Hash])
		}
	}
	if missing, _ := ts.Missing(ctx, []chunk.Hash{lh, sh}); len(missing) != 0 {
		t.Errorf("Missing after repair = %v, want none", missing)
	}
	if d, n, r := ts.actions(t, "chunk.damage"), ts.actions(t, "chunk.repair"), ts.actions(t, "scrub.pass"); d != 2 || n != 2 || r != 3 {
		t.Errorf("audit entries: %d chunk.damage, %d chunk.repair, %d scrub.pass; want 2, 2, 3", d, n, r)
	}
	ts.clk.Advance(time.Hour)
	final, err := ts.Scrub(ctx, store.ScrubOptions{})
	if err != nil || len(final.Damaged) != 0 || final.Status.Damage.Open != 0 || final.Status.Damage.Repaired != 2 {
		t.Fatalf("scrub after repair = %+v, %v; want nothing damaged, two repaired", final, err)
	}
}

// A pass persists its position: a scrub stopped mid-pass continues where
// it stopped, and chunks stored after the pass began are the next pass's.
func TestScrubResumesAfterRestart(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	for range 7 {
		b, _ := randomChunk(t, 500)
		ts.mustPut(t, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var saved []store.ScrubStatus
	_, err := ts.Scrub(ctx, store.ScrubOptions{Batch: 3, Progress: func(st store.ScrubStatus) {
		saved = append(saved, st)
		cancel() // the process dies after its first batch
	}})
	if !errors.Is(err, context.Canceled) || len(saved) != 1 || saved[0].PassChunks != 3 {
		t.Fatalf("interrupted scrub: err %v, saved %+v; want canceled after one batch of 3", err, saved)
	}
	st, err := ts.ScrubStatus(context.Background())
	if err != nil || !st.InPass || st.CursorSeq == 0 || st.PassChunks != 3 {
		t.Fatalf("status after the interruption = %+v, %v", st, err)
	}
	b, _ := randomChunk(t, 500)
	ts.mustPut(t, b) // after the pass began
	rep, err := ts.Scrub(context.Background(), store.ScrubOptions{Batch: 3})
	if err != nil || !rep.Finished || rep.Chunks != 4 || rep.Status.LastPassChunks != 7 || rep.Status.Passes != 1 {
		t.Fatalf("continued scrub = %+v, %v; want the other 4 of the pass's 7", rep, err)
	}
	rep, err = ts.Scrub(context.Background(), store.ScrubOptions{})
	if err != nil || rep.Chunks != 8 || rep.Status.Passes != 2 {
		t.Fatalf("next pass = %+v, %v; want all 8", rep, err)
	}
}

// The scrub reads no faster than its bandwidth: it sleeps off what it
// read beyond one second's worth.
func TestScrubBandwidthLimit(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	var total int64
	for range 10 {
		b, _ := randomChunk(t, 10_000)
		ts.mustPut(t, b)
		total += int64(len(b))
	}
	const rate = 20_000 // bytes per second
	var mu sync.Mutex
	var slept time.Duration
	sleep := func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		slept += d
		mu.Unlock()
		ts.clk.Advance(d)
		return ctx.Err()
	}
	rep, err := ts.Scrub(context.Background(), store.ScrubOptions{BytesPerSecond: rate, Sleep: sleep})
	if err != nil || rep.Bytes != total {
		t.Fatalf("scrub = %+v, %v", rep, err)
	}
	want := time.Duration(float64(total-rate) / rate * float64(time.Second))
	if slept < want-time.Millisecond || slept > want+time.Second {
		t.Errorf("slept %s for %d bytes at %d B/s, want about %s", slept, total, rate, want)
	}
	// No limit, no sleep.
	slept = 0
	if _, err := ts.Scrub(context.Background(), store.ScrubOptions{Sleep: sleep}); err != nil || slept != 0 {
		t.Errorf("unlimited scrub slept %s, %v", slept, err)
	}
}

// A chunk file deleted from disk (a row without content) is found by the
// scrub and reported missing to agents, so a re-upload restores it; a file
// without a row is reported, never removed.
func TestScrubFindsRowWithoutContentAndUnindexedFile(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 5000)
	ts.mustPut(t, b)
	for _, p := range ts.files(t) {
		os.Remove(p)
	}
	stray, sh := randomChunk(t, 700)
	if _, err := ts.blobs.Put(ctx, sh, bytes.NewReader(stray)); err != nil {
		t.Fatal(err)
	}
	rep, err := ts.Scrub(ctx, store.ScrubOptions{})
	if err != nil || len(rep.Damaged) != 1 || rep.Damaged[0] != h || rep.Unindexed != 1 {
		t.Fatalf("scrub = %+v, %v; want %s damaged and one unindexed file", rep, err, h)
	}
	if _, err := ts.blobs.Stat(ctx, sh); err != nil {
		t.Errorf("unindexed file touched by the scrub: %v", err)
	}
	if m, _ := ts.Missing(ctx, []chunk.Hash{h}); len(m) != 1 {
		t.Errorf("Missing = %v, want the chunk without content", m)
	}
	if res := ts.mustPut(t, b); !res.Repaired {
		t.Errorf("re-upload = %+v, want repaired", res)
	}
	if !bytes.Equal(mustRead(t, ts, h), b) {
		t.Error("restored chunk serves other bytes")
	}
}

// A read that finds damage records it like the scrub, so agents re-upload
// without waiting for the next pass.
func TestReadRecordsDamage(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, "")
	ctx := context.Background()
	b, h := randomChunk(t, 2000)
	ts.mustPut(t, b)
	c, _ := ts.Stat(ctx, h)
	flipPackByte(t, ts.dir, c, 10)
	if _, _, err := ts.OpenChunk(ctx, h); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("OpenChunk = %v, want ErrCorrupt", err)
	}
	list, err := ts.ListDamage(ctx, false, 0, 10)
	if err != nil || len(list) != 1 || list[0].Hash != h || list[0].DetectedBy != store.DetectedByRead || list[0].Location != "pack" {
		t.Fatalf("damage after a refused read = %+v, %v", list, err)
	}
	// The batch path repairs too.
	res, err := ts.PutBatch(ctx, "agent-1", []store.BatchItem{{Hash: h, Data: b}}, time.Time{})
	if err != nil || res[0].Err != nil || !res[0].Repaired || res[0].Created {
		t.Fatalf("batch re-upload = %+v, %v; want repaired", res, err)
	}
	if !bytes.Equal(mustRead(t, ts, h), b) {
		t.Error("repaired packed chunk serves other bytes")
	}
	// The pack was not rewritten: the damaged record is still there.
	if data, err := readRecord(ts, c); err == nil && chunk.Sum(data) == h {
		t.Error("the damaged pack record was rewritten")
	}
}

func readRecord(ts *testStore, c store.Chunk) ([]byte, error) {
	p, err := pack.OpenReadOnly(filepath.Join(ts.dir, "packs"))
	if err != nil {
		return nil, err
	}
	return p.Read(pack.Location{Pack: c.PackID, Offset: c.PackOffset}, c.Hash, c.Size)
}

// A damage record forged through the runtime credential costs a
// re-upload, nothing more: the repair finds the stored copy verifies,
// writes and quarantines nothing, and closes the record. Closing a real
// record through the credential does not make the bad copy servable, and
// the next pass opens a new record.
func TestForgedDamageRecordCostsOnlyReupload(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 5000)
	ts.mustPut(t, b)
	if _, err := ts.pool.Exec(ctx, `INSERT INTO damaged_chunks (hash, detected_at, detected_by, detail, location)
		VALUES ($1, now(), 'scrub', 'forged', 'file')`, h[:]); err != nil {
		t.Fatal(err)
	}
	if m, _ := ts.Missing(ctx, []chunk.Hash{h}); len(m) != 1 {
		t.Fatalf("Missing = %v, want the chunk with a forged record", m)
	}
	if res := ts.mustPut(t, b); !res.Repaired {
		t.Fatalf("re-upload = %+v, want the record closed", res)
	}
	if q, _ := os.ReadDir(filepath.Join(ts.dir, "quarantine")); len(q) != 0 {
		t.Errorf("a healthy chunk was quarantined because of a forged record: %v", q)
	}
	var how string
	ts.pool.QueryRow(ctx, `SELECT payload::jsonb->'details'->>'how' FROM audit_log WHERE action = 'chunk.repair'`).Scan(&how)
	if how != "verified" {
		t.Errorf("repair of a healthy chunk: how = %q, want verified", how)
	}

	// Real damage, closed behind the vault's back.
	flipFileByte(t, ts.dir, h, 10)
	if _, err := ts.Scrub(ctx, store.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.pool.Exec(ctx, `UPDATE damaged_chunks SET repaired_at = now(), repaired_by = 'mallory' WHERE repaired_at IS NULL`); err != nil {
		t.Fatal(err)
	}
	// The bad copy is in quarantine: the read finds nothing to serve.
	if _, _, err := ts.OpenChunk(ctx, h); !errors.Is(err, store.ErrCorrupt) && !errors.Is(err, store.ErrContentMissing) {
		t.Errorf("OpenChunk after a forged repair = %v, want still refused", err)
	}
	ts.clk.Advance(time.Hour)
	rep, err := ts.Scrub(ctx, store.ScrubOptions{})
	if err != nil || len(rep.Damaged) != 1 || rep.Status.Damage.Open != 1 {
		t.Errorf("scrub after a forged repair = %+v, %v; want the damage open again", rep, err)
	}
}

// The damage records are insert-only but for closing an open one once:
// neither the runtime role nor the owner can delete, reopen or rewrite
// them.
func TestDamageRecordsAreAppendOnly(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 500)
	ts.mustPut(t, b)
	if _, err := ts.pool.Exec(ctx, `INSERT INTO damaged_chunks (hash, detected_at, detected_by, detail, location)
		VALUES ($1, now(), 'scrub', 'x', 'file')`, h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.pool.Exec(ctx, `INSERT INTO damaged_chunks (hash, detected_at, detected_by, detail, location, repaired_at, repaired_by)
		VALUES ($1, now(), 'scrub', 'y', 'file', now(), 'a')`, h[:]); err != nil {
		t.Fatal(err)
	}
	state := func(t testing.TB) string {
		var s string
		ts.pool.QueryRow(ctx, `SELECT string_agg(concat_ws(',', id, encode(hash, 'hex'), detail, repaired_at, repaired_by), ';' ORDER BY id) FROM damaged_chunks`).Scan(&s)
		return s
	}
	mustRefuseAll(t, ts.pool, []forbidden{
		{name: "delete", sql: `DELETE FROM damaged_chunks`, code: "WV004", runtime: "42501"},
		{name: "truncate", sql: `TRUNCATE damaged_chunks`, code: "WV004", runtime: "42501"},
		{name: "reopen", sql: `UPDATE damaged_chunks SET repaired_at = NULL, repaired_by = NULL WHERE repaired_at IS NOT NULL`, code: "WV004"},
		{name: "rewrite detail", sql: `UPDATE damaged_chunks SET detail = 'z'`, code: "WV004", runtime: "42501"},
		{name: "close twice", sql: `UPDATE damaged_chunks SET repaired_at = now(), repaired_by = 'b' WHERE repaired_at IS NOT NULL`, code: "WV004"},
		{name: "delete scrub state", sql: `DELETE FROM scrub_state`, code: "WV004", runtime: "42501"},
	}, state)
}

// The damage metrics come from the damage records: a restarted vault
// reports the same counts, not zero.
func TestDamageMetricsSurviveRestart(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 5000)
	ts.mustPut(t, b)
	flipFileByte(t, ts.dir, h, 99)
	if _, err := ts.Scrub(ctx, store.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	restarted := store.New(ts.pool, ts.blobs, ts.clk, slogDiscard(), store.NewMetrics(reg), store.Options{})
	if _, err := restarted.LoadDamageMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	if err := restarted.LoadScrubMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"wormvault_chunk_corrupt_total":                    1,
		"wormvault_chunks_damaged":                         1,
		"wormvault_chunk_repaired_total":                   0,
		"wormvault_scrub_last_full_pass_timestamp_seconds": float64(ts.clk.Now().Unix()),
	}
	got := gather(t, reg)
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s after restart = %v, want %v", name, got[name], w)
		}
	}
}

func gather(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[mf.GetName()] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[mf.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
