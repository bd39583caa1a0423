package audit

import (
	"crypto/sha256"
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
	RuleChunkDamaged = "chunk-damaged" // a chunk the vault holds damaged (awaiting a re-upload)
	RuleChunkContent = "chunk-content" // a sampled chunk's bytes did not download and hash right
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

type approvalRec struct {
	signer string
	at     time.Time
	valid  bool
}

type deletion struct {
	id        int64
	kind      string
	digest    string // hex
	approvals int
	delay     time.Duration
	adminSet  int64
	// targets are parsed from the request entry's targets text, checked
	// against its digest; nil when the entry carries no text (a log from
	// before it did).
	targets   *Targets
	expiresAt time.Time // zero when the entry does not say
	bad       bool      // the request entry does not decode: it can never execute
	requester string    // "" until a valid deletion.sign
	approved  []approvalRec
	cancelled bool
	expired   bool
	executing bool // a deletion.execute entry that passed the rules
	executed  bool
	changed   bool         // an admin_set request whose new version is in the log
	removed   []chunk.Hash // its chunk.remove entries, in order
	// An expiry authorisation: when its latest run started.
	lastRun time.Time
	// An expiry run: its authorisation, its ceilings (-1: none) and what
	// it removed so far.
	auth                 *deletion
	maxChunks, maxBytes  int64
	removedN, removedSum int64
}

type chunkState struct {
	retain     int64 // unix microseconds, the highest retain-until seen
	seq        int64 // entry of the latest commit
	size       int64
	packID     int64 // of the latest commit; 0: a file of its own
	packOffset int64
	removedBy  int64 // the deletion whose chunk.remove is the latest
	committed  bool
	removed    bool
}

type snapshotState struct {
	retain    int64 // unix microseconds
	root      chunk.Hash
	source    string
	committed bool // its snapshot.commit entry is in the log
}

type hold struct {
	chunks    map[chunk.Hash]struct{}
	snapshots map[int64]struct{}
	source    string
	released  bool
}

// Pins are what the replay takes from outside the log: the vault's own
// configuration. The auditor's replay has none; the deletion executor pins
// everything it knows.
type Pins struct {
	// Genesis, if set, is the admin set pinned in the data directory: the
	// log's genesis entry must be exactly it.
	Genesis *AdminSet
	// VaultID, if set, must be the vault every signed statement names.
	VaultID string
	// MinApprovals and MinDelay are the server's floors: a request below
	// them never executes (admin_set requests take the governance quorum,
	// so only MinDelay applies to them).
	MinApprovals int
	MinDelay     time.Duration
}

// Replay checks the vault's policy over entries applied in log order. It is
// the one policy engine: the auditor replays the log it downloaded, the
// deletion executor the data directory's journal, and the executor asks it
// (MayExecute, ChunkSkip, SnapshotSkip, Removed) before destroying
// anything. A Replay is not safe for concurrent use.
type Replay struct {
	pins      Pins
	admins    map[int64]*AdminSet // only versions made by the rules
	latestSet int64
	deletions map[int64]*deletion
	chunks    map[chunk.Hash]*chunkState
	snapshots map[int64]*snapshotState
	holds     map[int64]*hold
	applied   int64 // seq of the last entry applied
	// generation counts the entries that changed what protects chunks
	// through snapshots (snapshot commits and extensions, holds placed
	// and released).
	generation int64
	Findings   []Finding
}

// NewReplay returns an empty replay (a log from its first entry).
func NewReplay() *Replay {
	return &Replay{
		admins: map[int64]*AdminSet{}, deletions: map[int64]*deletion{},
		chunks: map[chunk.Hash]*chunkState{}, snapshots: map[int64]*snapshotState{}, holds: map[int64]*hold{},
	}
}

// Pin sets what the replay checks the log against; call it before applying
// any entry.
func (r *Replay) Pin(p Pins) { r.pins = p }

// Applied returns the seq of the last entry applied (0 if none).
func (r *Replay) Applied() int64 { return r.applied }

// Generation changes whenever an applied entry changes what snapshots and
// holds protect: Refs read before it changed are stale.
func (r *Replay) Generation() int64 { return r.generation }

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

// ApplyPayload parses and replays the entry with sequence number seq,
// which must follow the last one applied. An entry that does not parse,
// or that is out of sequence, is a finding: a log the replay cannot read
// is never taken as harmless.
func (r *Replay) ApplyPayload(seq int64, payload []byte) {
	if seq != r.applied+1 {
		r.find(seq, RuleEntries, "entry %d follows entry %d", seq, r.applied)
	}
	e, err := ParseEntry(seq-1, payload)
	if err != nil {
		r.find(seq, RuleEntries, "%v", err)
		r.applied = seq
		return
	}
	r.Apply(e)
}

// Apply replays one entry.
func (r *Replay) Apply(e Entry) {
	r.applied = e.Seq
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
	case ActionHoldPlace:
		err = r.holdPlace(e)
	case ActionResticRetention:
		err = r.restic(e)
	case ActionGenesis, ActionAdminSetChange:
		err = r.adminSet(e)
	case ActionDeletionRequest:
		err = r.request(e)
	case ActionDeletionSign, ActionDeletionApprove, ActionDeletionCancel:
		err = r.signed(e)
	case ActionDeletionExpire:
		err = r.expire(e)
	case ActionDeletionExecute:
		err = r.execute(e)
	case ActionExpiryRun:
		err = r.expiryRun(e)
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

func formatMicro(us int64) string { return time.UnixMicro(us).UTC().Format(time.RFC3339) }

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
	if d.Size < 0 || d.PackID < 0 || d.PackOffset < 0 {
		return fmt.Errorf("chunk %s: negative size or location", h)
	}
	c := r.chunk(h)
	until := d.RetainUntil.UnixMicro()
	if c.committed && !c.removed && until < c.retain {
		r.find(e.Seq, RuleRetention, "chunk %s committed again with retain-until %s, before the %s logged earlier",
			h, d.RetainUntil.UTC().Format(time.RFC3339), formatMicro(c.retain))
	}
	if c.removed {
		c.retain = 0 // stored anew after a deletion
	}
	c.committed, c.removed, c.removedBy, c.seq = true, false, 0, e.Seq
	c.size, c.packID, c.packOffset = d.Size, d.PackID, d.PackOffset
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
	until := d.Until.UnixMicro()
	for _, s := range d.Hashes {
		h, err := parseChunk(s)
		if err != nil {
			return err
		}
		c := r.chunk(h)
		if until < c.retain {
			r.find(e.Seq, RuleRetention, "chunk %s retention set to %s, earlier than the %s logged before",
				h, d.Until.UTC().Format(time.RFC3339), formatMicro(c.retain))
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
	case del.kind != KindChunks && del.kind != KindExpired && del.kind != KindSnapshots:
		r.find(e.Seq, RuleChunkRemoved, "chunk %s removed by deletion %d of kind %s", h, d.DeletionID, del.kind)
	default:
		del.removed = append(del.removed, h)
		if auth := del.auth; auth != nil {
			del.removedN++
			del.removedSum += r.chunk(h).size
			switch {
			case auth.cancelled:
				r.find(e.Seq, RuleChunkRemoved, "chunk %s removed by expiry run %d after its authorisation %d was suspended",
					h, d.DeletionID, auth.id)
			case del.maxChunks >= 0 && del.removedN > del.maxChunks, del.maxBytes >= 0 && del.removedSum > del.maxBytes:
				r.find(e.Seq, RuleChunkRemoved, "chunk %s removed by expiry run %d above its ceiling (%d chunks, %d bytes)",
					h, d.DeletionID, del.maxChunks, del.maxBytes)
			}
		}
	}
	c := r.chunk(h)
	if c.retain > e.At.UnixMicro() {
		r.find(e.Seq, RuleRetention, "chunk %s removed before its logged retain-until %s", h, formatMicro(c.retain))
	}
	c.removed, c.removedBy = true, d.DeletionID
	return nil
}

func (r *Replay) snapshot(e Entry) error {
	var d struct {
		ID     int64      `json:"snapshot_id"`
		Source string     `json:"source"`
		Root   string     `json:"manifest_root"`
		From   *time.Time `json:"from"`
		Until  time.Time  `json:"retain_until"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	s := r.snapshots[d.ID]
	known := s != nil
	if !known {
		s = &snapshotState{}
	}
	if e.Action == ActionSnapshotCommit {
		root, err := parseChunk(d.Root)
		if err != nil {
			return fmt.Errorf("snapshot %d manifest root: %w", d.ID, err)
		}
		if s.committed {
			r.find(e.Seq, RuleEntries, "snapshot %d committed twice", d.ID)
		}
		s.root, s.source, s.committed = root, d.Source, true
	}
	prev := s.retain
	until := d.Until.UnixMicro()
	switch {
	case d.From != nil && d.Until.Before(*d.From):
		r.find(e.Seq, RuleRetention, "snapshot %d retention moved from %s to the earlier %s", d.ID,
			d.From.UTC().Format(time.RFC3339), d.Until.UTC().Format(time.RFC3339))
	case d.From != nil && known && d.From.UnixMicro() < prev:
		r.find(e.Seq, RuleRetention, "snapshot %d retention was %s here, earlier than the %s logged before (shortened outside the log)",
			d.ID, d.From.UTC().Format(time.RFC3339), formatMicro(prev))
	case known && until < prev:
		r.find(e.Seq, RuleRetention, "snapshot %d retention set to %s, earlier than %s", d.ID,
			d.Until.UTC().Format(time.RFC3339), formatMicro(prev))
	}
	s.retain = max(prev, until)
	r.snapshots[d.ID] = s
	r.generation++
	return nil
}

func (r *Replay) holdPlace(e Entry) error {
	var d struct {
		ID        int64    `json:"hold_id"`
		Kind      string   `json:"kind"`
		Chunks    []string `json:"chunks"`
		Snapshots []int64  `json:"snapshots"`
		Source    string   `json:"source"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	if _, dup := r.holds[d.ID]; dup {
		r.find(e.Seq, RuleEntries, "hold %d placed twice", d.ID)
	}
	h := &hold{chunks: map[chunk.Hash]struct{}{}, snapshots: map[int64]struct{}{}}
	switch d.Kind {
	case "chunks":
		for _, s := range d.Chunks {
			c, err := parseChunk(s)
			if err != nil {
				return err
			}
			h.chunks[c] = struct{}{}
		}
	case "snapshots":
		for _, id := range d.Snapshots {
			h.snapshots[id] = struct{}{}
		}
	case "source":
		if d.Source == "" {
			return fmt.Errorf("hold %d: a source hold without a source", d.ID)
		}
		h.source = d.Source
	default:
		return fmt.Errorf("hold %d: unknown kind %q", d.ID, d.Kind)
	}
	r.holds[d.ID] = h
	r.generation++
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

// parseDuration is time.ParseDuration for a duration the log must carry:
// an empty or unparsable one is an error, never zero.
func parseDuration(field, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", field, s, err)
	}
	return d, nil
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
	set := &AdminSet{Version: d.Version, Policy: Policy{Approvals: d.Approvals, GovernanceApprovals: d.GovAppr},
		Keys: map[string]approval.Key{}}
	var err error
	if set.Policy.Delay, err = parseDuration("delay", d.Delay); err != nil {
		return err
	}
	if set.Policy.GovernanceDelay, err = parseDuration("governance_delay", d.GovDelay); err != nil {
		return err
	}
	for name, line := range d.Keys {
		k, err := approval.ParsePublicKey(line)
		if err != nil {
			return fmt.Errorf("admin %s key: %w", name, err)
		}
		set.Keys[name] = k
	}
	// A version that breaks a rule is reported and not taken: nothing
	// signed under it verifies.
	if d.Version != r.latestSet+1 {
		r.find(e.Seq, RuleAdminSet, "admin set version %d follows version %d", d.Version, r.latestSet)
		return nil
	}
	switch e.Action {
	case ActionGenesis:
		if d.Version != 1 {
			r.find(e.Seq, RuleAdminSet, "a genesis admin set with version %d", d.Version)
			return nil
		}
		if g := r.pins.Genesis; g != nil && !g.Equal(*set) {
			r.find(e.Seq, RuleAdminSet, "the genesis admin set differs from the one pinned in the data directory")
			return nil
		}
	case ActionAdminSetChange:
		del := r.deletions[d.Deletion]
		if del == nil || !del.executing || del.kind != KindAdminSet || del.changed {
			r.find(e.Seq, RuleAdminSet, "admin set version %d made by deletion %d, which is not an executed admin_set request", d.Version, d.Deletion)
			return nil
		}
		if del.targets == nil || del.targets.Change == nil {
			r.find(e.Seq, RuleAdminSet, "admin set version %d: the change of deletion %d is not in the log", d.Version, d.Deletion)
			return nil
		}
		want, err := del.targets.Change.Apply(*r.admins[r.latestSet])
		if err != nil {
			r.find(e.Seq, RuleAdminSet, "admin set version %d: deletion %d's change does not apply: %v", d.Version, d.Deletion, err)
			return nil
		}
		if !want.Equal(*set) {
			r.find(e.Seq, RuleAdminSet, "admin set version %d is not what deletion %d's signed change makes of version %d",
				d.Version, d.Deletion, r.latestSet)
			return nil
		}
		del.changed = true
	}
	r.admins[d.Version] = set
	r.latestSet = d.Version
	return nil
}

func (r *Replay) request(e Entry) error {
	var d struct {
		ID        int64      `json:"deletion_id"`
		Kind      string     `json:"kind"`
		Digest    string     `json:"digest"`
		Targets   *string    `json:"targets"`
		Approvals int        `json:"approvals_required"`
		Delay     string     `json:"delay"`
		AdminSet  *int64     `json:"admin_set_version"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	if _, dup := r.deletions[d.ID]; dup {
		r.find(e.Seq, RuleEntries, "deletion %d requested twice", d.ID)
	}
	// Recorded even when broken, so that nothing signed for this id can
	// count for a later entry of the same id.
	del := &deletion{id: d.ID, kind: d.Kind, digest: d.Digest, approvals: d.Approvals, bad: true}
	r.deletions[d.ID] = del
	if d.AdminSet != nil {
		del.adminSet = *d.AdminSet
	}
	if d.ExpiresAt != nil {
		del.expiresAt = *d.ExpiresAt
	}
	var err error
	if del.delay, err = parseDuration("delay", d.Delay); err != nil {
		return err
	}
	if d.Targets != nil {
		if sum := sha256.Sum256([]byte(*d.Targets)); hex.EncodeToString(sum[:]) != d.Digest {
			return fmt.Errorf("deletion %d: the targets do not hash to the digest", d.ID)
		}
		t, err := ParseTargets(*d.Targets)
		if err != nil {
			return fmt.Errorf("deletion %d: %w", d.ID, err)
		}
		if t.Kind != d.Kind {
			return fmt.Errorf("deletion %d: targets of kind %s in a request of kind %s", d.ID, t.Kind, d.Kind)
		}
		del.targets = &t
	}
	del.bad = false
	return nil
}

func (r *Replay) expire(e Entry) error {
	var d struct {
		ID int64 `json:"deletion_id"`
	}
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return err
	}
	if del := r.deletions[d.ID]; del != nil {
		del.expired = true
	}
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
		if valid && del.requester == "" {
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
	case r.pins.VaultID != "" && st.Vault != r.pins.VaultID:
		return bad("the statement is for vault %q", st.Vault)
	case hex.EncodeToString(st.TargetsDigest) != del.digest:
		return bad("the statement's targets digest differs from the request's")
	case st.Approvals != del.approvals || st.Delay != del.delay || st.AdminSet != del.adminSet:
		return bad("the statement's policy differs from the request's")
	}
	set := r.admins[del.adminSet]
	if set == nil {
		return bad("admin set %d is not in the log", del.adminSet)
	}
	key, ok := set.Keys[signer]
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

// failure is why a deletion may not execute at some time.
type failure struct {
	rule, reason string
	// wait, if set, is when the deletion may execute: nothing but time is
	// missing.
	wait time.Time
}

// check applies the rules a deletion must meet to execute at time at: its
// request entry decodes; its requester's signature and its approvals are
// valid under the admin set it was made under (a version the log shows
// made by the rules, from the pinned genesis), by distinct admins other
// than the requester (and other than the admin an admin-set change
// removes or re-keys), given before the request expired, by signers still
// admins with the same keys; its policy is at least that admin set's, the
// newest admin set's and the pinned floors; it was neither cancelled nor
// expired; and at is no earlier than the time of the approval entry that
// completed its quorum plus its delay. It returns nil when all hold.
func (r *Replay) check(del *deletion, at time.Time) *failure {
	fail := func(rule, format string, args ...any) *failure {
		return &failure{rule: rule, reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case del.bad:
		return fail(RuleEntries, "its request entry does not decode")
	case del.cancelled:
		return fail(RuleCancelled, "it was cancelled")
	case del.expired:
		return fail(RuleQuorum, "it expired before its quorum")
	}
	set := r.admins[del.adminSet]
	if set == nil {
		return fail(RuleAdminSet, "its admin set %d is not in the log as made by the rules", del.adminSet)
	}
	// The policy of the set it was made under, and of the set in force
	// now: a raised bar applies to requests in flight.
	for _, s := range []*AdminSet{set, r.admins[r.latestSet]} {
		need, wait := s.Policy.Approvals, s.Policy.Delay
		if Governed(del.kind) {
			need, wait = s.Policy.GovernanceApprovals, s.Policy.GovernanceDelay
		}
		if del.approvals < need || del.delay < wait {
			return fail(RuleQuorum, "its policy (%d approvals, %s) is below admin set %d's (%d, %s)", del.approvals, del.delay,
				s.Version, need, wait)
		}
	}
	if p := r.pins; del.delay < p.MinDelay || (!Governed(del.kind) && del.approvals < p.MinApprovals) {
		return fail(RuleQuorum, "its policy (%d approvals, %s) is below the vault's floors (%d, %s)", del.approvals, del.delay,
			p.MinApprovals, p.MinDelay)
	}
	if del.requester == "" {
		return fail(RuleQuorum, "it has no valid requester signature")
	}
	if !r.stillAdmin(set, del.requester) {
		return fail(RuleQuorum, "its requester %s is no longer an admin with the key that signed", del.requester)
	}
	var change *AdminChange
	if del.targets != nil {
		change = del.targets.Change
	}
	seen := map[string]bool{}
	var quorumAt time.Time
	n := 0
	for _, a := range del.approved {
		switch {
		case !a.valid, a.signer == del.requester, seen[a.signer], change.TargetsAdmin(a.signer),
			!del.expiresAt.IsZero() && !a.at.Before(del.expiresAt), !r.stillAdmin(set, a.signer):
			continue
		}
		seen[a.signer] = true
		n++
		if n == del.approvals {
			quorumAt = a.at
		}
	}
	if n < del.approvals {
		return fail(RuleQuorum, "%d valid approvals of %d required (signers: %s)", n, del.approvals, signers(del.approved))
	}
	if due := quorumAt.Add(del.delay); at.Before(due) {
		f := fail(RuleDelay, "at %s, before its quorum (%s) plus its delay %s", at.UTC().Format(time.RFC3339),
			quorumAt.UTC().Format(time.RFC3339), del.delay)
		f.wait = due
		return f
	}
	return nil
}

// stillAdmin reports whether name, a member of set, is a member of the
// newest admin set with the same key.
func (r *Replay) stillAdmin(set *AdminSet, name string) bool {
	k, ok := set.Keys[name]
	cur := r.admins[r.latestSet]
	if !ok || cur == nil {
		return false
	}
	c, ok := cur.Keys[name]
	return ok && c.Equal(k)
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
	if f := r.check(del, e.At); f != nil {
		r.find(e.Seq, f.rule, "deletion %d executed: %s", d.ID, f.reason)
		return nil
	}
	del.executing = true
	if del.kind == KindHoldRelease && del.targets != nil {
		if h := r.holds[del.targets.Hold]; h != nil {
			h.released = true
			r.generation++
		}
	}
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
