package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// The executor's view of the data directory's journal (invariant 8). The
// database is an index: before anything is destroyed, the executor
// replays the journal with the policy engine the auditor uses
// (audit.Replay), pinned to the genesis admin set from the data directory,
// the vault's id and the server's floors, and asks it whether the
// deletion may execute now, what it targets, and whether each object is
// deletable. An object goes only if the journal and the index both say it
// may; content is removed only for the journal's chunk.remove entries of
// the deletion.

// execAlarms remembers what the executor already alarmed about, so that a
// deletion waiting on the journal is reported once, not at every run.
type execAlarms struct {
	mu        sync.Mutex
	waiting   map[int64]string // deletion → the reason last reported
	noJournal sync.Once
}

// once reports whether reason is new for deletion id (and records it).
func (a *execAlarms) once(id int64, reason string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.waiting == nil {
		a.waiting = map[int64]string{}
	}
	if a.waiting[id] == reason {
		return false
	}
	a.waiting[id] = reason
	return true
}

// alarm logs an integrity alarm and counts it.
func (s *Store) alarm(ctx context.Context, msg string, args ...any) {
	s.metrics.integrityAlarms.Inc()
	s.log.ErrorContext(ctx, "ALERT: "+msg, args...)
}

// journalView is a replay of the journal, caught up as the journal grows.
// It belongs to one executor run.
type journalView struct {
	j    *journal.Journal
	pins audit.Pins
	r    *audit.Replay
	last []byte // the payload of the entry r applied last
}

func (s *Store) newJournalView() *journalView {
	g := s.opts.Genesis.Pinned()
	return &journalView{j: s.opts.Journal, pins: audit.Pins{
		Genesis: &g, VaultID: s.opts.VaultID,
		MinApprovals: s.opts.Deletion.ApprovalsRequired, MinDelay: s.opts.Deletion.Delay,
	}}
}

// tailByEntry is how many new entries catchUp reads one by one rather
// than with Scan (which copies the journal's index).
const tailByEntry = 256

// catchUp applies the journal's entries appended since the last call. If
// the entries it applied were replaced since (a transaction that had
// appended them rolled back), it replays the journal from the start.
func (v *journalView) catchUp() error {
	head := v.j.Head()
	if v.r != nil {
		n := v.r.Applied()
		replaced := head < n
		if !replaced && n > 0 {
			p, err := v.j.Entry(n)
			if err != nil {
				return err
			}
			replaced = !bytes.Equal(p, v.last)
		}
		if replaced {
			v.r = nil
		} else if head == n {
			return nil
		}
	}
	if v.r == nil {
		v.r = audit.NewReplay()
		v.r.Pin(v.pins)
		v.last = v.last[:0]
	}
	apply := func(seq int64, p []byte) error {
		v.r.ApplyPayload(seq, p)
		v.last = append(v.last[:0], p...)
		return nil
	}
	from := v.r.Applied() + 1
	if head-from < tailByEntry {
		for seq := from; seq <= head; seq++ {
			p, err := v.j.Entry(seq)
			if err != nil {
				return err
			}
			apply(seq, p)
		}
		return nil
	}
	return v.j.Scan(from, apply)
}

// verifyFromJournal checks d, as the index has it, against the journal at
// now. It returns the refusal if by the journal d can never execute (or
// the index's request is not the journal's), or wait if it may not
// execute yet, with why.
func (s *Store) verifyFromJournal(v *journalView, d Deletion, now time.Time) (refusal error, wait *audit.Verdict) {
	vd := v.r.MayExecute(d.ID, now)
	switch {
	case vd.Never:
		return fmt.Errorf("by the data directory's journal: %s", vd.Reason), nil
	case !vd.Allowed:
		return nil, &vd
	}
	req, _ := v.r.Request(d.ID)
	if req.Kind != d.Kind || !bytes.Equal(req.Digest, d.Digest) || req.Approvals != d.ApprovalsRequired ||
		req.Delay != time.Duration(d.Delay) || d.AdminSetVersion == nil || *d.AdminSetVersion != req.AdminSet {
		return errors.New("the index's request differs from the data directory's journal's (kind, digest, policy or admin set)"), nil
	}
	// A request logged before its entry carried the targets: the index's
	// text is taken if it hashes to the journal's digest.
	if err := v.r.SetTargets(d.ID, d.Targets); err != nil {
		return fmt.Errorf("by the data directory's journal: %w", err), nil
	}
	return nil, nil
}

// targetsOf returns the journal's targets of deletion id as the store
// spells them.
func targetsOf(v *journalView, id int64) (DeletionTargets, error) {
	req, ok := v.r.Request(id)
	if !ok || req.Targets == nil {
		return DeletionTargets{}, fmt.Errorf("%w: deletion %d has no targets in the journal", ErrIntegrity, id)
	}
	t := req.Targets
	dt := DeletionTargets{Kind: t.Kind, Chunks: t.Chunks, Snapshots: t.Snapshots, Before: t.Before, Source: t.Source, Hold: t.Hold}
	if c := t.Change; c != nil {
		dt.Change = &AdminChange{Op: c.Op, Name: c.Name, Key: c.Key, Policy: policyOf(c.Policy)}
	}
	if p := t.Policy; p != nil {
		rp := retentionPolicyOf(*p)
		dt.Policy = &rp
	}
	if e := t.Expiry; e != nil {
		dt.Expiry = expiryTermsOf(*e)
	}
	return dt, nil
}

// journalCheck is what deleteChunks and deleteSnapshots ask besides the
// index: the journal's replay and the references its snapshots' manifests
// make, read at the replay's generation.
type journalCheck struct {
	v    *journalView
	refs audit.Refs
	of   *audit.Replay
	gen  int64
	// auth is, for an expiry run, its authorisation.
	auth int64
}

// refresh catches the journal up and, if snapshots or holds changed since
// the references were read, reads them again.
func (s *Store) refresh(ctx context.Context, jc *journalCheck, id int64, now time.Time) error {
	if err := jc.v.catchUp(); err != nil {
		return err
	}
	if jc.of == jc.v.r && jc.gen == jc.v.r.Generation() {
		return nil
	}
	refs, err := s.journalRefs(ctx, jc.v, id, now)
	if err != nil {
		return err
	}
	jc.refs, jc.of, jc.gen = refs, jc.v.r, jc.v.r.Generation()
	return nil
}

// journalRefs reads the manifests of the snapshots the journal says may
// protect or are targeted by deletion id, from where the journal says
// their content is, each verified against its hash. A protecting or held
// snapshot whose manifests cannot all be read fails the execution: the
// executor cannot tell what it references, so it deletes nothing.
func (s *Store) journalRefs(ctx context.Context, v *journalView, id int64, now time.Time) (audit.Refs, error) {
	refs := audit.Refs{Retain: map[chunk.Hash]time.Time{}, Held: map[chunk.Hash]bool{}, Targeted: map[chunk.Hash]bool{}}
	req, ok := v.r.Request(id)
	if !ok || req.Targets == nil {
		return refs, fmt.Errorf("%w: deletion %d has no targets in the journal", ErrIntegrity, id)
	}
	switch req.Targets.Kind {
	case DeleteChunks, DeleteSnapshots, DeleteExpired:
	default:
		return refs, nil // no chunks to judge
	}
	plan, err := v.r.Plan(id, now)
	if err != nil {
		return refs, fmt.Errorf("%w: %w", ErrIntegrity, err)
	}
	read := func(ctx context.Context, h chunk.Hash) (manifest.Manifest, bool, error) {
		return s.journalManifest(ctx, v, h)
	}
	targeted := newWalker(read, s.opts.MaxManifestDepth, s.opts.MaxManifests)
	for _, sn := range plan.Targeted {
		// Missing manifests only mean fewer targets.
		if err := targeted.walk(ctx, sn.Root, func(h chunk.Hash) error { refs.Targeted[h] = true; return nil }); err != nil {
			return refs, fmt.Errorf("store: read the manifests of target snapshot %d: %w", sn.ID, err)
		}
	}
	// Only the references to possible targets are kept.
	keep := func(chunk.Hash) bool { return true }
	switch t := req.Targets; {
	case t.Kind == DeleteChunks:
		set := make(map[chunk.Hash]bool, len(t.Chunks))
		for _, h := range t.Chunks {
			set[h] = true
		}
		keep = func(h chunk.Hash) bool { return set[h] }
	case t.Kind == DeleteSnapshots || t.Source != "":
		keep = func(h chunk.Hash) bool { return refs.Targeted[h] }
	}
	protecting := func(what string, sns []audit.SnapshotInfo, emit func(sn audit.SnapshotInfo, h chunk.Hash)) error {
		w := newWalker(read, s.opts.MaxManifestDepth, s.opts.MaxManifests)
		for _, sn := range sns {
			if !sn.Committed {
				return fmt.Errorf("%w: %s snapshot %d has no snapshot.commit entry in the journal", ErrIntegrity, what, sn.ID)
			}
			err := w.walk(ctx, sn.Root, func(h chunk.Hash) error {
				if keep(h) {
					emit(sn, h)
				}
				return nil
			})
			if err == nil && len(w.missing) > 0 {
				err = fmt.Errorf("%w: manifest %s is not stored", ErrContentMissing, w.missing[0])
			}
			if err != nil {
				return fmt.Errorf("%w: cannot tell what %s snapshot %d references: %w", ErrIntegrity, what, sn.ID, err)
			}
		}
		return nil
	}
	// Latest retention first: the first time the walk meets a chunk is
	// under the latest retain-until that protects it.
	if err := protecting("retained", plan.Protecting, func(sn audit.SnapshotInfo, h chunk.Hash) {
		if _, ok := refs.Retain[h]; !ok {
			refs.Retain[h] = sn.RetainUntil
		}
	}); err != nil {
		return refs, err
	}
	err = protecting("held", plan.Held, func(_ audit.SnapshotInfo, h chunk.Hash) { refs.Held[h] = true })
	return refs, err
}

// journalManifest reads manifest h from where the journal says it is
// stored, verified against h. found is false if the journal says it is not
// stored.
func (s *Store) journalManifest(ctx context.Context, v *journalView, h chunk.Hash) (manifest.Manifest, bool, error) {
	c := v.r.Chunk(h)
	if !c.Committed || c.Removed {
		return manifest.Manifest{}, false, nil
	}
	if c.Size > s.opts.MaxManifestSize {
		return manifest.Manifest{}, false, fmt.Errorf("store: manifest %s is %d bytes, more than %d", h, c.Size, s.opts.MaxManifestSize)
	}
	b, err := s.readVerified(ctx, Chunk{Hash: h, Size: c.Size, PackID: c.PackID, PackOffset: c.PackOffset})
	if err != nil {
		return manifest.Manifest{}, false, err
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return manifest.Manifest{}, false, fmt.Errorf("store: manifest %s: %w", h, err)
	}
	return m, true, nil
}

// removeContent removes from disk the content of the chunks that request
// id removed, as the journal records them: its chunk.remove entries, for
// chunks not committed again since. Tombstone rows name nothing that is
// removed (a row proves nothing); they are only marked. It returns the
// bytes the journal says the removed chunks held.
func (s *Store) removeContent(ctx context.Context, v *journalView, id int64, now time.Time) (int64, error) {
	if err := v.catchUp(); err != nil {
		return 0, err
	}
	// Marked done: skipping them can only leave content, never remove it.
	rows, err := s.pool.Query(ctx, `SELECT hash FROM chunk_tombstones WHERE deletion_id = $1 AND content_removed_at IS NOT NULL`, id)
	if err != nil {
		return 0, dbErr("list removed content", err)
	}
	done := map[chunk.Hash]bool{}
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			rows.Close()
			return 0, dbErr("list removed content", err)
		}
		if h, err := chunk.FromBytes(b); err == nil {
			done[h] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, dbErr("list removed content", err)
	}
	var freed int64
	for _, h := range v.r.Removed(id) {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		c := v.r.Chunk(h)
		freed += c.Size
		if done[h] {
			continue
		}
		var err error
		if c.PackID != 0 {
			err = s.removePacked(ctx, v, id, h)
		} else {
			err = s.removeFile(ctx, v, id, h)
		}
		if err != nil {
			return freed, err
		}
		if _, err := s.pool.Exec(ctx, `UPDATE chunk_tombstones SET content_removed_at = $3
			WHERE hash = $1 AND deletion_id = $2 AND content_removed_at IS NULL`, h[:], id, now); err != nil {
			return freed, dbErr("mark content removed", err)
		}
	}
	return freed, nil
}

// stillRemoved reports whether, by the journal caught up now and by the
// index, chunk h is still the one deletion id removed: not committed
// again since. Either saying it is stored keeps the content.
func (s *Store) stillRemoved(ctx context.Context, v *journalView, id int64, h chunk.Hash) (bool, error) {
	if err := v.catchUp(); err != nil {
		return false, err
	}
	if c := v.r.Chunk(h); !c.Removed || c.RemovedBy != id {
		return false, nil
	}
	_, err := s.Stat(ctx, h)
	switch {
	case err == nil:
		s.log.WarnContext(ctx, "the journal says the deletion removed a chunk that the index still has; its content is kept",
			"deletion_id", id, "hash", h.String())
		return false, nil
	case errors.Is(err, ErrNotFound):
		return true, nil
	}
	return false, err
}

func (s *Store) removeFile(ctx context.Context, v *journalView, id int64, h chunk.Hash) error {
	// Under the hash lock an upload of the same chunk cannot be between
	// writing its file and journaling its commit.
	mu := s.hashLock(h)
	mu.Lock()
	defer mu.Unlock()
	ok, err := s.stillRemoved(ctx, v, id, h)
	if err != nil || !ok {
		return err
	}
	return s.blobs.Remove(ctx, h)
}

// removePacked punches the record the journal's commit of h located, only
// once it has read the record there and found it holds exactly h.
func (s *Store) removePacked(ctx context.Context, v *journalView, id int64, h chunk.Hash) error {
	ok, err := s.stillRemoved(ctx, v, id, h)
	if err != nil || !ok {
		return err
	}
	// A packed chunk whose record was damaged may have a fresh copy as a
	// file, written by its repair: that copy goes too.
	if err := s.removeFile(ctx, v, id, h); err != nil {
		return err
	}
	c := v.r.Chunk(h)
	if s.packs == nil {
		return fmt.Errorf("store: chunk %s is packed but packs are not configured", h)
	}
	loc := pack.Location{Pack: c.PackID, Offset: c.PackOffset}
	data, err := s.packs.Read(loc, h, c.Size)
	switch {
	case errors.Is(err, pack.ErrNotFound):
		return nil
	case errors.Is(err, pack.ErrBadRecord):
		// Punched already (a rerun), or the location does not hold h:
		// either way nothing there is h's to remove.
		s.log.WarnContext(ctx, "the record where the journal located a removed chunk is not that chunk; left alone",
			"deletion_id", id, "hash", h.String(), "pack", c.PackID, "offset", c.PackOffset, "err", err)
		return nil
	case err != nil:
		return err
	case chunk.Sum(data) != h:
		s.log.ErrorContext(ctx, "the record where the journal located a removed chunk names it but does not hash to it; left alone",
			"deletion_id", id, "hash", h.String(), "pack", c.PackID, "offset", c.PackOffset)
		return nil
	}
	err = s.packs.Punch(loc, c.Size)
	if errors.Is(err, pack.ErrNotFound) {
		return nil
	}
	return err
}
