package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Routine expiry (issue 15, part 3). An expiry authorisation is a governed
// request: once its deletion.execute entry passed the rules it is in
// force, until a deletion.cancel entry for it (a suspension). Each run is
// an expiry.run entry that makes a request of kind expired, for the whole
// vault and before the run's time, executing at once: its authority is the
// authorisation's, checked again by the same rules at every run (a
// signer no longer an admin, a suspension, a run sooner than the interval
// allows: the run is not valid, and whatever it removes is a finding).
// Its ceilings are the authorisation's terms, with the stored bytes as the
// log has them when the run starts.

func (r *Replay) expiryRun(e Entry) error {
	var d ExpiryRun
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	if _, dup := r.deletions[d.DeletionID]; dup {
		r.find(e.Seq, RuleEntries, "deletion %d requested twice (expiry run)", d.DeletionID)
	}
	// Recorded first, not executing: nothing it removes counts unless the
	// run is valid.
	run := &deletion{id: d.DeletionID, kind: KindExpired, digest: d.Digest, maxChunks: -1, maxBytes: -1}
	r.deletions[d.DeletionID] = run
	if sum := sha256.Sum256([]byte(d.Targets)); hex.EncodeToString(sum[:]) != d.Digest {
		run.bad = true
		return fmt.Errorf("expiry run %d: the targets do not hash to the digest", d.DeletionID)
	}
	t, err := ParseTargets(d.Targets)
	if err != nil {
		run.bad = true
		return fmt.Errorf("expiry run %d: %w", d.DeletionID, err)
	}
	run.targets = &t
	if t.Kind != KindExpired || t.Source != "" || t.Before.After(e.At) {
		r.find(e.Seq, RuleQuorum, "expiry run %d: its targets are not everything expired before the run's time", d.DeletionID)
		return nil
	}
	auth := r.deletions[d.AuthorisationID]
	if auth == nil || auth.kind != KindExpiryAuthorisation || !auth.executing || auth.targets == nil || auth.targets.Expiry == nil {
		r.find(e.Seq, RuleQuorum, "expiry run %d: %d is not an expiry authorisation in force", d.DeletionID, d.AuthorisationID)
		return nil
	}
	if f := r.check(auth, e.At); f != nil {
		r.find(e.Seq, f.rule, "expiry run %d: its authorisation %d: %s", d.DeletionID, auth.id, f.reason)
		return nil
	}
	terms := auth.targets.Expiry
	if !auth.lastRun.IsZero() && e.At.Before(auth.lastRun.Add(terms.Interval)) {
		r.find(e.Seq, RuleDelay, "expiry run %d: authorisation %d ran at %s, less than its interval %s before",
			d.DeletionID, auth.id, auth.lastRun.UTC().Format(time.RFC3339), terms.Interval)
		return nil
	}
	auth.lastRun = e.At
	run.auth, run.executing, run.approvals, run.delay, run.adminSet = auth, true, auth.approvals, auth.delay, auth.adminSet
	if terms.MaxChunks > 0 {
		run.maxChunks = terms.MaxChunks
	}
	if terms.MaxPercent > 0 {
		run.maxBytes = r.liveBytes() * int64(terms.MaxPercent) / 100
	}
	return nil
}

// liveBytes is what the chunks the log says are stored hold.
func (r *Replay) liveBytes() int64 {
	var n int64
	for _, c := range r.chunks {
		if c.committed && !c.removed {
			n += c.size
		}
	}
	return n
}

// MayRunExpiry says whether expiry authorisation id may start a run at
// now: it is in force, its rules still hold (signatures, signers still
// admins, not suspended) and its interval has passed since its last run.
// A run the log rules out for good is Never; one that must wait has At.
func (r *Replay) MayRunExpiry(id int64, now time.Time) Verdict {
	del := r.deletions[id]
	switch {
	case del == nil || del.bad:
		return Verdict{Never: true, Reason: fmt.Sprintf("expiry authorisation %d is not in the log", id)}
	case del.kind != KindExpiryAuthorisation || del.targets == nil || del.targets.Expiry == nil:
		return Verdict{Never: true, Reason: fmt.Sprintf("deletion %d is not an expiry authorisation", id)}
	case !del.executing:
		return Verdict{Never: true, Reason: fmt.Sprintf("expiry authorisation %d is not in force in the log", id)}
	}
	if f := r.check(del, now); f != nil {
		return Verdict{Never: f.wait.IsZero(), At: f.wait, Reason: f.reason}
	}
	if len(r.Findings) > 0 {
		return Verdict{Reason: fmt.Sprintf("the log has %d findings; the first: %s", len(r.Findings), r.Findings[0])}
	}
	if next := del.lastRun.Add(del.targets.Expiry.Interval); !del.lastRun.IsZero() && now.Before(next) {
		return Verdict{At: next, Reason: fmt.Sprintf("its last run was at %s", del.lastRun.UTC().Format(time.RFC3339))}
	}
	return Verdict{Allowed: true}
}

// RunBudget returns how many more chunks and bytes expiry run id may
// remove by the log (-1: no such ceiling), and its authorisation. ok is
// false if id is not a valid run.
func (r *Replay) RunBudget(id int64) (chunks, bytes, authorisation int64, ok bool) {
	del := r.deletions[id]
	if del == nil || del.auth == nil || !del.executing {
		return 0, 0, 0, false
	}
	chunks, bytes = -1, -1
	if del.maxChunks >= 0 {
		chunks = max(del.maxChunks-del.removedN, 0)
	}
	if del.maxBytes >= 0 {
		bytes = max(del.maxBytes-del.removedSum, 0)
	}
	return chunks, bytes, del.auth.id, true
}
