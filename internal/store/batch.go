package store

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// BatchItem is one chunk of a batch upload.
type BatchItem struct {
	Hash chunk.Hash
	Data []byte
}

// BatchResult is the outcome of one BatchItem: Err is nil when the chunk is
// stored (Created tells whether by this call), or says why it was refused.
type BatchResult struct {
	Hash    chunk.Hash
	Created bool
	// Repaired: the chunk was stored but damaged, and this batch's
	// verified bytes repaired it.
	Repaired bool
	Err      error
}

// PutBatch stores many small chunks at once, each verified and acknowledged
// on its own: one bad chunk does not fail the others. With packs, all new
// chunks of the batch go to the group committer together, so a batch costs
// about one pack write, one fsync and one transaction. Every chunk reported
// stored is durable when PutBatch returns. An error return (index down)
// means no result can be trusted; nothing was acknowledged.
func (s *Store) PutBatch(ctx context.Context, uploader string, items []BatchItem, retainUntil time.Time) ([]BatchResult, error) {
	if len(items) > s.opts.MaxBatch {
		return nil, invalid("chunks", "%d chunks, at most %d per batch", len(items), s.opts.MaxBatch)
	}
	now := s.clk.Now()
	until, err := s.retainUntil(now, retainUntil)
	if err != nil {
		return nil, err
	}
	// The whole batch, as PutChunk would each of its chunks.
	if err := s.admitContent(ctx); err != nil {
		return nil, err
	}
	results := make([]BatchResult, len(items))
	for i, it := range items {
		results[i].Hash = it.Hash
		switch {
		case int64(len(it.Data)) > s.opts.MaxChunkSize:
			results[i].Err = fmt.Errorf("store: chunk %s: %w", it.Hash, ErrTooLarge)
		case chunk.Sum(it.Data) != it.Hash:
			// Verified whether or not the chunk is already stored: holding
			// the hash is not proof of holding the content.
			results[i].Err = fmt.Errorf("store: chunk %s: %w", it.Hash, chunk.ErrHashMismatch)
		}
	}
	// The quota, before anything is written: chunks it cannot take are
	// refused one by one (or the whole batch, if none is left to store).
	if err := s.admitBatchQuota(ctx, uploader, items, results, now); err != nil {
		return nil, err
	}
	// Small chunks go to the group committer, which looks them up for the
	// whole group itself; only chunks that become files are looked up
	// here, so that a stored one is not rewritten.
	packed := func(it BatchItem) bool {
		return s.committer != nil && int64(len(it.Data)) <= s.opts.PackThreshold
	}
	var files []chunk.Hash
	for i, it := range items {
		if results[i].Err == nil && !packed(it) {
			files = append(files, it.Hash)
		}
	}
	present := map[chunk.Hash]struct{}{}
	if len(files) > 0 {
		if present, err = s.present(ctx, s.pool, files); err != nil {
			return nil, err
		}
	}

	var pending []*commitItem
	var pendingIdx []int
	for i, it := range items {
		if results[i].Err != nil {
			continue
		}
		ci := &commitItem{hash: it.Hash, size: int64(len(it.Data)), uploader: uploader, now: now, until: until}
		if !packed(it) {
			if _, ok := present[it.Hash]; ok {
				s.metrics.dedupHits.Inc()
				continue
			}
			// Chunks that become files are written and indexed one by
			// one, under their hash lock.
			_, results[i].Created, results[i].Err = s.putFile(ctx, ci, bytes.NewReader(it.Data))
			continue
		}
		ci.data = it.Data
		pending = append(pending, ci)
		pendingIdx = append(pendingIdx, i)
	}
	if len(pending) > 0 {
		for i, r := range s.committer.commitAll(pending) {
			results[pendingIdx[i]].Created, results[pendingIdx[i]].Err = r.created, r.err
		}
	}

	if err := s.healBatch(ctx, uploader, items, results); err != nil {
		return nil, err
	}

	if !retainUntil.IsZero() {
		var stored []chunk.Hash
		for _, r := range results {
			if r.Err == nil {
				stored = append(stored, r.Hash)
			}
		}
		if len(stored) > 0 {
			if _, err := s.Retain(ctx, uploader, stored, until); err != nil {
				return nil, err
			}
		}
	}
	return results, nil
}
