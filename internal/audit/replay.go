package audit

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
)

// Rules a finding can break.
const (
	RuleCheckpoint   = "checkpoint"    // signature, origin, size
	RuleConsistency  = "consistency"   // the new checkpoint does not extend the kept one
	RuleEntries      = "entries"       // entries missing, out of order, not decodable
	RuleRoot         = "root"          // entries do not hash to the signed root
	RuleSignature    = "signature"     // an admin signature in the log does not verify
	RuleQuorum       = "quorum"        // a deletion executed without its quorum
	RuleDelay        = "delay"         // a deletion executed before its delay elapsed
	RuleCancelled    = "cancelled"     // a cancelled deletion executed
	RuleRetention    = "retention"     // a retention shortened
	RuleChunkRemoved = "chunk-removed" // a chunk gone without an executed deletion
	RuleAdminSet     = "admin-set"     // an admin-set change without an executed request
)

// Finding is one thing the verifier found wrong.
type Finding struct {
	Seq     int64  `json:"seq,omitempty"` // the entry, when there is one
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

func (f Finding) String() string {
	if f.Seq > 0 {
		return fmt.Sprintf("[%s] entry %d: %s", f.Rule, f.Seq, f.Message)
	}
	return fmt.Sprintf("[%s] %s", f.Rule, f.Message)
}

type adminSet struct {
	version            int64
	approvals, govAppr int
	delay, govDelay    time.Duration
	keys               map[string]approval.Key
}

type approvalRec struct {
	signer string
	at     time.Time
	valid  bool
}

type deletion struct {
	id        int64
	kind      string
	digest    string
	approvals int
	delay     time.Duration
	adminSet  int64
	requester string // "" until a valid deletion.sign
	approved  []approvalRec
	cancelled bool
	executing bool // a deletion.execute entry that passed the rules
	executed  bool
}

type chunkState struct {
	retain    int64 // unix seconds, the highest retain-until seen
	seq       int64 // entry of the latest commit
	committed bool
	removed   bool
}

// Replay checks the vault's policy over entries applied in log order.
type Replay struct {
	admins    map[int64]*adminSet
	latestSet int64
	deletions map[int64]*deletion
	chunks    map[chunk.Hash]*chunkState
	snapshots map[int64]time.Time
	Findings  []Finding
}

// NewReplay returns an empty replay (a log from its first entry).
func NewReplay() *Replay {
	return &Replay{
		admins: map[int64]*adminSet{}, deletions: map[int64]*deletion{},
		chunks: map[chunk.Hash]*chunkState{}, snapshots: map[int64]time.Time{},
	}
}

func (r *Replay) find(seq int64, rule, format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Seq: seq, Rule: rule, Message: fmt.Sprintf(format, args...)})
}

// LiveChunks returns the chunks the log says are stored and not removed,
// with the entry that committed each.
func (r *Replay) LiveChunks() ([]chunk.Hash, []int64) {
	var hs []chunk.Hash
	var seqs []int64
	for h, c := range r.chunks {
		if c.committed && !c.removed {
			hs = append(hs, h)
			seqs = append(seqs, c.seq)
		}
	}
	return hs, seqs
}

// Apply replays one entry.
func (r *Replay) Apply(e Entry) {
	var err error
	switch e.Action {
	case ActionChunkCommit:
		err = r.chunkCommit(e)
	case ActionChunkRetain:
		err = r.chunkRetain(e)
	case ActionChunkRemove:
		err = r.chunkRemove(e)
	case ActionSnapshotCommit, ActionSnapshotRetain:
		err = r.snapshot(e)
	case ActionResticRetention:
		err = r.restic(e)
	case ActionGenesis, ActionAdminSetChange:
		err = r.adminSet(e)
	case ActionDeletionRequest:
		err = r.request(e)
	case ActionDeletionSign, ActionDeletionApprove, ActionDeletionCancel:
		err = r.signed(e)
	case ActionDeletionExecute:
		err = r.execute(e)
	case ActionDeletionExecuted:
		var d struct {
			ID int64 `json:"deletion_id"`
		}
		if err = json.Unmarshal(e.Details, &d); err == nil {
			if del := r.deletions[d.ID]; del == nil || !del.executing {
				r.find(e.Seq, RuleQuorum, "deletion %d reported executed without a valid deletion.execute entry", d.ID)
			} else {
				del.executed = true
			}
		}
	}
	if err != nil {
		r.find(e.Seq, RuleEntries, "%s details do not decode: %v", e.Action, err)
	}
}

func parseChunk(s string) (chunk.Hash, error) { return chunk.ParseHash(s) }

func (r *Replay) chunk(h chunk.Hash) *chunkState {
	c := r.chunks[h]
	if c == nil {
		c = &chunkState{}
		r.chunks[h] = c
	}
	return c
}

func (r *Replay) chunkCommit(e Entry) error {
	var d ChunkCommit
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	h, err := parseChunk(d.Hash)
	if err != nil {
		return err
	}
	c := r.chunk(h)
	until := d.RetainUntil.Unix()
	if c.committed && !c.removed && until < c.retain {
		r.find(e.Seq, RuleRetention, "chunk %s committed again with retain-until %s, before the %s logged earlier",
			h, d.RetainUntil.UTC().Format(time.RFC3339), time.Unix(c.retain, 0).UTC().Format(time.RFC3339))
	}
	if c.removed {
		c.retain = 0 // stored anew after a deletion
	}
	c.committed, c.removed, c.seq = true, false, e.Seq
	c.retain = max(c.retain, until)
	return nil
}

func (r *Replay) chunkRetain(e Entry) error {
	var d struct {
		Until  time.Time `json:"retain_until"`
		Hashes []string  `json:"hashes"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	until := d.Until.Unix()
	for _, s := range d.Hashes {
		h, err := parseChunk(s)
		if err != nil {
			return err
		}
		c := r.chunk(h)
		if until < c.retain {
			r.find(e.Seq, RuleRetention, "chunk %s retention set to %s, earlier than the %s logged before",
				h, d.Until.UTC().Format(time.RFC3339), time.Unix(c.retain, 0).UTC().Format(time.RFC3339))
		}
		c.retain = max(c.retain, until)
	}
	return nil
}

func (r *Replay) chunkRemove(e Entry) error {
	var d ChunkRemove
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	h, err := parseChunk(d.Hash)
	if err != nil {
		return err
	}
	del := r.deletions[d.DeletionID]
	switch {
	case del == nil || !del.executing:
		r.find(e.Seq, RuleChunkRemoved, "chunk %s removed by deletion %d, which has no valid deletion.execute entry", h, d.DeletionID)
	case del.kind != "chunks" && del.kind != "expired":
		r.find(e.Seq, RuleChunkRemoved, "chunk %s removed by deletion %d of kind %s", h, d.DeletionID, del.kind)
	}
	if c := r.chunks[h]; c != nil && c.retain > e.At.Unix() {
		r.find(e.Seq, RuleRetention, "chunk %s removed before its logged retain-until %s", h,
			time.Unix(c.retain, 0).UTC().Format(time.RFC3339))
	}
	r.chunk(h).removed = true
	return nil
}

func (r *Replay) snapshot(e Entry) error {
	var d struct {
		ID    int64      `json:"snapshot_id"`
		From  *time.Time `json:"from"`
		Until time.Time  `json:"retain_until"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	prev, known := r.snapshots[d.ID]
	switch {
	case d.From != nil && d.Until.Before(*d.From):
		r.find(e.Seq, RuleRetention, "snapshot %d retention moved from %s to the earlier %s", d.ID,
			d.From.UTC().Format(time.RFC3339), d.Until.UTC().Format(time.RFC3339))
	case d.From != nil && known && d.From.Before(prev):
		r.find(e.Seq, RuleRetention, "snapshot %d retention was %s here, earlier than the %s logged before (shortened outside the log)",
			d.ID, d.From.UTC().Format(time.RFC3339), prev.UTC().Format(time.RFC3339))
	case known && d.Until.Before(prev):
		r.find(e.Seq, RuleRetention, "snapshot %d retention set to %s, earlier than %s", d.ID,
			d.Until.UTC().Format(time.RFC3339), prev.UTC().Format(time.RFC3339))
	}
	if !known || d.Until.After(prev) {
		r.snapshots[d.ID] = d.Until
	}
	return nil
}

func (r *Replay) restic(e Entry) error {
	var d struct {
		Repo string `json:"repository"`
		Min  string `json:"min_retention"`
		Prev string `json:"previous"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	cur, err1 := time.ParseDuration(d.Min)
	prev, err2 := time.ParseDuration(d.Prev)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("durations %q, %q", d.Min, d.Prev)
	}
	if cur < prev {
		r.find(e.Seq, RuleRetention, "restic repository %s minimum retention lowered from %s to %s", d.Repo, prev, cur)
	}
	return nil
}

func (r *Replay) adminSet(e Entry) error {
	var d struct {
		Version   int64             `json:"version"`
		Deletion  int64             `json:"deletion_id"`
		Keys      map[string]string `json:"keys"`
		Approvals int               `json:"approvals_required"`
		Delay     string            `json:"delay"`
		GovAppr   int               `json:"governance_approvals"`
		GovDelay  string            `json:"governance_delay"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	if d.Version != r.latestSet+1 {
		r.find(e.Seq, RuleAdminSet, "admin set version %d follows version %d", d.Version, r.latestSet)
	}
	if e.Action == ActionAdminSetChange {
		del := r.deletions[d.Deletion]
		if del == nil || !del.executing || del.kind != "admin_set" {
			r.find(e.Seq, RuleAdminSet, "admin set version %d made by deletion %d, which is not an executed admin_set request", d.Version, d.Deletion)
		}
	}
	set := &adminSet{version: d.Version, approvals: d.Approvals, govAppr: d.GovAppr, keys: map[string]approval.Key{}}
	set.delay, _ = time.ParseDuration(d.Delay)
	set.govDelay, _ = time.ParseDuration(d.GovDelay)
	for name, line := range d.Keys {
		k, err := approval.ParsePublicKey(line)
		if err != nil {
			return fmt.Errorf("admin %s key: %w", name, err)
		}
		set.keys[name] = k
	}
	r.admins[d.Version] = set
	r.latestSet = max(r.latestSet, d.Version)
	return nil
}

func (r *Replay) request(e Entry) error {
	var d struct {
		ID        int64  `json:"deletion_id"`
		Kind      string `json:"kind"`
		Digest    string `json:"digest"`
		Approvals int    `json:"approvals_required"`
		Delay     string `json:"delay"`
		AdminSet  *int64 `json:"admin_set_version"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	del := &deletion{id: d.ID, kind: d.Kind, digest: d.Digest, approvals: d.Approvals}
	del.delay, _ = time.ParseDuration(d.Delay)
	if d.AdminSet != nil {
		del.adminSet = *d.AdminSet
	}
	r.deletions[d.ID] = del
	return nil
}

// signed checks a signed action (request signature, approval, cancel)
// with nothing but the log: the statement must be the one for this
// request and action, and verify under the signer's key in the request's
// admin set.
func (r *Replay) signed(e Entry) error {
	var d struct {
		ID        int64  `json:"deletion_id"`
		Signer    string `json:"signer"`
		Format    string `json:"format"`
		Signature string `json:"signature"`
		Statement string `json:"statement"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	del := r.deletions[d.ID]
	if del == nil {
		r.find(e.Seq, RuleSignature, "%s for deletion %d, which was never requested", e.Action, d.ID)
		return nil
	}
	action := map[string]string{ActionDeletionSign: approval.ActionRequest, ActionDeletionApprove: approval.ActionApprove,
		ActionDeletionCancel: approval.ActionCancel}[e.Action]
	valid := r.checkSignature(e.Seq, del, action, d.Signer, d.Format, d.Signature, d.Statement)
	switch e.Action {
	case ActionDeletionSign:
		if valid {
			del.requester = d.Signer
		}
	case ActionDeletionApprove:
		del.approved = append(del.approved, approvalRec{signer: d.Signer, at: e.At, valid: valid})
	case ActionDeletionCancel:
		del.cancelled = true // a cancel stops a deletion even if it were not signed
	}
	return nil
}

func (r *Replay) checkSignature(seq int64, del *deletion, action, signer, format, sig64, statement string) bool {
	bad := func(why string, args ...any) bool {
		r.find(seq, RuleSignature, "deletion %d: %s by %s: %s", del.id, action, signer, fmt.Sprintf(why, args...))
		return false
	}
	st, err := approval.Parse([]byte(statement))
	if err != nil {
		return bad("the statement does not parse: %v", err)
	}
	typ, err := approval.TypeFor(del.kind, action)
	if err != nil {
		return bad("%v", err)
	}
	switch {
	case st.Type != typ || st.Request != del.id || st.Kind != del.kind || st.Signer != signer:
		return bad("the statement is for another request or action")
	case hex.EncodeToString(st.TargetsDigest) != del.digest:
		return bad("the statement's targets digest differs from the request's")
	case st.Approvals != del.approvals || st.Delay != del.delay || st.AdminSet != del.adminSet:
		return bad("the statement's policy differs from the request's")
	}
	set := r.admins[del.adminSet]
	if set == nil {
		return bad("admin set %d is not in the log", del.adminSet)
	}
	key, ok := set.keys[signer]
	if !ok {
		return bad("not a member of admin set %d", del.adminSet)
	}
	sig, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil {
		return bad("signature encoding: %v", err)
	}
	if err := key.Verify([]byte(statement), format, sig); err != nil {
		return bad("%v", err)
	}
	return true
}

// execute checks the rules a deletion must meet when it starts executing.
func (r *Replay) execute(e Entry) error {
	var d struct {
		ID int64 `json:"deletion_id"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	del := r.deletions[d.ID]
	if del == nil {
		r.find(e.Seq, RuleQuorum, "deletion %d executed but never requested", d.ID)
		return nil
	}
	ok := true
	fail := func(rule, format string, args ...any) {
		ok = false
		r.find(e.Seq, rule, "deletion %d: %s", d.ID, fmt.Sprintf(format, args...))
	}
	if del.cancelled {
		fail(RuleCancelled, "executed after it was cancelled")
	}
	if del.requester == "" {
		fail(RuleQuorum, "executed without a valid requester signature")
	}
	if set := r.admins[del.adminSet]; set != nil {
		need, wait := set.approvals, set.delay
		if del.kind == "admin_set" {
			need, wait = set.govAppr, set.govDelay
		}
		if del.approvals < need || del.delay < wait {
			fail(RuleQuorum, "its policy (%d approvals, %s) is below its admin set's (%d, %s)", del.approvals, del.delay, need, wait)
		}
	}
	seen := map[string]bool{}
	var quorumAt time.Time
	n := 0
	for _, a := range del.approved {
		if !a.valid || a.signer == del.requester || seen[a.signer] {
			continue
		}
		seen[a.signer] = true
		n++
		if n == del.approvals {
			quorumAt = a.at
		}
	}
	switch {
	case n < del.approvals:
		fail(RuleQuorum, "executed with %d valid approvals of %d required (signers: %s)", n, del.approvals, signers(del.approved))
	case e.At.Before(quorumAt.Add(del.delay)):
		fail(RuleDelay, "executed at %s, before its quorum (%s) plus its delay %s", e.At.UTC().Format(time.RFC3339),
			quorumAt.UTC().Format(time.RFC3339), del.delay)
	}
	del.executing = ok
	return nil
}

func signers(as []approvalRec) string {
	var out []string
	for _, a := range as {
		s := a.signer
		if !a.valid {
			s += " (invalid)"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return "none"
	}
	return fmt.Sprint(out)
}
