package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// lockChunkInserts takes an EXCLUSIVE lock on chunks: reads go on, but no
// row can be inserted, so an upload's content becomes durable and then its
// commit fails, as when the database goes away between the two. It
// returns the release (the database coming back).
func lockChunkInserts(t *testing.T, ts *testStore) func() {
	t.Helper()
	owner := pgtest.OwnerPool(t, ts.pool)
	ctx := context.Background()
	tx, err := owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE chunks IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { _ = tx.Rollback(ctx) }) }
	t.Cleanup(release)
	return release
}

// TestOrphansAdoptedAfterDatabaseOutageWithoutRestart: the index refuses
// the commits of a small (packed) and a large (file) upload after their
// content is durable. Neither is acknowledged nor readable; while the
// index is still down adoption fails and keeps them; once it is back,
// AdoptOrphans indexes both without a restart, and they read back whole.
func TestOrphansAdoptedAfterDatabaseOutageWithoutRestart(t *testing.T) {
	t.Parallel()
	ts := newStallStore(t)
	ctx := context.Background()
	small, smallHash := randomChunk(t, 4096)
	large, largeHash := randomChunk(t, 128<<10)

	restore := lockChunkInserts(t, ts)
	for _, b := range [][]byte{small, large} {
		if _, err := ts.PutChunk(ctx, "agent", chunk.Sum(b), bytes.NewReader(b), epoch.Add(365*24*3600e9)); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("PutChunk of %d bytes while the index refuses inserts: %v, want ErrUnavailable", len(b), err)
		}
	}
	for _, h := range []chunk.Hash{smallHash, largeHash} {
		if _, err := ts.Stat(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Stat(%s) after a failed commit: %v, want ErrNotFound", h, err)
		}
	}
	if n := ts.PendingOrphans(); n != 2 {
		t.Fatalf("PendingOrphans = %d, want 2", n)
	}
	actx, cancel := context.WithTimeout(ctx, stallTimeout)
	_, err := ts.AdoptOrphans(actx)
	cancel()
	if err == nil || ts.PendingOrphans() != 2 {
		t.Fatalf("AdoptOrphans while the index is down: err %v, %d pending; want an error and 2 pending", err, ts.PendingOrphans())
	}

	restore()
	rep, err := ts.AdoptOrphans(ctx)
	if err != nil || rep.Adopted != 2 {
		t.Fatalf("AdoptOrphans after the index came back = %+v, %v; want 2 adopted", rep, err)
	}
	if n := ts.PendingOrphans(); n != 0 {
		t.Errorf("PendingOrphans after adoption = %d, want 0", n)
	}
	if got := mustRead(t, ts, smallHash); !bytes.Equal(got, small) {
		t.Errorf("small chunk read back %d bytes, want its %d", len(got), len(small))
	}
	if got := mustRead(t, ts, largeHash); !bytes.Equal(got, large) {
		t.Errorf("large chunk read back %d bytes, want its %d", len(got), len(large))
	}
	// An agent's retry now dedups, and nothing is adopted twice.
	if res, err := ts.PutChunk(ctx, "agent", smallHash, bytes.NewReader(small), epoch.Add(365*24*3600e9)); err != nil || res.Created {
		t.Errorf("re-upload after adoption = %+v, %v; want already stored", res, err)
	}
	if rep, err := ts.AdoptOrphans(ctx); err != nil || rep.Adopted+rep.Quarantined+rep.Tombstoned != 0 {
		t.Errorf("second AdoptOrphans = %+v, %v; want nothing to do", rep, err)
	}
}

// TestWritesHeldUntilPackTailsChecked: between BeginReconcile and
// ReconcileTail uploads are refused with ErrStarting (the temp-file
// cleanup must not race them) and nothing is stored, and so are
// missing-chunk queries (the index is not yet checked against the
// journal); reads are served.
func TestWritesHeldUntilPackTailsChecked(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, "")
	ctx := context.Background()
	old, oldHash := randomChunk(t, 2000)
	ts.mustPut(t, old)

	ts.BeginReconcile()
	if st := ts.ReconcileStatus(); !st.Tracked || !st.WritesHeld || st.Done || st.Phase != "pack tails" {
		t.Fatalf("status after BeginReconcile = %+v, want tracked, writes held, phase pack tails", st)
	}
	b, h := randomChunk(t, 3000)
	if _, err := ts.PutChunk(ctx, "agent", h, bytes.NewReader(b), epoch.Add(365*24*3600e9)); !errors.Is(err, store.ErrStarting) {
		t.Fatalf("PutChunk before the pack tails are checked: %v, want ErrStarting", err)
	}
	if _, err := ts.PutBatch(ctx, "agent", []store.BatchItem{{Hash: h, Data: b}}, epoch.Add(365*24*3600e9)); !errors.Is(err, store.ErrStarting) {
		t.Fatalf("PutBatch before the pack tails are checked: %v, want ErrStarting", err)
	}
	if _, err := ts.Stat(ctx, h); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused chunk: Stat = %v, want ErrNotFound", err)
	}
	// What agents skip uploading is not decided by an unchecked index.
	if _, err := ts.Missing(ctx, []chunk.Hash{h, oldHash}); !errors.Is(err, store.ErrStarting) {
		t.Fatalf("Missing before the start-up checks: %v, want ErrStarting", err)
	}
	if got := mustRead(t, ts, oldHash); !bytes.Equal(got, old) {
		t.Fatalf("read while writes are held: wrong content")
	}

	rep, err := ts.ReconcileTail(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := ts.ReconcileStatus(); st.WritesHeld || st.Done {
		t.Fatalf("status after ReconcileTail = %+v, want writes admitted, not done", st)
	}
	ts.mustPut(t, b)
	if err := ts.ReconcileRest(ctx, &rep); err != nil {
		t.Fatal(err)
	}
	if st := ts.ReconcileStatus(); !st.Done || st.Phase != "done" || st.Checked < 2 {
		t.Errorf("status after ReconcileRest = %+v, want done with the rows checked", st)
	}
}

// TestCrashedPackSealedReadOnly: a pack a crash left open (writable) is
// never appended to again; once reconcile has checked it, it is sealed
// read-only like a full pack, and only the new open pack stays writable.
func TestCrashedPackSealedReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := newPackedStore(t, dir)
	b, h := randomChunk(t, 3000)
	first.mustPut(t, b)
	// The crash: the process is gone without closing its pack.
	crashed := packIDs(t, dir)
	if len(crashed) != 1 {
		t.Fatalf("packs before the restart: %v, want one", crashed)
	}
	path := filepath.Join(dir, "packs", packName(crashed[0]))
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o222 == 0 {
		t.Fatalf("the crashed pack's mode = %v (%v), want writable, as a crash leaves it", fi.Mode(), err)
	}

	second := newPackedStore(t, dir)
	ctx := context.Background()
	rep, err := second.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// (packIDs' own Open left an empty pack behind: sealed as well.)
	if rep.PacksSealed < 1 || rep.Adopted != 1 {
		t.Errorf("Reconcile = %+v, want the crashed pack sealed and its record adopted", rep)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o440 {
		t.Errorf("crashed pack mode after reconcile = %v (%v), want 0440", fi.Mode(), err)
	}
	if got := mustRead(t, second, h); !bytes.Equal(got, b) {
		t.Errorf("chunk of the sealed pack: wrong content")
	}
	// The open pack stays writable and takes uploads.
	c, _ := randomChunk(t, 2500)
	second.mustPut(t, c)
	if rep, err := second.Reconcile(ctx); err != nil || rep.PacksSealed != 0 {
		t.Errorf("second Reconcile = %+v, %v; want nothing more to seal (the open pack is not sealed)", rep, err)
	}
}

// countingBlobs counts the blobs a walk visits and cancels after stopAt
// of them (0: never).
type countingBlobs struct {
	*disk.Disk
	mu     sync.Mutex
	walked int
	stopAt int
	cancel context.CancelFunc
}

func (c *countingBlobs) count(fn func(chunk.Hash, int64) error) func(chunk.Hash, int64) error {
	return func(h chunk.Hash, n int64) error {
		c.mu.Lock()
		c.walked++
		stop := c.stopAt > 0 && c.walked == c.stopAt
		c.mu.Unlock()
		if stop {
			c.cancel()
		}
		return fn(h, n)
	}
}

func (c *countingBlobs) Walk(ctx context.Context, fn func(chunk.Hash, int64) error) error {
	return c.Disk.Walk(ctx, c.count(fn))
}

func (c *countingBlobs) WalkFrom(ctx context.Context, after chunk.Hash, fn func(chunk.Hash, int64) error) error {
	return c.Disk.WalkFrom(ctx, after, c.count(fn))
}

// TestReconcileResumesFromCursor: a background reconcile interrupted
// halfway (a restart) leaves its cursor in the data directory; the next
// pass resumes after it instead of walking every chunk file again, adopts
// the rest, and removes the cursor once complete.
func TestReconcileResumesFromCursor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Chunk files without rows, as crashes between publish and commit leave.
	const orphans = 60
	for range orphans {
		b, h := randomChunk(t, 512)
		if _, err := d.Put(context.Background(), h, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	blobs := &countingBlobs{Disk: d, stopAt: 35, cancel: cancel}
	pool := pgtest.NewPool(t)
	clk := clock.NewFake(epoch)
	pgtest.FollowClock(t, pool, clk)
	cursor := filepath.Join(dir, "reconcile-cursor.json")
	jnl := newJournal(t, dir)
	s := store.New(pool, blobs, clk, slog.New(slog.DiscardHandler), nil, store.Options{
		Journal: jnl, ReconcileCursor: cursor, ReconcileBatch: 2,
	})

	s.BeginReconcile()
	rep, err := s.ReconcileTail(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReconcileRest(ctx, &rep); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted ReconcileRest: %v, want context.Canceled", err)
	}
	raw, err := os.ReadFile(cursor)
	if err != nil {
		t.Fatalf("no cursor after an interrupted pass: %v", err)
	}
	var cur struct{ Phase, After string }
	if err := json.Unmarshal(raw, &cur); err != nil || cur.Phase != "files" || cur.After == "" {
		t.Fatalf("cursor %s (%v), want phase files and a hash", raw, err)
	}
	first := rep.Adopted

	// The restart: a new store over the same data directory and index.
	blobs.mu.Lock()
	blobs.walked, blobs.stopAt = 0, 0
	blobs.mu.Unlock()
	s2 := store.New(pool, blobs, clk, slog.New(slog.DiscardHandler), nil, store.Options{
		Journal: jnl, ReconcileCursor: cursor, ReconcileBatch: 2,
	})
	s2.BeginReconcile()
	ctx2 := context.Background()
	rep2, err := s2.ReconcileTail(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.ReconcileRest(ctx2, &rep2); err != nil {
		t.Fatal(err)
	}
	if st := s2.ReconcileStatus(); !st.Resumed || !st.Done {
		t.Errorf("status of the resumed pass = %+v, want resumed and done", st)
	}
	blobs.mu.Lock()
	walked := blobs.walked
	blobs.mu.Unlock()
	if walked >= orphans || walked == 0 {
		t.Errorf("the resumed pass walked %d chunk files, want only those after the cursor (fewer than %d)", walked, orphans)
	}
	if first+rep2.Adopted != orphans || rep2.Missing != 0 {
		t.Errorf("adopted %d then %d (missing %d), want %d in all", first, rep2.Adopted, rep2.Missing, orphans)
	}
	if _, err := os.Stat(cursor); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cursor after a completed pass: %v, want it removed", err)
	}
	var rows int
	if err := pool.QueryRow(ctx2, "SELECT count(*) FROM chunks").Scan(&rows); err != nil || rows != orphans {
		t.Errorf("%d rows (%v), want %d", rows, err, orphans)
	}
}

// TestReconcileCursorBadInputStartsOver: an unreadable cursor (torn,
// edited, of an unknown phase) costs a full pass, never a skipped one.
func TestReconcileCursorBadInputStartsOver(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{`{"phase":"files","after":"zz"}`, `{"phase":"sideways"}`, `not json`} {
		dir := t.TempDir()
		d, err := disk.Open(dir, disk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, h := randomChunk(t, 512)
		if _, err := d.Put(context.Background(), h, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		cursor := filepath.Join(dir, "reconcile-cursor.json")
		if err := os.WriteFile(cursor, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		pool := pgtest.NewPool(t)
		s := store.New(pool, d, clock.NewFake(epoch), slog.New(slog.DiscardHandler), nil, store.Options{
			Journal: newJournal(t, dir), ReconcileCursor: cursor,
		})
		rep, err := s.Reconcile(context.Background())
		if err != nil || rep.Adopted != 1 {
			t.Errorf("Reconcile with cursor %q = %+v, %v; want the one chunk file adopted", bad, rep, err)
		}
	}
}
