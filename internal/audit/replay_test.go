package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
)

const testVault = "wv-replay-test"

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// logBuilder writes a log entry by entry, as the store does.
type logBuilder struct {
	t       *testing.T
	entries [][]byte
	keys    map[string]ed25519.PrivateKey
	pubs    map[string]approval.Key
}

func newLog(t *testing.T, admins ...string) *logBuilder {
	l := &logBuilder{t: t, keys: map[string]ed25519.PrivateKey{}, pubs: map[string]approval.Key{}}
	for _, a := range admins {
		priv, pub, err := approval.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		l.keys[a], l.pubs[a] = priv, pub
	}
	return l
}

func (l *logBuilder) add(at time.Time, action string, details any) {
	b, err := json.Marshal(struct {
		Seq     int64     `json:"seq"`
		At      time.Time `json:"at"`
		Actor   string    `json:"actor"`
		Action  string    `json:"action"`
		Details any       `json:"details"`
	}{int64(len(l.entries)) + 1, at, "test", action, details})
	if err != nil {
		l.t.Fatal(err)
	}
	l.entries = append(l.entries, b)
}

func (l *logBuilder) keyLines() map[string]string {
	m := map[string]string{}
	for name, k := range l.pubs {
		m[name] = k.String()
	}
	return m
}

// pinned is the genesis admin set the log's genesis entry records.
func (l *logBuilder) pinned() *AdminSet {
	return &AdminSet{Version: 1, Policy: Policy{Approvals: 2, Delay: 72 * time.Hour, GovernanceApprovals: 2,
		GovernanceDelay: 168 * time.Hour}, Keys: l.pubs}
}

func (l *logBuilder) genesis(delay string) {
	l.add(t0, ActionGenesis, map[string]any{"version": 1, "keys": l.keyLines(), "approvals_required": 2,
		"delay": delay, "governance_approvals": 2, "governance_delay": "168h0m0s"})
}

// request logs deletion id of chunks hs, made under admin set 1 with 2
// approvals and a 72h delay.
func (l *logBuilder) request(at time.Time, id int64, delay string, hs ...chunk.Hash) string {
	text, err := Targets{Kind: KindChunks, Chunks: hs}.Canonical()
	if err != nil {
		l.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(text))
	l.add(at, ActionDeletionRequest, map[string]any{"deletion_id": id, "kind": KindChunks, "digest": hex.EncodeToString(sum[:]),
		"approvals_required": 2, "delay": delay, "admin_set_version": 1, "targets": text, "expires_at": at.Add(7 * 24 * time.Hour)})
	return text
}

// signed logs signer's action on deletion id of text.
func (l *logBuilder) signed(at time.Time, action, entryAction string, id int64, text, signer, vault string) {
	typ, _ := approval.TypeFor(KindChunks, action)
	sum := sha256.Sum256([]byte(text))
	msg, err := approval.Statement{Type: typ, Vault: vault, Request: id, Kind: KindChunks, TargetsDigest: sum[:],
		Approvals: 2, Delay: 72 * time.Hour, AdminSet: 1, Signer: signer}.Bytes()
	if err != nil {
		l.t.Fatal(err)
	}
	l.add(at, entryAction, map[string]any{"deletion_id": id, "signer": signer, "format": approval.FormatRaw,
		"signature": base64.StdEncoding.EncodeToString(ed25519.Sign(l.keys[signer], msg)), "statement": string(msg)})
}

func (l *logBuilder) replay(p Pins) *Replay {
	r := NewReplay()
	r.Pin(p)
	for i, b := range l.entries {
		r.ApplyPayload(int64(i)+1, b)
	}
	return r
}

func hasFinding(r *Replay, rule, substr string) bool {
	for _, f := range r.Findings {
		if f.Rule == rule && strings.Contains(f.Message, substr) {
			return true
		}
	}
	return false
}

// An entry the replay cannot read, or a duration it cannot parse, is a
// finding, and the executor's questions are answered "no".
func TestReplayUnparsableIsFinding(t *testing.T) {
	t.Parallel()
	h := chunk.Sum([]byte("x"))
	tests := []struct {
		name  string
		build func(l *logBuilder)
		want  string
	}{
		{"genesis delay", func(l *logBuilder) { l.genesis("forever") }, "delay"},
		{"request delay", func(l *logBuilder) { l.genesis("72h0m0s"); l.request(t0, 1, "three days", h) }, "delay"},
		{"restic retention", func(l *logBuilder) {
			l.genesis("72h0m0s")
			l.add(t0, ActionResticRetention, map[string]any{"repository": "r", "min_retention": "long", "previous": "720h0m0s"})
		}, "durations"},
		{"not JSON", func(l *logBuilder) { l.genesis("72h0m0s"); l.entries = append(l.entries, []byte("{garbage")) }, "entry 1"},
		{"details of the wrong shape", func(l *logBuilder) {
			l.genesis("72h0m0s")
			l.add(t0, ActionHoldPlace, map[string]any{"hold_id": "seven", "kind": "chunks"})
		}, "hold.place"},
		{"targets that are not their digest", func(l *logBuilder) {
			l.genesis("72h0m0s")
			l.add(t0, ActionDeletionRequest, map[string]any{"deletion_id": 1, "kind": KindChunks, "digest": strings.Repeat("00", 32),
				"approvals_required": 2, "delay": "72h0m0s", "admin_set_version": 1, "targets": "wormvault-deletion-targets v1\nkind: chunks\n"})
		}, "digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLog(t, "a", "b", "c")
			tt.build(l)
			r := l.replay(Pins{})
			if !hasFinding(r, RuleEntries, tt.want) {
				t.Errorf("findings %v: want an %s finding naming %q", r.Findings, RuleEntries, tt.want)
			}
			if v := r.MayExecute(1, t0.AddDate(1, 0, 0)); v.Allowed {
				t.Errorf("MayExecute = %+v on a log with findings", v)
			}
		})
	}
	// Out of sequence.
	l := newLog(t, "a", "b", "c")
	l.genesis("72h0m0s")
	r := NewReplay()
	r.ApplyPayload(2, l.entries[0])
	if !hasFinding(r, RuleEntries, "follows") {
		t.Errorf("findings %v: want the sequence gap", r.Findings)
	}
}

// The executor's verdicts: the full delay from the quorum entry, and the
// ways a deletion can never execute.
func TestReplayMayExecute(t *testing.T) {
	t.Parallel()
	h := chunk.Sum([]byte("x"))
	quorum := t0.Add(time.Hour)
	flow := func(l *logBuilder, vault string) {
		l.genesis("72h0m0s")
		l.add(t0, ActionChunkCommit, ChunkCommit{Hash: h.String(), Size: 1, RetainUntil: t0.Add(time.Hour)})
		text := l.request(t0, 1, "72h0m0s", h)
		l.signed(t0, approval.ActionRequest, ActionDeletionSign, 1, text, "a", vault)
		l.signed(t0.Add(time.Minute), approval.ActionApprove, ActionDeletionApprove, 1, text, "b", vault)
		l.signed(quorum, approval.ActionApprove, ActionDeletionApprove, 1, text, "c", vault)
	}
	l := newLog(t, "a", "b", "c")
	flow(l, testVault)
	pins := Pins{Genesis: l.pinned(), VaultID: testVault, MinApprovals: 2, MinDelay: 72 * time.Hour}
	r := l.replay(pins)
	if len(r.Findings) > 0 {
		t.Fatalf("findings on a sound log: %v", r.Findings)
	}
	if v := r.MayExecute(1, quorum.Add(72*time.Hour-time.Second)); v.Allowed || v.Never || !v.At.Equal(quorum.Add(72*time.Hour)) {
		t.Errorf("a second early: %+v, want a wait until %s", v, quorum.Add(72*time.Hour))
	}
	if v := r.MayExecute(1, quorum.Add(72*time.Hour)); !v.Allowed {
		t.Errorf("after the delay: %+v, want allowed", v)
	}
	if v := r.MayExecute(2, quorum.Add(72*time.Hour)); !v.Never {
		t.Errorf("a deletion not in the log: %+v, want never", v)
	}

	never := func(name string, r *Replay, substr string) {
		t.Helper()
		if v := r.MayExecute(1, quorum.AddDate(1, 0, 0)); !v.Never || !strings.Contains(v.Reason, substr) {
			t.Errorf("%s: %+v, want never, naming %q", name, v, substr)
		}
	}
	other := newLog(t, "a", "b", "c")
	never("another pinned genesis", l.replay(Pins{Genesis: other.pinned()}), "admin set 1")
	never("floors above the request's", l.replay(Pins{Genesis: l.pinned(), MinApprovals: 3}), "floors")

	wrongVault := newLog(t, "a", "b", "c")
	flow(wrongVault, "wv-other")
	if r := wrongVault.replay(Pins{Genesis: wrongVault.pinned(), VaultID: testVault}); !hasFinding(r, RuleSignature, "vault") {
		t.Errorf("statements for another vault: findings %v", r.Findings)
	}

	cancelled := newLog(t, "a", "b", "c")
	flow(cancelled, testVault)
	cancelled.signed(quorum.Add(time.Hour), approval.ActionCancel, ActionDeletionCancel, 1, mustCanonical(t, h), "b", testVault)
	never("cancelled", cancelled.replay(Pins{Genesis: cancelled.pinned()}), "cancelled")
}

func mustCanonical(t *testing.T, hs ...chunk.Hash) string {
	text, err := Targets{Kind: KindChunks, Chunks: hs}.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// An admin-set version is taken only as the signed change makes it from
// the previous version.
func TestReplayAdminSetChain(t *testing.T) {
	t.Parallel()
	l := newLog(t, "a", "b", "c", "d")
	l.genesis("72h0m0s")
	change := Targets{Kind: KindAdminSet, Change: &AdminChange{Op: OpRemove, Name: "d"}}
	text, err := change.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(text))
	l.add(t0, ActionDeletionRequest, map[string]any{"deletion_id": 1, "kind": KindAdminSet, "digest": hex.EncodeToString(sum[:]),
		"approvals_required": 2, "delay": "168h0m0s", "admin_set_version": 1, "targets": text})
	sign := func(at time.Time, action, entryAction, signer string) {
		typ, _ := approval.TypeFor(KindAdminSet, action)
		msg, _ := approval.Statement{Type: typ, Vault: testVault, Request: 1, Kind: KindAdminSet, TargetsDigest: sum[:],
			Approvals: 2, Delay: 168 * time.Hour, AdminSet: 1, Signer: signer}.Bytes()
		l.add(at, entryAction, map[string]any{"deletion_id": 1, "signer": signer, "format": approval.FormatRaw,
			"signature": base64.StdEncoding.EncodeToString(ed25519.Sign(l.keys[signer], msg)), "statement": string(msg)})
	}
	sign(t0, approval.ActionRequest, ActionDeletionSign, "a")
	sign(t0, approval.ActionApprove, ActionDeletionApprove, "d") // the subject's approval does not count
	sign(t0, approval.ActionApprove, ActionDeletionApprove, "b")
	if v := l.replay(Pins{}).MayExecute(1, t0.AddDate(0, 1, 0)); !v.Never || !strings.Contains(v.Reason, "1 valid approvals of 2") {
		t.Errorf("with the removed admin's approval counted: %+v", v)
	}
	sign(t0, approval.ActionApprove, ActionDeletionApprove, "c")
	done := t0.Add(168 * time.Hour)
	l.add(done, ActionDeletionExecute, map[string]any{"deletion_id": 1})
	keys := l.keyLines()
	// A version with the removed admin still in it (or anything else) is
	// not what the signed change makes.
	l.add(done, ActionAdminSetChange, map[string]any{"deletion_id": 1, "version": 2, "keys": keys, "approvals_required": 2,
		"delay": "72h0m0s", "governance_approvals": 2, "governance_delay": "168h0m0s"})
	r := l.replay(Pins{Genesis: l.pinned()})
	if !hasFinding(r, RuleAdminSet, "not what deletion 1's signed change makes") {
		t.Errorf("findings %v: want the forged version reported", r.Findings)
	}
	if set, _ := r.LatestAdminSet(); set.Version != 1 {
		t.Errorf("latest admin set %d, want 1: the forged version is not taken", set.Version)
	}

	good := l.entries[:len(l.entries)-1]
	l.entries = good
	delete(keys, "d")
	l.add(done, ActionAdminSetChange, map[string]any{"deletion_id": 1, "version": 2, "keys": keys, "approvals_required": 2,
		"delay": "72h0m0s", "governance_approvals": 2, "governance_delay": "168h0m0s"})
	r = l.replay(Pins{Genesis: l.pinned()})
	if set, _ := r.LatestAdminSet(); len(r.Findings) > 0 || set.Version != 2 || len(set.Keys) != 3 {
		t.Errorf("the signed change: version %d with %d keys, findings %v", set.Version, len(set.Keys), r.Findings)
	}
}

// The canonical targets text reads back only as itself.
func TestParseTargets(t *testing.T) {
	t.Parallel()
	a, b := chunk.Sum([]byte("a")), chunk.Sum([]byte("b"))
	_, key, _ := approval.GenerateKey()
	for _, tg := range []Targets{
		{Kind: KindChunks, Chunks: []chunk.Hash{b, a}},
		{Kind: KindSnapshots, Snapshots: []int64{3, 1}},
		{Kind: KindExpired, Before: t0},
		{Kind: KindExpired, Before: t0, Source: "db01"},
		{Kind: KindHoldRelease, Hold: 4},
		{Kind: KindAdminSet, Change: &AdminChange{Op: OpAdd, Name: "e", Key: key}},
		{Kind: KindAdminSet, Change: &AdminChange{Op: OpPolicy, Policy: Policy{Approvals: 2, Delay: time.Hour, GovernanceApprovals: 3, GovernanceDelay: 2 * time.Hour}}},
	} {
		text, err := tg.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseTargets(text)
		if err != nil {
			t.Errorf("ParseTargets(%q): %v", text, err)
			continue
		}
		if again, _ := got.Canonical(); again != text {
			t.Errorf("round trip of %q gave %q", text, again)
		}
	}
	lo, hi := a, b
	if hi.String() < lo.String() {
		lo, hi = hi, lo
	}
	for _, bad := range []string{
		"wormvault-deletion-targets v1\nkind: chunks\nchunk: " + hi.String() + "\nchunk: " + lo.String() + "\n", // unsorted
		"wormvault-deletion-targets v1\nkind: chunks\nchunk: " + a.String() + "\nchunk: " + a.String() + "\n",   // twice
		"wormvault-deletion-targets v1\nkind: chunks\nchunk: " + a.String(),                                     // no final newline
		"wormvault-deletion-targets v1\nkind: hold_release\nhold: 4\nextra: 1\n",
		"wormvault-deletion-targets v2\nkind: hold_release\nhold: 4\n",
	} {
		if _, err := ParseTargets(bad); err == nil {
			t.Errorf("ParseTargets(%q) accepted a text that is not canonical", bad)
		}
	}
}
