package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Group commit. Uploads hand their chunk to the committer, which works in
// two stages so that disk and database overlap:
//
//  1. the packer takes every upload waiting, appends the small ones to the
//     open pack with one write and one fdatasync;
//  2. the indexer inserts the rows of the whole group in one transaction,
//     then answers every upload in it.
//
// No upload is answered before its bytes are durable (stage 1, or its own
// file's fsync, rename and directory fsync) and its row is committed (stage
// 2). A group is whatever arrived while the previous one was being written:
// under load groups grow by themselves, and a lone agent never waits for a
// timer.
//
// Every item carries a deadline, CommitTimeout after it was handed over:
// an item whose deadline passed before its turn fails without any work,
// and a group's look-up and transaction run under the earliest deadline of
// its items. So a stalled database fails each upload with ErrUnavailable
// (503) within its deadline, whatever queued in front of it; what failed
// is never acknowledged, and a pack holding a failed item's record is left
// for reconcile (never marked indexed).
//
// The indexer's transaction costs more than the packer's fsync (it also
// journals and logs each chunk: see logChunkCommits), so the packer runs
// ahead and the indexer takes every group waiting for it into one
// transaction: its fixed costs (the audit lock, the journal's fsync, the
// commit) are shared by all of them.

const (
	maxGroupCount = 1024
	maxGroupBytes = 8 << 20
	// groupsAhead is how many packed groups may wait for the indexer.
	groupsAhead = 8
	// maxIndexCount bounds the chunks one index transaction takes.
	maxIndexCount = 4096
)

type commitItem struct {
	hash     chunk.Hash
	data     []byte // a small chunk's content, to be packed; nil if already written as a file
	size     int64
	uploader string
	now      time.Time
	until    time.Time
	loc      *pack.Location
	existing *chunkRow // already stored, found by the packer's lookup
	deadline time.Time // past it, the item fails with errCommitDeadline
	err      error
	done     chan commitResult
}

type commitResult struct {
	row     chunkRow
	created bool
	err     error
}

// errCommitDeadline fails an item whose group commit did not finish in
// time: the index is stalled, so the client may retry later.
var errCommitDeadline = fmt.Errorf("%w: group commit deadline passed", ErrUnavailable)

// expire fails every still pending item of items whose deadline is at or
// before now, and returns the earliest deadline of those left (zero if
// none). A packed item that expires marks its pack dirty.
func (c *committer) expire(items []*commitItem, now time.Time, dirty map[int64]bool) (earliest time.Time) {
	for _, it := range items {
		if it.err != nil || it.existing != nil {
			continue
		}
		if !it.deadline.After(now) {
			it.err = fmt.Errorf("store: commit chunk %s: %w", it.hash, errCommitDeadline)
			c.s.metrics.commitTimeouts.Inc()
			if it.loc != nil && dirty != nil {
				dirty[it.loc.Pack] = true
			}
			continue
		}
		if earliest.IsZero() || it.deadline.Before(earliest) {
			earliest = it.deadline
		}
	}
	return earliest
}

// deadlineCtx is a context that ends at deadline, or CommitTimeout from
// now if deadline is zero. The group outlives any one request, so it is
// not derived from one.
func (c *committer) deadlineCtx(deadline time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		deadline = time.Now().Add(c.s.opts.CommitTimeout)
	}
	return context.WithDeadline(context.Background(), deadline)
}

type group struct {
	items  []*commitItem
	sealed []int64 // packs these items filled and sealed
}

type committer struct {
	s     *Store
	packs *pack.Packs

	mu     sync.RWMutex // guards in against sends after close
	closed bool
	in     chan *commitItem
	groups chan group
	wg     sync.WaitGroup

	// lastErr is the error of the last group look-up or transaction that
	// failed, until a transaction commits (nil), for readiness checks.
	lastErr atomic.Pointer[error]
}

func newCommitter(s *Store, packs *pack.Packs) *committer {
	c := &committer{
		s:      s,
		packs:  packs,
		in:     make(chan *commitItem, maxGroupCount),
		groups: make(chan group, groupsAhead),
	}
	c.wg.Add(2)
	go c.packer()
	go c.indexer()
	return c
}

// commit hands it over and waits for the answer. It never returns early on
// a cancelled context: the committer may be writing it.data, which the
// caller must not reuse until then.
func (c *committer) commit(it *commitItem) (chunkRow, bool, error) {
	it.done = make(chan commitResult, 1)
	it.deadline = time.Now().Add(c.s.opts.CommitTimeout)
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return chunkRow{}, false, errors.New("store: closed")
	}
	c.in <- it
	c.mu.RUnlock()
	r := <-it.done
	return r.row, r.created, r.err
}

// commitAll hands over all items at once, so that they can share a group,
// and waits for every answer.
func (c *committer) commitAll(items []*commitItem) []commitResult {
	c.mu.RLock()
	closed := c.closed
	deadline := time.Now().Add(c.s.opts.CommitTimeout)
	for _, it := range items {
		it.done = make(chan commitResult, 1)
		it.deadline = deadline
		if !closed {
			c.in <- it
		}
	}
	c.mu.RUnlock()
	out := make([]commitResult, len(items))
	for i, it := range items {
		if closed {
			out[i] = commitResult{err: errors.New("store: closed")}
			continue
		}
		out[i] = <-it.done
	}
	return out
}

func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.in)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *committer) packer() {
	defer c.wg.Done()
	defer close(c.groups)
	for first := range c.in {
		items, bytes := []*commitItem{first}, len(first.data)
	drain:
		for len(items) < maxGroupCount && bytes < maxGroupBytes {
			select {
			case it, ok := <-c.in:
				if !ok {
					break drain
				}
				items = append(items, it)
				bytes += len(it.data)
			default:
				break drain
			}
		}
		g := group{items: items}
		if p := c.append(items); p != 0 {
			g.sealed = []int64{p}
		}
		c.groups <- g
	}
}

// append looks up the group's small chunks in one query, then writes
// those not already stored to the open pack, each distinct hash once, and
// records their locations (or the error) on the items.
func (c *committer) append(items []*commitItem) (sealed int64) {
	earliest := c.expire(items, time.Now(), nil)
	var keys [][]byte
	for _, it := range items {
		if it.data != nil && it.err == nil {
			keys = append(keys, it.hash[:])
		}
	}
	if len(keys) == 0 {
		return 0
	}
	ctx, cancel := c.deadlineCtx(earliest)
	defer cancel()
	rows, _ := c.s.pool.Query(ctx, "SELECT "+chunkColumns+" FROM chunks WHERE hash = ANY($1)", keys)
	found, err := pgx.CollectRows(rows, pgx.RowToStructByName[chunkRow])
	if err != nil {
		err = dbErr("look up group", err)
		c.lastErr.Store(&err)
		for _, it := range items {
			if it.data != nil && it.err == nil {
				it.err = err
			}
		}
		return 0
	}
	stored := make(map[chunk.Hash]*chunkRow, len(found))
	for i := range found {
		h, _ := chunk.FromBytes(found[i].Hash)
		stored[h] = &found[i]
	}

	var recs []pack.Record
	first := make(map[chunk.Hash]int)
	var packed []*commitItem
	for _, it := range items {
		if it.data == nil || it.err != nil {
			continue
		}
		if row, ok := stored[it.hash]; ok {
			// Already stored: answer now. A dedup hit never waits for the
			// group's fsync and commit.
			c.s.metrics.dedupHits.Inc()
			it.existing = row
			it.done <- commitResult{row: *row}
			continue
		}
		packed = append(packed, it)
		if _, ok := first[it.hash]; !ok {
			first[it.hash] = len(recs)
			recs = append(recs, pack.Record{Hash: it.hash, Data: it.data})
		}
	}
	if len(recs) == 0 {
		return 0
	}
	locs, sealedNow, err := c.packs.Append(recs)
	for _, it := range packed {
		if err != nil {
			it.err = fmt.Errorf("store: pack chunk %s: %w", it.hash, err)
			continue
		}
		loc := locs[first[it.hash]]
		it.loc = &loc
	}
	if sealedNow {
		// The pack the records went into; it may have been started by
		// this Append (after a failed write, no pack is open until then).
		return locs[0].Pack
	}
	return 0
}

const insertChunksSQL = `
INSERT INTO chunks (hash, size, stored_at, retain_until, uploaded_by, pack_id, pack_offset)
SELECT * FROM unnest(@hashes::bytea[], @sizes::bigint[], @stored::timestamptz[],
                     @until::timestamptz[], @by::text[], @pack::bigint[], @off::bigint[])
ON CONFLICT (hash) DO NOTHING
RETURNING ` + chunkColumns

func (c *committer) indexer() {
	defer c.wg.Done()
	// Packs in which some group failed to index: they are left for the
	// next start-up reconcile to scan, never marked indexed.
	dirty := make(map[int64]bool)
	for g := range c.groups {
		g = c.gather(g)
		// Items whose deadline passed while they queued fail now, before
		// the transaction: their uploads' clients are owed an answer.
		earliest := c.expire(g.items, time.Now(), dirty)
		rows, err := c.insert(g, dirty, earliest)
		if err != nil || !earliest.IsZero() {
			c.lastErr.Store(&err) // a transaction ran: its outcome is news
		}
		if err != nil {
			for _, it := range g.items {
				if it.loc != nil {
					dirty[it.loc.Pack] = true
				}
			}
			c.s.log.Error("group commit failed", "chunks", len(g.items), "err", err)
		}
		c.s.metrics.groupSize.Observe(float64(len(g.items)))
		for _, it := range g.items {
			if it.loc != nil && it.existing == nil && (it.err != nil || err != nil) {
				// Its record is durable but its row did not commit: adopted
				// once the index answers again (AdoptOrphans).
				c.s.noteOrphan(it.hash, it.size, it.loc)
			}
			switch {
			case it.err != nil:
				it.done <- commitResult{err: it.err}
			case it.existing != nil:
				// answered by the packer
			case err != nil:
				it.done <- commitResult{err: err}
			default:
				row, ok := rows[it.hash]
				if ok {
					delete(rows, it.hash) // one caller is told it created the chunk
				}
				it.done <- commitResult{row: row, created: ok}
			}
		}
	}
}

// gather adds to g every packed group already waiting, up to
// maxIndexCount chunks, so that one transaction indexes them all.
func (c *committer) gather(g group) group {
	for len(g.items) < maxIndexCount {
		select {
		case next, ok := <-c.groups:
			if !ok {
				return g
			}
			g.items = append(g.items, next.items...)
			g.sealed = append(g.sealed, next.sealed...)
		default:
			return g
		}
	}
	return g
}

// insert commits the rows of every item that has its bytes durable, in one
// transaction, and returns the rows it created by hash.
func (c *committer) insert(g group, dirty map[int64]bool, deadline time.Time) (map[chunk.Hash]chunkRow, error) {
	var (
		hashes  [][]byte
		sizes   []int64
		stored  []time.Time
		until   []time.Time
		by      []string
		packIDs []*int64
		offs    []*int64
		seen    = make(map[chunk.Hash]bool, len(g.items))
	)
	for _, it := range g.items {
		if it.err != nil || it.existing != nil || seen[it.hash] {
			continue
		}
		seen[it.hash] = true
		hashes = append(hashes, it.hash[:])
		sizes = append(sizes, it.size)
		stored = append(stored, it.now)
		until = append(until, it.until)
		by = append(by, it.uploader)
		if it.loc != nil {
			packIDs = append(packIDs, &it.loc.Pack)
			offs = append(offs, &it.loc.Offset)
		} else {
			packIDs = append(packIDs, nil)
			offs = append(offs, nil)
		}
	}
	var sealed []int64
	for _, p := range g.sealed {
		if !dirty[p] {
			sealed = append(sealed, p)
		}
	}
	if len(hashes) == 0 && len(sealed) == 0 {
		return nil, nil
	}
	created := make(map[chunk.Hash]chunkRow, len(hashes))
	ctx, cancel := c.deadlineCtx(deadline)
	defer cancel()
	now := c.s.clk.Now()
	// One transaction, in two round trips around the journal's fsync:
	// the audit lock and the rows; then their chunk.commit entries
	// (journaled before they are sent) and the marks of the packs the
	// groups sealed.
	err := pgx.BeginFunc(ctx, c.s.pool, func(tx pgx.Tx) error {
		var (
			head     auditHead
			inserted []chunkRow
			b        pgx.Batch
		)
		queueLockHead(&b, &head)
		if len(hashes) > 0 {
			b.Queue(insertChunksSQL, pgx.NamedArgs{
				"hashes": hashes, "sizes": sizes, "stored": stored, "until": until,
				"by": by, "pack": packIDs, "off": offs,
			}).Query(func(rows pgx.Rows) error {
				var err error
				inserted, err = pgx.CollectRows(rows, pgx.RowToStructByName[chunkRow])
				return err
			})
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
		b = pgx.Batch{}
		if err := c.s.queueChunkCommits(ctx, tx, &b, head, now, inserted); err != nil {
			return err
		}
		for _, r := range inserted {
			h, _ := chunk.FromBytes(r.Hash)
			created[h] = r
		}
		if len(sealed) > 0 {
			// Every group that went into these packs is now indexed.
			b.Queue(`INSERT INTO packs_indexed (pack_id, indexed_at)
				SELECT unnest($1::bigint[]), $2 ON CONFLICT DO NOTHING`, sealed, now)
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		if ctx.Err() != nil {
			// The transaction may have been cut anywhere, its commit
			// included: report the deadline, never acknowledge.
			for _, it := range g.items {
				if it.err == nil && it.existing == nil {
					c.s.metrics.commitTimeouts.Inc()
				}
			}
			return nil, fmt.Errorf("store: commit group: %w: %w", errCommitDeadline, err)
		}
		return nil, dbErr("commit group", err)
	}
	for _, r := range created {
		c.s.metrics.chunksStored.Inc()
		c.s.metrics.bytesStored.Add(float64(r.Size))
	}
	return created, nil
}

// CommitHealth returns the error of the last group commit if it failed
// (a stalled or unreachable index: uploads are being refused with 503),
// nil if it committed or there was none. It is cheap and never blocks:
// for /readyz, which must report a stall while uploads time out.
func (s *Store) CommitHealth() error {
	if s.committer == nil {
		return nil
	}
	if p := s.committer.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}
