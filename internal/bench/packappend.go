package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wormvault/wormvault/internal/store/pack"
)

// The pack-append baseline groups records as the vault's committer does:
// whatever is waiting when the previous group is written, up to these caps.
const (
	packGroupCount = 1024
	packGroupBytes = 8 << 20
)

// packReq is one record handed to the appender, and where its answer goes.
type packReq struct {
	rec  pack.Record
	done chan error
}

// PackBaseline measures durable appends to pack files with the vault's own
// pack code (internal/store/pack), without HTTP, hashing or PostgreSQL:
// agents goroutines each hand inFlight size-byte records at a time to a
// single appender and wait until they are durable; the appender takes every
// record waiting (up to 1024 records or 8 MiB, like the vault's committer)
// and writes them with one Append, that is one write and one fdatasync,
// sealing and starting packs at the vault's size limit. With inFlight 1 an
// agent is like a client PUTting one chunk at a time; with more, like one
// POSTing batches of inFlight chunks. It stops after d or once maxBytes are
// handed over, whichever comes first, and removes what it wrote.
func PackBaseline(ctx context.Context, dir string, size int64, agents, inFlight int, d time.Duration, maxBytes int64) (PackResult, error) {
	switch {
	case size > pack.MaxRecord:
		return PackResult{}, fmt.Errorf("bench: pack baseline: records of %s are over the pack limit of %s", FormatSize(size), FormatSize(pack.MaxRecord))
	case size < 16 || inFlight < 1:
		return PackResult{}, fmt.Errorf("bench: pack baseline: want records of at least 16 bytes, at least one at a time")
	}
	root, err := os.MkdirTemp(dir, "packappend-*")
	if err != nil {
		return PackResult{}, fmt.Errorf("bench: pack baseline: %w", err)
	}
	defer os.RemoveAll(root)
	packs, err := pack.Open(filepath.Join(root, "packs"), pack.Options{})
	if err != nil {
		return PackResult{}, fmt.Errorf("bench: pack baseline: %w", err)
	}
	defer packs.Close()
	flushDisks()

	var (
		sent    atomic.Int64
		records atomic.Int64
		groups  atomic.Int64
		agentWG sync.WaitGroup
		mu      sync.Mutex
		lats    []time.Duration
		failed  error
	)
	reqs := make(chan *packReq, agents*inFlight)
	appenderDone := make(chan struct{})
	go func() {
		defer close(appenderDone)
		appendGroups(packs, reqs, &groups)
	}()

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	for a := range agents {
		agentWG.Go(func() {
			// Record k of a hand-over is buf[16k:16k+size], its first 8
			// bytes a number no other record has: the records differ
			// while an agent holds one buffer of about one record. The
			// baseline measures the disk, not hashing, and nothing reads
			// these records back, so they are named by that number.
			buf := make([]byte, size+16*int64(inFlight-1))
			rand.Read(buf)
			out := make([]*packReq, inFlight)
			for k := range out {
				out[k] = &packReq{done: make(chan error, 1)}
			}
			var local []time.Duration
			defer func() {
				mu.Lock()
				lats = append(lats, local...)
				mu.Unlock()
			}()
			for j := 0; ctx.Err() == nil && time.Now().Before(deadline); j++ {
				if sent.Add(size*int64(inFlight)) > maxBytes {
					return
				}
				for k, req := range out {
					id := uint64(a)<<48 | uint64(j*inFlight+k)
					off := 16 * int64(k)
					binary.LittleEndian.PutUint64(buf[off:], id)
					req.rec = pack.Record{Data: buf[off : off+size]}
					binary.LittleEndian.PutUint64(req.rec.Hash[:], id)
				}
				t0 := time.Now()
				for _, req := range out {
					reqs <- req
				}
				var err error
				for _, req := range out {
					err = firstErr(err, <-req.done)
				}
				if err != nil {
					mu.Lock()
					failed = firstErr(failed, err)
					mu.Unlock()
					cancel()
					return
				}
				local = append(local, time.Since(t0))
				records.Add(int64(inFlight))
			}
		})
	}
	agentWG.Wait()
	elapsed := time.Since(start)
	close(reqs)
	<-appenderDone
	if failed != nil {
		return PackResult{}, fmt.Errorf("bench: pack baseline: %w", failed)
	}
	if err := parent.Err(); err != nil {
		return PackResult{}, err
	}
	n := records.Load()
	return PackResult{Size: size, Agents: agents, InFlight: inFlight, Records: n, Bytes: n * size, Groups: groups.Load(), Elapsed: elapsed,
		Latency: Summarize(slices.Clone(lats)), Runs: []float64{perSec(float64(n), elapsed)}, samples: lats}, nil
}

// appendGroups is the appender of PackBaseline: until reqs is closed, it
// takes the first record waiting and every other one already waiting (up to
// the group caps), appends them with one Append and answers each.
func appendGroups(packs *pack.Packs, reqs <-chan *packReq, groups *atomic.Int64) {
	var batch []*packReq
	var recs []pack.Record
	for first := range reqs {
		batch, recs = append(batch[:0], first), append(recs[:0], first.rec)
		bytes := len(first.rec.Data)
	drain:
		for len(batch) < packGroupCount && bytes < packGroupBytes {
			select {
			case r, ok := <-reqs:
				if !ok {
					break drain
				}
				batch, recs = append(batch, r), append(recs, r.rec)
				bytes += len(r.rec.Data)
			default:
				break drain
			}
		}
		_, _, err := packs.Append(recs)
		groups.Add(1)
		for _, r := range batch {
			r.done <- err
		}
	}
}
