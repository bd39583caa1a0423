package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Online reconcile (issue 14, part 7): the vault serves while it
// reconciles. `vault serve` holds uploads (HoldWrites) and opens its
// listener at once; reads are served from the start. ReconcileTail, the
// small part (temp files of interrupted writes, packs left open by a crash
// or a shutdown), runs first, after which uploads are admitted; the long
// part (every chunk file against the index, every row against its content)
// runs in the background with its progress in ReconcileStatus and a
// persisted cursor, so that a restart resumes it instead of starting over.
//
// Until the background part reaches a chunk file whose row a crash lost,
// that chunk reads as absent (404, and listed missing, so an agent simply
// uploads it again): it was never acknowledged.
//
// Content whose row failed to commit while the vault runs (the index went
// away after the content was durable) is remembered and adopted by
// AdoptOrphans once the index is back, without a restart.

// ReconcileStatus is the progress of the start-up reconcile, for /readyz.
type ReconcileStatus struct {
	// Tracked is false until BeginReconcile: a store whose server does
	// not reconcile in the background reports nothing.
	Tracked bool
	// WritesHeld: uploads are refused until the pack tails are checked.
	WritesHeld bool
	Done       bool
	// Phase is what the reconcile is doing: "pack tails", "chunk files",
	// "index rows" or "done".
	Phase string
	// Checked counts the chunk files and index rows checked so far in
	// this pass (a resumed pass counts from where it resumed).
	Checked int64
	// Resumed: this pass continues one a restart interrupted.
	Resumed bool
	// Err is the last failure, retried by the caller; nil once it passed.
	Err error
	// Orphans counts chunks whose content is durable but whose row failed
	// to commit, waiting for AdoptOrphans.
	Orphans int
}

// onlineState holds the write gate, the reconcile's progress and the
// orphans of failed commits.
type onlineState struct {
	mu         sync.Mutex
	tracked    bool
	writesHeld error
	done       bool
	phase      string
	resumed    bool
	err        error
	checked    atomic.Int64
	orphans    map[chunk.Hash]orphan
}

// orphan is content made durable whose row did not commit.
type orphan struct {
	size int64
	loc  *pack.Location // nil: a chunk file
}

// BeginReconcile starts tracking the start-up reconcile for /readyz and
// holds uploads (they fail with ErrStarting) until ReconcileTail has
// passed: the temp files it removes may otherwise be an upload's. Missing
// and CommitSnapshot are held too: `vault serve` compares the index with
// the journal (CheckIndex) before ReconcileTail, and until then an index
// with forged rows could make an agent skip content it must upload.
func (s *Store) BeginReconcile() {
	o := &s.online
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tracked, o.done, o.phase = true, false, "pack tails"
	o.writesHeld = errors.New("the start-up checks (index against journal, pack tails) have not finished")
}

// ReconcileStatus returns the start-up reconcile's progress.
func (s *Store) ReconcileStatus() ReconcileStatus {
	o := &s.online
	o.mu.Lock()
	defer o.mu.Unlock()
	return ReconcileStatus{
		Tracked: o.tracked, WritesHeld: o.writesHeld != nil, Done: o.done, Phase: o.phase,
		Checked: o.checked.Load(), Resumed: o.resumed, Err: o.err, Orphans: len(o.orphans),
	}
}

// SetReconcileError records the last failure of the start-up reconcile
// (nil once a retry passed), for /readyz.
func (s *Store) SetReconcileError(err error) {
	s.online.mu.Lock()
	defer s.online.mu.Unlock()
	s.online.err = err
}

func (s *Store) setPhase(phase string) {
	s.online.mu.Lock()
	defer s.online.mu.Unlock()
	s.online.phase = phase
	s.online.done = phase == "done"
	if s.online.done {
		s.online.err = nil
	}
}

// writeHold returns why uploads are held, wrapped in ErrStarting (503:
// retry shortly), or nil.
func (s *Store) writeHold() error {
	s.online.mu.Lock()
	defer s.online.mu.Unlock()
	if s.online.writesHeld != nil {
		return fmt.Errorf("store: new content refused while starting (%v): %w", s.online.writesHeld, ErrStarting)
	}
	return nil
}

// ReconcileTail is the part of the reconcile that must pass before the
// store admits uploads: it removes the temp files of interrupted writes
// (no upload may be writing one), then scans every pack not known to be
// fully indexed (the one a crash or a shutdown left open, and any whose
// commit failed), indexes its records that have no row, cuts a torn tail,
// and seals every pack but the open one read-only. It then releases the
// uploads BeginReconcile held. Its cost is one pass over a pack or two,
// not over the vault.
func (s *Store) ReconcileTail(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	n, err := s.blobs.CleanTemp(ctx)
	if err != nil {
		return rep, fmt.Errorf("store: reconcile: clean temp files: %w", err)
	}
	rep.TempRemoved = n
	if s.packs != nil {
		if err := s.reconcilePacks(ctx, &rep); err != nil {
			return rep, fmt.Errorf("store: reconcile: %w", err)
		}
	}
	s.online.mu.Lock()
	s.online.writesHeld = nil
	s.online.mu.Unlock()
	s.setPhase("chunk files")
	return rep, nil
}

// reconcileCursor is the persisted position of an unfinished reconcile
// pass: Phase "files" or "rows", and After, the hex hash of the last chunk
// file or index row done (the passes go in hash order).
type reconcileCursor struct {
	Phase string `json:"phase"`
	After string `json:"after"`
}

const (
	cursorFiles = "files"
	cursorRows  = "rows"
	// cursorEvery is how many batches pass between two saves of the
	// cursor: each save costs a file write and two fsyncs.
	cursorEvery = 10
	// progressEvery is how many checked entries pass between two progress
	// log records.
	progressEvery = 100_000
)

// ReconcileRest is the long part of the reconcile, which may run while the
// vault serves: every chunk file without a row is verified and indexed (or
// quarantined), then every row is checked to have its content. It resumes
// from the cursor a restart interrupted (Options.ReconcileCursor) and
// removes the cursor when it completes. It adds what it found to rep.
//
// A resumed pass does not look again at what the interrupted one did: a
// chunk file left without its row behind the cursor by the crash that
// interrupted it (never acknowledged) is adopted by the next full pass,
// or uploaded again by its agent, to which it reads as missing.
func (s *Store) ReconcileRest(ctx context.Context, rep *ReconcileReport) error {
	cur := s.loadCursor(ctx)
	s.online.mu.Lock()
	s.online.resumed = cur.Phase != ""
	s.online.mu.Unlock()
	if cur.Phase != cursorRows {
		s.setPhase("chunk files")
		if err := s.adoptFiles(ctx, cur, rep); err != nil {
			return fmt.Errorf("store: reconcile: %w", err)
		}
		cur = reconcileCursor{Phase: cursorRows}
		if err := s.saveCursor(cur); err != nil {
			return err
		}
	}
	s.setPhase("index rows")
	if err := s.findMissing(ctx, cur.After, rep); err != nil {
		return fmt.Errorf("store: reconcile: %w", err)
	}
	s.metrics.MissingAtReconcile.Set(float64(rep.Missing))
	if err := s.removeCursor(); err != nil {
		return err
	}
	s.setPhase("done")
	return nil
}

// blobsFrom is the optional Blobs method that walks in hash order after a
// given hash; without it a resumed walk skips what it has done.
type blobsFrom interface {
	WalkFrom(ctx context.Context, after chunk.Hash, fn func(h chunk.Hash, size int64) error) error
}

// adoptFiles walks the chunk files after cur.After, indexing those without
// a row, and saves the cursor as it goes.
func (s *Store) adoptFiles(ctx context.Context, cur reconcileCursor, rep *ReconcileReport) error {
	var after chunk.Hash
	if cur.After != "" {
		h, err := chunk.ParseHash(cur.After)
		if err != nil {
			return fmt.Errorf("reconcile cursor: %w", err)
		}
		after = h
	}
	var batch []chunk.Hash
	flushes := 0
	flush := func() error {
		if err := s.adopt(ctx, batch, rep); err != nil {
			return err
		}
		s.progress(ctx, int64(len(batch)))
		last := batch[len(batch)-1]
		batch = batch[:0]
		if flushes++; flushes%cursorEvery == 0 {
			return s.saveCursor(reconcileCursor{Phase: cursorFiles, After: last.String()})
		}
		return nil
	}
	fn := func(h chunk.Hash, _ int64) error {
		batch = append(batch, h)
		if len(batch) == s.opts.ReconcileBatch {
			return flush()
		}
		return nil
	}
	var err error
	if wf, ok := s.blobs.(blobsFrom); ok && cur.After != "" {
		err = wf.WalkFrom(ctx, after, fn)
	} else {
		err = s.blobs.Walk(ctx, func(h chunk.Hash, size int64) error {
			if cur.After != "" && h.String() <= cur.After {
				return nil
			}
			return fn(h, size)
		})
	}
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	return err
}

// progress counts n more checked entries and logs the count now and then.
func (s *Store) progress(ctx context.Context, n int64) {
	total := s.online.checked.Add(n)
	if total/progressEvery != (total-n)/progressEvery {
		s.online.mu.Lock()
		phase := s.online.phase
		s.online.mu.Unlock()
		s.log.InfoContext(ctx, "reconcile progress", "phase", phase, "checked", total)
	}
}

// loadCursor reads the persisted cursor; none (or an unreadable one, which
// only costs a full pass) is the zero cursor.
func (s *Store) loadCursor(ctx context.Context) reconcileCursor {
	var cur reconcileCursor
	if s.opts.ReconcileCursor == "" {
		return cur
	}
	b, err := os.ReadFile(s.opts.ReconcileCursor)
	if errors.Is(err, fs.ErrNotExist) {
		return cur
	}
	if err == nil {
		err = json.Unmarshal(b, &cur)
	}
	if err == nil && cur.Phase != cursorFiles && cur.Phase != cursorRows {
		err = fmt.Errorf("unknown phase %q", cur.Phase)
	}
	if err == nil && cur.After != "" {
		_, err = chunk.ParseHash(cur.After)
	}
	if err != nil {
		s.log.WarnContext(ctx, "reconcile cursor unreadable: starting a full pass", "err", err)
		return reconcileCursor{}
	}
	s.log.InfoContext(ctx, "resuming the reconcile pass a restart interrupted", "phase", cur.Phase, "after", cur.After)
	return cur
}

// saveCursor replaces the persisted cursor durably (write, fsync, rename,
// directory fsync): a torn cursor would only cost a full pass, but a
// cursor a crash rolled back past a save is harmless too.
func (s *Store) saveCursor(cur reconcileCursor) error {
	path := s.opts.ReconcileCursor
	if path == "" {
		return nil
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return fmt.Errorf("store: save reconcile cursor: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("store: save reconcile cursor: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: save reconcile cursor: %w", err)
	}
	return nil
}

func (s *Store) removeCursor() error {
	if s.opts.ReconcileCursor == "" {
		return nil
	}
	if err := os.Remove(s.opts.ReconcileCursor); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: remove reconcile cursor: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// noteOrphan remembers content made durable whose row failed to commit.
func (s *Store) noteOrphan(h chunk.Hash, size int64, loc *pack.Location) {
	s.online.mu.Lock()
	defer s.online.mu.Unlock()
	if s.online.orphans == nil {
		s.online.orphans = make(map[chunk.Hash]orphan)
	}
	s.online.orphans[h] = orphan{size: size, loc: loc}
	s.metrics.orphans.Set(float64(len(s.online.orphans)))
}

// PendingOrphans is the number of chunks waiting for AdoptOrphans.
func (s *Store) PendingOrphans() int {
	s.online.mu.Lock()
	defer s.online.mu.Unlock()
	return len(s.online.orphans)
}

// AdoptOrphans indexes the content whose row failed to commit while the
// vault ran (the index was unreachable or stalled after the content was
// durable), as the start-up reconcile would after a restart: each chunk
// without a row and without a tombstone is verified and indexed under the
// uploader "reconcile" with the minimum retention. `vault serve` calls it
// every few seconds while any are waiting; it fails (keeping those not yet
// done) while the index is still down. Report counts what it did.
func (s *Store) AdoptOrphans(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	s.online.mu.Lock()
	todo := make(map[chunk.Hash]orphan, len(s.online.orphans))
	for h, o := range s.online.orphans {
		todo[h] = o
	}
	s.online.mu.Unlock()
	if len(todo) == 0 {
		return rep, nil
	}
	done := func(h chunk.Hash) {
		s.online.mu.Lock()
		defer s.online.mu.Unlock()
		delete(s.online.orphans, h)
		s.metrics.orphans.Set(float64(len(s.online.orphans)))
	}
	hashes := make([]chunk.Hash, 0, len(todo))
	for h := range todo {
		hashes = append(hashes, h)
	}
	present, err := s.present(ctx, s.pool, hashes)
	if err != nil {
		return rep, fmt.Errorf("store: adopt orphans: %w", err)
	}
	rows, _ := s.pool.Query(ctx, "SELECT DISTINCT hash FROM chunk_tombstones WHERE hash = ANY($1)", hashKeys(hashes))
	tombs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return rep, fmt.Errorf("store: adopt orphans: %w", dbErr("look up tombstones", err))
	}
	deleted := make(map[chunk.Hash]bool, len(tombs))
	for _, b := range tombs {
		h, _ := chunk.FromBytes(b)
		deleted[h] = true
	}
	for _, h := range hashes {
		o := todo[h]
		if _, ok := present[h]; ok {
			done(h) // the commit went through after all, or a retry stored it
			continue
		}
		if deleted[h] {
			rep.Tombstoned++
			done(h)
			continue
		}
		if err := s.verifyOrphan(ctx, h, o); err != nil {
			if !errors.Is(err, chunk.ErrHashMismatch) {
				return rep, fmt.Errorf("store: adopt orphan %s: %w", h, err)
			}
			s.log.ErrorContext(ctx, "orphaned content does not match its hash: not indexed", "hash", h.String())
			if o.loc == nil {
				if err := s.blobs.Quarantine(ctx, h); err != nil {
					return rep, fmt.Errorf("store: adopt orphan %s: %w", h, err)
				}
			}
			rep.Quarantined++
			done(h)
			continue
		}
		now := s.clk.Now()
		row := chunkRow{Hash: h[:], Size: o.size, StoredAt: now, RetainUntil: now.Add(s.opts.MinRetention), UploadedBy: "reconcile"}
		if o.loc != nil {
			pid, off := o.loc.Pack, o.loc.Offset
			row.PackID, row.PackOffset = &pid, &off
		}
		inserted, err := s.insertAdopted(ctx, row)
		if err != nil {
			return rep, fmt.Errorf("store: adopt orphan %s: %w", h, err)
		}
		if inserted {
			s.log.InfoContext(ctx, "indexed content whose row failed to commit", "hash", h.String(), "size", o.size)
			rep.Adopted++
		}
		done(h)
	}
	return rep, nil
}

// verifyOrphan checks that an orphan's content is where it was written
// and hashes to its address.
func (s *Store) verifyOrphan(ctx context.Context, h chunk.Hash, o orphan) error {
	if o.loc == nil {
		_, err := s.verifyBlob(ctx, h)
		return err
	}
	data, err := s.packs.Read(*o.loc, h, o.size)
	if errors.Is(err, pack.ErrBadRecord) {
		return fmt.Errorf("%w: %w", chunk.ErrHashMismatch, err)
	}
	if err != nil {
		return err
	}
	if chunk.Sum(data) != h {
		return fmt.Errorf("pack %d offset %d: %w", o.loc.Pack, o.loc.Offset, chunk.ErrHashMismatch)
	}
	return nil
}

// hexAfter is the byte form of a cursor's hex hash ("" is before all).
func hexAfter(after string) []byte {
	b, err := hex.DecodeString(after)
	if err != nil {
		return []byte{}
	}
	return b
}
