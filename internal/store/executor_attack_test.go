package store_test

// Attacks on the deletion executor by someone who holds a database
// credential but not the data directory (invariant 8): whatever the index
// says, the executor removes only what the journal shows was signed,
// approved and waited for.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// asOwner runs fn in one transaction on the database owner's connection,
// with the user triggers of tables disabled: what an attacker holding the
// owner's credential can do to the index. The tests connect as the owner;
// this is the one place to point at another connection.
func asOwner(t testing.TB, pool *pgxpool.Pool, tables []string, fn func(ctx context.Context, tx pgx.Tx) error) {
	t.Helper()
	pool = pgtest.OwnerPool(t, pool)
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, tb := range tables {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+tb+" DISABLE TRIGGER USER"); err != nil {
				return err
			}
		}
		if err := fn(ctx, tx); err != nil {
			return err
		}
		for _, tb := range tables {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+tb+" ENABLE TRIGGER USER"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("tampering with the index: %v", err)
	}
}

// forgedDeletion is a deletion request written straight into the index,
// signed with whatever keys the attacker has.
type forgedDeletion struct {
	id        int64
	targets   string
	adminSet  int64
	approvals int
	delay     time.Duration
	requester string
	keys      map[string]ed25519.PrivateKey // the requester's and approvers' keys
	approvers []string
	scheduled time.Time
}

// forge inserts f as a scheduled request with its signed approvals.
func (ds *deletionStore) forge(t testing.TB, f forgedDeletion) {
	t.Helper()
	digest := sha256.Sum256([]byte(f.targets))
	sign := func(action, signer string) []byte {
		typ, err := approval.TypeFor(store.DeleteChunks, action)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := approval.Statement{Type: typ, Vault: testVaultID, Request: f.id, Kind: store.DeleteChunks,
			TargetsDigest: digest[:], Approvals: f.approvals, Delay: f.delay, AdminSet: f.adminSet, Signer: signer}.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return ed25519.Sign(f.keys[signer], msg)
	}
	asOwner(t, ds.pool, []string{"deletion_requests", "deletion_approvals"}, func(ctx context.Context, tx pgx.Tx) error {
		requested := f.scheduled.Add(-time.Hour)
		if _, err := tx.Exec(ctx, `INSERT INTO deletion_requests (id, kind, targets, digest, reason, requested_by,
			requested_at, approvals_required, delay, expires_at, state, scheduled_at, executes_at, admin_set_version,
			requested_by_admin, request_format, request_signature) OVERRIDING SYSTEM VALUE
			VALUES (@id, 'chunks', @targets, @digest, 'forged', @by, @requested, @n, @delay, @expires, 'scheduled',
			@scheduled, @scheduled::timestamptz + @delay::interval, @set, @by, 'raw', @sig)`, pgx.NamedArgs{
			"id": f.id, "targets": f.targets, "digest": digest[:], "by": f.requester, "requested": requested,
			"n": f.approvals, "delay": f.delay, "expires": requested.Add(7 * 24 * time.Hour), "scheduled": f.scheduled,
			"set": f.adminSet, "sig": sign(approval.ActionRequest, f.requester),
		}); err != nil {
			return err
		}
		for _, a := range f.approvers {
			if _, err := tx.Exec(ctx, `INSERT INTO deletion_approvals (deletion_id, approver, approved_at, format, signature)
				VALUES ($1, $2, $3, 'raw', $4)`, f.id, a, requested, sign(approval.ActionApprove, a)); err != nil {
				return err
			}
		}
		return nil
	})
}

// forgeTombstone inserts a tombstone row naming c's content as deleted by
// deletion id: an insert the runtime role may make.
func (ds *deletionStore) forgeTombstone(t testing.TB, c store.Chunk, id int64) {
	t.Helper()
	var pid, off *int64
	if c.PackID != 0 {
		pid, off = &c.PackID, &c.PackOffset
	}
	asOwner(t, ds.pool, nil, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO chunk_tombstones (hash, size, stored_at, uploaded_by, pack_id, pack_offset,
			deleted_at, deletion_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			c.Hash[:], c.Size, c.StoredAt, c.UploadedBy, pid, off, ds.clk.Now(), id)
		return err
	})
}

func chunksTargets(hs ...chunk.Hash) string {
	var b strings.Builder
	b.WriteString("wormvault-deletion-targets v1\nkind: chunks\n")
	for _, h := range hs {
		b.WriteString("chunk: " + h.String() + "\n")
	}
	return b.String()
}

// packRecord reads the raw bytes of a packed chunk's record, header and
// data, straight from its pack file.
func (ds *deletionStore) packRecord(t testing.TB, c store.Chunk) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(ds.dir, "packs", fmt.Sprintf("%016x.pack", c.PackID)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, pack.HeaderSize+c.Size)
	if _, err := f.ReadAt(b, c.PackOffset); err != nil {
		t.Fatal(err)
	}
	return b
}

// readsBack reports whether chunk h reads back as want, verified.
func (ds *deletionStore) readsBack(t testing.TB, h chunk.Hash, want []byte) bool {
	t.Helper()
	rc, _, err := ds.OpenChunk(context.Background(), h)
	if err != nil {
		t.Logf("OpenChunk(%s): %v", h, err)
		return false
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Logf("read %s: %v", h, err)
		return false
	}
	return bytes.Equal(got, want)
}

func (ds *deletionStore) mustStat(t testing.TB, h chunk.Hash) store.Chunk {
	t.Helper()
	c, err := ds.Stat(context.Background(), h)
	if err != nil {
		t.Fatalf("Stat(%s): %v", h, err)
	}
	return c
}

// Attack 2 of issue 13: a new admin-set version with the attacker's keys
// and quorum 1, a request signed and approved with them, scheduled in the
// past, and a tombstone naming a live, retained, held chunk's pack record.
func TestExecutorRejectsForgedAdminSetVersion(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	victim, victimH := randomChunk(t, 3000) // packed
	ds.mustPut(t, victim)
	until := epoch.AddDate(5, 0, 0)
	if _, err := ds.Retain(ctx, "agent-1", []chunk.Hash{victimH}, until); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "case-7", Reason: "litigation", Chunks: []chunk.Hash{victimH}}); err != nil {
		t.Fatal(err)
	}
	c := ds.mustStat(t, victimH)
	if c.PackID == 0 {
		t.Fatal("the victim is not packed")
	}
	record := ds.packRecord(t, c)

	decoy, decoyH := randomChunk(t, 3000) // past retention below: deletable
	ds.mustPut(t, decoy)
	ds.clk.Advance(31 * 24 * time.Hour)

	keys := map[string]ed25519.PrivateKey{}
	pubs := map[string]approval.Key{}
	for _, name := range []string{"mallory", "mallet", "mallard"} {
		priv, pub, err := approval.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[name], pubs[name] = priv, pub
	}
	now := ds.clk.Now()
	asOwner(t, ds.pool, []string{"deletion_requests", "admin_set_versions", "admin_keys"}, func(ctx context.Context, tx pgx.Tx) error {
		// The "executed admin_set request" the forged version claims to
		// come from.
		if _, err := tx.Exec(ctx, `INSERT INTO deletion_requests (id, kind, targets, digest, reason, requested_by,
			requested_at, approvals_required, delay, expires_at, state, executed_at, admin_set_version)
			OVERRIDING SYSTEM VALUE VALUES (999, 'admin_set', 'x', $1, 'x', 'mallory', $2, 2, '1 second', $3, 'executed', $2, 1)`,
			make([]byte, 32), now.Add(-2*time.Hour), now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO admin_set_versions (version, approvals_required, delay, governance_approvals,
			governance_delay, created_at, request_id) VALUES (2, 1, '1 second', 2, '1 second', $1, 999)`, now.Add(-2*time.Hour)); err != nil {
			return err
		}
		for name, k := range pubs {
			if _, err := tx.Exec(ctx, `INSERT INTO admin_keys (version, name, key_kind, public_key, added_at)
				VALUES (2, $1, $2, $3, $4)`, name, k.Kind, []byte(k.Public), now.Add(-2*time.Hour)); err != nil {
				return err
			}
		}
		return nil
	})
	ds.forge(t, forgedDeletion{id: 1000, targets: chunksTargets(victimH), adminSet: 2, approvals: 1, delay: time.Second,
		requester: "mallory", keys: keys, approvers: []string{"mallet"}, scheduled: now.Add(-time.Hour)})
	ds.forgeTombstone(t, c, 1000)

	// The same keys through the store's own calls: the index's newest
	// admin set is the forged one, so the request is made under it and
	// the signatures verify against it; the journal holds them, but no
	// admin set 2 that the genesis signed.
	other, err := ds.RequestDeletion(ctx, "mallory", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{decoyH}}, "forged")
	if err != nil || other.AdminSetVersion == nil || *other.AdminSetVersion != 2 {
		t.Fatalf("request under the forged set: %+v, %v", other, err)
	}
	sign := func(action, signer string) store.Signature {
		msg, err := ds.Statement(ctx, other.ID, action, signer)
		if err != nil {
			t.Fatal(err)
		}
		return store.Signature{Signer: signer, Format: approval.FormatRaw, Value: ed25519.Sign(keys[signer], msg)}
	}
	if _, err := ds.SignRequest(ctx, "mallory", other.ID, sign(approval.ActionRequest, "mallory")); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"mallet", "mallard"} {
		if _, err := ds.ApproveDeletion(ctx, a, other.ID, sign(approval.ActionApprove, a)); err != nil {
			t.Fatal(err)
		}
	}
	ds.clk.Advance(delay)

	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Executed) != 0 {
		t.Errorf("RunDue = %+v, %v; want nothing executed", rep, err)
	}
	if !ds.readsBack(t, decoyH, decoy) {
		t.Error("a chunk was deleted by a request signed under the forged admin set")
	}
	if d, _ := ds.GetDeletion(ctx, other.ID); d.State != store.StateRefused || d.Refusal == nil || !strings.Contains(*d.Refusal, "admin set 2") {
		t.Errorf("request under the forged set: %s (%v), want refused naming admin set 2", d.State, d.Refusal)
	}
	if !ds.readsBack(t, victimH, victim) {
		t.Error("the victim no longer reads back byte-identical")
	}
	if got := ds.packRecord(t, c); !bytes.Equal(got, record) {
		t.Error("the victim's pack record changed")
	}
	if got := ds.mustStat(t, victimH); !got.RetainUntil.Equal(until) {
		t.Errorf("retain_until = %s, want %s", got.RetainUntil, until)
	}
	if cr, err := ds.ChunkRetention(ctx, victimH); err != nil || len(cr.Holds) != 1 {
		t.Errorf("holds on the victim = %+v, %v; want the hold", cr.Holds, err)
	}
	d, err := ds.GetDeletion(ctx, 1000)
	if err != nil || d.State != store.StateRefused {
		t.Errorf("forged deletion: %s, %v; want refused", d.State, err)
	}
	if n := ds.alarms(t); n < 1 {
		t.Errorf("integrity alarms = %v, want at least 1", n)
	}
	if !strings.Contains(ds.logs.String(), "ALERT") {
		t.Errorf("no ALERT in the log:\n%s", ds.logs.String())
	}
}

// A deletion with genuine approvals whose executes_at (and scheduled_at)
// were moved earlier in the index still waits the full delay from the
// quorum the journal recorded.
func TestExecutorWaitsFullDelayWhenExecutesAtMovedEarlier(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 3000)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	d := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	asOwner(t, ds.pool, []string{"deletion_requests"}, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE deletion_requests SET scheduled_at = scheduled_at - $2::interval,
			executes_at = executes_at - $2::interval WHERE id = $1`, d.ID, delay)
		return err
	})
	for range 2 {
		if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 0 {
			t.Fatalf("RunDue right after the quorum = %+v, %v; want nothing executed", rep, err)
		}
	}
	if !ds.readsBack(t, h, b) {
		t.Fatal("chunk deleted before its delay")
	}
	if got, _ := ds.GetDeletion(ctx, d.ID); got.State != store.StateScheduled {
		t.Errorf("state = %s, want still scheduled (the genuine request waits, it is not refused)", got.State)
	}
	if n := ds.alarms(t); n != 1 {
		t.Errorf("integrity alarms = %v, want 1 (once, not at every run)", n)
	}
	ds.clk.Advance(delay - time.Minute)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 0 || !ds.readsBack(t, h, b) {
		t.Fatalf("RunDue a minute before the real delay = %+v, %v; want nothing executed", rep, err)
	}
	ds.clk.Advance(time.Minute)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue after the full delay = %+v, %v; want executed", rep, err)
	}
	if ds.readable(t, h) {
		t.Error("chunk still readable after execution")
	}
}

// A tombstone row naming live chunks, attached to a genuine execution:
// neither the executor nor reconcile removes their content.
func TestExecutorIgnoresForgedTombstone(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	packed, packedH := randomChunk(t, 3000)
	file, fileH := randomChunk(t, 200_000)
	doomed, doomedH := randomChunk(t, 3000)
	for _, b := range [][]byte{packed, file, doomed} {
		ds.mustPut(t, b)
	}
	ds.clk.Advance(31 * 24 * time.Hour)
	d := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{doomedH}})
	pc, fc := ds.mustStat(t, packedH), ds.mustStat(t, fileH)
	record := ds.packRecord(t, pc)
	ds.forgeTombstone(t, pc, d.ID)
	ds.forgeTombstone(t, fc, d.ID)

	ds.clk.Advance(delay)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue = %+v, %v; want the genuine deletion executed", rep, err)
	}
	if ds.readable(t, doomedH) {
		t.Error("the genuine target is still readable")
	}
	check := func(when string) {
		t.Helper()
		if !ds.readsBack(t, packedH, packed) || !ds.readsBack(t, fileH, file) {
			t.Errorf("%s: a live chunk named by a forged tombstone no longer reads back", when)
		}
		if got := ds.packRecord(t, pc); !bytes.Equal(got, record) {
			t.Errorf("%s: the packed chunk's record changed", when)
		}
	}
	check("after execution")
	if got, _ := ds.GetDeletion(ctx, d.ID); got.Report == nil || got.Report.BytesFreed != int64(len(doomed)) {
		t.Errorf("report %+v: want %d bytes freed (the forged tombstones freed nothing)", got.Report, len(doomed))
	}
	if _, err := ds.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	check("after reconcile")
}

// A whole deletion written into the index by SQL, with valid signatures
// of the real admins but no trace in the journal: refused.
func TestExecutorRefusesDeletionMissingFromJournal(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 3000)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	ds.forge(t, forgedDeletion{id: 2000, targets: chunksTargets(h), adminSet: 1, approvals: 2, delay: delay,
		requester: "admin-a", keys: ds.keys, approvers: []string{"admin-b", "admin-c"},
		scheduled: ds.clk.Now().Add(-delay - time.Hour)})
	rep, err := ds.RunDue(ctx)
	if err != nil || len(rep.Executed) != 0 {
		t.Errorf("RunDue = %+v, %v; want nothing executed", rep, err)
	}
	if !ds.readsBack(t, h, b) {
		t.Error("chunk deleted by a deletion the journal never saw")
	}
	got, err := ds.GetDeletion(ctx, 2000)
	if err != nil || got.State != store.StateRefused || got.Refusal == nil || !strings.Contains(*got.Refusal, "journal") {
		t.Errorf("forged deletion: %+v, %v; want refused, naming the journal", got, err)
	}
	if n := ds.alarms(t); n < 1 {
		t.Errorf("integrity alarms = %v, want at least 1", n)
	}
	if n := count(ds.auditActions(t), "deletion.refused"); n != 1 {
		t.Errorf("deletion.refused entries = %d, want 1", n)
	}
}

// Retention, a hold and a snapshot's retention undone in the index by the
// table owner: the journal still protects the chunks, so the executor
// keeps them, and says the index disagrees.
func TestExecutorKeepsWhatOnlyTheJournalProtects(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	held, heldH := randomChunk(t, 3000)
	kept, keptH := randomChunk(t, 3000)
	inSnap, inSnapH := randomChunk(t, 200_000) // a file
	doomed, doomedH := randomChunk(t, 3000)
	for _, b := range [][]byte{held, kept, inSnap, doomed} {
		ds.mustPut(t, b)
	}
	if _, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "case", Reason: "litigation", Chunks: []chunk.Hash{heldH}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Retain(ctx, "agent-1", []chunk.Hash{keptH}, epoch.AddDate(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	root, _ := manifest.Manifest{Chunks: []chunk.Hash{inSnapH}}.Marshal()
	ds.mustPut(t, root)
	if _, err := ds.CommitSnapshot(ctx, "agent-1", store.NewSnapshot{Source: "db01", Name: "daily", TakenAt: epoch,
		RetainUntil: epoch.AddDate(1, 0, 0), ManifestRoot: chunk.Sum(root)}); err != nil {
		t.Fatal(err)
	}
	ds.clk.Advance(31 * 24 * time.Hour)
	past := ds.clk.Now().Add(-time.Hour)
	asOwner(t, ds.pool, []string{"chunks", "snapshots", "holds", "hold_chunks"}, func(ctx context.Context, tx pgx.Tx) error {
		for _, q := range []string{
			"DELETE FROM hold_chunks WHERE $1::timestamptz IS NOT NULL",
			"UPDATE holds SET released_at = $1, released_by = 'mallory'",
			"UPDATE chunks SET retain_until = $1",
			"UPDATE snapshots SET retain_until = $1",
		} {
			if _, err := tx.Exec(ctx, q, past); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	d := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{heldH, keptH, inSnapH, doomedH}})
	ds.clk.Advance(delay)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue = %+v, %v; want executed", rep, err)
	}
	for _, c := range []struct {
		h    chunk.Hash
		b    []byte
		name string
	}{{heldH, held, "held"}, {keptH, kept, "retained"}, {inSnapH, inSnap, "in the retained snapshot"}} {
		if !ds.readsBack(t, c.h, c.b) {
			t.Errorf("the %s chunk was deleted on the index's word", c.name)
		}
	}
	if ds.readable(t, doomedH) {
		t.Error("the deletable chunk is still readable")
	}
	got, _ := ds.GetDeletion(ctx, d.ID)
	want := map[string]int64{"chunk:" + store.SkipJournal + store.SkipHeld: 1, "chunk:" + store.SkipJournal + store.SkipRetained: 1,
		"chunk:" + store.SkipJournal + store.SkipInRetainedSnapshot: 1}
	if got.Report == nil || got.Report.Deleted != 1 || !equalCounts(got.Report.Skipped, want) {
		t.Errorf("report %+v, want 1 deleted and skipped %v", got.Report, want)
	}
	if n := ds.alarms(t); n < 1 {
		t.Errorf("integrity alarms = %v, want at least 1", n)
	}
}

// Without the journal or the pinned genesis, nothing executes: the index
// alone is never enough.
func TestExecutorWithoutJournalExecutesNothing(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 3000)
	ds.mustPut(t, b)
	ds.clk.Advance(31 * 24 * time.Hour)
	d := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h}})
	ds.clk.Advance(delay)
	for _, edit := range []func(*store.Options){
		func(o *store.Options) { o.Journal = nil },
		func(o *store.Options) { o.Genesis = nil },
	} {
		opts := ds.Options()
		edit(&opts)
		opts.Packs = nil // the committer belongs to the first store
		other := store.New(ds.pool, ds.blobs, ds.clk, testLogger(), nil, opts)
		if rep, err := other.RunDue(ctx); err != nil || len(rep.Executed) != 0 || !ds.readsBack(t, h, b) {
			t.Fatalf("RunDue without journal or genesis = %+v, %v; want nothing executed", rep, err)
		}
	}
	if got, _ := ds.GetDeletion(ctx, d.ID); got.State != store.StateScheduled {
		t.Errorf("state %s, want still scheduled", got.State)
	}
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Errorf("RunDue with the journal = %+v, %v; want executed", rep, err)
	}
}
