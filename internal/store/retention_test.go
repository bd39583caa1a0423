package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

func TestChunkRetention(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	data := ts.mustChunks(t, 3)
	r1 := ts.mustManifest(t, manifest.Manifest{Chunks: data[:2]})
	r2 := ts.mustManifest(t, manifest.Manifest{Chunks: data[1:]})
	s1 := ts.mustCommit(t, newSnap("db01", "s1", epoch.AddDate(1, 0, 0), r1)).Snapshot
	s2 := ts.mustCommit(t, newSnap("web01", "s2", epoch.AddDate(2, 0, 0), r2)).Snapshot

	// Nothing but retention keeps data[0] at first.
	cr, err := ts.ChunkRetention(ctx, data[0])
	if err != nil {
		t.Fatal(err)
	}
	if cr.Hash != data[0] || cr.Expired || len(cr.Holds) != 0 || cr.SnapshotCount != 1 || cr.Deletion != store.DeletionNone ||
		len(cr.Snapshots) != 1 || cr.Snapshots[0] != (store.SnapshotRef{ID: s1.ID, Source: "db01", Name: "s1", RetainUntil: s1.RetainUntil}) {
		t.Errorf("ChunkRetention(data[0]) = %+v", cr)
	}

	hc, _ := ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "direct", Reason: "r", Chunks: data[1:2]})
	hs, _ := ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "snap", Reason: "r", Snapshots: []int64{s2.ID}})
	hsrc, _ := ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "src", Reason: "r", Source: "db01"})
	cr, err = ts.ChunkRetention(ctx, data[1])
	if err != nil {
		t.Fatal(err)
	}
	wantHolds := []store.HoldRef{
		{ID: hc.ID, Name: "direct", Reason: "r", Via: "chunk"},
		{ID: hs.ID, Name: "snap", Reason: "r", Via: "snapshot", SnapshotID: s2.ID},
		{ID: hsrc.ID, Name: "src", Reason: "r", Via: "source", Source: "db01"},
	}
	if !slices.Equal(cr.Holds, wantHolds) {
		t.Errorf("holds = %+v, want %+v", cr.Holds, wantHolds)
	}
	if cr.SnapshotCount != 2 || len(cr.Snapshots) != 2 || cr.Snapshots[0].ID != s2.ID || cr.Snapshots[1].ID != s1.ID {
		t.Errorf("snapshots = %+v (count %d), want s2 then s1", cr.Snapshots, cr.SnapshotCount)
	}
	if !cr.RetainUntil.Equal(s2.RetainUntil) {
		t.Errorf("retain_until = %s, want the later snapshot's %s", cr.RetainUntil, s2.RetainUntil)
	}

	// Past its retention the chunk is expired, still present.
	ts.clk.Set(epoch.AddDate(3, 0, 0))
	if cr, _ := ts.ChunkRetention(ctx, data[2]); !cr.Expired {
		t.Errorf("chunk past retention not reported expired: %+v", cr)
	}
	_, absent := randomChunk(t, 10)
	if _, err := ts.ChunkRetention(ctx, absent); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("ChunkRetention(absent) err = %v, want not found", err)
	}
}

func TestRetentionSummary(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	data := ts.mustChunks(t, 8) // retained until epoch + 30 days: December 2026
	r1 := ts.mustManifest(t, manifest.Manifest{Chunks: data[:3]})
	r2 := ts.mustManifest(t, manifest.Manifest{Chunks: data[2:5]})
	ts.mustCommit(t, newSnap("db01", "a", time.Date(2027, 11, 25, 0, 0, 0, 0, time.UTC), r1))
	s2 := ts.mustCommit(t, newSnap("web01", "b", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), r2)).Snapshot
	if _, err := ts.Retain(ctx, "agent-1", data[7:], time.Date(2028, 1, 15, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "s", Reason: "r", Snapshots: []int64{s2.ID}})
	ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "c", Reason: "r", Chunks: data[4:6]})

	size := func(hs ...chunk.Hash) (c store.Count) {
		for _, h := range hs {
			st, _ := ts.Stat(ctx, h)
			c.Chunks++
			c.Bytes += st.Size
		}
		return c
	}
	sum, err := ts.RetentionSummary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := directMonths(t, ts); fmt.Sprint(sum.Months) != fmt.Sprint(want) {
		t.Errorf("months = %v, want %v", sum.Months, want)
	}
	all := append(slices.Clone(data), r1, r2)
	if want := size(all...); sum.Total != want {
		t.Errorf("total = %+v, want %+v", sum.Total, want)
	}
	if sum.Expired != (store.Count{}) {
		t.Errorf("expired = %+v, want none yet", sum.Expired)
	}
	// Held: snapshot b (data[2:5] and its manifest) and data[4:6] directly.
	if want := size(data[2], data[3], data[4], data[5], r2); sum.Held != want {
		t.Errorf("held = %+v, want %+v", sum.Held, want)
	}
	if sum.Snapshots != (store.SnapshotCounts{Total: 2, Expired: 0, Held: 1}) || sum.ActiveHolds != 2 || sum.PendingDeletion != (store.Count{}) {
		t.Errorf("summary = %+v", sum)
	}

	// On 26 December the unreferenced chunks are expired; in mid-February
	// snapshot b and what only it kept are too.
	ts.clk.Set(time.Date(2026, 12, 26, 0, 0, 0, 0, time.UTC))
	sum, _ = ts.RetentionSummary(ctx)
	if want := size(data[5], data[6]); sum.Expired != want {
		t.Errorf("expired on 26 Dec = %+v, want %+v", sum.Expired, want)
	}
	ts.clk.Set(time.Date(2027, 2, 15, 0, 0, 0, 0, time.UTC))
	sum, _ = ts.RetentionSummary(ctx)
	if want := size(data[3], data[4], data[5], data[6], r2); sum.Expired != want {
		t.Errorf("expired on 15 Feb = %+v, want %+v", sum.Expired, want)
	}
	if sum.Snapshots.Expired != 1 {
		t.Errorf("expired snapshots = %d, want 1", sum.Snapshots.Expired)
	}
}

// directMonths computes the months figures from the chunks table itself.
func directMonths(t testing.TB, ts *testStore) []store.MonthCount {
	t.Helper()
	rows, _ := ts.pool.Query(context.Background(), `
		SELECT date_trunc('month', retain_until AT TIME ZONE 'UTC')::date, count(*), sum(size)::bigint
		FROM chunks GROUP BY 1 ORDER BY 1`)
	months, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.MonthCount, error) {
		var m store.MonthCount
		err := r.Scan(&m.Month, &m.Chunks, &m.Bytes)
		m.Month = m.Month.UTC()
		return m, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if months == nil {
		months = []store.MonthCount{}
	}
	return months
}

// The per-month figures stay equal to the chunks table through every kind
// of change, in concurrent transactions.
func TestRetentionMonthsFollowChunks(t *testing.T) {
	t.Parallel()
	ts := newSnapshotStore(t, store.Options{RetentionBatch: 5})
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := ts.mustChunks(t, 12)
			if _, err := ts.Retain(ctx, "agent-1", data[:4], epoch.AddDate(0, 2+w, 0)); err != nil {
				t.Error(err)
				return
			}
			root := ts.mustManifest(t, manifest.Manifest{Chunks: data[2:]})
			res, err := ts.CommitSnapshot(ctx, "agent-1", newSnap(fmt.Sprintf("src%d", w), "s", epoch.AddDate(0, 5, w), root))
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := ts.ExtendSnapshot(ctx, "agent-1", res.Snapshot.ID, epoch.AddDate(1, w, 0)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	sum, err := ts.RetentionSummary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := directMonths(t, ts); fmt.Sprint(sum.Months) != fmt.Sprint(want) {
		t.Errorf("months = %v, want %v", sum.Months, want)
	}
}

func TestExpiringLists(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	data := ts.mustChunks(t, 7)
	r1 := ts.mustManifest(t, manifest.Manifest{Chunks: data[:2]})
	r2 := ts.mustManifest(t, manifest.Manifest{Chunks: data[2:4]})
	r3 := ts.mustManifest(t, manifest.Manifest{Chunks: data[4:5]})
	s1 := ts.mustCommit(t, newSnap("db01", "a", epoch.AddDate(0, 6, 0), r1)).Snapshot
	s2 := ts.mustCommit(t, newSnap("db01", "b", epoch.AddDate(0, 2, 0), r2)).Snapshot
	s3 := ts.mustCommit(t, newSnap("web01", "c", epoch.AddDate(0, 2, 0), r3)).Snapshot
	ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "h", Reason: "r", Source: "web01"})

	// Chunks before 3 months: data[2:7], r2, r3 — in retention order
	// (min-retention ones first), ties by hash.
	var got []chunk.Hash
	held := map[chunk.Hash]bool{}
	cursor := ""
	for {
		p, err := ts.ExpiringChunks(ctx, epoch.AddDate(0, 3, 0), 2, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Chunks {
			got = append(got, c.Hash)
			held[c.Hash] = c.Held
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	want := append(sortedHashes(data[5], data[6]), sortedHashes(data[2], data[3], data[4], r2, r3)...)
	if !slices.Equal(got, want) {
		t.Errorf("expiring chunks = %v, want %v", got, want)
	}
	for h, isHeld := range held {
		if wantHeld := h == data[4] || h == r3; isHeld != wantHeld {
			t.Errorf("chunk %s held = %v, want %v", h, isHeld, wantHeld)
		}
	}

	var snaps []int64
	cursor = ""
	for {
		p, err := ts.ExpiringSnapshots(ctx, epoch.AddDate(1, 0, 0), 1, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Snapshots {
			snaps = append(snaps, s.ID)
			if s.Held != (s.Source == "web01") {
				t.Errorf("snapshot %d held = %v", s.ID, s.Held)
			}
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if !slices.Equal(snaps, []int64{s2.ID, s3.ID, s1.ID}) {
		t.Errorf("expiring snapshots = %v, want %v", snaps, []int64{s2.ID, s3.ID, s1.ID})
	}

	p, _ := ts.ExpiringChunks(ctx, epoch.AddDate(0, 3, 0), 2, "")
	for name, call := range map[string]func() error{
		"cursor for another date": func() error {
			_, err := ts.ExpiringChunks(ctx, epoch.AddDate(0, 4, 0), 2, p.Next)
			return err
		},
		"cursor of another list": func() error {
			_, err := ts.ExpiringSnapshots(ctx, epoch.AddDate(0, 3, 0), 2, p.Next)
			return err
		},
		"tampered cursor": func() error {
			_, err := ts.ExpiringChunks(ctx, epoch.AddDate(0, 3, 0), 2, flipChar(p.Next, 20))
			return err
		},
		"no date": func() error {
			_, err := ts.ExpiringChunks(ctx, time.Time{}, 2, "")
			return err
		},
	} {
		if err := call(); !isInvalid(err) {
			t.Errorf("%s: err = %v, want InvalidError", name, err)
		}
	}
}

// syntheticHash is the hash of the synthetic chunk row g:
// sha256(int8send(g)) in SQL.
func syntheticHash(g int64) chunk.Hash {
	return chunk.Hash(sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(g))))
}

// queryRecorder records the queries a store sends while on.
type queryRecorder struct {
	mu      sync.Mutex
	on      bool
	queries []recordedQuery
}

type recordedQuery struct {
	sql  string
	args []any
}

func (r *queryRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		r.queries = append(r.queries, recordedQuery{d.SQL, d.Args})
	}
	return ctx
}

func (r *queryRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *queryRecorder) set(on bool) []recordedQuery {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = on
	return r.queries
}

// Every retention query is answered from indexes: on a table large enough
// for the planner to care, no plan reads the chunks table sequentially.
// VAULT_TEST_SHOW_PLANS=1 logs every plan.
func TestRetentionQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := &queryRecorder{}
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = rec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	blobs, err := disk.Open(t.TempDir(), disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(epoch)
	s := store.New(pool, blobs, clk, slog.New(slog.DiscardHandler), nil, store.Options{})

	// 200,000 chunks retained over ten years, 300 snapshots of 50 chunks.
	setup := []string{
		`INSERT INTO chunks (hash, size, stored_at, retain_until, uploaded_by)
		 SELECT sha256(int8send(g)), 100 + g % 1000, @epoch::timestamptz, @epoch::timestamptz + interval '31 days' + (g % 3650) * interval '1 day', 'synthetic'
		 FROM generate_series(1, 200000) g`,
		`INSERT INTO snapshots (source, name, taken_at, committed_at, committed_by, retain_until, tags,
		                        manifest_root, manifest_count, chunk_count, total_bytes)
		 SELECT 'src' || (g % 10), 'n' || g, @epoch::timestamptz - g * interval '1 hour', @epoch::timestamptz, 'synthetic',
		        @epoch::timestamptz + interval '40 days' + (g % 300) * interval '1 day', ARRAY['t' || (g % 3)],
		        sha256(int8send(1000 + g * 5)), 1, 50, 50000
		 FROM generate_series(1, 300) g`,
		`INSERT INTO snapshot_chunks (snapshot_id, hash, size)
		 SELECT s.id, c.hash, c.size FROM snapshots s, generate_series(0, 49) k, chunks c
		 WHERE c.hash = sha256(int8send(1000 + s.id * 5 + k))`,
	}
	for _, q := range setup {
		if _, err := pool.Exec(ctx, q, pgx.NamedArgs{"epoch": epoch}); err != nil {
			t.Fatalf("setup: %v", err)
		}
	}
	if _, err := s.PlaceHold(ctx, "admin-1", store.NewHold{Name: "c", Reason: "r", Chunks: []chunk.Hash{syntheticHash(17), syntheticHash(1010)}}); err != nil {
		t.Fatal(err)
	}
	s.PlaceHold(ctx, "admin-1", store.NewHold{Name: "s", Reason: "r", Snapshots: []int64{3, 4}})
	s.PlaceHold(ctx, "admin-1", store.NewHold{Name: "src", Reason: "r", Source: "src1"})
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		t.Fatal(err)
	}
	clk.Set(epoch.AddDate(0, 3, 10)) // part of the current month has expired

	rec.set(true)
	if _, err := s.ChunkRetention(ctx, syntheticHash(1010)); err != nil {
		t.Fatal(err)
	}
	before := epoch.AddDate(0, 2, 0)
	p, err := s.ExpiringChunks(ctx, before, 100, "")
	if err != nil || p.Next == "" {
		t.Fatalf("ExpiringChunks: %d chunks, next %q, %v", len(p.Chunks), p.Next, err)
	}
	if _, err := s.ExpiringChunks(ctx, before, 100, p.Next); err != nil {
		t.Fatal(err)
	}
	sp, err := s.ExpiringSnapshots(ctx, before, 10, "")
	if err != nil || sp.Next == "" {
		t.Fatalf("ExpiringSnapshots: %+v, %v", sp, err)
	}
	if _, err := s.ExpiringSnapshots(ctx, before, 10, sp.Next); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RetentionSummary(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListSnapshots(ctx, store.SnapshotQuery{Source: "src2", Tags: []string{"t1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SnapshotDetail(ctx, 5); err != nil {
		t.Fatal(err)
	}
	queries := rec.set(false)

	explained := 0
	for _, q := range queries {
		verb := strings.ToUpper(strings.Fields(q.sql)[0])
		if verb != "SELECT" && verb != "WITH" {
			continue // BEGIN, COMMIT
		}
		rows, _ := pool.Query(ctx, "EXPLAIN "+q.sql, q.args...)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("EXPLAIN %s: %v", q.sql, err)
		}
		plan := strings.Join(lines, "\n")
		if strings.Contains(plan, "Seq Scan on chunks") {
			t.Errorf("sequential scan of chunks in\n%s\nplan:\n%s", q.sql, plan)
		}
		if os.Getenv("VAULT_TEST_SHOW_PLANS") != "" {
			t.Logf("%s\n%s", q.sql, plan)
		}
		explained++
	}
	if explained < 12 {
		t.Errorf("explained only %d queries; the recorder missed some", explained)
	}
}

// Acceptance 1: a snapshot over a very large number of references commits
// in one transaction, streaming (memory bounded by the batch and one
// manifest), and raises the retention of every referenced chunk. The
// references are synthetic rows, plus real chunks for a sample; the
// manifests are real. 100,000 references by default;
// VAULT_TEST_SNAPSHOT_REFS=1000000 runs the full acceptance size.
func TestCommitSnapshotManyReferences(t *testing.T) {
	t.Parallel()
	n := 100_000
	if v := os.Getenv("VAULT_TEST_SNAPSHOT_REFS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			t.Fatalf("VAULT_TEST_SNAPSHOT_REFS=%q: want an integer of at least 1000", v)
		}
	}
	ts := newSnapshotStore(t, store.Options{MaxChunkSize: 4 << 20})
	ctx := context.Background()
	start := time.Now()
	_, err := ts.pool.Exec(ctx, `INSERT INTO chunks (hash, size, stored_at, retain_until, uploaded_by)
		SELECT sha256(int8send(g)), 1000 + g % 7, $1, $2, 'synthetic' FROM generate_series(1, $3::bigint) g`,
		epoch, epoch.Add(store.DefaultMinRetention), n)
	if err != nil {
		t.Fatal(err)
	}
	sample := ts.mustChunks(t, 100)
	t.Logf("inserted %d synthetic chunk rows and %d real chunks in %s", n, len(sample), time.Since(start))

	start = time.Now()
	const fan = 1000
	var leaves []chunk.Hash
	batch := make([]chunk.Hash, 0, fan)
	for g := int64(1); g <= int64(n); g++ {
		batch = append(batch, syntheticHash(g))
		if len(batch) == fan || g == int64(n) {
			leaves = append(leaves, ts.mustManifest(t, manifest.Manifest{Chunks: batch}))
			batch = batch[:0]
		}
	}
	manifests := len(leaves)
	var roots []chunk.Hash
	for i := 0; i < len(leaves); i += fan {
		roots = append(roots, ts.mustManifest(t, manifest.Manifest{Children: leaves[i:min(i+fan, len(leaves))]}))
	}
	manifests += len(roots)
	root := ts.mustManifest(t, manifest.Manifest{Chunks: sample, Children: roots})
	manifests++
	t.Logf("stored %d manifests in %s", manifests, time.Since(start))

	until := epoch.AddDate(1, 0, 0)
	start = time.Now()
	res := ts.mustCommit(t, newSnap("db01", "big", until, root))
	took := time.Since(start)
	want := int64(n + len(sample) + manifests)
	t.Logf("committed a snapshot of %d references (%d manifests) in %s; %d chunks extended", want, manifests, took, res.ExtendedChunks)
	if res.Snapshot.ChunkCount != want || res.ExtendedChunks != want || res.Snapshot.ManifestCount != manifests {
		t.Errorf("snapshot = %+v, extended %d; want %d chunks, %d manifests", res.Snapshot, res.ExtendedChunks, want, manifests)
	}
	var refs, short int64
	err = ts.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE c.retain_until < $2)
		FROM snapshot_chunks sc JOIN chunks c ON c.hash = sc.hash WHERE sc.snapshot_id = $1`, res.Snapshot.ID, until).Scan(&refs, &short)
	if err != nil || refs != want || short != 0 {
		t.Errorf("references = %d, retained too short = %d, err %v; want %d and 0", refs, short, err, want)
	}
	if n := ts.auditCount(t); n != 1 {
		t.Errorf("audit entries = %d, want 1", n)
	}
}
