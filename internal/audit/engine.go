package audit

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// What the deletion executor asks the replay of the data directory's
// journal (invariant 8): the database is an index, and only what the
// journal shows signed, approved, waited for and unprotected may be
// destroyed. These are the same rules the auditor's replay applies to the
// log after the fact.

// Verdict is whether a deletion may execute at a given time, by the log.
type Verdict struct {
	// Allowed: every rule holds, or the deletion already started
	// executing by a deletion.execute entry that passed them.
	Allowed bool
	// Never: by the log the deletion can never execute (it is not in the
	// log, a signature or its admin set does not verify, its policy is
	// below the floors, it was cancelled or expired).
	Never bool
	// At, when only time is missing, is when it may execute.
	At     time.Time
	Reason string
}

// MayExecute says whether deletion id may execute at now. A deletion the
// log itself rules out is Never; any other is withheld while the log has
// findings (not Never: the request may be sound, the log is not).
func (r *Replay) MayExecute(id int64, now time.Time) Verdict {
	del := r.deletions[id]
	if del == nil {
		return Verdict{Never: true, Reason: fmt.Sprintf("deletion %d is not in the log", id)}
	}
	var f *failure
	if !del.executing {
		f = r.check(del, now)
	}
	switch {
	case f != nil && f.wait.IsZero():
		return Verdict{Never: true, Reason: f.reason}
	case len(r.Findings) > 0:
		return Verdict{Reason: fmt.Sprintf("the log has %d findings; the first: %s", len(r.Findings), r.Findings[0])}
	case f != nil:
		return Verdict{At: f.wait, Reason: f.reason}
	}
	return Verdict{Allowed: true}
}

// Request is a deletion request as the log has it.
type Request struct {
	ID        int64
	Kind      string
	Digest    []byte
	Approvals int
	Delay     time.Duration
	AdminSet  int64
	// Targets are nil when the log does not carry the targets text (see
	// SetTargets).
	Targets *Targets
	// Executing: a deletion.execute entry for it passed the rules.
	Executing bool
}

// Request returns deletion id as the log has it.
func (r *Replay) Request(id int64) (Request, bool) {
	del := r.deletions[id]
	if del == nil || del.bad {
		return Request{}, false
	}
	dg, _ := hex.DecodeString(del.digest)
	return Request{ID: id, Kind: del.kind, Digest: dg, Approvals: del.approvals, Delay: del.delay,
		AdminSet: del.adminSet, Targets: del.targets, Executing: del.executing}, true
}

// SetTargets gives the replay the targets text of a request whose entry
// does not carry it (a log from before it did), taken from elsewhere: it
// is accepted only if it hashes to the digest the request entry and the
// admins' statements name.
func (r *Replay) SetTargets(id int64, text string) error {
	del := r.deletions[id]
	if del == nil || del.bad {
		return fmt.Errorf("audit: deletion %d is not in the log", id)
	}
	if sum := sha256.Sum256([]byte(text)); hex.EncodeToString(sum[:]) != del.digest {
		return fmt.Errorf("audit: deletion %d: the targets do not hash to the logged digest", id)
	}
	if del.targets != nil {
		return nil
	}
	t, err := ParseTargets(text)
	if err != nil {
		return err
	}
	if t.Kind != del.kind {
		return fmt.Errorf("audit: deletion %d: targets of kind %s for a request of kind %s", id, t.Kind, del.kind)
	}
	del.targets = &t
	return nil
}

// LatestAdminSet returns the newest admin set the log shows made by the
// rules.
func (r *Replay) LatestAdminSet() (AdminSet, bool) {
	s := r.admins[r.latestSet]
	if s == nil {
		return AdminSet{}, false
	}
	return *s, true
}

// ChunkInfo is a chunk as the log has it.
type ChunkInfo struct {
	Committed bool // a chunk.commit entry is in the log
	Removed   bool // removed since its latest commit
	RemovedBy int64
	// RetainUntil is the latest retain-until its own entries set (commits,
	// chunk.retain); snapshots' retention comes through their manifests
	// (Refs).
	RetainUntil time.Time
	Size        int64
	// PackID and PackOffset locate its record as its latest commit logged
	// it; PackID is 0 for a chunk stored as its own file.
	PackID, PackOffset int64
}

// Chunk returns chunk h as the log has it (the zero ChunkInfo if the log
// never mentions it).
func (r *Replay) Chunk(h chunk.Hash) ChunkInfo {
	c := r.chunks[h]
	if c == nil {
		return ChunkInfo{}
	}
	return ChunkInfo{Committed: c.committed, Removed: c.removed, RemovedBy: c.removedBy,
		RetainUntil: time.UnixMicro(c.retain).UTC(), Size: c.size, PackID: c.packID, PackOffset: c.packOffset}
}

// Removed returns the chunks deletion id removed by its chunk.remove
// entries and that are still removed (not committed again since), each
// once.
func (r *Replay) Removed(id int64) []chunk.Hash {
	del := r.deletions[id]
	if del == nil {
		return nil
	}
	var out []chunk.Hash
	seen := map[chunk.Hash]bool{}
	for _, h := range del.removed {
		if c := r.chunks[h]; !seen[h] && c != nil && c.removed && c.removedBy == id {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// SnapshotInfo is a snapshot as the log has it.
type SnapshotInfo struct {
	ID          int64
	Source      string
	Root        chunk.Hash
	RetainUntil time.Time
	Held        bool
	// Committed: its snapshot.commit entry (with root and source) is in
	// the log.
	Committed bool
}

func (r *Replay) snapshotInfo(id int64, s *snapshotState) SnapshotInfo {
	return SnapshotInfo{ID: id, Source: s.source, Root: s.root, RetainUntil: time.UnixMicro(s.retain).UTC(),
		Held: r.snapshotHeld(id, s), Committed: s.committed}
}

func (r *Replay) snapshotHeld(id int64, s *snapshotState) bool {
	for _, h := range r.holds {
		if h.released {
			continue
		}
		if _, ok := h.snapshots[id]; ok {
			return true
		}
		if h.source != "" && s.committed && h.source == s.source {
			return true
		}
	}
	return false
}

func (r *Replay) chunkHeld(c chunk.Hash) bool {
	for _, h := range r.holds {
		if _, ok := h.chunks[c]; ok && !h.released {
			return true
		}
	}
	return false
}

// ErrNotInLog: the log does not have what was asked for.
var ErrNotInLog = errors.New("audit: not in the log")

// WalkPlan is which snapshots' manifests the executor must read to judge
// deletion id's chunks at now: every chunk they reference is protected or
// targeted.
type WalkPlan struct {
	// Protecting are the snapshots whose retention may still protect a
	// target, latest retain-until first (so that the first time a walk
	// meets a chunk it is under its latest retention).
	Protecting []SnapshotInfo
	// Held are the snapshots under a hold.
	Held []SnapshotInfo
	// Targeted are the snapshots whose chunks the deletion targets
	// (kinds snapshots, and expired for one source).
	Targeted []SnapshotInfo
}

// Plan returns the walks deletion id needs at now. It fails with
// ErrNotInLog if the deletion is not executing by the log.
func (r *Replay) Plan(id int64, now time.Time) (WalkPlan, error) {
	var p WalkPlan
	del := r.deletions[id]
	if del == nil || !del.executing || del.targets == nil {
		return p, fmt.Errorf("deletion %d has no valid deletion.execute entry or no targets: %w", id, ErrNotInLog)
	}
	t := del.targets
	// A snapshot retained to at least from may keep a target: retained
	// past now, or (expired requests) retained past the request's time,
	// which keeps its chunks out of the targets.
	from := now
	if t.Kind == KindExpired && t.Before.Before(from) {
		from = t.Before
	}
	for id, s := range r.snapshots {
		info := r.snapshotInfo(id, s)
		if !info.RetainUntil.Before(from) {
			p.Protecting = append(p.Protecting, info)
		}
		if info.Held {
			p.Held = append(p.Held, info)
		}
		switch {
		case t.Kind == KindSnapshots && slices.Contains(t.Snapshots, id),
			t.Kind == KindExpired && t.Source != "" && info.Source == t.Source && info.RetainUntil.Before(t.Before):
			p.Targeted = append(p.Targeted, info)
		}
	}
	slices.SortFunc(p.Protecting, func(a, b SnapshotInfo) int {
		return cmp.Or(b.RetainUntil.Compare(a.RetainUntil), cmp.Compare(a.ID, b.ID))
	})
	byID := func(a, b SnapshotInfo) int { return cmp.Compare(a.ID, b.ID) }
	slices.SortFunc(p.Held, byID)
	slices.SortFunc(p.Targeted, byID)
	return p, nil
}

// Refs is what the manifests of a WalkPlan's snapshots reference, as the
// executor read and verified them.
type Refs struct {
	// Retain is, for each chunk a protecting snapshot references, the
	// latest retain-until among those snapshots.
	Retain map[chunk.Hash]time.Time
	// Held: referenced by a held snapshot.
	Held map[chunk.Hash]bool
	// Targeted: referenced by a targeted snapshot.
	Targeted map[chunk.Hash]bool
}

// Reasons why the log keeps an object from a deletion (the store's skip
// reasons are the same words).
const (
	SkipRetained           = "retained"
	SkipHeld               = "held"
	SkipInRetainedSnapshot = "in_retained_snapshot"
	SkipNotFound           = "not_found"
	SkipAlreadyDeleted     = "already_deleted"
	SkipNotTargeted        = "not_targeted"
	// An expiry run's: its authorisation was suspended, or it reached its
	// ceiling.
	SkipSuspended = "suspended"
	SkipCeiling   = "ceiling"
)

// ChunkSkip says why, by the log, executing deletion id must not delete
// chunk h at now, or "" if it may: the chunk is stored, among the
// deletion's signed targets, past its retention and that of every
// snapshot referencing it, and under no hold (directly or through a
// snapshot or source).
func (r *Replay) ChunkSkip(id int64, h chunk.Hash, now time.Time, refs Refs) string {
	del := r.deletions[id]
	if del == nil || !del.executing || del.targets == nil {
		return SkipNotTargeted
	}
	c := r.chunks[h]
	switch {
	case c == nil || !c.committed:
		return SkipNotFound
	case c.removed:
		return SkipAlreadyDeleted
	}
	snapRetain, inSnap := refs.Retain[h]
	t := del.targets
	targeted := false
	switch t.Kind {
	case KindChunks:
		_, targeted = slices.BinarySearchFunc(t.Chunks, h, func(a, b chunk.Hash) int { return cmp.Compare(string(a[:]), string(b[:])) })
	case KindSnapshots:
		targeted = refs.Targeted[h]
	case KindExpired:
		if t.Source != "" {
			targeted = refs.Targeted[h]
			break
		}
		retain := c.retain
		if inSnap {
			retain = max(retain, snapRetain.UnixMicro())
		}
		targeted = retain < t.Before.UnixMicro()
	}
	nowUs := now.UnixMicro()
	switch {
	case !targeted:
		return SkipNotTargeted
	case c.retain > nowUs:
		return SkipRetained
	case r.chunkHeld(h) || refs.Held[h]:
		return SkipHeld
	case inSnap && snapRetain.UnixMicro() > nowUs:
		return SkipInRetainedSnapshot
	}
	if auth := del.auth; auth != nil {
		switch {
		case auth.cancelled:
			return SkipSuspended
		case del.maxChunks >= 0 && del.removedN >= del.maxChunks, del.maxBytes >= 0 && del.removedSum+c.size > del.maxBytes:
			return SkipCeiling
		}
	}
	return ""
}

// SnapshotSkip says why, by the log, executing deletion id must not
// delete snapshot sid at now, or "" if it may.
func (r *Replay) SnapshotSkip(id, sid int64, now time.Time) string {
	del := r.deletions[id]
	if del == nil || !del.executing || del.targets == nil {
		return SkipNotTargeted
	}
	s := r.snapshots[sid]
	if s == nil || !s.committed {
		return SkipNotFound
	}
	t := del.targets
	targeted := false
	switch t.Kind {
	case KindSnapshots:
		targeted = slices.Contains(t.Snapshots, sid)
	case KindExpired:
		targeted = s.retain < t.Before.UnixMicro() && (t.Source == "" || t.Source == s.source)
	}
	switch {
	case !targeted:
		return SkipNotTargeted
	case s.retain > now.UnixMicro():
		return SkipRetained
	case r.snapshotHeld(sid, s):
		return SkipHeld
	}
	return ""
}
