package store_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// The benchmarks here measure the store end to end: content through BLAKE3
// to disk with every fsync, and the index row committed in PostgreSQL. They
// need VAULT_TEST_DATABASE_URL (make test sets it) and a TMPDIR on a real
// disk (fsync is free on tmpfs). Compare runs with benchstat:
//
//	go test -run '^$' -bench 'PutChunk|Missing10k' -count 6 ./internal/store/ | tee new.txt

// benchStores are the store set-ups each put benchmark runs on: one file
// per chunk, and small chunks packed with group commit.
var benchStores = []struct {
	name string
	open func(b *testing.B) *testStore
}{
	{"files", func(b *testing.B) *testStore { return newTestStore(b) }},
	{"packed", func(b *testing.B) *testStore { return newPackedStore(b, "") }},
}

// chunkStream makes distinct chunks of one size cheaply: a random body whose
// first 8 bytes are a counter.
type chunkStream struct {
	buf []byte
	n   uint64
}

func newChunkStream(size int) *chunkStream {
	s := &chunkStream{buf: make([]byte, size)}
	rand.Read(s.buf)
	return s
}

func (s *chunkStream) next() chunk.Hash {
	s.n++
	binary.LittleEndian.PutUint64(s.buf, s.n)
	return chunk.Sum(s.buf)
}

// BenchmarkPutChunk stores new chunks one at a time through Store.PutChunk.
// Hashing the chunk on the client side is outside the timer.
func BenchmarkPutChunk(b *testing.B) {
	for _, st := range benchStores {
		for _, size := range []int{4 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("store=%s/size=%dKiB", st.name, size>>10), func(b *testing.B) {
				ts := st.open(b)
				src := newChunkStream(size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					h := src.next()
					b.StartTimer()
					res, err := ts.PutChunk(b.Context(), "bench-agent", h, bytes.NewReader(src.buf), time.Time{})
					if err != nil {
						b.Fatal(err)
					}
					if !res.Created {
						b.Fatalf("chunk %s was not new", h)
					}
				}
			})
		}
	}
}

// BenchmarkPutChunkParallel is BenchmarkPutChunk with 4 goroutines per CPU,
// where group commit can share fsyncs and transactions. Each goroutine hashes
// its own chunks inside the timer (a few µs per 4 KiB, about 1 ms per MiB).
func BenchmarkPutChunkParallel(b *testing.B) {
	for _, st := range benchStores {
		for _, size := range []int{4 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("store=%s/size=%dKiB", st.name, size>>10), func(b *testing.B) {
				ts := st.open(b)
				b.SetBytes(int64(size))
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					src := newChunkStream(size)
					for pb.Next() {
						h := src.next()
						if _, err := ts.PutChunk(b.Context(), "bench-agent", h, bytes.NewReader(src.buf), time.Time{}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkPutChunkExisting re-sends a stored chunk: the dedup path, which
// still hashes the whole body but must not write it again.
func BenchmarkPutChunkExisting(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			ts := newTestStore(b)
			src := newChunkStream(size)
			h := src.next()
			ts.mustPut(b, src.buf)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				res, err := ts.PutChunk(b.Context(), "bench-agent", h, bytes.NewReader(src.buf), time.Time{})
				if err != nil {
					b.Fatal(err)
				}
				if res.Created {
					b.Fatal("a stored chunk was created again")
				}
			}
		})
	}
}

// BenchmarkMissing10k asks which of 10,000 hashes are missing, half of them
// stored: the largest request the API allows.
func BenchmarkMissing10k(b *testing.B) {
	const n = 10_000
	dir := b.TempDir()
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		b.Fatal(err)
	}
	// Default options: MaxBatch is the API's 10,000 (newTestStore's is 50).
	s := store.New(pgtest.NewPool(b), blobs, clock.NewFake(epoch), slog.New(slog.DiscardHandler), nil, store.Options{})
	b.Cleanup(s.Close)

	hashes := make([]chunk.Hash, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			src := newChunkStream(64) // random bodies: distinct across goroutines
			src.n = uint64(g) << 32
			for i := int(next.Add(1) - 1); i < n/2; i = int(next.Add(1) - 1) {
				h := src.next()
				if _, err := s.PutChunk(b.Context(), "bench-agent", h, bytes.NewReader(src.buf), time.Time{}); err != nil {
					errs <- err
					return
				}
				hashes[i] = h
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	for i := n / 2; i < n; i++ {
		rand.Read(hashes[i][:])
	}

	b.ReportAllocs()
	for b.Loop() {
		missing, err := s.Missing(b.Context(), hashes)
		if err != nil {
			b.Fatal(err)
		}
		if len(missing) != n/2 {
			b.Fatalf("%d missing, want %d", len(missing), n/2)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "hashes/s")
}
