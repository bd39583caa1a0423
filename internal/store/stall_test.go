package store_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// stallTimeout is the commit deadline of the stall tests: short, so the
// tests are quick; the bound checked is generous, so a loaded machine does
// not make them flaky.
const stallTimeout = 400 * time.Millisecond

func newStallStore(t *testing.T) *testStore {
	t.Helper()
	dir := t.TempDir()
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
	s := store.New(pool, blobs, clk, slog.New(slog.DiscardHandler), nil, store.Options{
		MaxChunkSize: 4 << 20, MaxBatch: 50, Packs: packs, PackThreshold: 64 << 10, CommitTimeout: stallTimeout,
	})
	t.Cleanup(func() { s.Close(); packs.Close() })
	return &testStore{Store: s, pool: pool, clk: clk, dir: dir, blobs: blobs}
}

// lockChunks takes an ACCESS EXCLUSIVE lock on chunks, as `LOCK TABLE
// chunks` by an operator or a stuck migration would, and returns its
// release.
func lockChunks(t *testing.T, ts *testStore) func() {
	t.Helper()
	owner := pgtest.OwnerPool(t, ts.pool)
	ctx := context.Background()
	tx, err := owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { _ = tx.Rollback(ctx) }) }
	t.Cleanup(release)
	return release
}

// TestStalledIndexFailsUploadsWithinDeadline: with chunks locked, small
// (group committed), large (file) and batch uploads all fail with
// ErrUnavailable within the commit deadline instead of waiting for the
// lock; nothing is acknowledged or indexed; once the lock is gone the same
// uploads succeed, and CommitHealth reports the stall and its end.
func TestStalledIndexFailsUploadsWithinDeadline(t *testing.T) {
	t.Parallel()
	ts := newStallStore(t)
	ctx := context.Background()
	small, smallHash := randomChunk(t, 4096)
	large, largeHash := randomChunk(t, 128<<10)
	batch, batchHash := randomChunk(t, 2048)

	release := lockChunks(t, ts)
	// The bound: the deadline plus generous slack for a loaded machine,
	// far below how long the lock is held (until released below).
	const bound = stallTimeout + 10*time.Second
	check := func(name string, err error, took time.Duration) {
		t.Helper()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s under a locked chunks table: err = %v, want ErrUnavailable", name, err)
		}
		if took > bound {
			t.Errorf("%s took %s under a locked chunks table, want under %s", name, took, bound)
		}
	}
	var wg sync.WaitGroup
	for _, up := range []struct {
		name string
		data []byte
		h    chunk.Hash
	}{{"small put", small, smallHash}, {"large put", large, largeHash}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, err := ts.PutChunk(ctx, "agent", up.h, bytes.NewReader(up.data), time.Time{})
			check(up.name, err, time.Since(start))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		res, err := ts.PutBatch(ctx, "agent", []store.BatchItem{{Hash: batchHash, Data: batch}}, time.Time{})
		if err == nil {
			err = res[0].Err
		}
		check("batch", err, time.Since(start))
	}()
	wg.Wait()
	if err := ts.CommitHealth(); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("CommitHealth during the stall = %v, want ErrUnavailable", err)
	}
	release()

	for _, h := range []chunk.Hash{smallHash, largeHash, batchHash} {
		if _, err := ts.Stat(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("chunk %s after a failed upload: Stat = %v, want not found", h, err)
		}
	}
	for _, b := range [][]byte{small, large, batch} {
		if res := ts.mustPut(t, b); !res.Created {
			t.Errorf("upload after the stall: created = false")
		}
	}
	if err := ts.CommitHealth(); err != nil {
		t.Errorf("CommitHealth after the stall = %v, want nil", err)
	}
}

// TestStalledIndexQueuedUploadsKeepTheirDeadline: many uploads at once
// queue into several groups behind a stalled one; each is answered within
// its own deadline (not after the groups ahead of it have each used
// theirs), and no pack is marked indexed.
func TestStalledIndexQueuedUploadsKeepTheirDeadline(t *testing.T) {
	t.Parallel()
	ts := newStallStore(t)
	ctx := context.Background()
	release := lockChunks(t, ts)
	defer release()

	const n = 200
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		worst time.Duration
		errs  []error
	)
	for i := 0; i < n; i++ {
		data, h := randomChunk(t, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, err := ts.PutChunk(ctx, "agent", h, bytes.NewReader(data), time.Time{})
			took := time.Since(start)
			mu.Lock()
			worst = max(worst, took)
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("queued upload: %v, want ErrUnavailable", err)
		}
	}
	if bound := stallTimeout + 10*time.Second; worst > bound {
		t.Errorf("slowest queued upload took %s, want under %s", worst, bound)
	}
	var rows int
	if err := pgtest.OwnerPool(t, ts.pool).QueryRow(ctx, "SELECT count(*) FROM packs_indexed").Scan(&rows); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Errorf("%d packs marked indexed after every group failed", rows)
	}
}

// blockingReader yields its prefix, then blocks until release is closed,
// then fails: an upload whose client stalls mid-body.
type blockingReader struct {
	prefix  []byte
	release <-chan struct{}
}

var errClientGone = errors.New("test: client gone")

func (r *blockingReader) Read(p []byte) (int, error) {
	if len(r.prefix) > 0 {
		n := copy(p, r.prefix)
		r.prefix = r.prefix[n:]
		return n, nil
	}
	<-r.release
	return 0, errClientGone
}

// TestSlowUploadsOnVictimsHashStripeDoNotDelayIt: stalled uploads that
// claim hashes chosen to share another agent's hash-lock stripe hold no
// lock while their bodies trickle in, so the other agent's upload of a
// large (file) chunk completes while they are still stalled.
func TestSlowUploadsOnVictimsHashStripeDoNotDelayIt(t *testing.T) {
	t.Parallel()
	ts := newPackedStore(t, "")
	ctx := context.Background()
	victim, victimHash := randomChunk(t, 128<<10) // above the pack threshold: a file

	release := make(chan struct{})
	var slow sync.WaitGroup
	const attackers = 512
	for i := 0; i < attackers; i++ {
		claimed := victimHash
		// A different hash each, all in the victim's stripe (which the
		// first 12 bits choose).
		binary.BigEndian.PutUint16(claimed[28:], uint16(i))
		claimed[30] ^= 0x5a
		slow.Add(1)
		go func() {
			defer slow.Done()
			// More than the pack threshold arrives at once, so the upload
			// goes the file way; then the client stalls.
			body := &blockingReader{prefix: make([]byte, 96<<10), release: release}
			if _, err := ts.PutChunk(ctx, "attacker", claimed, body, time.Time{}); err == nil {
				t.Errorf("stalled upload under a claimed hash succeeded")
			}
		}()
	}
	defer func() {
		close(release)
		slow.Wait()
	}()
	// The attackers are streaming (or about to): give them every chance to
	// take the stripe first, without relying on timing to pass.
	waitStaged(t, ts.dir, attackers)

	done := make(chan error, 1)
	go func() {
		_, err := ts.PutChunk(ctx, "victim", victimHash, bytes.NewReader(victim), time.Time{})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("victim upload: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the victim's upload waited on stalled uploads of other hashes in its lock stripe")
	}
}

// waitStaged waits until n temp files exist under dir's blob tree: n
// uploads are streaming their bodies.
func waitStaged(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		matches, _ := filepath.Glob(filepath.Join(dir, "blake3", "*", "*", ".tmp-*"))
		if len(matches) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d uploads streaming after 30s", len(matches), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
