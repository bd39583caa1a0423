package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

type auditLogFixture struct {
	dir    string // the vault's data directory, from vault init
	dbURL  string
	pool   *pgxpool.Pool
	owner  *pgxpool.Pool // the schema owner: the tampering below needs it (or a superuser)
	store  *store.Store
	keys   checkpointKeys
	env    map[string]string
	chunks []chunk.Hash
	clk    *clock.Fake
	url    string               // the in-process API server
	reg    *prometheus.Registry // the store's metrics
	logs   *logSink             // the store's and the API's JSON log
	reader string               // a reader token, for content samples
}

const auditFixtureVaultID = "audit-cli-test"

func newAuditLogFixture(t testing.TB) *auditLogFixture {
	t.Helper()
	ctx := context.Background()
	dir := mustInitVault(t, "--vault-id", auditFixtureVaultID)
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(auditorEpoch)
	pgtest.FollowClock(t, pool, clk)
	logs := newLogSink()
	log := slog.New(slog.NewJSONHandler(logs, nil))
	reg := prometheus.NewRegistry()
	st := store.New(pool, blobs, clk, log, store.NewMetrics(reg), store.Options{VaultID: auditFixtureVaultID})
	keys, err := loadCheckpointKey(dir, auditFixtureVaultID, log)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := auth.GenerateKey()
	verifier := auth.NewVerifier(key.Public().(ed25519.PublicKey), auditFixtureVaultID, st, clk)
	srv := httptest.NewServer(api.NewHandler(api.Options{Store: st, Verifier: verifier, Log: log, CheckpointKey: keys.vkey}))
	t.Cleanup(srv.Close)
	issuer := auth.NewIssuer(key, auditFixtureVaultID, clk)
	tok, _, err := issuer.Issue(auth.RoleAuditor, "auditor-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	readerTok, _, err := issuer.IssueScoped(auth.RoleReader, "auditor-1-content", time.Hour, auth.Scope{All: true})
	if err != nil {
		t.Fatal(err)
	}
	f := &auditLogFixture{dir: dir, dbURL: dbURL, pool: pool, owner: pgtest.OwnerPool(t, pool), store: st, keys: keys, clk: clk, url: srv.URL, reg: reg, logs: logs,
		env: map[string]string{"VAULT_URL": srv.URL, "VAULT_TOKEN": tok}, reader: readerTok}
	f.putChunks(t, 4)
	f.integrate(t)
	return f
}

// putChunks stores n new chunks.
func (f *auditLogFixture) putChunks(t testing.TB, n int) {
	t.Helper()
	for range n {
		i := len(f.chunks)
		b := bytes.Repeat([]byte{byte(i)}, 100+i)
		h := chunk.Sum(b)
		if _, err := f.store.PutChunk(context.Background(), "agent-1", h, bytes.NewReader(b), time.Time{}); err != nil {
			t.Fatal(err)
		}
		f.chunks = append(f.chunks, h)
	}
}

// integrate does one round of the server's audit-log loop.
func (f *auditLogFixture) integrate(t testing.TB) {
	t.Helper()
	if _, err := signCheckpoint(context.Background(), f.store, f.dir, f.keys); err != nil {
		t.Fatal(err)
	}
}

func (f *auditLogFixture) run(t testing.TB, args ...string) cliResult {
	t.Helper()
	return runCLI(t, f.env, nil, args...)
}

func TestAuditVerifyCLI(t *testing.T) {
	t.Parallel()
	f := newAuditLogFixture(t)
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), "state")

	r := f.run(t, "audit", "verify", "--state", state, "--key", f.keys.vkey, "--check-chunks", "all")
	if r.err != nil || !strings.Contains(r.stdout, "OK") || !strings.Contains(r.stdout, "entries recomputed: 4") {
		t.Fatalf("first verify: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(state, stateCheckpointFile)); err != nil || !strings.Contains(string(b), "\n4\n") {
		t.Fatalf("kept checkpoint %q, %v", b, err)
	}
	// Trust on first use says so loudly.
	tofu := filepath.Join(t.TempDir(), "tofu")
	r = f.run(t, "audit", "verify", "--state", tofu)
	if r.err != nil || !strings.Contains(r.stderr, "WARNING") || !strings.Contains(r.stderr, f.keys.vkey) {
		t.Fatalf("TOFU verify: %v\n%s", r.err, r.stderr)
	}
	// Another key than the pinned one is refused.
	r = f.run(t, "audit", "verify", "--state", state, "--key", "other+12345678+AQ==")
	if r.err == nil || !strings.Contains(r.err.Error(), "pinned") {
		t.Fatalf("verify with another key: %v", r.err)
	}

	r = f.run(t, "audit", "prove-retained", "--state", state, f.chunks[2].String())
	if r.err != nil || !strings.Contains(r.stdout, "OK: the proof verifies") || !strings.Contains(r.stdout, "entry 3") {
		t.Fatalf("prove-retained: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}

	// A chunk's row removed by hand: verify fails, names it, and keeps
	// the old checkpoint.
	if _, err := f.owner.Exec(ctx, "ALTER TABLE chunks DISABLE TRIGGER USER"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.owner.Exec(ctx, "DELETE FROM chunks WHERE hash = $1", f.chunks[1][:]); err != nil {
		t.Fatal(err)
	}
	b := []byte("one more")
	f.store.PutChunk(ctx, "agent-1", chunk.Sum(b), bytes.NewReader(b), time.Time{})
	f.integrate(t)
	r = f.run(t, "audit", "verify", "--state", state, "--check-chunks", "all")
	if r.err == nil || !strings.Contains(r.stdout, "chunk-removed") || !strings.Contains(r.stdout, f.chunks[1].String()) {
		t.Fatalf("verify after a chunk vanished: %v\n%s", r.err, r.stdout)
	}
	if b, _ := os.ReadFile(filepath.Join(state, stateCheckpointFile)); !strings.Contains(string(b), "\n4\n") {
		t.Errorf("the kept checkpoint moved after a failed run: %q", b)
	}
}

// The rollback guard of `vault serve`: a database older than the data
// directory's checkpoint is refused.
func TestServeRollbackGuard(t *testing.T) {
	t.Parallel()
	f := newAuditLogFixture(t)
	ctx := context.Background()
	if err := guardRollback(ctx, f.store, f.dir, f.keys, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("guard on the live database: %v", err)
	}
	kept, err := os.ReadFile(filepath.Join(f.dir, config.LatestCheckpointFile))
	if err != nil || !strings.Contains(string(kept), "\n4\n") {
		t.Fatalf("latest-checkpoint %q, %v", kept, err)
	}
	// Restore "yesterday's" database: the last two entries are gone.
	for _, sql := range []string{
		"ALTER TABLE audit_log DISABLE TRIGGER USER", "ALTER TABLE audit_hashes DISABLE TRIGGER USER",
		"DELETE FROM audit_log WHERE seq > 2",
		"DELETE FROM audit_hashes WHERE idx >= " + strconv.FormatInt(tlog.StoredHashCount(2), 10),
	} {
		if _, err := f.owner.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	err = guardRollback(ctx, f.store, f.dir, f.keys, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("guard on the restored database = %v, want a refusal", err)
	}
}

// TestAuditVerifySamplesContent: with a reader token, audit verify
// downloads and re-hashes chunks, so a chunk whose bytes rotted on the
// vault's disk fails the audit even though HEAD still says it exists; an
// auditor token alone never reads content.
func TestAuditVerifySamplesContent(t *testing.T) {
	t.Parallel()
	f := newAuditLogFixture(t)
	state := filepath.Join(t.TempDir(), "state")
	withReader := map[string]string{"VAULT_URL": f.env["VAULT_URL"], "VAULT_TOKEN": f.env["VAULT_TOKEN"], "VAULT_READER_TOKEN": f.reader}

	r := runCLI(t, withReader, nil, "audit", "verify", "--state", state, "--key", f.keys.vkey, "--sample-content", "all")
	if r.err != nil || !strings.Contains(r.stdout, "downloaded and re-hashed: 4") {
		t.Fatalf("audit verify --sample-content all = %v:\n%s", r.err, r.stdout)
	}
	for _, tt := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{f.env, []string{"--sample-content", "5"}, "VAULT_READER_TOKEN"},
		{withReader, []string{"--sample-content", "-1"}, "--sample-content"},
		{withReader, []string{"--sample-content", "some"}, "--sample-content"},
	} {
		r := runCLI(t, tt.env, nil, append([]string{"audit", "verify", "--state", state}, tt.args...)...)
		if r.err == nil || !strings.Contains(r.err.Error(), tt.want) {
			t.Errorf("audit verify %v = %v, want an error naming %s", tt.args, r.err, tt.want)
		}
	}
	// Without a reader token the output says content was not sampled.
	if r := f.run(t, "audit", "verify", "--state", state); r.err != nil || !strings.Contains(r.stdout, "content: not sampled") {
		t.Errorf("audit verify without a reader token = %v:\n%s", r.err, r.stdout)
	}

	// One bit flips in a chunk file: HEAD still finds it, content does not verify.
	victim := f.chunks[2]
	path := filepath.Join(f.dir, "blake3", victim.String()[:2], victim.String()[2:4], victim.String())
	os.Chmod(path, 0o640)
	flip(t, path, 50)
	if r := f.run(t, "audit", "verify", "--state", state, "--check-chunks", "all", "--sample-content", "0"); r.err != nil {
		t.Fatalf("existence-only audit = %v, want OK (HEAD cannot see rot):\n%s", r.err, r.stdout)
	}
	r = runCLI(t, withReader, nil, "audit", "verify", "--state", state, "--check-chunks", "0", "--sample-content", "all")
	if r.err == nil || !strings.Contains(r.stdout, victim.String()) || !strings.Contains(r.stdout, "damaged") {
		t.Fatalf("content audit of a rotted chunk = %v:\n%s\nwant a failure naming it", r.err, r.stdout)
	}
	// The refused read recorded the damage: HEAD now says so, and
	// prove-retained reports it.
	r = runCLI(t, withReader, nil, "audit", "prove-retained", "--state", state, victim.String())
	if r.err == nil || !strings.Contains(r.stdout, "still stored: no") || !strings.Contains(r.stdout, "DAMAGED") {
		t.Errorf("prove-retained of a damaged chunk = %v:\n%s", r.err, r.stdout)
	}
	r = runCLI(t, withReader, nil, "audit", "prove-retained", "--state", state, f.chunks[1].String())
	if r.err != nil || !strings.Contains(r.stdout, "downloaded and re-hashed: OK") {
		t.Errorf("prove-retained with a reader token = %v:\n%s", r.err, r.stdout)
	}
}
