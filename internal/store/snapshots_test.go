package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// newSnapshotStore is newTestStore with the test's own options (the chunk
// size limit of newTestStore is kept unless opts sets one).
func newSnapshotStore(t testing.TB, opts store.Options) *testStore {
	t.Helper()
	dir := t.TempDir()
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.MaxChunkSize == 0 {
		opts.MaxChunkSize = 1 << 20
	}
	pool := pgtest.NewPool(t)
	clk := clock.NewFake(epoch)
	if opts.Journal == nil {
		opts.Journal = newJournal(t, dir)
	}
	pgtest.FollowClock(t, pool, clk)
	s := store.New(pool, blobs, clk, testLogger(), nil, opts)
	return &testStore{Store: s, pool: pool, clk: clk, dir: dir, blobs: blobs}
}

// mustChunks stores n random chunks of 100 to 2,000 bytes.
func (ts *testStore) mustChunks(t testing.TB, n int) []chunk.Hash {
	t.Helper()
	out := make([]chunk.Hash, n)
	for i := range out {
		b, h := randomChunk(t, 100+i*37%1900)
		ts.mustPut(t, b)
		out[i] = h
	}
	return out
}

// mustManifest stores m as a chunk and returns its hash.
func (ts *testStore) mustManifest(t testing.TB, m manifest.Manifest) chunk.Hash {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ts.mustPut(t, b)
	return chunk.Sum(b)
}

// mustTree stores a manifest tree over hashes, fan entries per manifest,
// and returns its root and the hashes of all its manifests.
func (ts *testStore) mustTree(t testing.TB, hashes []chunk.Hash, fan int) (root chunk.Hash, manifests []chunk.Hash) {
	t.Helper()
	var level []chunk.Hash
	for i := 0; i < len(hashes) || i == 0; i += fan {
		level = append(level, ts.mustManifest(t, manifest.Manifest{Chunks: hashes[i:min(i+fan, len(hashes))]}))
	}
	manifests = append(manifests, level...)
	for len(level) > 1 {
		var up []chunk.Hash
		for i := 0; i < len(level); i += fan {
			up = append(up, ts.mustManifest(t, manifest.Manifest{Children: level[i:min(i+fan, len(level))]}))
		}
		manifests = append(manifests, up...)
		level = up
	}
	return level[0], manifests
}

func newSnap(source, name string, until time.Time, root chunk.Hash) store.NewSnapshot {
	return store.NewSnapshot{Source: source, Name: name, TakenAt: epoch.Add(-time.Hour), RetainUntil: until, ManifestRoot: root}
}

func (ts *testStore) mustCommit(t testing.TB, ns store.NewSnapshot) store.CommitResult {
	t.Helper()
	res, err := ts.CommitSnapshot(context.Background(), "agent-1", ns)
	if err != nil {
		t.Fatalf("CommitSnapshot(%s/%s): %v", ns.Source, ns.Name, err)
	}
	return res
}

func (ts *testStore) retainUntil(t testing.TB, h chunk.Hash) time.Time {
	t.Helper()
	c, err := ts.Stat(context.Background(), h)
	if err != nil {
		t.Fatalf("Stat(%s): %v", h, err)
	}
	return c.RetainUntil.UTC()
}

// vaultState is everything the snapshot, hold and retention code could
// change, as one comparable string.
func (ts *testStore) vaultState(t testing.TB) string {
	t.Helper()
	var s string
	err := ts.pool.QueryRow(context.Background(), `SELECT concat_ws(' | ',
		(SELECT string_agg(encode(hash, 'hex') || '=' || retain_until, ',' ORDER BY hash) FROM chunks),
		(SELECT string_agg(id || ':' || source || '/' || name || '=' || retain_until, ',' ORDER BY id) FROM snapshots),
		(SELECT count(*) FROM snapshot_chunks), (SELECT count(*) FROM holds),
		(SELECT count(*) FROM hold_chunks), (SELECT count(*) FROM hold_snapshots),
		(SELECT count(*) FROM audit_log),
		(SELECT string_agg(month || '=' || c || '/' || b, ',' ORDER BY month)
		   FROM (SELECT month, sum(chunks) c, sum(bytes) b FROM retention_months GROUP BY month) m))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCommitSnapshot(t *testing.T) {
	t.Parallel()
	ts := newSnapshotStore(t, store.Options{RetentionBatch: 7})
	ctx := context.Background()
	data := ts.mustChunks(t, 40)
	other := ts.mustChunks(t, 1)[0]
	// Duplicates within and across manifests count once.
	refs := append(slices.Clone(data), data[0], data[5])
	root, manifests := ts.mustTree(t, refs, 6)
	until := epoch.AddDate(1, 0, 0)

	ns := newSnap("db01", "2026-11-25", until, root)
	ns.Tags = []string{"postgres", "daily", "daily"}
	res := ts.mustCommit(t, ns)
	snap := res.Snapshot

	var wantBytes int64
	for _, h := range append(slices.Clone(data), manifests...) {
		c, _ := ts.Stat(ctx, h)
		wantBytes += c.Size
	}
	want := store.Snapshot{
		ID: snap.ID, Source: "db01", Name: "2026-11-25", TakenAt: epoch.Add(-time.Hour), CommittedAt: epoch,
		CommittedBy: "agent-1", RetainUntil: until, Tags: []string{"daily", "postgres"}, ManifestRoot: root,
		ManifestCount: len(manifests), ChunkCount: int64(len(data) + len(manifests)), TotalBytes: wantBytes,
	}
	if fmt.Sprint(snap) != fmt.Sprint(want) {
		t.Errorf("snapshot =\n %+v\nwant\n %+v", snap, want)
	}
	if res.ExtendedChunks != want.ChunkCount {
		t.Errorf("extended %d chunks, want %d", res.ExtendedChunks, want.ChunkCount)
	}
	for _, h := range append(slices.Clone(data), manifests...) {
		if got := ts.retainUntil(t, h); !got.Equal(until) {
			t.Fatalf("chunk %s retained until %s, want %s", h, got, until)
		}
	}
	if got := ts.retainUntil(t, other); !got.Equal(epoch.Add(store.DefaultMinRetention)) {
		t.Errorf("unreferenced chunk retained until %s, want unchanged", got)
	}
	if n := ts.count(t, "snapshot_chunks"); n != int(want.ChunkCount) {
		t.Errorf("snapshot_chunks rows = %d, want %d", n, want.ChunkCount)
	}
	got, err := ts.GetSnapshot(ctx, snap.ID)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(snap) {
		t.Errorf("GetSnapshot = %+v, %v; want %+v", got, err, snap)
	}

	// One audit entry, by the agent, in an intact chain.
	entries, _ := ts.AuditEntries(ctx, 0, 100)
	entries = adminEntries(entries)
	if len(entries) != 1 || entries[0].Action != "snapshot.commit" || entries[0].Actor != "agent-1" ||
		!strings.Contains(entries[0].Payload, `"snapshot_id":1`) || !strings.Contains(entries[0].Payload, root.String()) {
		t.Fatalf("audit entries = %+v, want one snapshot.commit by agent-1", entries)
	}
	if _, err := ts.VerifyAudit(ctx); err != nil {
		t.Errorf("VerifyAudit: %v", err)
	}

	// A second snapshot over the same chunks counts nothing as unique.
	ts.mustCommit(t, newSnap("db01", "2026-11-26", until, root))
	d, err := ts.SnapshotDetail(ctx, snap.ID)
	if err != nil || d.UniqueChunks != 0 || d.UniqueBytes != 0 {
		t.Errorf("SnapshotDetail = %+v, %v; want nothing unique", d, err)
	}
	extra := ts.mustChunks(t, 1)[0]
	c, _ := ts.Stat(ctx, extra)
	root3 := ts.mustManifest(t, manifest.Manifest{Chunks: []chunk.Hash{extra, data[0]}})
	r3 := ts.mustCommit(t, newSnap("db02", "a", until, root3))
	root3Size, _ := ts.Stat(ctx, root3)
	d, err = ts.SnapshotDetail(ctx, r3.Snapshot.ID)
	if err != nil || d.UniqueChunks != 2 || d.UniqueBytes != c.Size+root3Size.Size {
		t.Errorf("SnapshotDetail = %+v, %v; want the new chunk and manifest unique (%d bytes)", d, err, c.Size+root3Size.Size)
	}
}

// A snapshot can be committed over manifests kept in pack files.
func TestCommitSnapshotPackedManifests(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, t.TempDir())
	data := ts.mustChunks(t, 30)
	root, manifests := ts.mustTree(t, data, 4)
	c, _ := ts.Stat(context.Background(), root)
	if c.PackID == 0 {
		t.Fatalf("root manifest %+v is not packed; the test needs it packed", c)
	}
	res := ts.mustCommit(t, newSnap("db01", "packed", epoch.AddDate(0, 3, 0), root))
	if res.Snapshot.ManifestCount != len(manifests) || res.Snapshot.ChunkCount != int64(len(data)+len(manifests)) {
		t.Errorf("snapshot = %+v, want %d manifests, %d chunks", res.Snapshot, len(manifests), len(data)+len(manifests))
	}
}

// Bad input is refused with a clear error, and nothing changes.
func TestCommitSnapshotRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	until := epoch.AddDate(1, 0, 0)
	type setup struct {
		ts   *testStore
		data []chunk.Hash
	}
	store4 := func(t *testing.T) setup {
		ts := newSnapshotStore(t, store.Options{MaxManifestDepth: 4, MaxManifests: 5, MaxManifestSize: 2000, RetentionBatch: 3})
		return setup{ts: ts, data: ts.mustChunks(t, 5)}
	}
	_, absent1 := randomChunk(t, 10)
	_, absent2 := randomChunk(t, 10)
	chain := func(t *testing.T, s setup, n int) chunk.Hash {
		h := s.ts.mustManifest(t, manifest.Manifest{Chunks: s.data})
		for range n - 1 {
			h = s.ts.mustManifest(t, manifest.Manifest{Children: []chunk.Hash{h}})
		}
		return h
	}
	raw := func(t *testing.T, s setup, b string) chunk.Hash {
		s.ts.mustPut(t, []byte(b))
		return chunk.Sum([]byte(b))
	}
	tests := []struct {
		name        string
		snap        func(t *testing.T, s setup) store.NewSnapshot
		wantErr     error
		wantInvalid string // the InvalidError field
		wantMissing []chunk.Hash
	}{
		{name: "missing chunk", wantMissing: sortedHashes(absent1, absent2), snap: func(t *testing.T, s setup) store.NewSnapshot {
			root := s.ts.mustManifest(t, manifest.Manifest{Chunks: append(slices.Clone(s.data), absent2, absent1, absent1)})
			return newSnap("db01", "x", until, root)
		}},
		{name: "missing child manifest", wantMissing: []chunk.Hash{absent1}, snap: func(t *testing.T, s setup) store.NewSnapshot {
			root := s.ts.mustManifest(t, manifest.Manifest{Chunks: s.data, Children: []chunk.Hash{absent1}})
			return newSnap("db01", "x", until, root)
		}},
		{name: "missing root", wantMissing: []chunk.Hash{absent1}, snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", until, absent1)
		}},
		{name: "root not a manifest", wantInvalid: "manifest_root", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", until, raw(t, s, "just some file content"))
		}},
		{name: "child not a manifest", wantInvalid: "manifest_root", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", until, s.ts.mustManifest(t, manifest.Manifest{Children: s.data[:1]}))
		}},
		{name: "manifest of another version", wantInvalid: "manifest_root", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", until, raw(t, s, `{"version":2,"chunks":[]}`))
		}},
		{name: "manifest with an unknown field", wantInvalid: "manifest_root", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", until, raw(t, s, `{"version":1,"chunks":[],"files":{}}`))
		}},
		{name: "manifest too large", wantInvalid: "manifest_root", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", until, raw(t, s, `{"version":1,"chunks":[]}`+strings.Repeat(" ", 2000)))
		}},
		{name: "too deep", wantInvalid: "manifest_root", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", until, chain(t, s, 5))
		}},
		{name: "too many manifests", wantInvalid: "manifest_root", snap: func(t *testing.T, s setup) store.NewSnapshot {
			var kids []chunk.Hash
			for i := range 5 {
				kids = append(kids, s.ts.mustManifest(t, manifest.Manifest{Chunks: s.data[i : i+1]}))
			}
			return newSnap("db01", "x", until, s.ts.mustManifest(t, manifest.Manifest{Children: kids}))
		}},
		{name: "retention under the vault minimum", wantInvalid: "retain_until", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", epoch.Add(store.DefaultMinRetention-time.Second), chain(t, s, 1))
		}},
		{name: "retention in the past", wantInvalid: "retain_until", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", epoch.AddDate(-1, 0, 0), chain(t, s, 1))
		}},
		{name: "retention absurdly far", wantInvalid: "retain_until", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", epoch.AddDate(101, 0, 0), chain(t, s, 1))
		}},
		{name: "retention missing", wantInvalid: "retain_until", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "x", time.Time{}, chain(t, s, 1))
		}},
		{name: "taken in the future", wantInvalid: "taken_at", snap: func(t *testing.T, s setup) store.NewSnapshot {
			ns := newSnap("db01", "x", until, chain(t, s, 1))
			ns.TakenAt = epoch.Add(2 * time.Hour)
			return ns
		}},
		{name: "bad source", wantInvalid: "source", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db 01", "x", until, chain(t, s, 1))
		}},
		{name: "empty name", wantInvalid: "name", snap: func(t *testing.T, s setup) store.NewSnapshot {
			return newSnap("db01", "", until, chain(t, s, 1))
		}},
		{name: "bad tag", wantInvalid: "tags[1]", snap: func(t *testing.T, s setup) store.NewSnapshot {
			ns := newSnap("db01", "x", until, chain(t, s, 1))
			ns.Tags = []string{"ok", "not\nok"}
			return ns
		}},
		{name: "duplicate name for the source", wantErr: store.ErrConflict, snap: func(t *testing.T, s setup) store.NewSnapshot {
			s.ts.mustCommit(t, newSnap("db01", "x", epoch.AddDate(0, 2, 0), chain(t, s, 1)))
			return newSnap("db01", "x", until, chain(t, s, 2))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := store4(t)
			ns := tt.snap(t, s)
			before := s.ts.vaultState(t)
			_, err := s.ts.CommitSnapshot(ctx, "agent-1", ns)
			var inv *store.InvalidError
			var missing *store.MissingChunksError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case tt.wantInvalid != "":
				if !errors.As(err, &inv) || inv.Field != tt.wantInvalid {
					t.Fatalf("err = %v, want InvalidError on %s", err, tt.wantInvalid)
				}
			default:
				if !errors.As(err, &missing) {
					t.Fatalf("err = %v, want MissingChunksError", err)
				}
				if !slices.Equal(missing.Hashes, tt.wantMissing) || missing.Total != int64(len(tt.wantMissing)) {
					t.Fatalf("missing = %v (total %d), want %v", missing.Hashes, missing.Total, tt.wantMissing)
				}
			}
			if after := s.ts.vaultState(t); after != before {
				t.Errorf("state changed:\n before %s\n after  %s", before, after)
			}
		})
	}
}

func sortedHashes(hs ...chunk.Hash) []chunk.Hash {
	out := slices.Clone(hs)
	slices.SortFunc(out, func(a, b chunk.Hash) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// The missing list is bounded, the count is not.
func TestCommitSnapshotManyMissing(t *testing.T) {
	t.Parallel()
	ts := newSnapshotStore(t, store.Options{MaxChunkSize: 4 << 20, RetentionBatch: 300})
	absent := make([]chunk.Hash, store.MaxMissingReported+234)
	for i := range absent {
		absent[i] = chunk.Sum(fmt.Appendf(nil, "absent %d", i))
	}
	root := ts.mustManifest(t, manifest.Manifest{Chunks: absent})
	_, err := ts.CommitSnapshot(context.Background(), "agent-1", newSnap("db01", "x", epoch.AddDate(1, 0, 0), root))
	var missing *store.MissingChunksError
	if !errors.As(err, &missing) || len(missing.Hashes) != store.MaxMissingReported || missing.Total != int64(len(absent)) {
		t.Fatalf("err = %v, want %d of %d missing listed", err, store.MaxMissingReported, len(absent))
	}
	if want := sortedHashes(absent...)[:store.MaxMissingReported]; !slices.Equal(missing.Hashes, want) {
		t.Errorf("missing list is not the first hashes in order")
	}
}

// A chunk shared by two snapshots keeps the later retention, whichever
// snapshot is committed first.
func TestSharedChunkKeepsLaterRetention(t *testing.T) {
	t.Parallel()
	early, late := epoch.AddDate(0, 3, 0), epoch.AddDate(2, 0, 0)
	for _, order := range [][2]time.Time{{early, late}, {late, early}} {
		t.Run(fmt.Sprintf("%s then %s", order[0].Format("2006-01"), order[1].Format("2006-01")), func(t *testing.T) {
			t.Parallel()
			ts := newTestStore(t)
			shared := ts.mustChunks(t, 3)
			own := ts.mustChunks(t, 2)
			r1 := ts.mustManifest(t, manifest.Manifest{Chunks: append(slices.Clone(shared), own[0])})
			r2 := ts.mustManifest(t, manifest.Manifest{Chunks: append(slices.Clone(shared), own[1])})
			ts.mustCommit(t, newSnap("db01", "one", order[0], r1))
			res := ts.mustCommit(t, newSnap("db02", "two", order[1], r2))
			for _, h := range shared {
				if got := ts.retainUntil(t, h); !got.Equal(late) {
					t.Errorf("shared chunk retained until %s, want the later %s", got, late)
				}
			}
			if got := ts.retainUntil(t, own[0]); !got.Equal(order[0]) {
				t.Errorf("first snapshot's own chunk retained until %s, want %s", got, order[0])
			}
			if got := ts.retainUntil(t, own[1]); !got.Equal(order[1]) {
				t.Errorf("second snapshot's own chunk retained until %s, want %s", got, order[1])
			}
			// Only chunks that were retained for less than the second
			// snapshot's retention moved.
			wantExtended := int64(2) // its manifest and own chunk
			if order[1].After(order[0]) {
				wantExtended += int64(len(shared))
			}
			if res.ExtendedChunks != wantExtended {
				t.Errorf("second commit extended %d chunks, want %d", res.ExtendedChunks, wantExtended)
			}
		})
	}
}

func TestExtendSnapshot(t *testing.T) {
	t.Parallel()
	ts := newSnapshotStore(t, store.Options{RetentionBatch: 4})
	ctx := context.Background()
	data := ts.mustChunks(t, 10)
	root, manifests := ts.mustTree(t, data, 3)
	until := epoch.AddDate(1, 0, 0)
	snap := ts.mustCommit(t, newSnap("db01", "s", until, root)).Snapshot
	// One chunk is already retained longer by other means.
	longer := epoch.AddDate(3, 0, 0)
	if _, err := ts.Retain(ctx, "agent-1", data[:1], longer); err != nil {
		t.Fatal(err)
	}

	later := epoch.AddDate(2, 0, 0)
	res, err := ts.ExtendSnapshot(ctx, "agent-2", snap.ID, later)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || !res.Snapshot.RetainUntil.Equal(later) || res.ExtendedChunks != int64(len(data)-1+len(manifests)) {
		t.Errorf("ExtendSnapshot = %+v, want changed to %s with %d chunks extended", res, later, len(data)-1+len(manifests))
	}
	for _, h := range append(slices.Clone(data[1:]), manifests...) {
		if got := ts.retainUntil(t, h); !got.Equal(later) {
			t.Errorf("chunk retained until %s, want %s", got, later)
		}
	}
	if got := ts.retainUntil(t, data[0]); !got.Equal(longer) {
		t.Errorf("longer-retained chunk now retained until %s, want still %s", got, longer)
	}
	entries, _ := ts.AuditEntries(ctx, 0, 100)
	if last := entries[len(entries)-1]; last.Action != "snapshot.retain" || last.Actor != "agent-2" {
		t.Errorf("last audit entry = %+v, want snapshot.retain by agent-2", last)
	}

	// The same time again changes nothing and writes no audit entry.
	before := ts.vaultState(t)
	res, err = ts.ExtendSnapshot(ctx, "agent-2", snap.ID, later)
	if err != nil || res.Changed || !res.Snapshot.RetainUntil.Equal(later) {
		t.Errorf("ExtendSnapshot(same) = %+v, %v; want unchanged", res, err)
	}
	if after := ts.vaultState(t); after != before {
		t.Errorf("extending to the same time changed the state:\n %s\n %s", before, after)
	}

	// Earlier is refused, and nothing changes.
	for _, bad := range []struct {
		until time.Time
		want  error
	}{
		{until, store.ErrRetentionShortened},
		{later.Add(-time.Microsecond), store.ErrRetentionShortened},
		{epoch.AddDate(101, 0, 0), &store.InvalidError{}},
		{epoch.Add(-time.Hour), &store.InvalidError{}},
		{time.Time{}, &store.InvalidError{}},
	} {
		_, err := ts.ExtendSnapshot(ctx, "agent-2", snap.ID, bad.until)
		if _, ok := bad.want.(*store.InvalidError); ok {
			if !isInvalid(err) {
				t.Errorf("ExtendSnapshot(%s) err = %v, want InvalidError", bad.until, err)
			}
		} else if !errors.Is(err, bad.want) {
			t.Errorf("ExtendSnapshot(%s) err = %v, want %v", bad.until, err, bad.want)
		}
		if after := ts.vaultState(t); after != before {
			t.Errorf("refused extension changed the state:\n %s\n %s", before, after)
		}
	}
	if _, err := ts.ExtendSnapshot(ctx, "agent-2", 999, later); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ExtendSnapshot(unknown) err = %v, want ErrNotFound", err)
	}
}

// The database refuses what must never happen to snapshots and holds,
// whatever SQL the application role sends.
func TestSnapshotTablesRefuseForbiddenChanges(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	data := ts.mustChunks(t, 3)
	root := ts.mustManifest(t, manifest.Manifest{Chunks: data})
	ts.mustCommit(t, newSnap("db01", "s", epoch.AddDate(1, 0, 0), root))
	if _, err := ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "h", Reason: "r", Chunks: data[:1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "h", Reason: "r", Snapshots: []int64{1}}); err != nil {
		t.Fatal(err)
	}
	short := ts.mustChunks(t, 1)[0] // retained for the minimum only

	mustRefuseAll(t, ts.pool, []forbidden{
		{name: "shorten snapshot retention", sql: "UPDATE snapshots SET retain_until = retain_until - interval '1 day'", code: "WV001"},
		{name: "rename snapshot", sql: "UPDATE snapshots SET name = 'other'", code: "WV002", runtime: permissionDenied},
		{name: "change snapshot root", sql: "UPDATE snapshots SET manifest_root = decode(repeat('00', 32), 'hex')", code: "WV002", runtime: permissionDenied},
		{name: "change snapshot counts", sql: "UPDATE snapshots SET chunk_count = chunk_count + 1", code: "WV002", runtime: permissionDenied},
		{name: "extend snapshot past its chunks", sql: "UPDATE snapshots SET retain_until = retain_until + interval '1 day'", code: "WV005"},
		{name: "delete snapshot", sql: "DELETE FROM snapshots", code: "WV003", runtime: permissionDenied},
		{name: "truncate snapshots", sql: "TRUNCATE snapshots CASCADE", code: "WV003", runtime: permissionDenied},
		{name: "change reference", sql: "UPDATE snapshot_chunks SET size = size + 1", code: "WV004", runtime: permissionDenied},
		{name: "delete references", sql: "DELETE FROM snapshot_chunks", code: "WV004", runtime: permissionDenied},
		{name: "truncate references", sql: "TRUNCATE snapshot_chunks", code: "WV004", runtime: permissionDenied},
		{name: "reference a chunk retained for less", sql: "INSERT INTO snapshot_chunks SELECT 1, hash, size FROM chunks WHERE hash = '\\x" + short.String() + "'", code: "WV005"},
		{name: "reference an unknown chunk", sql: "INSERT INTO snapshot_chunks VALUES (1, decode(repeat('00', 32), 'hex'), 1)", code: "WV005"},
		{name: "reference an unknown snapshot", sql: "INSERT INTO snapshot_chunks SELECT 99, hash, size FROM chunks LIMIT 1", code: "WV005"},
		{name: "release a hold", sql: "UPDATE holds SET released_at = now(), released_by = 'me'", code: "WV004"},
		{name: "rename a hold", sql: "UPDATE holds SET reason = 'never mind'", code: "WV004", runtime: permissionDenied},
		{name: "delete a hold", sql: "DELETE FROM holds", code: "WV004", runtime: permissionDenied},
		{name: "truncate holds", sql: "TRUNCATE holds CASCADE", code: "WV004", runtime: permissionDenied},
		{name: "delete held chunks", sql: "DELETE FROM hold_chunks", code: "WV004", runtime: permissionDenied},
		{name: "delete held snapshots", sql: "DELETE FROM hold_snapshots", code: "WV004", runtime: permissionDenied},
		{name: "truncate held chunks", sql: "TRUNCATE hold_chunks", code: "WV004", runtime: permissionDenied},
	}, ts.vaultState)
}

func TestListSnapshots(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	root := ts.mustManifest(t, manifest.Manifest{Chunks: ts.mustChunks(t, 2)})
	type made struct {
		source, name string
		taken        time.Time
		tags         []string
	}
	var all []made
	for i := range 9 {
		m := made{source: []string{"db01", "web01", "db02"}[i%3], name: fmt.Sprintf("n%d", i),
			taken: epoch.Add(-time.Duration(9-i) * time.Hour), tags: [][]string{{"daily"}, {"daily", "pg"}, nil}[i%3]}
		if i == 4 {
			m.taken = all[3].taken // a tie on taken_at: id breaks it
		}
		ns := newSnap(m.source, m.name, epoch.AddDate(1, 0, 0), root)
		ns.TakenAt, ns.Tags = m.taken, m.tags
		ts.mustCommit(t, ns)
		all = append(all, m)
	}
	names := func(q store.SnapshotQuery) []string {
		t.Helper()
		var out []string
		for pages := 0; ; pages++ {
			p, err := ts.ListSnapshots(ctx, q)
			if err != nil {
				t.Fatalf("ListSnapshots(%+v): %v", q, err)
			}
			for _, s := range p.Snapshots {
				out = append(out, s.Name)
			}
			if p.Next == "" {
				return out
			}
			if pages > 20 {
				t.Fatal("pagination does not end")
			}
			q.Cursor = p.Next
		}
	}
	tests := []struct {
		name string
		q    store.SnapshotQuery
		want []string
	}{
		{"all newest first", store.SnapshotQuery{}, []string{"n8", "n7", "n6", "n5", "n4", "n3", "n2", "n1", "n0"}},
		{"all by pages of 2", store.SnapshotQuery{Limit: 2}, []string{"n8", "n7", "n6", "n5", "n4", "n3", "n2", "n1", "n0"}},
		{"one source", store.SnapshotQuery{Source: "db01", Limit: 1}, []string{"n6", "n3", "n0"}},
		{"tag", store.SnapshotQuery{Tags: []string{"daily"}, Limit: 3}, []string{"n7", "n6", "n4", "n3", "n1", "n0"}},
		{"two tags", store.SnapshotQuery{Tags: []string{"pg", "daily"}}, []string{"n7", "n4", "n1"}},
		{"time range", store.SnapshotQuery{TakenFrom: all[2].taken, TakenBefore: all[6].taken, Limit: 2}, []string{"n5", "n4", "n3", "n2"}},
		{"nothing", store.SnapshotQuery{Source: "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := names(tt.q); !slices.Equal(got, tt.want) {
				t.Errorf("names = %v, want %v", got, tt.want)
			}
		})
	}

	first, err := ts.ListSnapshots(ctx, store.SnapshotQuery{Limit: 2})
	if err != nil || first.Next == "" {
		t.Fatalf("first page: %+v, %v", first, err)
	}
	otherKind := expiringCursor(t, ts)
	for name, q := range map[string]store.SnapshotQuery{
		"garbage":            {Cursor: "not a cursor"},
		"not base64":         {Cursor: "!!!!"},
		"truncated":          {Cursor: first.Next[:len(first.Next)-3]},
		"extended":           {Cursor: first.Next + "AA"},
		"one character off":  {Cursor: flipChar(first.Next, 12)},
		"check bits off":     {Cursor: flipChar(first.Next, len(first.Next)-2)},
		"other filter":       {Cursor: first.Next, Source: "db01"},
		"other list":         {Cursor: otherKind},
		"padding added":      {Cursor: first.Next + "="},
		"limit out of range": {Limit: 1001},
	} {
		if _, err := ts.ListSnapshots(ctx, q); !isInvalid(err) {
			t.Errorf("%s: ListSnapshots(%+v) err = %v, want InvalidError", name, q, err)
		}
	}
}

// expiringCursor returns a valid cursor of another list.
func expiringCursor(t testing.TB, ts *testStore) string {
	t.Helper()
	p, err := ts.ExpiringSnapshots(context.Background(), epoch.AddDate(5, 0, 0), 1, "")
	if err != nil || p.Next == "" {
		t.Fatalf("ExpiringSnapshots: %+v, %v", p, err)
	}
	return p.Next
}

func flipChar(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// The temporary tables of a commit do not leak into the next commit on
// the same connection, and a failed commit leaves the connection usable.
func TestCommitsReuseConnections(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	data := ts.mustChunks(t, 4)
	_, absent := randomChunk(t, 10)
	bad := ts.mustManifest(t, manifest.Manifest{Chunks: append(slices.Clone(data), absent)})
	good := ts.mustManifest(t, manifest.Manifest{Chunks: data})
	for i := range 12 {
		root := good
		if i%3 == 0 {
			root = bad
		}
		_, err := ts.CommitSnapshot(ctx, "agent-1", newSnap("db01", fmt.Sprint(i), epoch.AddDate(1, 0, i), root))
		var missing *store.MissingChunksError
		if i%3 == 0 && !errors.As(err, &missing) || i%3 != 0 && err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	var n int
	ts.pool.QueryRow(ctx, "SELECT count(*) FROM snapshots").Scan(&n)
	if n != 8 {
		t.Errorf("snapshots = %d, want 8", n)
	}
}

// testLogger discards the store's log unless VAULT_TEST_LOG is set (it
// shows, for example, the phases of a large commit).
func testLogger() *slog.Logger {
	if os.Getenv("VAULT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}
