package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// newPackedStore is newTestStore with small chunks packed, over dir (a new
// temp dir if empty) and a fresh database.
func newPackedStore(t testing.TB, dir string) *testStore {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := pack.Open(filepath.Join(dir, "packs"), pack.Options{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.NewPool(t)
	clk := clock.NewFake(epoch)
	pgtest.FollowClock(t, pool, clk)
	s := store.New(pool, blobs, clk, slog.New(slog.DiscardHandler), nil,
		store.Options{MaxChunkSize: 4 << 20, MaxBatch: 50, Packs: packs, PackThreshold: 64 << 10})
	t.Cleanup(func() { s.Close(); packs.Close() })
	return &testStore{Store: s, pool: pool, clk: clk, dir: dir, blobs: blobs}
}

func TestPackedPutOpen(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, "")
	ctx := context.Background()
	small, smallHash := randomChunk(t, 4096)
	edge, edgeHash := randomChunk(t, 64<<10)
	large, largeHash := randomChunk(t, 64<<10+1)
	for _, b := range [][]byte{small, edge, large} {
		if res := ts.mustPut(t, b); !res.Created {
			t.Fatalf("put %d bytes: not created", len(b))
		}
	}
	for _, tt := range []struct {
		h      chunk.Hash
		data   []byte
		packed bool
	}{{smallHash, small, true}, {edgeHash, edge, true}, {largeHash, large, false}} {
		c, err := ts.Stat(ctx, tt.h)
		if err != nil || (c.PackID != 0) != tt.packed {
			t.Errorf("%d bytes: pack %d, err %v; want packed %v", len(tt.data), c.PackID, err, tt.packed)
		}
		rc, _, err := ts.OpenChunk(ctx, tt.h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, tt.data) {
			t.Errorf("%d bytes: read back err %v, equal %v", len(tt.data), err, bytes.Equal(got, tt.data))
		}
	}
	if f := ts.files(t); len(f) != 1 {
		t.Errorf("chunk files = %v, want only the large chunk", f)
	}

	// A dedup hit is verified and does not write.
	packSize := totalPackBytes(t, ts.dir)
	if res := ts.mustPut(t, small); res.Created {
		t.Error("re-put of a packed chunk reported created")
	}
	bad := bytes.Clone(small)
	bad[0] ^= 1
	if _, err := ts.PutChunk(ctx, "agent-1", smallHash, bytes.NewReader(bad), time.Time{}); !errors.Is(err, chunk.ErrHashMismatch) {
		t.Errorf("wrong bytes under a packed hash: %v", err)
	}
	if _, err := ts.PutChunk(ctx, "agent-1", chunk.Sum([]byte("x")), bytes.NewReader([]byte("y")), time.Time{}); !errors.Is(err, chunk.ErrHashMismatch) {
		t.Errorf("new small chunk with wrong bytes: %v", err)
	}
	if got := totalPackBytes(t, ts.dir); got != packSize {
		t.Errorf("packs grew from %d to %d bytes on a dedup hit or a refused upload", packSize, got)
	}
	if n := ts.count(t, "chunks"); n != 3 {
		t.Errorf("rows = %d, want 3", n)
	}
}

func totalPackBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	ents, _ := os.ReadDir(filepath.Join(dir, "packs"))
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}

// Many concurrent small uploads are committed in groups, and every one
// acknowledged is readable.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, "")
	ctx := context.Background()
	const workers, each = 8, 40
	var wg sync.WaitGroup
	acked := make(chan chunk.Hash, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				b, h := randomChunk(t, 1000+w*each+i)
				if _, err := ts.PutChunk(ctx, "agent-1", h, bytes.NewReader(b), time.Time{}); err != nil {
					t.Errorf("PutChunk: %v", err)
					return
				}
				acked <- h
			}
		}()
	}
	wg.Wait()
	close(acked)
	n := 0
	for h := range acked {
		n++
		rc, _, err := ts.OpenChunk(ctx, h)
		if err != nil {
			t.Fatalf("acknowledged chunk %s unreadable: %v", h, err)
		}
		rc.Close()
	}
	if n != workers*each || ts.count(t, "chunks") != n {
		t.Errorf("acknowledged %d, rows %d; want %d", n, ts.count(t, "chunks"), workers*each)
	}
}

// Damage to one record makes only that chunk unreadable.
func TestCorruptPackRecordIsolated(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, "")
	ctx := context.Background()
	var hashes []chunk.Hash
	for range 3 {
		b, h := randomChunk(t, 2000)
		ts.mustPut(t, b)
		hashes = append(hashes, h)
	}
	victim, _ := ts.Stat(ctx, hashes[1])
	path := filepath.Join(ts.dir, "packs")
	ents, _ := os.ReadDir(path)
	var packFile string
	for _, e := range ents {
		if e.Name() == packName(victim.PackID) {
			packFile = filepath.Join(path, e.Name())
		}
	}
	f, err := os.OpenFile(packFile, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xde, 0xad}, victim.PackOffset+pack.HeaderSize+100)
	f.Close()

	if _, _, err := ts.OpenChunk(ctx, hashes[1]); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("damaged record: %v, want ErrCorrupt", err)
	}
	for _, h := range []chunk.Hash{hashes[0], hashes[2]} {
		rc, _, err := ts.OpenChunk(ctx, h)
		if err != nil {
			t.Errorf("neighbour %s: %v", h, err)
			continue
		}
		rc.Close()
	}
}

func packName(id int64) string { return fmt.Sprintf("%016x.pack", id) }

// The index rows of packs can be rebuilt from the packs alone: a vault
// whose database lost them (here: a fresh database over the same data
// directory) gets them back at reconcile, and a torn tail is cut.
func TestReconcileRebuildsPackRows(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := newPackedStore(t, dir)
	ctx := context.Background()
	var want []chunk.Hash
	for range 20 {
		b, h := randomChunk(t, 3000)
		first.mustPut(t, b)
		want = append(want, h)
	}
	first.Close()
	// A torn tail on the last pack: a record header with no data.
	ids := packIDs(t, dir)
	last := filepath.Join(dir, "packs", packName(ids[len(ids)-1]))
	torn, _ := os.ReadFile(last)
	os.WriteFile(last, append(torn, []byte("WVR1\x00\x00\x10\x00partial")...), 0o640)

	second := newPackedStore(t, dir)
	rep, err := second.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Adopted != len(want) || rep.TornTails != 1 || rep.Missing != 0 {
		t.Fatalf("Reconcile = %+v, want %d adopted, 1 torn tail, none missing", rep, len(want))
	}
	for _, h := range want {
		rc, _, err := second.OpenChunk(ctx, h)
		if err != nil {
			t.Fatalf("rebuilt chunk %s: %v", h, err)
		}
		rc.Close()
	}
	// Scanned packs are now known to be indexed: the next start skips them.
	rep, err = second.Reconcile(ctx)
	if err != nil || rep.PacksScanned != 0 || rep.Adopted != 0 {
		t.Errorf("second Reconcile = %+v, %v; want nothing scanned", rep, err)
	}
}

func packIDs(t testing.TB, dir string) []int64 {
	t.Helper()
	p, err := pack.Open(filepath.Join(dir, "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ids, _ := p.IDs()
	return ids[:len(ids)-1] // without the pack this Open just started
}

func TestPutBatch(t *testing.T) {
	t.Parallel()
	for _, packed := range []bool{true, false} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) {
			t.Parallel()
			ts := newTestStore(t)
			if packed {
				ts = newPackedStore(t, "")
			}
			ctx := context.Background()
			old, oldHash := randomChunk(t, 500)
			ts.mustPut(t, old)
			var items []store.BatchItem
			for i := range 30 {
				b, h := randomChunk(t, 100+i)
				items = append(items, store.BatchItem{Hash: h, Data: b})
			}
			bad, badHash := randomChunk(t, 100)
			bad[0] ^= 1
			items = append(items,
				store.BatchItem{Hash: oldHash, Data: old},                   // already stored
				store.BatchItem{Hash: badHash, Data: bad},                   // wrong content
				store.BatchItem{Hash: items[0].Hash, Data: items[0].Data},   // twice in one batch
				store.BatchItem{Hash: oldHash, Data: append([]byte{}, 'x')}, // known hash, wrong bytes
			)
			until := epoch.AddDate(1, 0, 0)
			res, err := ts.PutBatch(ctx, "agent-1", items, until)
			if err != nil {
				t.Fatal(err)
			}
			created := 0
			for i, r := range res {
				if r.Hash != items[i].Hash {
					t.Fatalf("result %d is for %s, want %s", i, r.Hash, items[i].Hash)
				}
				if r.Created {
					created++
				}
			}
			if created != 30 {
				t.Errorf("created = %d, want 30", created)
			}
			if res[30].Err != nil || res[30].Created {
				t.Errorf("already stored: %+v", res[30])
			}
			for _, i := range []int{31, 33} {
				if !errors.Is(res[i].Err, chunk.ErrHashMismatch) {
					t.Errorf("item %d: err %v, want ErrHashMismatch", i, res[i].Err)
				}
			}
			if res[32].Err != nil || res[32].Created {
				t.Errorf("duplicate in batch: %+v, want stored, not created twice", res[32])
			}
			if n := ts.count(t, "chunks"); n != 31 {
				t.Errorf("rows = %d, want 31", n)
			}
			for _, it := range items[:31] {
				c, err := ts.Stat(ctx, it.Hash)
				if err != nil || !c.RetainUntil.Equal(until) {
					t.Errorf("%s: retain_until %s, %v; want %s", it.Hash, c.RetainUntil, err, until)
				}
			}
			if _, err := ts.PutBatch(ctx, "agent-1", make([]store.BatchItem, 51), time.Time{}); !isInvalid(err) {
				t.Errorf("oversized batch: %v, want InvalidError", err)
			}
		})
	}
}
