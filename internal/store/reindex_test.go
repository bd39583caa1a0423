package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// indexTables are the tables a rebuild writes, as mustDumpIndex reads them.
var indexTables = []string{
	"chunks", "chunk_tombstones", "snapshots", "snapshot_chunks", "holds", "hold_chunks", "hold_snapshots",
	"deletion_requests", "deletion_approvals", "deletion_outcomes", "admin_set_versions", "admin_keys",
	"restic_repositories", "restic_files", "revoked_tokens", "audit_log", "audit_hashes", "audit_chunks",
	"audit_checkpoints", "packs_indexed", "retention_months", "retention_policy_versions",
}

// mustDumpIndex returns every row of the index's tables as JSON text,
// sorted: packs_indexed without its local time stamp, retention_months as
// per-month sums (each backend writes its own slot).
func mustDumpIndex(t testing.TB, pool *pgxpool.Pool) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, table := range indexTables {
		q := "SELECT (to_jsonb(t))::text FROM " + table + " t"
		switch table {
		case "packs_indexed":
			q = "SELECT (to_jsonb(t) - 'indexed_at')::text FROM packs_indexed t"
		case "retention_months":
			q = `SELECT jsonb_build_array(month, sum(chunks), sum(bytes))::text FROM retention_months
				GROUP BY month HAVING sum(chunks) <> 0 OR sum(bytes) <> 0`
		}
		rows, _ := pool.Query(context.Background(), q+" ORDER BY 1")
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		out[table] = list
	}
	return out
}

// diffRows returns the rows only in a and only in b.
func diffRows(a, b []string) (onlyA, onlyB []string) {
	inB := map[string]bool{}
	for _, r := range b {
		inB[r] = true
	}
	inA := map[string]bool{}
	for _, r := range a {
		inA[r] = true
		if !inB[r] {
			onlyA = append(onlyA, r)
		}
	}
	for _, r := range b {
		if !inA[r] {
			onlyB = append(onlyB, r)
		}
	}
	return onlyA, onlyB
}

// rebuildStore is a store over the data directory of ds and the database
// at dbURL, built as `vault reindex` builds it: the same journal, blobs and
// packs (read-only), a pool of its own.
func rebuildStore(t testing.TB, ds *deletionStore, dbURL string) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	// Reindex needs the schema owner: it disables the triggers while it
	// rebuilds.
	pool, err := pgxpool.New(context.Background(), pgtest.OwnerURL(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	packs, err := pack.OpenReadOnly(filepath.Join(ds.dir, "packs"))
	if err != nil {
		t.Fatal(err)
	}
	o := ds.Options()
	st := store.New(pool, ds.blobs, clock.NewFake(ds.clk.Now()), slog.New(slog.DiscardHandler), nil, store.Options{
		MaxChunkSize: o.MaxChunkSize, Packs: packs, PackThreshold: o.PackThreshold, VaultID: o.VaultID,
		Journal: o.Journal, Deletion: o.Deletion, MinRetention: o.MinRetention,
	})
	t.Cleanup(st.Close)
	return st, pool
}

// vaultHistory is what buildHistory made.
type vaultHistory struct {
	live      map[chunk.Hash][]byte // chunks that must read back
	removed   []chunk.Hash          // chunks an executed deletion removed
	oldID     int64                 // the snapshot an executed deletion deleted
	keepID    int64                 // a retained snapshot
	heldChunk chunk.Hash            // a chunk under an active hold
	retention map[chunk.Hash]time.Time
}

// buildHistory gives ds a history that touches every table: chunks in
// files and packs, snapshots with manifest trees and extended retention,
// holds of each kind, deletions executed (chunks, expired, hold release,
// admin-set change, retention-policy change), cancelled, expired and pending, a restic repository
// with its files and retention, and a revoked token.
func buildHistory(t testing.TB, ds *deletionStore) vaultHistory {
	t.Helper()
	ctx := context.Background()
	h := vaultHistory{live: map[chunk.Hash][]byte{}, retention: map[chunk.Hash]time.Time{}}
	put := func(n int) chunk.Hash {
		b, x := randomChunk(t, n)
		ds.mustPut(t, b)
		h.live[x] = b
		return x
	}
	putManifest := func(m manifest.Manifest) chunk.Hash {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ds.mustPut(t, b)
		x := chunk.Sum(b)
		h.live[x] = b
		return x
	}
	commit := func(source, name string, until time.Time, root chunk.Hash) int64 {
		res, err := ds.CommitSnapshot(ctx, "agent-1", store.NewSnapshot{Source: source, Name: name, TakenAt: ds.clk.Now(),
			RetainUntil: until, ManifestRoot: root, Tags: []string{"nightly"}})
		if err != nil {
			t.Fatalf("CommitSnapshot %s/%s: %v", source, name, err)
		}
		return res.Snapshot.ID
	}
	now := ds.clk.Now()
	// Small chunks go to packs, large ones (over 64 KiB) to files.
	shared, big, oldOnly := put(700), put(200<<10), put(900)
	sub := putManifest(manifest.Manifest{Chunks: []chunk.Hash{shared, big}})
	oldRoot := putManifest(manifest.Manifest{Chunks: []chunk.Hash{oldOnly}, Children: []chunk.Hash{sub}})
	newRoot := putManifest(manifest.Manifest{Chunks: []chunk.Hash{put(300)}, Children: []chunk.Hash{sub}})
	h.oldID = commit("db01", "old", now.AddDate(0, 2, 0), oldRoot)
	h.keepID = commit("db01", "new", now.AddDate(1, 0, 0), newRoot)
	webID := commit("web", "old", now.AddDate(0, 2, 0), putManifest(manifest.Manifest{Chunks: []chunk.Hash{put(400), put(100 << 10)}}))
	mailID := commit("mail", "m1", now.AddDate(0, 3, 0), putManifest(manifest.Manifest{Chunks: []chunk.Hash{put(500)}}))
	_ = mailID
	if _, err := ds.ExtendSnapshot(ctx, "admin-a", h.keepID, now.AddDate(2, 0, 0)); err != nil {
		t.Fatal(err)
	}
	retained := put(600)
	if _, err := ds.Retain(ctx, "agent-1", []chunk.Hash{retained}, now.AddDate(0, 8, 0)); err != nil {
		t.Fatal(err)
	}
	h.heldChunk = put(650)
	gone := put(700)
	goneBig := put(80 << 10)
	h.removed = append(h.removed, gone, goneBig)
	holdWeb, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "web audit", Reason: "tax", Snapshots: []int64{webID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.PlaceHold(ctx, "admin-b", store.NewHold{Name: "evidence", Reason: "case 7", Chunks: []chunk.Hash{h.heldChunk}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.PlaceHold(ctx, "admin-c", store.NewHold{Name: "mail", Reason: "litigation", Source: "mail"}); err != nil {
		t.Fatal(err)
	}

	ds.clk.Advance(90 * 24 * time.Hour) // past the minimum retention and the old snapshots'
	// Chunks: two removed, one held, one retained, one unknown.
	_, unknown := randomChunk(t, 10)
	d1 := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteChunks,
		Chunks: []chunk.Hash{gone, goneBig, h.heldChunk, retained, unknown}})
	ds.clk.Advance(delay)
	mustRunDue(t, ds, d1.ID)
	for _, x := range h.removed {
		delete(h.live, x)
	}
	// Everything expired: the old db01 snapshot and its own chunks go; the
	// held web snapshot and the mail source stay.
	d2 := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteExpired, Before: ds.clk.Now()})
	ds.clk.Advance(delay)
	mustRunDue(t, ds, d2.ID)
	for _, x := range []chunk.Hash{oldOnly, oldRoot} {
		delete(h.live, x)
		h.removed = append(h.removed, x)
	}
	// The web hold is released.
	d3 := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteHoldRelease, Hold: holdWeb.ID})
	ds.clk.Advance(delay)
	mustRunDue(t, ds, d3.ID)
	// admin-e joins (the governance quorum and delay).
	_, keyE, err := approval.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	d4 := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeleteAdminSet,
		Change: &store.AdminChange{Op: store.AdminAdd, Name: "admin-e", Key: keyE}})
	ds.clk.Advance(7 * 24 * time.Hour)
	mustRunDue(t, ds, d4.ID)
	// A retention policy: created, lengthened at once, shortened by its
	// governed request.
	policy := store.RetentionPolicy{Name: "archive", Pattern: "nothing-*", DailyDays: 14, YearlyYears: 1}
	ds.mustSetPolicy(t, policy)
	policy.YearlyYears = 2
	ds.mustSetPolicy(t, policy)
	policy.DailyDays = 7
	d5 := scheduledFor(t, ds, store.DeletionTargets{Kind: store.DeletePolicy, Policy: &policy})
	ds.clk.Advance(7 * 24 * time.Hour)
	mustRunDue(t, ds, d5.ID)
	// Cancelled, expired and pending requests.
	c := ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteSnapshots, Snapshots: []int64{h.keepID}})
	ds.mustApprove(t, "admin-b", c.ID)
	if _, err := ds.cancel("admin-d", c.ID, "no: that is the only copy"); err != nil {
		t.Fatal(err)
	}
	ds.mustRequest(t, "admin-b", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: []chunk.Hash{retained}})
	ds.clk.Advance(8 * 24 * time.Hour)
	if _, err := ds.RunDue(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.RequestDeletion(ctx, "admin-c", store.DeletionTargets{Kind: store.DeleteSnapshots, Snapshots: []int64{webID}}, "pending"); err != nil {
		t.Fatal(err)
	}

	// restic: a repository with its files and retention.
	ds.mustRepo(t, "r")
	for _, f := range []struct {
		typ  string
		size int
	}{{store.ResticData, 1000}, {store.ResticData, 90 << 10}, {store.ResticIndex, 300}, {store.ResticKeys, 200}} {
		b, name := resticContent(t, f.size)
		ds.mustPutRestic(t, "r", f.typ, name, b)
		h.live[chunk.Sum(b)] = b
	}
	cfg := []byte("restic config")
	ds.mustPutRestic(t, "r", store.ResticConfig, "config", cfg)
	h.live[chunk.Sum(cfg)] = cfg
	lock, lockName := resticContent(t, 120)
	ds.mustPutRestic(t, "r", store.ResticLocks, lockName, lock)
	h.live[chunk.Sum(lock)] = lock
	if err := ds.DeleteResticFile(ctx, "r", store.ResticLocks, lockName); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ds.SetResticRetention(ctx, "admin-a", "r", 400*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	// A snapshot file a day later retains the whole repository a day more.
	ds.clk.Advance(24 * time.Hour)
	snap, snapName := resticContent(t, 250)
	ds.mustPutRestic(t, "r", store.ResticSnapshots, snapName, snap)
	h.live[chunk.Sum(snap)] = snap
	if err := ds.RevokeToken(ctx, "admin-a", "jti-stolen", "laptop stolen", store.RevokeOptions{Unregistered: true}); err != nil {
		t.Fatal(err)
	}
	for x := range h.live {
		c, err := ds.Stat(ctx, x)
		if err != nil {
			t.Fatalf("chunk %s of the history: %v", x, err)
		}
		h.retention[x] = c.RetainUntil
	}
	return h
}

func mustRunDue(t testing.TB, ds *deletionStore, id int64) {
	t.Helper()
	rep, err := ds.RunDue(context.Background())
	if err != nil || !slices.Contains(rep.Executed, id) {
		t.Fatalf("RunDue = %+v, %v; want deletion %d executed", rep, err, id)
	}
}

// The database is lost: a new, empty one is rebuilt from the data
// directory alone, and holds what the old one held.
func TestReindexAfterDatabaseDropped(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	hist := buildHistory(t, ds)
	before := mustDumpIndex(t, ds.pool)
	rootBefore := mustAuditRoot(t, ds.Store)

	st, pool := rebuildStore(t, ds, pgtest.NewDatabase(t))
	rep, err := st.Reindex(ctx, store.ReindexOptions{})
	if err != nil {
		t.Fatalf("Reindex: %v", err)
	}
	if rep.DivergenceCount != 0 || rep.DataLoss != 0 || rep.Adopted != 0 {
		t.Errorf("report: %d divergences %v, %d lost %v, %d adopted; want none",
			rep.DivergenceCount, rep.Divergences, rep.DataLoss, rep.DataLossList, rep.Adopted)
	}
	if rep.JournalEntries != int64(len(before["audit_log"])) || rep.DatabaseEntries != 0 {
		t.Errorf("report: %d journal entries, %d in the database; want %d and 0", rep.JournalEntries, rep.DatabaseEntries, len(before["audit_log"]))
	}
	if root := mustAuditRootAt(t, st, rep.JournalEntries); root != rootBefore {
		t.Errorf("audit root after the rebuild %s, want %s", root, rootBefore)
	}
	after := mustDumpIndex(t, pool)
	if n := len(after["audit_log"]) - len(before["audit_log"]); n != 1 {
		t.Errorf("the rebuild appended %d audit entries, want its own", n)
	}
	for _, table := range indexTables {
		onlyBefore, onlyAfter := diffRows(before[table], after[table])
		onlyAfter = withoutRebuildEntry(table, onlyAfter)
		switch table {
		case "packs_indexed":
			// Every pack is scanned and marked, the open one too.
			onlyAfter = nil
		case "snapshot_chunks":
			// The deleted snapshot's own manifests are gone: its
			// references cannot all be walked again.
			onlyBefore = slices.DeleteFunc(onlyBefore, func(r string) bool {
				var ref struct {
					ID int64 `json:"snapshot_id"`
				}
				return json.Unmarshal([]byte(r), &ref) == nil && ref.ID == hist.oldID
			})
		}
		if len(onlyBefore)+len(onlyAfter) > 0 {
			t.Errorf("%s differs after the rebuild:\nonly before: %s\nonly after:  %s", table,
				strings.Join(onlyBefore[:min(len(onlyBefore), 5)], "\n  "), strings.Join(onlyAfter[:min(len(onlyAfter), 5)], "\n  "))
		}
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, fmt.Sprintf("snapshot %d", hist.oldID)) }) {
		t.Errorf("notes %v, want one about snapshot %d's references", rep.Notes, hist.oldID)
	}
	// Every chunk reads back, with its retention; removed ones stay gone.
	for x, b := range hist.live {
		rc, c, err := st.OpenChunk(ctx, x)
		if err != nil {
			t.Errorf("OpenChunk(%s) after the rebuild: %v", x, err)
			continue
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, b) || !c.RetainUntil.Equal(hist.retention[x]) {
			t.Errorf("chunk %s after the rebuild: equal %v, retained until %v, want %v", x, bytes.Equal(got, b), c.RetainUntil, hist.retention[x])
		}
	}
	for _, x := range hist.removed {
		if _, err := st.Stat(ctx, x); err == nil {
			t.Errorf("removed chunk %s is indexed again", x)
		}
	}
	// The rebuilt index is live: triggers enabled, sequences past the
	// journal's ids.
	if _, err := pool.Exec(ctx, "UPDATE chunks SET retain_until = retain_until - interval '1 day' WHERE hash = $1", hist.heldChunk[:]); err == nil ||
		!strings.Contains(err.Error(), "WV001") {
		t.Errorf("shortening retention after the rebuild: %v, want the trigger's WV001", err)
	}
	b, x := randomChunk(t, 100<<10) // a file: the rebuilding store opened the packs read-only
	if _, err := st.PutChunk(ctx, "agent-1", x, bytes.NewReader(b), time.Time{}); err != nil {
		t.Errorf("PutChunk after the rebuild: %v", err)
	}
	// The next request id is past the journal's (a request made now would
	// need the database's clock to follow the test's, which a rebuilt
	// database does not).
	var next int64
	if err := pool.QueryRow(ctx, "SELECT nextval(pg_get_serial_sequence('deletion_requests', 'id'))").Scan(&next); err != nil ||
		next <= int64(len(before["deletion_requests"])) {
		t.Errorf("next deletion request id after the rebuild: %d, %v; want an id past the journal's", next, err)
	}
	// A second rebuild, over the now existing index, finds it whole.
	pool.Reset()
	again, err := st.Reindex(ctx, store.ReindexOptions{})
	if err != nil || again.Changed() || again.DivergenceCount > 0 || again.DatabaseEntries != again.JournalEntries {
		t.Errorf("second rebuild: %v; changed %v %+v, divergences %v", err, again.Changed(), again.Tables, again.Divergences)
	}
}

// mustAuditRoot returns the size and root of st's audit log.
func mustAuditRoot(t testing.TB, st *store.Store) string {
	t.Helper()
	n, err := st.AuditTreeSize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return mustAuditRootAt(t, st, n)
}

// mustAuditRootAt returns the root of the first n entries of st's log.
func mustAuditRootAt(t testing.TB, st *store.Store, n int64) string {
	t.Helper()
	root, err := st.AuditTreeHash(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%s", n, root)
}

// withoutRebuildEntry drops, from rows only after a rebuild, what its own
// audit entry added: the index.rebuild entry and its tree hashes.
func withoutRebuildEntry(table string, onlyAfter []string) []string {
	switch table {
	case "audit_hashes":
		return nil // the old hashes are compared by onlyBefore
	case "audit_log":
		return slices.DeleteFunc(onlyAfter, func(r string) bool { return strings.Contains(r, `"action": "index.rebuild"`) })
	}
	return onlyAfter
}

// superuserExec runs sql on the database at dbURL as a PostgreSQL
// superuser. It is the tests' one way to get one: VAULT_TEST_SUPERUSER_URL
// if set (CI with a managed server), else the cluster that
// scripts/devdb.sh runs (found through VAULT_DEVDB_DIR or a .devdb
// directory above the working directory), over its socket as the cluster's
// owner (postgres when root). Without either the test fails, saying so.
func superuserExec(t testing.TB, dbURL, sql string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if u := os.Getenv("VAULT_TEST_SUPERUSER_URL"); u != "" {
		su, err := pgx.ParseConfig(u)
		if err != nil {
			t.Fatalf("VAULT_TEST_SUPERUSER_URL: %v", err)
		}
		su.Database = cfg.Database
		c, err := pgx.ConnectConfig(ctx, su)
		if err != nil {
			t.Fatalf("connect as superuser: %v", err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatalf("as superuser: %s: %v", sql, err)
		}
		return
	}
	state := os.Getenv("VAULT_DEVDB_DIR")
	if state == "" {
		wd, _ := os.Getwd()
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, ".devdb", "datadir")); err == nil {
				state = filepath.Join(d, ".devdb")
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if state == "" {
		t.Fatal("no PostgreSQL superuser for this test: set VAULT_TEST_SUPERUSER_URL, or run the dev cluster " +
			"(scripts/devdb.sh, found through VAULT_DEVDB_DIR or .devdb above the working directory)")
	}
	datadir, err := os.ReadFile(filepath.Join(state, "datadir"))
	if err != nil {
		t.Fatal(err)
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql")
		if len(found) == 0 {
			t.Fatal("no psql to reach the dev cluster as its superuser")
		}
		psql = found[len(found)-1]
	}
	args := []string{psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", filepath.Join(strings.TrimSpace(string(datadir)), "sock"),
		"-p", fmt.Sprint(cfg.Port), "-d", cfg.Database, "-c", sql}
	if os.Getuid() == 0 {
		args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
	}
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("as superuser: %s: %v\n%s", sql, err, out)
	}
}

// mustReadDataDir returns every content file of a data directory (blobs
// and packs) with its bytes.
func mustReadDataDir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, sub := range []string{"blake3", "packs"} {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			out[p] = b
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A superuser wipes the index (the attack of issue 13 with the strongest
// database credential): chunk rows, snapshots, holds and their release, a
// forged execution with tombstones for live chunks. The content on disk
// does not change, and a rebuild restores the index with its retention.
func TestReindexRepairsSuperuserWipe(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	hist := buildHistory(t, ds)
	// A revocation made by `vault token revoke`, straight into the
	// database: the server journals it when it hears of it.
	if _, err := ds.pool.Exec(ctx, `INSERT INTO revoked_tokens (jti, revoked_at, revoked_by, reason)
		VALUES ('jti-cli', $1, 'cli:root', 'lost')`, ds.clk.Now()); err != nil {
		t.Fatal(err)
	}
	before := mustDumpIndex(t, ds.pool)
	rootBefore := mustAuditRoot(t, ds.Store)
	files := mustReadDataDir(t, ds.dir)
	dbURL := ds.pool.Config().ConnString()
	ds.pool.Close() // no session of the old store stays on the database
	keep := int64(len(before["audit_log"]) - 5)

	var live []string
	for x := range hist.live {
		live = append(live, `'\x`+x.String()+`'`)
	}
	superuserExec(t, dbURL, `SET session_replication_role = replica;
		INSERT INTO deletion_requests (id, kind, targets, digest, reason, requested_by, requested_at, approvals_required, delay, expires_at, state, executed_at)
		OVERRIDING SYSTEM VALUE VALUES (999, 'chunks', 'x', decode(repeat('00', 32), 'hex'), 'wipe', 'mallory', now(), 1, '1s', now() + interval '1 day', 'executed', now());
		INSERT INTO chunk_tombstones (hash, size, stored_at, uploaded_by, deleted_at, deletion_id)
		SELECT hash, size, stored_at, uploaded_by, now(), 999 FROM chunks WHERE hash IN (`+strings.Join(live, ",")+`);
		DELETE FROM hold_chunks; DELETE FROM hold_snapshots; DELETE FROM holds;
		DELETE FROM deletion_outcomes WHERE deletion_id IN (SELECT id FROM deletion_requests WHERE kind = 'hold_release');
		DELETE FROM deletion_approvals WHERE deletion_id IN (SELECT id FROM deletion_requests WHERE kind = 'hold_release');
		DELETE FROM deletion_requests WHERE kind = 'hold_release';
		DELETE FROM snapshot_chunks; DELETE FROM snapshots; DELETE FROM chunks; DELETE FROM packs_indexed;
		UPDATE restic_repositories SET min_retention = '1 second';
		INSERT INTO admin_set_versions (version, approvals_required, delay, governance_approvals, governance_delay, created_at, request_id)
		VALUES (3, 1, '1 second', 2, '1 second', now(), 999);
		INSERT INTO admin_keys (version, name, key_kind, public_key, added_at) VALUES (3, 'mallory', 'raw', decode(repeat('11', 32), 'hex'), now());
		DELETE FROM audit_log WHERE seq > `+fmt.Sprint(keep)+`;
		DELETE FROM audit_hashes WHERE idx >= `+fmt.Sprint(tlog.StoredHashCount(keep)))

	st, pool := rebuildStore(t, ds, dbURL)
	// A dry run says what it would repair, and changes nothing.
	// Force: the test's own clock keeper (pgtest.FollowClock, the owner's
	// pool) stays connected; no vault is.
	dry, err := st.Reindex(ctx, store.ReindexOptions{DryRun: true, Force: true})
	if err != nil {
		t.Fatalf("Reindex dry run: %v", err)
	}
	if n := mustCount(t, pool, "chunks"); n != 0 || !dry.Changed() {
		t.Fatalf("dry run: %d chunk rows afterwards, changed %v; want 0 and a report of changes", n, dry.Changed())
	}
	rep, err := st.Reindex(ctx, store.ReindexOptions{Force: true})
	if err != nil {
		t.Fatalf("Reindex: %v", err)
	}
	if rep.DataLoss != 0 || rep.Adopted != 0 {
		t.Errorf("report: %d lost %v, %d adopted; want none", rep.DataLoss, rep.DataLossList, rep.Adopted)
	}
	change := map[string]store.TableChange{}
	for _, tc := range rep.Tables {
		change[tc.Table] = tc
	}
	if c := change["chunks"]; c.Added != int64(len(before["chunks"])) || c.Removed != 0 {
		t.Errorf("chunks change %+v, want %d added", c, len(before["chunks"]))
	}
	if c := change["chunk_tombstones"]; c.Removed != int64(len(hist.live)) {
		t.Errorf("chunk_tombstones change %+v, want the %d forged tombstones removed", c, len(hist.live))
	}
	if c := change["deletion_requests"]; c.Removed != 1 || c.Added != 1 || !slices.Contains(c.Examples, "-999") {
		t.Errorf("deletion_requests change %+v, want the forged request removed and the release restored", c)
	}
	if c := change["restic_repositories"]; c.Changed != 1 {
		t.Errorf("restic_repositories change %+v, want its retention restored", c)
	}
	if c := change["admin_set_versions"]; c.Removed != 1 || !slices.Contains(c.Examples, "-3") {
		t.Errorf("admin_set_versions change %+v, want the forged version 3 removed", c)
	}
	if c := change["audit_log"]; c.Added != 5 || c.Removed+c.Changed != 0 {
		t.Errorf("audit_log change %+v, want the 5 truncated entries back", c)
	}
	if root := mustAuditRootAt(t, st, rep.JournalEntries); root != rootBefore {
		t.Errorf("audit root after the rebuild %s, want %s", root, rootBefore)
	}
	if rep.DivergenceCount == 0 {
		t.Error("no divergence reported for the forged rows")
	}
	// The rebuild is on the record, with what it found.
	var action, payload string
	if err := pool.QueryRow(ctx, "SELECT action, payload FROM audit_log ORDER BY seq DESC LIMIT 1").Scan(&action, &payload); err != nil ||
		action != "index.rebuild" || !strings.Contains(payload, fmt.Sprintf(`"divergences":%d`, rep.DivergenceCount)) {
		t.Errorf("last audit entry %s %s (%v), want index.rebuild with %d divergences", action, payload, err, rep.DivergenceCount)
	}
	if dry.DivergenceCount != rep.DivergenceCount || fmt.Sprint(dry.Tables) != fmt.Sprint(rep.Tables) {
		t.Errorf("the dry run reported %v (%d divergences), the rebuild %v (%d)", dry.Tables, dry.DivergenceCount, rep.Tables, rep.DivergenceCount)
	}
	after := mustDumpIndex(t, pool)
	for _, table := range indexTables {
		if table == "packs_indexed" || table == "snapshot_chunks" {
			continue // as in TestReindexAfterDatabaseDropped
		}
		onlyBefore, onlyAfter := diffRows(before[table], after[table])
		if onlyAfter = withoutRebuildEntry(table, onlyAfter); len(onlyBefore)+len(onlyAfter) > 0 {
			t.Errorf("%s differs from before the wipe:\nonly before: %v\nonly after: %v", table, onlyBefore, onlyAfter)
		}
	}
	for x, b := range hist.live {
		rc, c, err := st.OpenChunk(ctx, x)
		if err != nil {
			t.Errorf("OpenChunk(%s) after the rebuild: %v", x, err)
			continue
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, b) || !c.RetainUntil.Equal(hist.retention[x]) {
			t.Errorf("chunk %s: equal %v, retained until %v, want %v", x, bytes.Equal(got, b), c.RetainUntil, hist.retention[x])
		}
	}
	if _, err := st.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for p, b := range files {
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s changed on disk (%v)", p, err)
		}
	}
}

func mustCount(t testing.TB, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Content the journal does not hold, and journaled content that is gone
// or damaged: the first is indexed as reconcile would, the second is data
// loss, reported, with its row kept.
func TestReindexContentCheck(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	lostB, lost := randomChunk(t, 100<<10) // a file
	ds.mustPut(t, lostB)
	damagedB, damaged := randomChunk(t, 500) // a pack record
	res := ds.mustPut(t, damagedB)
	okB, ok := randomChunk(t, 700)
	ds.mustPut(t, okB)
	// A file whose row never committed and whose commit was never
	// journaled (written behind the vault's back, or by a vault without
	// the journal).
	strayB, stray := randomChunk(t, 90<<10)
	if _, err := ds.blobs.Put(ctx, stray, bytes.NewReader(strayB)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(blobPath(ds.dir, lost)); err != nil {
		t.Fatal(err)
	}
	packPath := filepath.Join(ds.dir, "packs", fmt.Sprintf("%016x.pack", res.Chunk.PackID))
	mustFlipByte(t, packPath, res.Chunk.PackOffset+pack.HeaderSize+10)

	st, pool := rebuildStore(t, ds, pgtest.NewDatabase(t))
	// A dry run reports the same, and writes neither the database nor the
	// journal.
	head := st.Options().Journal.Head()
	dry, err := st.Reindex(ctx, store.ReindexOptions{DryRun: true})
	if err != nil || dry.Adopted != 1 || dry.DataLoss != 2 {
		t.Fatalf("dry run: adopted %d, lost %d, %v; want 1 and 2", dry.Adopted, dry.DataLoss, err)
	}
	if n := mustCount(t, pool, "audit_log"); n != 0 || st.Options().Journal.Head() != head {
		t.Fatalf("dry run wrote %d audit entries, journal head %d (was %d)", n, st.Options().Journal.Head(), head)
	}
	rep, err := st.Reindex(ctx, store.ReindexOptions{})
	if err != nil {
		t.Fatalf("Reindex: %v", err)
	}
	if got := st.Options().Journal.Head(); got != head+2 {
		t.Errorf("journal head after the rebuild %d, want %d: the adoption's chunk.commit and the rebuild's entry", got, head+2)
	}
	problems := map[string]string{}
	for _, p := range rep.DataLossList {
		problems[p.Hash] = p.Problem
	}
	if rep.DataLoss != 2 || !strings.Contains(problems[lost.String()], "missing") || !strings.Contains(problems[damaged.String()], "damaged") {
		t.Errorf("data loss %d %v, want %s missing and %s damaged", rep.DataLoss, rep.DataLossList, lost, damaged)
	}
	if rep.Adopted != 1 || !slices.Contains(rep.AdoptedList, stray.String()) {
		t.Errorf("adopted %d %v, want %s", rep.Adopted, rep.AdoptedList, stray)
	}
	for _, x := range []chunk.Hash{lost, damaged, ok} {
		if _, err := st.Stat(ctx, x); err != nil {
			t.Errorf("journaled chunk %s has no row after the rebuild: %v", x, err)
		}
	}
	if _, _, err := st.OpenChunk(ctx, lost); err == nil {
		t.Error("a lost chunk reads back")
	}
	c, err := st.Stat(ctx, stray)
	if err != nil || c.UploadedBy != "reconcile" || !c.RetainUntil.Equal(ds.clk.Now().Add(store.DefaultMinRetention)) {
		t.Errorf("adopted chunk %+v, %v; want uploader reconcile and the minimum retention", c, err)
	}
	// The adoption is journaled: the journal and the database agree, and
	// a second rebuild finds nothing to adopt.
	if jr, err := st.CheckJournal(ctx, false); err != nil || jr.JournalEntries != jr.DatabaseEntries {
		t.Errorf("CheckJournal after the rebuild: %+v, %v", jr, err)
	}
	pool.Reset()
	again, err := st.Reindex(ctx, store.ReindexOptions{})
	if err != nil || again.Adopted != 0 || again.DataLoss != 2 || again.Changed() {
		t.Errorf("second rebuild: adopted %d, lost %d, changed %v, err %v; want 0, 2, false", again.Adopted, again.DataLoss, again.Changed(), err)
	}
}

func mustFlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Reindex refuses to run under a serving vault, or over a database whose
// log has nothing in common with the journal, unless forced; and a role
// that does not own the tables cannot run it.
func TestReindexRefusals(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	ds.mustPut(t, []byte("one chunk"))
	dbURL := ds.pool.Config().ConnString()
	st, stPool := rebuildStore(t, ds, dbURL)
	if _, err := st.Reindex(ctx, store.ReindexOptions{}); err == nil || !strings.Contains(err.Error(), "other sessions") {
		t.Errorf("Reindex while the store's pool is connected: %v, want a refusal naming other sessions", err)
	}
	// Over a healthy index, a rebuild changes nothing but marking the
	// open pack indexed, and finds nothing to report.
	rep, err := st.Reindex(ctx, store.ReindexOptions{Force: true})
	if err != nil {
		t.Fatalf("forced Reindex: %v", err)
	}
	for _, tc := range rep.Tables {
		if n := tc.Added + tc.Removed + tc.Changed; n > 0 && (tc.Table != "packs_indexed" || tc.Added != n) {
			t.Errorf("rebuild of a healthy index changed %+v", tc)
		}
	}
	if rep.DivergenceCount+rep.NoteCount > 0 || rep.DataLoss > 0 {
		t.Errorf("rebuild of a healthy index: divergences %v, notes %v, data loss %v", rep.Divergences, rep.Notes, rep.DataLossList)
	}
	stPool.Close()

	// Another vault's journal over this database.
	other := newDeletionStore(t)
	other.mustPut(t, []byte("another vault"))
	ost, ostPool := rebuildStore(t, other, dbURL)
	ds.pool.Close()
	// The test's clock keeper (pgtest.FollowClock) is the last other
	// session: end it, as an operator stops every vault first.
	if _, err := ostPool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`); err != nil {
		t.Fatal(err)
	}
	if _, err := ost.Reindex(ctx, store.ReindexOptions{}); err == nil || !strings.Contains(err.Error(), "first entry") {
		t.Errorf("Reindex with another vault's journal: %v, want a refusal", err)
	}
	if _, err := ost.Reindex(ctx, store.ReindexOptions{DryRun: true, Force: true}); err != nil {
		t.Errorf("forced dry run with another vault's journal: %v", err)
	}
}

// blobPath is where the disk store keeps a chunk that is not packed.
func blobPath(dir string, h chunk.Hash) string {
	s := h.String()
	return filepath.Join(dir, "blake3", s[0:2], s[2:4], s)
}
