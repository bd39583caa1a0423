package audit

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/chunk"
)

// memHashes is a tlog.HashReader over stored hashes kept in memory.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m[x]
	}
	return out, nil
}

// The compact tree agrees with tlog's stored-hash tree at every size.
func TestTreeMatchesTlog(t *testing.T) {
	t.Parallel()
	var stored memHashes
	var tree Tree
	for n := int64(0); n < 300; n++ {
		data := []byte("entry " + strconv.FormatInt(n, 10))
		hs, err := tlog.StoredHashes(n, data, stored)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		tree.Append(tlog.RecordHash(data))
		want, err := tlog.TreeHash(n+1, stored)
		if err != nil {
			t.Fatal(err)
		}
		if got := tree.Root(); got != want {
			t.Fatalf("size %d: root %s, tlog says %s", n+1, got, want)
		}
	}
}

func newKey(t testing.TB, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, v
}

func TestCheckpoint(t *testing.T) {
	t.Parallel()
	origin := Origin("wv-test")
	s, v := newKey(t, origin)
	cp := Checkpoint{Origin: origin, Size: 42, Root: tlog.RecordHash([]byte("x"))}
	msg, err := Sign(cp, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenCheckpoint(msg, v)
	if err != nil || got != cp {
		t.Fatalf("OpenCheckpoint = %+v, %v; want %+v", got, err, cp)
	}
	// Signed by another key of the same name, or for another origin.
	s2, _ := newKey(t, origin)
	other, _ := Sign(cp, s2)
	if _, err := OpenCheckpoint(other, v); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("checkpoint by an unknown key: %v, want ErrCheckpoint", err)
	}
	s3, v3 := newKey(t, "wormvault/other")
	wrong, _ := Sign(cp, s3)
	if _, err := OpenCheckpoint(wrong, v3); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("checkpoint with a foreign origin: %v, want ErrCheckpoint", err)
	}
	for _, text := range []string{
		"", "o\n1\n", "o\n01\n" + cp.Root.String() + "\n", "o\n-1\n" + cp.Root.String() + "\n",
		"o\n1\nnotbase64\n", "o\n1\n" + cp.Root.String() + "\next\n", "o o\n1\n" + cp.Root.String() + "\n",
	} {
		if _, err := ParseCheckpoint(text); err == nil {
			t.Errorf("ParseCheckpoint(%q) = nil error", text)
		}
	}
}

// synthSource serves n synthetic entries (one genesis, then chunk
// commits with a retention extension every 100th) without holding them:
// the vault side of the 1,000,000-entry run.
type synthSource struct {
	n    int64
	note []byte
	at   time.Time
}

func synthPayload(i int64, at time.Time) []byte {
	var details any
	action := ActionChunkCommit
	h := chunk.Sum([]byte(strconv.FormatInt(i, 10)))
	switch {
	case i == 0:
		action, details = ActionGenesis, map[string]any{"version": 1, "keys": map[string]string{}, "approvals_required": 2,
			"delay": "72h0m0s", "governance_approvals": 2, "governance_delay": "168h0m0s"}
	case i%100 == 0:
		prev := chunk.Sum([]byte(strconv.FormatInt(i-1, 10)))
		action, details = ActionChunkRetain, map[string]any{"retain_until": at.Add(800 * 24 * time.Hour), "hashes": []string{prev.String()}}
	default:
		details = ChunkCommit{Hash: h.String(), Size: 4096, UploadedBy: "agent-1", StoredAt: at, RetainUntil: at.Add(30 * 24 * time.Hour), ChunkSeq: i}
	}
	b, _ := json.Marshal(struct {
		Seq     int64     `json:"seq"`
		At      time.Time `json:"at"`
		Actor   string    `json:"actor"`
		Action  string    `json:"action"`
		Details any       `json:"details"`
	}{i + 1, at, "agent-1", action, details})
	return b
}

func newSynthSource(t testing.TB, n int64, s note.Signer) *synthSource {
	src := &synthSource{n: n, at: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)}
	var tree Tree
	for i := range n {
		tree.Append(tlog.RecordHash(synthPayload(i, src.at)))
	}
	msg, err := Sign(Checkpoint{Origin: s.Name(), Size: n, Root: tree.Root()}, s)
	if err != nil {
		t.Fatal(err)
	}
	src.note = msg
	return src
}

func (s *synthSource) Checkpoint(context.Context) ([]byte, error) { return s.note, nil }
func (s *synthSource) Entries(_ context.Context, from, to int64) ([]RawEntry, error) {
	to = min(to, from+1000, s.n)
	out := make([]RawEntry, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, RawEntry{Index: i, Payload: string(synthPayload(i, s.at))})
	}
	return out, nil
}
func (s *synthSource) ConsistencyProof(context.Context, int64, int64) (tlog.TreeProof, error) {
	return nil, errors.New("not served")
}
func (s *synthSource) ChunkExists(context.Context, chunk.Hash) (bool, error) { return true, nil }

func TestVerifySynthetic(t *testing.T) {
	t.Parallel()
	s, v := newKey(t, Origin("synth"))
	src := newSynthSource(t, 2500, s)
	rep, err := Verify(context.Background(), src, Options{Verifier: v, CheckChunks: 10})
	if err != nil || rep.Entries != 2500 || rep.ChunksChecked != 10 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// TestVerifyMillion is acceptance 2 of issue 9: verify over 1,000,000
// entries, with time and peak heap. Slow; run with
//
//	VAULT_AUDIT_ENTRIES=1000000 go test -run TestVerifyMillion -v ./internal/audit/
func TestVerifyMillion(t *testing.T) {
	env := os.Getenv("VAULT_AUDIT_ENTRIES")
	if env == "" {
		t.Skip("set VAULT_AUDIT_ENTRIES (e.g. 1000000) to run")
	}
	n, err := strconv.ParseInt(env, 10, 64)
	if err != nil || n < 1 {
		t.Fatalf("VAULT_AUDIT_ENTRIES=%q", env)
	}
	s, v := newKey(t, Origin("synth"))
	t0 := time.Now()
	src := newSynthSource(t, n, s)
	t.Logf("built %d entries and their root in %s", n, time.Since(t0))
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	rep, err := Verify(context.Background(), src, Options{Verifier: v, CheckChunks: 1000})
	elapsed := time.Since(start)
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("Verify: %v (%v)", err, rep.Findings)
	}
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	t.Logf("verified %d entries (%d live chunks, %d looked up) in %s; peak heap in use %s (baseline %s); allocated %s in all",
		rep.Entries, rep.LiveChunks, rep.ChunksChecked, elapsed, mib(peak.Load()), mib(base.HeapInuse), mib(end.TotalAlloc-base.TotalAlloc))
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// shrunkSource is a vault that signed src's checkpoint and then lost the
// entries from served on: it still serves the checkpoint, and, if it kept
// its tree hashes, true consistency proofs.
type shrunkSource struct {
	*synthSource
	served int64
	hashes memHashes // nil: it cannot prove anything
}

func newShrunkSource(t testing.TB, src *synthSource, served int64, proofs bool) *shrunkSource {
	s := &shrunkSource{synthSource: src, served: served}
	if proofs {
		for i := range src.n {
			hs, err := tlog.StoredHashes(i, synthPayload(i, src.at), s.hashes)
			if err != nil {
				t.Fatal(err)
			}
			s.hashes = append(s.hashes, hs...)
		}
	}
	return s
}

func (s *shrunkSource) Entries(ctx context.Context, from, to int64) ([]RawEntry, error) {
	if from >= s.served {
		return nil, nil
	}
	return s.synthSource.Entries(ctx, from, min(to, s.served))
}

func (s *shrunkSource) ConsistencyProof(_ context.Context, from, to int64) (tlog.TreeProof, error) {
	if s.hashes == nil {
		return nil, fmt.Errorf("400 invalid: to must be a tree size from 1 to %d", s.served)
	}
	return tlog.ProveTree(to, from, s.hashes)
}

// synthKept is the checkpoint of the first n entries of src.
func synthKept(src *synthSource, n int64) *Checkpoint {
	var tree Tree
	for i := range n {
		tree.Append(tlog.RecordHash(synthPayload(i, src.at)))
	}
	return &Checkpoint{Size: n, Root: tree.Root()}
}

// TestVerifyFailsWhenLogShrank: the vault signed 2500 entries, then its
// log was cut to 2000. Auditors who kept a checkpoint before the cut, at
// the served one, or between the cut and the served one all fail: the
// entries do not reach the signed size, or the vault cannot prove
// consistency. Nothing passes.
func TestVerifyFailsWhenLogShrank(t *testing.T) {
	t.Parallel()
	s, v := newKey(t, Origin("synth"))
	src := newSynthSource(t, 2500, s)
	tests := []struct {
		name   string
		kept   int64
		proofs bool
	}{
		{"kept before the cut, vault proves consistency", 1000, true},
		{"kept before the cut, vault cannot prove", 1000, false},
		{"kept after the cut", 2200, true},
		{"kept the served checkpoint", 2500, false},
		{"no kept checkpoint", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var kept *Checkpoint
			if tt.kept > 0 {
				kept = synthKept(src, tt.kept)
			}
			rep, err := Verify(context.Background(), newShrunkSource(t, src, 2000, tt.proofs), Options{Verifier: v, Kept: kept})
			if err == nil {
				t.Fatalf("Verify passed over a log cut below its checkpoint: %+v", rep)
			}
			if !errors.Is(err, ErrFailed) {
				if tt.proofs {
					t.Fatalf("Verify = %v, want findings", err)
				}
				return // could not even fetch what it needs: an error, no OK
			}
			for _, f := range rep.Findings {
				if f.Rule == RuleEntries && f.Seq == 2001 {
					return
				}
			}
			t.Errorf("findings %v: want the missing entry 2001", rep.Findings)
		})
	}
}
