package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/agent/agenttest"
	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// indexTables are the tables vault reindex rebuilds.
var indexTables = []string{
	"chunks", "chunk_tombstones", "snapshots", "snapshot_chunks", "holds", "hold_chunks", "hold_snapshots",
	"deletion_requests", "deletion_approvals", "deletion_outcomes", "admin_set_versions", "admin_keys",
	"restic_repositories", "restic_files", "revoked_tokens", "audit_log", "audit_hashes", "audit_chunks",
	"packs_indexed", "retention_months",
}

// mustDumpIndex returns every row of the index's tables as sorted JSON
// text: packs_indexed without its local time stamp, retention_months as
// per-month sums.
func mustDumpIndex(t testing.TB, dbURL string) map[string][]string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
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
		rows, _ := c.Query(ctx, q+" ORDER BY 1")
		if out[table], err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
	}
	return out
}

// mustCLI runs the CLI in process and fails the test on an error.
func mustCLI(t testing.TB, env map[string]string, args ...string) string {
	t.Helper()
	r := runAgentCLI(t, env, nil, nil, args...)
	if r.err != nil {
		t.Fatalf("vault %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// Acceptance 2 of issue 13: the database is dropped; a new, empty one is
// rebuilt with `vault reindex` from the data directory alone; `vault
// serve` on it serves every chunk and snapshot with its retention, holds
// and deletion history, `vault restore` is byte-identical, and an
// auditor's state from before the drop still verifies.
func TestReindexAfterDatabaseDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := mustBuildVault(t)

	// A vault with three admins, built as serve builds it but with a fake
	// clock, so that retention and deletion delays pass without waiting.
	keys := t.TempDir()
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		mustCLI(t, nil, "admin", "keygen", "--out", filepath.Join(keys, name+".key"))
	}
	adminKey := func(name string) []string { return []string{"--key", filepath.Join(keys, name+".key"), "--yes"} }
	dir := mustInitVault(t, "--admin", "alice="+filepath.Join(keys, "alice.key.pub"),
		"--admin", "bob="+filepath.Join(keys, "bob.key.pub"), "--admin", "carol="+filepath.Join(keys, "carol.key.pub"))
	v, err := config.ReadVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	db1 := pgtest.NewDatabase(t)
	pool1, err := pgxpool.New(ctx, db1)
	if err != nil {
		t.Fatal(err)
	}
	defer pool1.Close()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	pgtest.FollowClock(t, pool1, clk) // the database's clock moves with the test's
	log := slog.New(slog.DiscardHandler)
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := pack.Open(filepath.Join(dir, "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	jnl, err := journal.Open(filepath.Join(dir, config.JournalDir))
	if err != nil {
		t.Fatal(err)
	}
	genesis, _, err := readAdmins(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool1, blobs, clk, log, nil, store.Options{Packs: packs, PackThreshold: store.DefaultPackThreshold,
		VaultID: v.ID, Journal: jnl, Genesis: &genesis,
		DatabaseTime: func(context.Context) (time.Time, error) { return clk.Now(), nil }})
	if err := seedAdmins(ctx, st, dir, log); err != nil {
		t.Fatal(err)
	}
	ckpt, err := loadCheckpointKey(dir, v.ID, log)
	if err != nil {
		t.Fatal(err)
	}
	signKey, err := auth.ReadKeyFile(v.SigningKeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.NewHandler(api.Options{Store: st, Log: log, CheckpointKey: ckpt.vkey,
		Verifier: auth.NewVerifier(signKey.Public().(ed25519.PublicKey), v.ID, st, clk)}))
	issuer := auth.NewIssuer(signKey, v.ID, clk)
	env := func(role auth.Role, subject string) map[string]string {
		tok, _, err := issueAll(issuer, role, subject, 90*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{"VAULT_URL": srv.URL, "VAULT_TOKEN": tok}
	}
	agentE, auditorE := env(auth.RoleAgent, "ws1-agent"), env(auth.RoleAuditor, "audrey")
	aliceE, bobE, carolE := env(auth.RoleAdmin, "alice"), env(auth.RoleAdmin, "bob"), env(auth.RoleAdmin, "carol")

	// Two backups of a tree that changes in between.
	src := newAcceptanceTree(t, 3<<20, 40)
	first := mustPushCLI(t, agentE, nil, "--source", "ws1", "--snapshot-name", "full-1", "--retain", "400d", src)
	agenttest.WriteRandomFile(t, filepath.Join(src, "docs", "added.bin"), 700<<10, 77, 0o644)
	second := mustPushCLI(t, agentE, nil, "--source", "ws1", "--snapshot-name", "full-2", "--retain", "90d", "--tag", "kind=daily", src)
	if _, err := st.ExtendSnapshot(ctx, "alice", second.Snapshot.ID, clk.Now().AddDate(0, 6, 0)); err != nil {
		t.Fatal(err)
	}
	// Loose chunks: one to delete, one under a hold, one retained longer.
	put := func(b []byte) chunk.Hash {
		h := chunk.Sum(b)
		if _, err := st.PutChunk(ctx, "ws1-agent", h, bytes.NewReader(b), time.Time{}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	doomed, held, kept := put([]byte("doomed")), put(bytes.Repeat([]byte("held "), 100<<10)), put([]byte("kept"))
	if _, err := st.Retain(ctx, "ws1-agent", []chunk.Hash{kept}, clk.Now().AddDate(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PlaceHold(ctx, "alice", store.NewHold{Name: "case 12", Reason: "litigation", Chunks: []chunk.Hash{held}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PlaceHold(ctx, "bob", store.NewHold{Name: "audit", Reason: "yearly audit", Snapshots: []int64{first.Snapshot.ID}}); err != nil {
		t.Fatal(err)
	}
	// restic: a repository with a few files and its own retention.
	if _, err := st.CreateResticRepository(ctx, "ws1-agent", "laptop"); err != nil {
		t.Fatal(err)
	}
	for typ, b := range map[string][]byte{store.ResticKeys: []byte("key file"), store.ResticData: bytes.Repeat([]byte("pack"), 80<<10),
		store.ResticIndex: []byte("index"), store.ResticSnapshots: []byte("snapshot")} {
		sum := sha256Hex(b)
		if _, _, err := st.PutResticFile(ctx, "ws1-agent", "laptop", typ, sum, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.SetResticRetention(ctx, "alice", "laptop", 120*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	// A token revoked by the server.
	stolen := strings.TrimSpace(mustCLI(t, nil, "token", "issue", "--data-dir", dir, "--database-url", db1, "--role", "reader", "--subject", "stolen", "--ttl", "24h", "--all-sources"))
	p, err := auth.NewVerifier(signKey.Public().(ed25519.PublicKey), v.ID, noRevocations{}, clock.Real{}).Verify(ctx, stolen)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeToken(ctx, "alice", p.JTI, "laptop stolen", store.RevokeOptions{}); err != nil {
		t.Fatal(err)
	}

	// A deletion with signed approvals, executed after the delay: the
	// doomed chunk goes, the held and the retained ones are skipped.
	clk.Advance(store.DefaultMinRetention + time.Hour)
	out := mustCLI(t, aliceE, append([]string{"admin", "deletions", "request", "--chunks",
		doomed.String() + "," + held.String() + "," + kept.String(), "--reason", "clean-up"}, adminKey("alice")...)...)
	if !strings.Contains(out, "State      requested") {
		t.Fatalf("request: %s", out)
	}
	mustCLI(t, bobE, append([]string{"admin", "deletions", "approve", "1"}, adminKey("bob")...)...)
	mustCLI(t, carolE, append([]string{"admin", "deletions", "approve", "1"}, adminKey("carol")...)...)
	clk.Advance(store.DefaultDeletionDelay)
	if out := mustCLI(t, bobE, "admin", "execute-due"); !strings.Contains(out, "executed: 1\n") {
		t.Fatalf("execute-due: %s", out)
	}
	// The admin set grows: dave joins, with the governance quorum and delay.
	mustCLI(t, aliceE, append([]string{"admin", "admins", "change", "--add", "dave=" + filepath.Join(keys, "dave.key.pub"),
		"--reason", "new on-call admin"}, adminKey("alice")...)...)
	mustCLI(t, bobE, append([]string{"admin", "deletions", "approve", "2"}, adminKey("bob")...)...)
	mustCLI(t, carolE, append([]string{"admin", "deletions", "approve", "2"}, adminKey("carol")...)...)
	clk.Advance(7*24*time.Hour + time.Hour)
	if out := mustCLI(t, bobE, "admin", "execute-due"); !strings.Contains(out, "executed: 2\n") {
		t.Fatalf("execute-due of the admin-set change: %s", out)
	}

	// The server signs a checkpoint; an auditor verifies and keeps it.
	if _, err := signCheckpoint(ctx, st, dir, ckpt); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "auditor")
	if out := mustCLI(t, auditorE, "audit", "verify", "--state", state, "--key", ckpt.vkey, "--check-chunks", "all"); !strings.Contains(out, "OK") {
		t.Fatalf("audit verify before the drop: %s", out)
	}
	before := mustDumpIndex(t, db1)
	srv.Close()
	st.Close()
	packs.Close()
	jnl.Close()
	pool1.Close()

	// The database is gone. A new one is rebuilt from the data directory.
	db2 := pgtest.NewDatabase(t)
	owner2 := pgtest.OwnerURL(t, db2) // reindex runs as the schema owner
	var dry store.ReindexReport
	if err := json.Unmarshal([]byte(mustCLI(t, nil, "reindex", "--data-dir", dir, "--database-url", owner2, "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || dry.JournalEntries != int64(len(before["audit_log"])) || len(mustDumpIndex(t, db2)["audit_log"]) != 0 {
		t.Errorf("dry run: %+v; the database has %d entries after it", dry, len(mustDumpIndex(t, db2)["audit_log"]))
	}
	out = mustCLI(t, map[string]string{"VAULT_OWNER_DATABASE_URL": owner2, "VAULT_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"},
		"reindex", "--data-dir", dir)
	for _, want := range []string{"rebuilt the index of " + dir, "0 lost, 0 adopted", "chunks"} {
		if !strings.Contains(out, want) {
			t.Errorf("vault reindex printed:\n%s\nwant it to contain %q", out, want)
		}
	}
	if strings.Contains(out, "DIVERGENCES") || strings.Contains(out, "DATA LOSS") {
		t.Errorf("vault reindex of a dropped database reported divergences or data loss:\n%s", out)
	}
	after := mustDumpIndex(t, db2)
	for _, table := range indexTables {
		onlyBefore, onlyAfter := diffRows(before[table], after[table])
		switch table {
		case "packs_indexed":
			onlyAfter = nil // every pack is scanned and marked, the open one too
		case "audit_hashes":
			onlyAfter = nil // the rebuild's own entry's; the old ones are compared by onlyBefore
		case "audit_log":
			// The rebuild's own entry.
			onlyAfter = slices.DeleteFunc(onlyAfter, func(r string) bool { return strings.Contains(r, `"action": "index.rebuild"`) })
		}
		if len(onlyBefore)+len(onlyAfter) > 0 {
			t.Errorf("%s differs after the rebuild:\nonly before: %v\nonly after:  %v", table,
				onlyBefore[:min(len(onlyBefore), 5)], onlyAfter[:min(len(onlyAfter), 5)])
		}
	}

	// vault serve on the rebuilt database.
	vs := mustStartVault(t, bin, "--data-dir", dir, "--database-url", db2, "--listen", "127.0.0.1:0")
	c := newTestClient(t)
	mustWaitReady(t, c, vs)
	issue := func(role, subject string) string {
		args := []string{"token", "issue", "--data-dir", dir, "--database-url", db2, "--role", role, "--subject", subject, "--ttl", "1h"}
		if auth.Scoped(auth.Role(role)) {
			args = append(args, "--all-sources")
		}
		return strings.TrimSpace(mustCLI(t, nil, args...))
	}
	reader := issue("reader", "restorer")
	var hashes []string
	for _, row := range before["chunks"] {
		var r struct {
			Hash string `json:"hash"`
		}
		if err := json.Unmarshal([]byte(row), &r); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, strings.TrimPrefix(r.Hash, `\x`))
	}
	for _, hx := range hashes {
		h, err := chunk.ParseHash(hx)
		if err != nil {
			t.Fatal(err)
		}
		if status, body := mustGetChunk(t, c, vs.url, reader, h); status != http.StatusOK || chunk.Sum(body) != h {
			t.Errorf("GET %s from the rebuilt vault: %d, content verifies %v", h, status, chunk.Sum(body) == h)
		}
	}
	if status, _ := mustGetChunk(t, c, vs.url, reader, doomed); status != http.StatusNotFound {
		t.Errorf("GET of the deleted chunk: %d, want 404", status)
	}
	if status, _ := mustGetChunk(t, c, vs.url, stolen, kept); status != http.StatusUnauthorized {
		t.Errorf("GET with the revoked token: %d, want 401", status)
	}
	readerE := map[string]string{"VAULT_URL": vs.url, "VAULT_TOKEN": reader}
	dst := filepath.Join(t.TempDir(), "restore")
	mustCLI(t, readerE, "restore", strconv.FormatInt(second.Snapshot.ID, 10), dst)
	agenttest.CompareTrees(t, src, filepath.Join(dst, "tree"))

	auditorE = map[string]string{"VAULT_URL": vs.url, "VAULT_TOKEN": issue("auditor", "audrey")}
	if out := mustCLI(t, auditorE, "audit", "verify", "--state", state, "--check-chunks", "all"); !strings.Contains(out, "OK") {
		t.Errorf("audit verify with the state from before the drop: %s", out)
	}
	out = mustCLI(t, auditorE, "snapshots", "list")
	for _, name := range []string{"full-1", "full-2"} {
		if !strings.Contains(out, name) {
			t.Errorf("snapshots list on the rebuilt vault:\n%s\nwant %s", out, name)
		}
	}
	adminE := map[string]string{"VAULT_URL": vs.url, "VAULT_TOKEN": issue("admin", "alice")}
	out = mustCLI(t, adminE, "admin", "deletions", "show", "1", "--json")
	if !strings.Contains(out, `"executed"`) || !strings.Contains(out, `"approver": "bob"`) {
		t.Errorf("deletion 1 on the rebuilt vault:\n%s", out)
	}
	if out := mustCLI(t, adminE, "admin", "admins", "show"); !strings.Contains(out, "dave") {
		t.Errorf("admins on the rebuilt vault:\n%s\nwant dave", out)
	}
	vs.signal(t, os.Interrupt)
	if err := vs.waitExit(t, 60*time.Second); err != nil {
		t.Errorf("vault serve on the rebuilt database: %v", err)
	}
}

// sha256Hex is restic's name of b.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// diffRows returns the rows only in a and only in b.
func diffRows(a, b []string) (onlyA, onlyB []string) {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, r := range a {
		inA[r] = true
	}
	for _, r := range b {
		inB[r] = true
		if !inA[r] {
			onlyB = append(onlyB, r)
		}
	}
	for _, r := range a {
		if !inB[r] {
			onlyA = append(onlyA, r)
		}
	}
	return onlyA, onlyB
}

// Bad invocations of vault reindex change nothing and say why.
func TestReindexUsage(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	noJournal := mustInitVault(t)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no data dir", nil, []string{"--database-url", db}, "--data-dir"},
		{"no database", nil, []string{"--data-dir", noJournal}, "VAULT_OWNER_DATABASE_URL"},
		{"not a vault", nil, []string{"--data-dir", t.TempDir(), "--database-url", db}, "not an initialised vault"},
		{"no journal", nil, []string{"--data-dir", noJournal, "--database-url", db}, "no journal"},
		{"bad retention", nil, []string{"--data-dir", noJournal, "--database-url", db, "--min-retention", "-1d"}, "--min-retention"},
		{"stray argument", nil, []string{"--data-dir", noJournal, "--database-url", db, "now"}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.env, nil, append([]string{"reindex"}, tt.args...)...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.want) {
				t.Errorf("vault reindex %v: %v, want an error naming %q", tt.args, r.err, tt.want)
			}
		})
	}
	if got := mustDumpIndex(t, db); slices.ContainsFunc(indexTables, func(tb string) bool { return len(got[tb]) > 0 }) {
		t.Errorf("a refused reindex wrote rows: %v", got)
	}
	if r := runCLI(t, nil, nil, "reindex", "-h"); !strings.Contains(r.stdout, "VAULT_OWNER_DATABASE_URL") || strings.Contains(r.stdout, "postgres://") {
		t.Errorf("vault reindex -h printed:\n%s", r.stdout)
	}
}
