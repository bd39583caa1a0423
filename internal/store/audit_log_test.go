package store_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
)

// storeSource is the vault as audit.Verify sees it, without HTTP.
type storeSource struct {
	s      *store.Store
	signer note.Signer
}

// Checkpoint does what the server does: the signing loop runs (and may
// refuse to sign), the endpoint serves the latest signed checkpoint.
func (ss storeSource) Checkpoint(ctx context.Context) ([]byte, error) {
	if _, _, err := ss.s.SignCheckpoint(ctx, ss.signer); err != nil && !errors.Is(err, store.ErrRollback) {
		return nil, err
	}
	cp, err := ss.s.LatestCheckpoint(ctx)
	return cp.Note, err
}

func (ss storeSource) Entries(ctx context.Context, from, to int64) ([]audit.RawEntry, error) {
	leaves, err := ss.s.AuditLeaves(ctx, from, to)
	out := make([]audit.RawEntry, len(leaves))
	for i, l := range leaves {
		out[i] = audit.RawEntry{Index: l.Index, Payload: l.Payload}
	}
	return out, err
}

func (ss storeSource) ConsistencyProof(ctx context.Context, from, to int64) (tlog.TreeProof, error) {
	return ss.s.AuditConsistencyProof(ctx, from, to)
}

func (ss storeSource) ChunkExists(ctx context.Context, h chunk.Hash) (bool, error) {
	_, err := ss.s.Stat(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

type auditScenario struct {
	*deletionStore
	src      storeSource
	verifier note.Verifier
	owner    *pgxpool.Pool // the schema owner: the tampering below is the owner's (or a superuser's)
	live     chunk.Hash    // a stored chunk, kept as a file
	deleted  chunk.Hash    // removed by an executed deletion
}

func newAuditScenario(t testing.TB) *auditScenario {
	t.Helper()
	ds := newDeletionStore(t)
	ctx := context.Background()
	skey, vkey, err := note.GenerateKey(rand.Reader, audit.Origin(testVaultID))
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	sc := &auditScenario{deletionStore: ds, src: storeSource{s: ds.Store, signer: signer}, verifier: v,
		owner: pgtest.OwnerPool(t, ds.pool)}

	bl, live := randomChunk(t, 100_000) // above the pack threshold: a file
	ds.mustPut(t, bl)
	bd, del := randomChunk(t, 100)
	ds.mustPut(t, bd)
	sc.live, sc.deleted = live, del
	for range 3 {
		b, _ := randomChunk(t, 200)
		ds.mustPut(t, b)
	}
	// Chunk commits are logged in the transaction that indexes them.
	var logged int
	ds.pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE action = 'chunk.commit'").Scan(&logged)
	if logged != 5 {
		t.Fatalf("%d chunk.commit entries after 5 uploads, want 5", logged)
	}
	if _, err := ds.Retain(ctx, "agent-1", []chunk.Hash{live}, epoch.Add(400*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	ds.clk.Advance(31 * 24 * time.Hour)
	d := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{del}})
	ds.mustApprove(t, "admin-b", d.ID)
	ds.mustApprove(t, "admin-c", d.ID)
	ds.clk.Advance(delay)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue = %+v, %v", rep, err)
	}
	return sc
}

func (sc *auditScenario) verify(t testing.TB, kept *audit.Checkpoint) (audit.Report, error) {
	t.Helper()
	return audit.Verify(context.Background(), sc.src, audit.Options{Verifier: sc.verifier, Kept: kept, CheckChunks: -1})
}

// mustVerify verifies and returns the checkpoint to keep.
func (sc *auditScenario) mustVerify(t testing.TB, kept *audit.Checkpoint) *audit.Checkpoint {
	t.Helper()
	rep, err := sc.verify(t, kept)
	if err != nil {
		t.Fatalf("Verify: %v; findings %v", err, rep.Findings)
	}
	return &rep.Checkpoint
}

// exec runs sql as the schema owner.
func (sc *auditScenario) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := sc.owner.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// asOwner disables the insert-only triggers, as a database superuser (or
// the tables' owner) could: what the Merkle log must detect.
func (sc *auditScenario) asOwner(t testing.TB) {
	t.Helper()
	for _, tbl := range []string{"audit_log", "audit_hashes", "audit_checkpoints", "chunks"} {
		sc.exec(t, "ALTER TABLE "+tbl+" DISABLE TRIGGER USER")
	}
}

// forgetfulSigner points the scenario's source at a new Store over the same
// database and checkpoint key: a vault restarted without the checkpoint it
// kept in its data directory, or an attacker who stole the checkpoint key.
// It remembers no checkpoint, so it signs whatever the database holds.
func (sc *auditScenario) forgetfulSigner() {
	sc.src.s = store.New(sc.pool, sc.blobs, sc.clk, slog.New(slog.DiscardHandler), nil, sc.Options())
}

func wantFinding(t testing.TB, rep audit.Report, err error, rule, substr string) {
	t.Helper()
	if !errors.Is(err, audit.ErrFailed) {
		t.Fatalf("Verify error = %v, want ErrFailed (findings %v)", err, rep.Findings)
	}
	for _, f := range rep.Findings {
		if f.Rule == rule && strings.Contains(f.Message, substr) {
			return
		}
	}
	t.Fatalf("findings %v: want a %s finding containing %q", rep.Findings, rule, substr)
}

// The tree the store keeps is the RFC 6962 tree of the entries' payloads;
// its proofs verify; the whole history of a normal vault passes.
func TestAuditMerkleLog(t *testing.T) {
	t.Parallel()
	sc := newAuditScenario(t)
	ctx := context.Background()
	n, err := sc.AuditTreeSize(ctx)
	if err != nil || n < 10 {
		t.Fatalf("AuditTreeSize = %d, %v", n, err)
	}
	var tree audit.Tree
	var leaves []store.AuditLeaf
	for int64(len(leaves)) < n {
		page, err := sc.AuditLeaves(ctx, int64(len(leaves)), n)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, page...)
	}
	actions := map[string]int{}
	for i, l := range leaves {
		tree.Append(tlog.RecordHash([]byte(l.Payload)))
		e, err := audit.ParseEntry(int64(i), []byte(l.Payload))
		if err != nil {
			t.Fatal(err)
		}
		actions[e.Action]++
		root, err := sc.AuditTreeHash(ctx, int64(i+1))
		if err != nil || root != tree.Root() {
			t.Fatalf("stored tree root at size %d = %s, %v; recomputed %s", i+1, root, err, tree.Root())
		}
	}
	if actions[audit.ActionChunkCommit] != 5 || actions[audit.ActionChunkRemove] != 1 || actions[audit.ActionDeletionApprove] != 2 {
		t.Errorf("actions %v: want 5 chunk.commit, 1 chunk.remove, 2 deletion.approve", actions)
	}
	root := tree.Root()
	for i := range n {
		p, err := sc.AuditInclusionProof(ctx, i, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, n, root, i, tlog.RecordHash([]byte(leaves[i].Payload))); err != nil {
			t.Errorf("inclusion proof of leaf %d: %v", i, err)
		}
	}
	for m := int64(1); m <= n; m++ {
		p, err := sc.AuditConsistencyProof(ctx, m, n)
		if err != nil {
			t.Fatal(err)
		}
		old, _ := sc.AuditTreeHash(ctx, m)
		if err := tlog.CheckTree(p, n, root, m, old); err != nil {
			t.Errorf("consistency proof %d..%d: %v", m, n, err)
		}
	}
	leaf, err := sc.AuditChunkLeaf(ctx, sc.live)
	if err != nil || !strings.Contains(leaves[leaf].Payload, sc.live.String()) {
		t.Errorf("AuditChunkLeaf(live) = %d, %v", leaf, err)
	}
	for _, bad := range [][2]int64{{-1, n}, {n, n}, {0, 0}, {0, n + 1}} {
		if _, err := sc.AuditInclusionProof(ctx, bad[0], bad[1]); !errors.As(err, new(*store.InvalidError)) {
			t.Errorf("AuditInclusionProof(%d, %d) error = %v, want InvalidError", bad[0], bad[1], err)
		}
	}

	kept := sc.mustVerify(t, nil)
	if kept.Size != n || kept.Root != root {
		t.Fatalf("verified checkpoint %+v, want size %d root %s", kept, n, root)
	}
	// A second run with more entries checks consistency with the first.
	b, _ := randomChunk(t, 300)
	sc.mustPut(t, b)
	again := sc.mustVerify(t, kept)
	if again.Size != n+1 {
		t.Errorf("second checkpoint size %d, want %d", again.Size, n+1)
	}
	// Nothing new: same checkpoint, still fine.
	sc.mustVerify(t, again)
	if _, err := sc.VerifyAudit(ctx); err != nil {
		t.Errorf("the hash chain still verifies: %v", err)
	}
}

// Each tamper case of issue 9 is detected by the verifier or refused by
// the vault.
func TestAuditTamper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("delete an audit row", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		kept := sc.mustVerify(t, nil)
		sc.asOwner(t)
		sc.exec(t, "DELETE FROM audit_log WHERE action = 'deletion.approve' AND seq = (SELECT min(seq) FROM audit_log WHERE action = 'deletion.approve')")
		rep, err := sc.verify(t, kept)
		wantFinding(t, rep, err, audit.RuleEntries, "removed")
	})

	t.Run("edit an entry's details", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		kept := sc.mustVerify(t, nil)
		sc.asOwner(t)
		sc.exec(t, `UPDATE audit_log SET payload = replace(payload, 'retention clean-up', 'routine maintenance')
			WHERE action = 'deletion.request'`)
		rep, err := sc.verify(t, kept)
		wantFinding(t, rep, err, audit.RuleRoot, "edited")
		// Without a kept checkpoint the edit is found too: the entries no
		// longer hash to the signed root.
		rep, err = sc.verify(t, nil)
		wantFinding(t, rep, err, audit.RuleRoot, "edited")
	})

	t.Run("truncate the tail", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		kept := sc.mustVerify(t, nil)
		n := kept.Size
		sc.asOwner(t)
		sc.exec(t, "DELETE FROM audit_log WHERE seq > $1", n-3)
		sc.exec(t, "DELETE FROM audit_hashes WHERE idx >= $1", tlog.StoredHashCount(n-3))
		// The vault refuses to sign over its own larger checkpoint.
		if _, _, err := sc.SignCheckpoint(ctx, sc.src.signer); !errors.Is(err, store.ErrRollback) {
			t.Fatalf("SignCheckpoint after truncation = %v, want ErrRollback", err)
		}
		if err := sc.CheckRollback(ctx, *kept); !errors.Is(err, store.ErrRollback) {
			t.Fatalf("CheckRollback = %v, want ErrRollback", err)
		}
		// Removing the checkpoint rows as well changes nothing: the vault
		// remembers what it signed, still refuses, and still serves it.
		sc.exec(t, "DELETE FROM audit_checkpoints")
		if _, _, err := sc.SignCheckpoint(ctx, sc.src.signer); !errors.Is(err, store.ErrRollback) {
			t.Fatalf("SignCheckpoint after the checkpoints were removed = %v, want ErrRollback", err)
		}
		if err := sc.AuditIntegrity(); !errors.Is(err, store.ErrRollback) {
			t.Fatalf("AuditIntegrity = %v, want ErrRollback", err)
		}
		rep, err := sc.verify(t, kept)
		wantFinding(t, rep, err, audit.RuleEntries, "removed")
		// A vault that forgot its checkpoint signs the smaller log; the
		// auditor's kept checkpoint exposes it.
		sc.forgetfulSigner()
		rep, err = sc.verify(t, kept)
		wantFinding(t, rep, err, audit.RuleConsistency, "truncated or rolled back")
	})

	t.Run("rewrite history and re-sign", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		kept := sc.mustVerify(t, nil)
		sc.asOwner(t)
		// Rewrite an entry, recompute every tree hash from the payloads
		// (EnsureAuditTree does exactly that), append, and re-sign with
		// the vault's own checkpoint key.
		sc.exec(t, `UPDATE audit_log SET payload = replace(payload, 'retention clean-up', 'routine maintenance')
			WHERE action = 'deletion.request'`)
		sc.exec(t, "DELETE FROM audit_hashes")
		sc.exec(t, "DELETE FROM audit_checkpoints")
		if err := sc.EnsureAuditTree(ctx); err != nil {
			t.Fatal(err)
		}
		// The running vault refuses to sign the rewritten tree...
		if _, _, err := sc.SignCheckpoint(ctx, sc.src.signer); !errors.Is(err, store.ErrRollback) {
			t.Fatalf("SignCheckpoint over the rewritten log = %v, want ErrRollback", err)
		}
		// ...someone who holds the checkpoint key signs it anyway.
		sc.forgetfulSigner()
		b, _ := randomChunk(t, 300)
		sc.mustPut(t, b)
		// The vault appends from its journal's tree, not the rewritten
		// one: even a newcomer without a kept checkpoint finds the log
		// does not hash to what was signed over it...
		rep, err := sc.verify(t, nil)
		if err == nil {
			t.Fatal("a rewritten log with an entry appended by the vault verified for a newcomer")
		}
		t.Logf("newcomer: %v %v", err, rep.Findings)
		// ...and the auditor who kept the old checkpoint sees the fork.
		rep, err = sc.verify(t, kept)
		wantFinding(t, rep, err, audit.RuleConsistency, "rewritten")
	})

	t.Run("restore an older database", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		ctx := context.Background()
		old, _, err := sc.SignCheckpoint(ctx, sc.src.signer)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := randomChunk(t, 300)
		sc.mustPut(t, b)
		newer, _, err := sc.SignCheckpoint(ctx, sc.src.signer)
		if err != nil || newer.Size != old.Size+1 {
			t.Fatalf("SignCheckpoint = %+v, %v", newer, err)
		}
		if err := sc.CheckRollback(ctx, newer.Checkpoint); err != nil {
			t.Fatalf("CheckRollback on the live database: %v", err)
		}
		// The database as it was at the older checkpoint (what a restore
		// from that time gives back).
		sc.asOwner(t)
		sc.exec(t, "DELETE FROM audit_log WHERE seq > $1", old.Size)
		sc.exec(t, "DELETE FROM audit_hashes WHERE idx >= $1", tlog.StoredHashCount(old.Size))
		sc.exec(t, "DELETE FROM audit_checkpoints WHERE size > $1", old.Size)
		if err := sc.CheckRollback(ctx, newer.Checkpoint); !errors.Is(err, store.ErrRollback) || !strings.Contains(err.Error(), "older database") {
			t.Fatalf("CheckRollback(newer) on the restored database = %v, want ErrRollback naming a restore", err)
		}
		// A same-size different history is refused as well.
		other := newer.Checkpoint
		other.Size = old.Size
		if err := sc.CheckRollback(ctx, other); !errors.Is(err, store.ErrRollback) {
			t.Fatalf("CheckRollback(different root) = %v, want ErrRollback", err)
		}
	})

	t.Run("remove a chunk file and its row by hand", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		kept := sc.mustVerify(t, nil)
		sc.asOwner(t)
		sc.exec(t, "DELETE FROM chunks WHERE hash = $1", sc.live[:])
		if err := sc.blobs.Remove(ctx, sc.live); err != nil {
			t.Fatal(err)
		}
		rep, err := sc.verify(t, kept)
		wantFinding(t, rep, err, audit.RuleChunkRemoved, sc.live.String())
		// The chunk removed by the executed deletion is not reported.
		for _, f := range rep.Findings {
			if strings.Contains(f.Message, sc.deleted.String()) {
				t.Errorf("finding about the properly deleted chunk: %v", f)
			}
		}
	})

	t.Run("forged approvals", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		b, h := randomChunk(t, 100)
		sc.mustPut(t, b)
		sc.clk.Advance(31 * 24 * time.Hour)
		d := sc.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
		sc.mustApprove(t, "admin-b", d.ID)
		// A compromised server logs a second approval it never verified
		// (the statement is right, the signature is garbage) and executes.
		msg, err := sc.Statement(ctx, d.ID, approval.ActionApprove, "admin-c")
		if err != nil {
			t.Fatal(err)
		}
		now := sc.clk.Now()
		forge := func(at time.Time, action string, details any) {
			if err := sc.AppendAuditForTest(ctx, at, "mallory", action, details); err != nil {
				t.Fatal(err)
			}
		}
		forge(now, "deletion.approve", map[string]any{"deletion_id": d.ID, "signer": "admin-c", "format": "raw",
			"signature": base64.StdEncoding.EncodeToString(make([]byte, 64)), "statement": string(msg)})
		forge(now.Add(delay), "deletion.execute", map[string]any{"deletion_id": d.ID})
		forge(now.Add(delay), "chunk.remove", audit.ChunkRemove{Hash: h.String(), DeletionID: d.ID})
		rep, err := sc.verify(t, nil)
		wantFinding(t, rep, err, audit.RuleSignature, "admin-c")
		wantFinding(t, rep, err, audit.RuleQuorum, "1 valid approvals of 2")
	})

	t.Run("executed before the delay", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		b, h := randomChunk(t, 100)
		sc.mustPut(t, b)
		sc.clk.Advance(31 * 24 * time.Hour)
		d := sc.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
		sc.mustApprove(t, "admin-b", d.ID)
		sc.mustApprove(t, "admin-c", d.ID)
		if err := sc.AppendAuditForTest(ctx, sc.clk.Now().Add(time.Hour), "mallory", "deletion.execute",
			map[string]any{"deletion_id": d.ID}); err != nil {
			t.Fatal(err)
		}
		rep, err := sc.verify(t, nil)
		wantFinding(t, rep, err, audit.RuleDelay, "before its quorum")
	})

	t.Run("retention shortened", func(t *testing.T) {
		t.Parallel()
		sc := newAuditScenario(t)
		if err := sc.AppendAuditForTest(ctx, sc.clk.Now(), "mallory", "chunk.retain", map[string]any{
			"retain_until": epoch.Add(24 * time.Hour), "hashes": []string{sc.live.String()}}); err != nil {
			t.Fatal(err)
		}
		rep, err := sc.verify(t, nil)
		wantFinding(t, rep, err, audit.RuleRetention, sc.live.String())
	})
}
