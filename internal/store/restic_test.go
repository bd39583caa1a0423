package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

const day = 24 * time.Hour

// newResticStore is a store with packs, so that small restic files go
// through the group committer and large ones become files of their own.
func newResticStore(t testing.TB) *testStore {
	t.Helper()
	dir := t.TempDir()
	d, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := pack.Open(filepath.Join(dir, "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.NewPool(t)
	clk := clock.NewFake(epoch)
	pgtest.FollowClock(t, pool, clk)
	s := store.New(pool, d, clk, slog.New(slog.DiscardHandler), nil, store.Options{
		MaxChunkSize: 4 << 20, Packs: packs, PackThreshold: 64 << 10,
	})
	t.Cleanup(func() { s.Close(); packs.Close() })
	return &testStore{Store: s, pool: pool, clk: clk, dir: dir, blobs: d}
}

// resticContent returns n random bytes and their restic name.
func resticContent(t testing.TB, n int) ([]byte, string) {
	t.Helper()
	b, _ := randomChunk(t, n)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

func (ts *testStore) mustRepo(t testing.TB, name string) {
	t.Helper()
	if _, err := ts.CreateResticRepository(context.Background(), "agent-1", name); err != nil {
		t.Fatalf("CreateResticRepository(%s): %v", name, err)
	}
}

func (ts *testStore) mustPutRestic(t testing.TB, repo, typ, name string, b []byte) store.ResticFile {
	t.Helper()
	f, _, err := ts.PutResticFile(context.Background(), "agent-1", repo, typ, name, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("PutResticFile(%s %s/%s): %v", repo, typ, name, err)
	}
	return f
}

func (ts *testStore) readRestic(t testing.TB, repo, typ, name string) []byte {
	t.Helper()
	rc, _, err := ts.OpenResticFile(context.Background(), repo, typ, name)
	if err != nil {
		t.Fatalf("OpenResticFile(%s %s/%s): %v", repo, typ, name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestResticFiles(t *testing.T) {
	t.Parallel()
	ts := newResticStore(t)
	ctx := context.Background()
	ts.mustRepo(t, "host-1")
	if created, err := ts.CreateResticRepository(ctx, "agent-2", "host-1"); err != nil || created {
		t.Fatalf("second create = %v, %v; want false, nil (idempotent)", created, err)
	}

	small, smallName := resticContent(t, 1000)    // packed
	large, largeName := resticContent(t, 300_000) // spooled to a temp file, its own chunk file
	for _, c := range []struct {
		typ, name string
		b         []byte
	}{{store.ResticData, smallName, small}, {store.ResticData, largeName, large}, {store.ResticKeys, smallName, small}} {
		f, created, err := ts.PutResticFile(ctx, "agent-1", "host-1", c.typ, c.name, bytes.NewReader(c.b))
		if err != nil || !created {
			t.Fatalf("PutResticFile(%s/%s) = %v, %v", c.typ, c.name, created, err)
		}
		if f.Chunk != chunk.Sum(c.b) || f.Size != int64(len(c.b)) || f.CreatedBy != "agent-1" ||
			!f.RetainUntil.Equal(endOfDay(epoch).Add(store.DefaultMinRetention)) {
			t.Errorf("PutResticFile(%s/%s) = %+v", c.typ, c.name, f)
		}
		if got := ts.readRestic(t, "host-1", c.typ, c.name); !bytes.Equal(got, c.b) {
			t.Errorf("content of %s/%s differs", c.typ, c.name)
		}
	}
	// The same content under two names is one chunk.
	if n := ts.count(t, "chunks"); n != 2 {
		t.Errorf("%d chunks, want 2", n)
	}

	// A retry of a stored file succeeds and changes nothing.
	before := ts.count(t, "restic_files")
	if _, created, err := ts.PutResticFile(ctx, "agent-2", "host-1", store.ResticData, largeName, bytes.NewReader(large)); err != nil || created {
		t.Fatalf("re-upload = %v, %v; want false, nil", created, err)
	}
	if f, err := ts.StatResticFile(ctx, "host-1", store.ResticData, largeName); err != nil || f.CreatedBy != "agent-1" {
		t.Fatalf("after re-upload: %+v, %v; want the first upload's row", f, err)
	}

	list, err := ts.ListResticFiles(ctx, "host-1", store.ResticData, "", 0)
	if err != nil || len(list) != 2 || list[0].Name > list[1].Name {
		t.Fatalf("ListResticFiles = %+v, %v; want 2 files in name order", list, err)
	}
	if page, err := ts.ListResticFiles(ctx, "host-1", store.ResticData, list[0].Name, 1); err != nil || len(page) != 1 || page[0].Name != list[1].Name {
		t.Fatalf("second page = %+v, %v", page, err)
	}
	if l, err := ts.ListResticFiles(ctx, "host-1", store.ResticIndex, "", 0); err != nil || len(l) != 0 {
		t.Fatalf("empty listing = %+v, %v", l, err)
	}

	// Refused, with nothing stored.
	chunks := ts.count(t, "chunks")
	_, otherName := resticContent(t, 10)
	for _, c := range []struct {
		name              string
		repo, typ, rname  string
		body              []byte
		want              error
		wantInvalid       bool
		wantErrorContains string
	}{
		{name: "sha-256 mismatch", repo: "host-1", typ: store.ResticData, rname: otherName, body: small, want: chunk.ErrHashMismatch},
		{name: "unknown repository", repo: "host-2", typ: store.ResticData, rname: smallName, body: small, want: store.ErrNotFound},
		{name: "uppercase name", repo: "host-1", typ: store.ResticData, rname: strings.ToUpper(smallName), body: small, wantInvalid: true},
		{name: "short name", repo: "host-1", typ: store.ResticData, rname: smallName[:63], body: small, wantInvalid: true},
		{name: "unknown type", repo: "host-1", typ: "tree", rname: smallName, body: small, wantInvalid: true},
		{name: "bad repository name", repo: "../x", typ: store.ResticData, rname: smallName, body: small, wantInvalid: true},
		{name: "config under a hash", repo: "host-1", typ: store.ResticConfig, rname: smallName, body: small, wantInvalid: true},
		{name: "lock too large", repo: "host-1", typ: store.ResticLocks, rname: otherName, body: make([]byte, store.MaxResticLockSize+1), want: store.ErrTooLarge},
		{name: "over the chunk size", repo: "host-1", typ: store.ResticData, rname: otherName, body: make([]byte, 4<<20+1), want: store.ErrTooLarge},
	} {
		_, _, err := ts.PutResticFile(ctx, "agent-1", c.repo, c.typ, c.rname, bytes.NewReader(c.body))
		var inv *store.InvalidError
		switch {
		case c.wantInvalid && !errors.As(err, &inv):
			t.Errorf("%s: err = %v, want InvalidError", c.name, err)
		case !c.wantInvalid && !errors.Is(err, c.want):
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	if n := ts.count(t, "chunks"); n != chunks {
		t.Errorf("refused uploads stored chunks: %d, want %d", n, chunks)
	}
	if n := ts.count(t, "restic_files"); n != before {
		t.Errorf("refused uploads stored mappings: %d, want %d", n, before)
	}
	if _, err := ts.ListResticFiles(ctx, "host-2", store.ResticData, "", 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("listing an unknown repository: %v, want ErrNotFound", err)
	}
	if _, err := ts.StatResticFile(ctx, "host-1", store.ResticData, otherName); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("stat of an absent file: %v, want ErrNotFound", err)
	}
}

func TestResticConfigWrittenOnce(t *testing.T) {
	t.Parallel()
	ts := newResticStore(t)
	ctx := context.Background()
	ts.mustRepo(t, "r")
	cfg := []byte("restic config, encrypted")
	ts.mustPutRestic(t, "r", store.ResticConfig, "config", cfg)
	if _, created, err := ts.PutResticFile(ctx, "agent-1", "r", store.ResticConfig, "config", bytes.NewReader(cfg)); err != nil || created {
		t.Fatalf("same config again = %v, %v; want false, nil", created, err)
	}
	chunks := ts.count(t, "chunks")
	if _, _, err := ts.PutResticFile(ctx, "agent-1", "r", store.ResticConfig, "config", strings.NewReader("another config")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("different config: %v, want ErrConflict", err)
	}
	if n := ts.count(t, "chunks"); n != chunks {
		t.Errorf("a refused config was stored as a chunk")
	}
	if got := ts.readRestic(t, "r", store.ResticConfig, "config"); !bytes.Equal(got, cfg) {
		t.Errorf("config = %q, want %q", got, cfg)
	}
	if err := ts.DeleteResticFile(ctx, "r", store.ResticConfig, "config"); !errors.Is(err, store.ErrNotDeletable) {
		t.Errorf("delete config: %v, want ErrNotDeletable", err)
	}
}

func TestResticDeleteOnlyLocks(t *testing.T) {
	t.Parallel()
	ts := newResticStore(t)
	ctx := context.Background()
	ts.mustRepo(t, "r")
	b, name := resticContent(t, 300)
	for _, typ := range []string{store.ResticData, store.ResticKeys, store.ResticSnapshots, store.ResticIndex, store.ResticLocks} {
		ts.mustPutRestic(t, "r", typ, name, b)
	}
	for _, typ := range []string{store.ResticData, store.ResticKeys, store.ResticSnapshots, store.ResticIndex} {
		if err := ts.DeleteResticFile(ctx, "r", typ, name); !errors.Is(err, store.ErrNotDeletable) {
			t.Errorf("delete %s: %v, want ErrNotDeletable", typ, err)
		}
		if _, err := ts.StatResticFile(ctx, "r", typ, name); err != nil {
			t.Errorf("%s file gone after a refused delete: %v", typ, err)
		}
	}
	if err := ts.DeleteResticFile(ctx, "r", store.ResticLocks, name); err != nil {
		t.Fatalf("delete lock: %v", err)
	}
	if _, err := ts.StatResticFile(ctx, "r", store.ResticLocks, name); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lock after delete: %v, want ErrNotFound", err)
	}
	if err := ts.DeleteResticFile(ctx, "r", store.ResticLocks, name); err != nil {
		t.Errorf("delete an absent lock: %v, want nil (idempotent)", err)
	}
	// The lock's chunk stays: it is the same content as the other files,
	// and in any case only the mapping goes.
	if _, err := ts.Stat(ctx, chunk.Sum(b)); err != nil {
		t.Errorf("chunk after lock removal: %v", err)
	}
}

// The database refuses what the Go code never does, whatever SQL the
// application role sends.
func TestResticDatabaseGuards(t *testing.T) {
	t.Parallel()
	ts := newResticStore(t)
	ctx := context.Background()
	ts.mustRepo(t, "r")
	b, name := resticContent(t, 300)
	ts.mustPutRestic(t, "r", store.ResticData, name, b)
	ts.mustPutRestic(t, "r", store.ResticLocks, name, b)
	_, absent := randomChunk(t, 10)
	stored := chunk.Sum(b)
	mustRefuseAll(t, ts.pool, []forbidden{
		{name: "UPDATE restic_files SET size = size + 1 WHERE type = 'data'", sql: "UPDATE restic_files SET size = size + 1 WHERE type = 'data'", code: "WV002", runtime: permissionDenied},
		{name: "UPDATE restic_files SET created_by = 'x' WHERE type = 'locks'", sql: "UPDATE restic_files SET created_by = 'x' WHERE type = 'locks'", code: "WV002", runtime: permissionDenied},
		{name: "DELETE FROM restic_files WHERE type = 'data'", sql: "DELETE FROM restic_files WHERE type = 'data'", code: "WV010"},
		{name: "DELETE FROM restic_files", sql: "DELETE FROM restic_files", code: "WV010"},
		{name: "TRUNCATE restic_files", sql: "TRUNCATE restic_files", code: "WV004", runtime: permissionDenied},
		{name: "a file naming an absent chunk", sql: "INSERT INTO restic_files (repo, type, name, chunk, size, created_at, created_by) VALUES ('r', 'index', $1, $2, 300, now(), 'x')", args: []any{name, absent[:]}, code: "WV011"},
		{name: "a file of the wrong size", sql: "INSERT INTO restic_files (repo, type, name, chunk, size, created_at, created_by) VALUES ('r', 'index', $1, $2, 301, now(), 'x')", args: []any{name, stored[:]}, code: "WV011"},
		{name: "UPDATE restic_repositories SET min_retention = '-1 day'", sql: "UPDATE restic_repositories SET min_retention = '-1 day'", code: "WV001"},
		{name: "UPDATE restic_repositories SET created_by = 'x'", sql: "UPDATE restic_repositories SET created_by = 'x'", code: "WV002", runtime: permissionDenied},
		{name: "DELETE FROM restic_repositories", sql: "DELETE FROM restic_repositories", code: "WV004", runtime: permissionDenied},
		{name: "TRUNCATE restic_repositories CASCADE", sql: "TRUNCATE restic_repositories CASCADE", code: "WV004", runtime: permissionDenied},
	}, func(t testing.TB) string {
		return fmt.Sprint(ts.count(t, "restic_files"), ts.count(t, "restic_repositories"))
	})
	// Only a lock's row may go.
	if _, err := ts.pool.Exec(ctx, "DELETE FROM restic_files WHERE type = 'locks'"); err != nil {
		t.Errorf("deleting a lock row: %v", err)
	}
}

func TestResticRetention(t *testing.T) {
	t.Parallel()
	ts := newResticStore(t)
	ctx := context.Background()
	ts.mustRepo(t, "r")
	pack1, pack1Name := resticContent(t, 1000)
	f := ts.mustPutRestic(t, "r", store.ResticData, pack1Name, pack1)
	if want := endOfDay(epoch).Add(store.DefaultMinRetention); !f.RetainUntil.Equal(want) {
		t.Fatalf("new file retained until %v, want the vault's minimum from the end of the day (%v)", f.RetainUntil, want)
	}

	// A snapshot stored 10 days later keeps the whole repository until the
	// end of its day plus the retention.
	ts.clk.Advance(10 * day)
	snap, snapName := resticContent(t, 200)
	ts.mustPutRestic(t, "r", store.ResticSnapshots, snapName, snap)
	anchor := endOfDay(epoch.Add(10 * day))
	if got := ts.chunkRetention(t, chunk.Sum(pack1)); !got.Equal(anchor.Add(store.DefaultMinRetention)) {
		t.Errorf("older pack retained until %v after a snapshot, want %v", got, anchor.Add(store.DefaultMinRetention))
	}
	audits := ts.auditActions(t)
	if audits[len(audits)-1] != "restic.retain" {
		t.Errorf("audit actions %v, want restic.retain last", audits)
	}
	// A second snapshot the same day has nothing to extend, and no
	// restic.retain entry: only its own restic.file entry.
	snap2, snap2Name := resticContent(t, 200)
	ts.mustPutRestic(t, "r", store.ResticSnapshots, snap2Name, snap2)
	if a := ts.auditActions(t); len(a) != len(audits)+1 || a[len(a)-1] != "restic.file" {
		t.Errorf("audit actions %v after a same-day snapshot, want %v and restic.file", a, audits)
	}

	// An admin raises the repository's retention: present files follow.
	repo, extended, err := ts.SetResticRetention(ctx, "admin-a", "r", 400*day)
	if err != nil || time.Duration(repo.MinRetention) != 400*day || extended != 3 {
		t.Fatalf("SetResticRetention = %+v, %d, %v; want 400d and 3 chunks extended", repo, extended, err)
	}
	if got := ts.chunkRetention(t, chunk.Sum(pack1)); !got.Equal(anchor.Add(400 * day)) {
		t.Errorf("pack retained until %v, want %v", got, anchor.Add(400*day))
	}
	if a := ts.auditActions(t); a[len(a)-1] != "restic.repository.retention" {
		t.Errorf("audit actions %v, want restic.repository.retention last", a)
	}
	pack2, pack2Name := resticContent(t, 1000)
	if f := ts.mustPutRestic(t, "r", store.ResticData, pack2Name, pack2); !f.RetainUntil.Equal(endOfDay(ts.clk.Now()).Add(400 * day)) {
		t.Errorf("new file retained until %v, want the end of today + 400d", f.RetainUntil)
	}

	// Retention only grows.
	if _, _, err := ts.SetResticRetention(ctx, "admin-a", "r", 300*day); !errors.Is(err, store.ErrRetentionShortened) {
		t.Errorf("shorter retention: %v, want ErrRetentionShortened", err)
	}
	for _, d := range []time.Duration{0, -day, 200 * 365 * day} {
		var inv *store.InvalidError
		if _, _, err := ts.SetResticRetention(ctx, "admin-a", "r", d); !errors.As(err, &inv) {
			t.Errorf("retention %v: %v, want InvalidError", d, err)
		}
	}
	// An admin may set it before the repository exists; restic init then
	// finds it.
	if _, _, err := ts.SetResticRetention(ctx, "admin-a", "future", 90*day); err != nil {
		t.Fatal(err)
	}
	if created, err := ts.CreateResticRepository(ctx, "agent-1", "future"); err != nil || created {
		t.Errorf("init after the admin: %v, %v; want false, nil", created, err)
	}
	repos, err := ts.ResticRepositories(ctx)
	if err != nil || len(repos) != 2 || repos[1].Name != "r" || repos[1].Files != 4 || repos[1].LastSnapshotAt == nil {
		t.Fatalf("ResticRepositories = %+v, %v", repos, err)
	}
	if ts.EffectiveRetention(repos[0].ResticRepository) != 90*day {
		t.Errorf("effective retention of future = %v", ts.EffectiveRetention(repos[0].ResticRepository))
	}
	if err := ts.VerifyAuditIntact(t); err != nil {
		t.Error(err)
	}
}

func endOfDay(t time.Time) time.Time { return t.UTC().Truncate(day).Add(day) }

func (ts *testStore) chunkRetention(t testing.TB, h chunk.Hash) time.Time {
	t.Helper()
	c, err := ts.Stat(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	return c.RetainUntil.UTC()
}

func (ts *testStore) auditActions(t testing.TB) []string {
	t.Helper()
	rows, _ := ts.pool.Query(context.Background(), "SELECT action FROM audit_log WHERE action <> 'chunk.commit' ORDER BY seq")
	a, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (ts *testStore) VerifyAuditIntact(t testing.TB) error {
	t.Helper()
	_, err := ts.VerifyAudit(context.Background())
	return err
}
