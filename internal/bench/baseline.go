package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/zeebo/blake3"
)

// fanout is the number of leaf directories of the raw-disk baseline.
const fanout = 256

// DiskBaseline measures durable raw-disk writes: agents goroutines each
// write size-byte files into a fresh fan-out directory under dir with the
// vault's durability steps (create a temp file in the leaf directory, write,
// make it read-only, fsync, close, rename, fsync the directory), without
// HTTP, hashing or PostgreSQL. It stops after d or once maxBytes are
// written, whichever comes first, and removes what it wrote.
func DiskBaseline(ctx context.Context, dir string, size int64, agents int, d time.Duration, maxBytes int64) (DiskResult, error) {
	root, err := os.MkdirTemp(dir, "rawdisk-*")
	if err != nil {
		return DiskResult{}, fmt.Errorf("bench: disk baseline: %w", err)
	}
	defer os.RemoveAll(root)
	leaves := make([]string, fanout)
	for i := range leaves {
		leaves[i] = filepath.Join(root, fmt.Sprintf("%02x", i))
		if err := os.Mkdir(leaves[i], 0o750); err != nil {
			return DiskResult{}, fmt.Errorf("bench: disk baseline: %w", err)
		}
	}
	// The fan-out is made durable beforehand: the baseline is the cost per
	// file, not of building a directory tree.
	if err := syncDir(root); err != nil {
		return DiskResult{}, fmt.Errorf("bench: disk baseline: %w", err)
	}
	flushDisks()

	var (
		sent   atomic.Int64
		files  atomic.Int64
		wg     sync.WaitGroup
		mu     sync.Mutex
		lats   []time.Duration
		failed error
	)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	for a := range agents {
		wg.Go(func() {
			buf := make([]byte, size)
			rand.Read(buf)
			var local []time.Duration
			defer func() {
				mu.Lock()
				lats = append(lats, local...)
				mu.Unlock()
			}()
			for j := 0; ctx.Err() == nil && time.Now().Before(deadline); j++ {
				if sent.Add(size) > maxBytes {
					return
				}
				binary.LittleEndian.PutUint64(buf, uint64(a)<<32|uint64(j))
				leaf := leaves[(a*131+j)%fanout]
				t0 := time.Now()
				if err := writeDurable(leaf, fmt.Sprintf("%d-%d", a, j), buf); err != nil {
					mu.Lock()
					failed = firstErr(failed, err)
					mu.Unlock()
					cancel()
					return
				}
				local = append(local, time.Since(t0))
				files.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if failed != nil {
		return DiskResult{}, fmt.Errorf("bench: disk baseline: %w", failed)
	}
	if err := parent.Err(); err != nil {
		return DiskResult{}, err
	}
	n := files.Load()
	return DiskResult{Size: size, Agents: agents, Files: n, Bytes: n * size, Elapsed: elapsed,
		Latency: Summarize(slices.Clone(lats)), Runs: []float64{perSec(float64(n), elapsed)}, samples: lats}, nil
}

// writeDurable does what the vault's disk store does for one blob.
func writeDurable(dir, name string, content []byte) (err error) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(content); err != nil {
		return err
	}
	if err := f.Chmod(0o440); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	return errors.Join(serr, d.Close())
}

// flushDisks writes back every dirty page before a measurement, so that one
// measurement does not pay for the writeback of the one before.
func flushDisks() { syscall.Sync() }

// HashBaseline measures BLAKE3 throughput in bytes/s: workers goroutines
// each hash one size-byte buffer over and over for d.
func HashBaseline(ctx context.Context, size int64, workers int, d time.Duration) (float64, error) {
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			buf := make([]byte, size)
			rand.Read(buf)
			var sink byte
			for ctx.Err() == nil && time.Now().Before(deadline) {
				sum := blake3.Sum256(buf)
				sink ^= sum[0]
				buf[0] = sink // a data dependency, so no pass can be skipped
				total.Add(size)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return perSec(float64(total.Load()), time.Since(start)), nil
}

// The PostgreSQL baseline's scratch table has the shape of a chunk row.
const (
	createCommitTableSQL = `
CREATE TABLE IF NOT EXISTS bench_commit_baseline (
    hash         bytea       PRIMARY KEY CHECK (octet_length(hash) = 32),
    size         bigint      NOT NULL,
    stored_at    timestamptz NOT NULL,
    retain_until timestamptz NOT NULL,
    uploaded_by  text        NOT NULL
)`
	insertCommitSQL = `
INSERT INTO bench_commit_baseline (hash, size, stored_at, retain_until, uploaded_by)
VALUES ($1, $2, $3, $4, $5)`
	dropCommitTableSQL = `DROP TABLE IF EXISTS bench_commit_baseline`
)

// PGBaseline measures PostgreSQL single-row commits per second: agents
// connections each run one INSERT of a chunk-shaped row per transaction, at
// the server's default durability settings, for d. It works in a scratch
// table of the database at dbURL and drops it afterwards.
func PGBaseline(ctx context.Context, dbURL string, agents int, d time.Duration) (PGResult, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return PGResult{}, fmt.Errorf("bench: postgres baseline: %w", err)
	}
	cfg.MaxConns = int32(agents)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return PGResult{}, fmt.Errorf("bench: postgres baseline: %w", err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, createCommitTableSQL); err != nil {
		return PGResult{}, fmt.Errorf("bench: postgres baseline: create table: %w", err)
	}
	defer pool.Exec(context.WithoutCancel(ctx), dropCommitTableSQL)
	conns := make([]*pgxpool.Conn, agents)
	for i := range conns {
		if conns[i], err = pool.Acquire(ctx); err != nil {
			for _, c := range conns[:i] {
				c.Release()
			}
			return PGResult{}, fmt.Errorf("bench: postgres baseline: %w", err)
		}
	}

	var (
		commits atomic.Int64
		wg      sync.WaitGroup
		mu      sync.Mutex
		lats    []time.Duration
		failed  error
	)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	for _, conn := range conns {
		wg.Go(func() {
			defer conn.Release()
			var local []time.Duration
			defer func() {
				mu.Lock()
				lats = append(lats, local...)
				mu.Unlock()
			}()
			hash := make([]byte, 32)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				rand.Read(hash)
				now := time.Now()
				t0 := time.Now()
				// Outside an explicit transaction each statement commits on
				// its own: one WAL flush per row, as the vault does today.
				_, err := conn.Exec(ctx, insertCommitSQL, hash, int64(4096), now, now.Add(30*24*time.Hour), "bench-agent")
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						failed = firstErr(failed, err)
						mu.Unlock()
						cancel()
					}
					return
				}
				local = append(local, time.Since(t0))
				commits.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if failed != nil {
		return PGResult{}, fmt.Errorf("bench: postgres baseline: insert: %w", failed)
	}
	if err := parent.Err(); err != nil {
		return PGResult{}, err
	}
	n := commits.Load()
	return PGResult{Agents: agents, Commits: n, Elapsed: elapsed, Latency: Summarize(slices.Clone(lats)),
		Runs: []float64{perSec(float64(n), elapsed)}, samples: lats}, nil
}

// ServerVersion returns PostgreSQL's SELECT version().
func ServerVersion(ctx context.Context, dbURL string) (string, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", fmt.Errorf("bench: postgres version: %w", err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "", fmt.Errorf("bench: postgres version: %w", err)
	}
	return v, nil
}
