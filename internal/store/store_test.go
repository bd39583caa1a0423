package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

var epoch = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type testStore struct {
	*store.Store
	pool  *pgxpool.Pool
	clk   *clock.Fake
	dir   string
	blobs *disk.Disk
}

func newTestStore(t testing.TB) *testStore {
	t.Helper()
	dir := t.TempDir()
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.NewPool(t)
	clk := clock.NewFake(epoch)
	pgtest.FollowClock(t, pool, clk)
	log := slog.New(slog.DiscardHandler)
	s := store.New(pool, blobs, clk, log, nil, store.Options{MaxChunkSize: 1 << 20, MaxBatch: 50, Journal: newJournal(t, dir)})
	return &testStore{Store: s, pool: pool, clk: clk, dir: dir, blobs: blobs}
}

// newJournal opens a journal in dir, as `vault serve` does in the data
// directory, closed at cleanup.
func newJournal(t testing.TB, dir string) *journal.Journal {
	t.Helper()
	j, err := journal.Open(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// auditCount counts the audit entries other than chunk commits (one per
// stored chunk, logged with it).
func (ts *testStore) auditCount(t testing.TB) int {
	t.Helper()
	var n int
	if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE action <> 'chunk.commit'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// adminEntries drops chunk commits from entries.
func adminEntries(entries []store.AuditEntry) []store.AuditEntry {
	var out []store.AuditEntry
	for _, e := range entries {
		if e.Action != "chunk.commit" {
			out = append(out, e)
		}
	}
	return out
}

// permissionDenied is PostgreSQL's SQLSTATE for a privilege the role lacks.
const permissionDenied = "42501"

// forbidden is a statement the database must refuse, whoever sends it:
// the runtime role (the server's login) with runtime's SQLSTATE (a
// privilege it lacks, or the trigger's code on a table it may write), and
// the schema owner with the trigger's code, which backs the privileges up
// against the owner's own mistakes.
type forbidden struct {
	name, sql string
	args      []any
	code      string // the trigger's SQLSTATE, as the owner
	runtime   string // as the runtime role, when not code
}

// mustRefuseAll runs every statement as the runtime role and as the owner,
// and checks that each is refused with its SQLSTATE and that state (a
// description of what must not change) stays the same.
func mustRefuseAll(t *testing.T, runtime *pgxpool.Pool, tests []forbidden, state func(testing.TB) string) {
	t.Helper()
	owner := pgtest.OwnerPool(t, runtime)
	for _, as := range []struct {
		role string
		pool *pgxpool.Pool
	}{{"runtime", runtime}, {"owner", owner}} {
		for _, tt := range tests {
			want := tt.code
			if as.role == "runtime" && tt.runtime != "" {
				want = tt.runtime
			}
			t.Run(as.role+"/"+tt.name, func(t *testing.T) {
				before := state(t)
				_, err := as.pool.Exec(context.Background(), tt.sql, tt.args...)
				if code := sqlState(err); code != want {
					t.Fatalf("%s as the %s: err = %v, want SQLSTATE %s", tt.sql, as.role, err, want)
				}
				if after := state(t); after != before {
					t.Errorf("state changed:\n before %s\n after  %s", before, after)
				}
			})
		}
	}
}

// sqlState returns err's SQLSTATE, or "" if it has none.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func randomChunk(t testing.TB, n int) ([]byte, chunk.Hash) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, chunk.Sum(b)
}

func (ts *testStore) mustPut(t testing.TB, b []byte) store.PutResult {
	t.Helper()
	res, err := ts.PutChunk(context.Background(), "agent-1", chunk.Sum(b), bytes.NewReader(b), time.Time{})
	if err != nil {
		t.Fatalf("PutChunk: %v", err)
	}
	return res
}

func (ts *testStore) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// files lists every file under the blob tree, temp files included.
func (ts *testStore) files(t testing.TB) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(ts.dir, "blake3"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestPutStatOpen(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100_000)

	res := ts.mustPut(t, b)
	if !res.Created || res.Chunk.Size != int64(len(b)) || res.Chunk.UploadedBy != "agent-1" {
		t.Fatalf("PutChunk = %+v, want created, size %d, uploader agent-1", res, len(b))
	}
	if want := epoch.Add(store.DefaultMinRetention); !res.Chunk.RetainUntil.Equal(want) {
		t.Errorf("retain_until = %s, want now + min retention = %s", res.Chunk.RetainUntil, want)
	}
	rc, c, err := ts.OpenChunk(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, b) || c.Size != int64(len(b)) {
		t.Fatalf("OpenChunk read: err %v, equal %v", err, bytes.Equal(got, b))
	}

	again := ts.mustPut(t, b)
	if again.Created || !again.Chunk.RetainUntil.Equal(res.Chunk.RetainUntil) {
		t.Errorf("re-put = %+v, want not created and retention unchanged", again)
	}
	if n := ts.count(t, "chunks"); n != 1 {
		t.Errorf("rows = %d, want 1", n)
	}
	if n := ts.auditCount(t); n != 0 {
		t.Errorf("a plain re-upload wrote %d audit entries, want 0", n)
	}
}

func TestPutRejectsWithoutSideEffects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name    string
		body    func(b []byte) io.Reader
		until   time.Time
		wantErr error
	}{
		{name: "wrong content", body: func(b []byte) io.Reader { return bytes.NewReader(append([]byte{1}, b[1:]...)) }, wantErr: chunk.ErrHashMismatch},
		{name: "truncated content", body: func(b []byte) io.Reader { return bytes.NewReader(b[:len(b)-1]) }, wantErr: chunk.ErrHashMismatch},
		{name: "oversized", body: func([]byte) io.Reader { return bytes.NewReader(make([]byte, 1<<20+1)) }, wantErr: store.ErrTooLarge},
		{name: "reader fails", body: func(b []byte) io.Reader { return io.MultiReader(bytes.NewReader(b[:10]), errReader{}) }, wantErr: errBroken},
		{name: "retention too far", body: func(b []byte) io.Reader { return bytes.NewReader(b) }, until: epoch.AddDate(200, 0, 0), wantErr: &store.InvalidError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestStore(t)
			b, h := randomChunk(t, 5000)
			_, err := ts.PutChunk(ctx, "agent-1", h, tt.body(b), tt.until)
			var inv *store.InvalidError
			if _, ok := tt.wantErr.(*store.InvalidError); ok {
				if !errors.As(err, &inv) {
					t.Fatalf("err = %v, want InvalidError", err)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if n := ts.count(t, "chunks"); n != 0 {
				t.Errorf("rows = %d, want 0", n)
			}
			if f := ts.files(t); len(f) != 0 {
				t.Errorf("files left behind: %v", f)
			}
		})
	}
}

var errBroken = errors.New("broken reader")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

func TestReuploadWithDifferentBytesRefused(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	b, h := randomChunk(t, 4096)
	before := ts.mustPut(t, b)
	other := bytes.Clone(b)
	other[0] ^= 0xff
	_, err := ts.PutChunk(context.Background(), "agent-2", h, bytes.NewReader(other), epoch.AddDate(1, 0, 0))
	if !errors.Is(err, chunk.ErrHashMismatch) {
		t.Fatalf("err = %v, want ErrHashMismatch", err)
	}
	after, err := ts.Stat(context.Background(), h)
	if err != nil || after != before.Chunk {
		t.Fatalf("row changed: before %+v, after %+v (%v)", before.Chunk, after, err)
	}
}

func TestRetentionOnlyGrows(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 1000)
	ts.mustPut(t, b)
	_, absent := randomChunk(t, 10)

	later := epoch.AddDate(1, 0, 0)
	res, err := ts.Retain(ctx, "agent-1", []chunk.Hash{h, absent, h}, later)
	if err != nil {
		t.Fatal(err)
	}
	if res.Extended != 1 || res.Unchanged != 0 || len(res.NotFound) != 1 || res.NotFound[0] != absent {
		t.Fatalf("Retain = %+v, want 1 extended, absent not found", res)
	}
	// An earlier date is a no-op, never a shortening.
	res, err = ts.Retain(ctx, "agent-1", []chunk.Hash{h}, epoch.AddDate(0, 6, 0))
	if err != nil || res.Extended != 0 || res.Unchanged != 1 {
		t.Fatalf("Retain earlier = %+v, %v; want unchanged", res, err)
	}
	c, _ := ts.Stat(ctx, h)
	if !c.RetainUntil.Equal(later) {
		t.Errorf("retain_until = %s, want %s", c.RetainUntil, later)
	}
	// A re-upload asking for less does not shorten either.
	if _, err := ts.PutChunk(ctx, "agent-1", h, bytes.NewReader(b), epoch.AddDate(0, 2, 0)); err != nil {
		t.Fatal(err)
	}
	if c, _ := ts.Stat(ctx, h); !c.RetainUntil.Equal(later) {
		t.Errorf("after re-upload retain_until = %s, want %s", c.RetainUntil, later)
	}
	// A re-upload asking for more extends, with an audit entry.
	further := epoch.AddDate(2, 0, 0)
	if _, err := ts.PutChunk(ctx, "agent-1", h, bytes.NewReader(b), further); err != nil {
		t.Fatal(err)
	}
	if c, _ := ts.Stat(ctx, h); !c.RetainUntil.Equal(further) {
		t.Errorf("after extending re-upload retain_until = %s, want %s", c.RetainUntil, further)
	}
	if n := ts.auditCount(t); n != 2 {
		t.Errorf("audit entries = %d, want 2 (two extensions)", n)
	}

	for _, bad := range []time.Time{epoch.Add(-time.Hour), epoch, epoch.AddDate(101, 0, 0)} {
		if _, err := ts.Retain(ctx, "agent-1", []chunk.Hash{h}, bad); !isInvalid(err) {
			t.Errorf("Retain(%s) err = %v, want InvalidError", bad, err)
		}
	}
	if _, err := ts.Retain(ctx, "agent-1", nil, later); !isInvalid(err) {
		t.Errorf("Retain(no hashes) err = %v, want InvalidError", err)
	}
}

func isInvalid(err error) bool {
	var inv *store.InvalidError
	return errors.As(err, &inv)
}

// The database itself refuses what must never happen, whatever SQL the
// application role sends (invariant 3).
func TestDatabaseRefusesForbiddenChanges(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 1000)
	ts.mustPut(t, b)
	ts.Retain(ctx, "agent-1", []chunk.Hash{h}, epoch.AddDate(1, 0, 0))

	mustRefuseAll(t, ts.pool, []forbidden{
		{name: "shorten retention", sql: "UPDATE chunks SET retain_until = retain_until - interval '1 day'", code: "WV001"},
		{name: "change hash", sql: "UPDATE chunks SET hash = decode(repeat('00', 32), 'hex')", code: "WV002", runtime: permissionDenied},
		{name: "change size", sql: "UPDATE chunks SET size = size + 1", code: "WV002", runtime: permissionDenied},
		{name: "change uploader", sql: "UPDATE chunks SET uploaded_by = 'someone-else'", code: "WV002", runtime: permissionDenied},
		{name: "delete chunk", sql: "DELETE FROM chunks", code: "WV003"},
		{name: "truncate chunks", sql: "TRUNCATE chunks", code: "WV003", runtime: permissionDenied},
		{name: "edit audit log", sql: "UPDATE audit_log SET actor = 'nobody'", code: "WV004", runtime: permissionDenied},
		{name: "delete audit log", sql: "DELETE FROM audit_log", code: "WV004", runtime: permissionDenied},
		{name: "truncate audit log", sql: "TRUNCATE audit_log", code: "WV004", runtime: permissionDenied},
	}, func(t testing.TB) string { return snapshotChunks(t, ts) })
}

func snapshotChunks(t testing.TB, ts *testStore) string {
	t.Helper()
	var s string
	err := ts.pool.QueryRow(context.Background(),
		"SELECT coalesce(string_agg(encode(hash,'hex')||size||retain_until||uploaded_by, ',' ORDER BY hash), '') FROM chunks").Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	var audit int
	ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_log").Scan(&audit)
	return fmt.Sprintf("%s|audit=%d", s, audit)
}

func TestMissing(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	b, h := randomChunk(t, 100)
	ts.mustPut(t, b)
	_, a := randomChunk(t, 10)
	_, c := randomChunk(t, 10)
	got, err := ts.Missing(context.Background(), []chunk.Hash{a, h, c, a})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != a || got[1] != c {
		t.Errorf("Missing = %v, want [%s %s]", got, a, c)
	}
	if _, err := ts.Missing(context.Background(), make([]chunk.Hash, 51)); !isInvalid(err) {
		t.Errorf("Missing(51 hashes) err = %v, want InvalidError", err)
	}
}

func TestConcurrentPutsOfOneChunk(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	b, h := randomChunk(t, 300_000)
	const n = 16
	var wg sync.WaitGroup
	created := make(chan bool, n)
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := ts.PutChunk(context.Background(), "agent-1", h, bytes.NewReader(b), time.Time{})
			errs <- err
			created <- res.Created
		}()
	}
	wg.Wait()
	close(errs)
	close(created)
	for err := range errs {
		if err != nil {
			t.Errorf("PutChunk: %v", err)
		}
	}
	var nCreated int
	for c := range created {
		if c {
			nCreated++
		}
	}
	if nCreated != 1 {
		t.Errorf("%d callers were told they created the chunk, want 1", nCreated)
	}
	if rows, files := ts.count(t, "chunks"), len(ts.files(t)); rows != 1 || files != 1 {
		t.Errorf("rows = %d, files = %d; want 1 and 1", rows, files)
	}
}

func TestOpenRefusesCorruptContent(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	b, h := randomChunk(t, 10_000)
	ts.mustPut(t, b)
	path := ts.files(t)[0]
	os.Chmod(path, 0o640)
	bad := bytes.Clone(b)
	bad[5000] ^= 1
	if err := os.WriteFile(path, bad, 0o440); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ts.OpenChunk(context.Background(), h); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("OpenChunk(corrupt) err = %v, want ErrCorrupt", err)
	}
	// The read recorded the damage and quarantined the bad file: it stays
	// refused, and is no longer at its address.
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("corrupt file still at its address after the refused read: %v", err)
	}
	if _, _, err := ts.OpenChunk(context.Background(), h); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("OpenChunk(quarantined) err = %v, want ErrCorrupt", err)
	}
	b2, h2 := randomChunk(t, 10_000)
	ts.mustPut(t, b2)
	for _, p := range ts.files(t) {
		os.Remove(p)
	}
	if _, _, err := ts.OpenChunk(context.Background(), h2); !errors.Is(err, store.ErrContentMissing) {
		t.Fatalf("OpenChunk(removed) err = %v, want ErrContentMissing", err)
	}
	// An upload of the right content restores each.
	for _, c := range [][]byte{b, b2} {
		ts.mustPut(t, c)
		rc, _, err := ts.OpenChunk(context.Background(), chunk.Sum(c))
		if err != nil {
			t.Fatalf("after restoring upload: %v", err)
		}
		rc.Close()
	}
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()

	indexed, _ := randomChunk(t, 2000)
	ts.mustPut(t, indexed)
	// Content that reached disk but whose row never committed: the crash
	// window between blob Put and the index insert.
	orphan, orphanHash := randomChunk(t, 3000)
	if _, err := ts.blobs.Put(ctx, orphanHash, bytes.NewReader(orphan)); err != nil {
		t.Fatal(err)
	}
	// Unindexed content that is corrupt.
	corrupt, corruptHash := randomChunk(t, 3000)
	ts.blobs.Put(ctx, corruptHash, bytes.NewReader(corrupt))
	for _, p := range ts.files(t) {
		if filepath.Base(p) == corruptHash.String() {
			os.Chmod(p, 0o640)
			os.WriteFile(p, []byte("not the content"), 0o440)
		}
	}
	// A row whose content vanished.
	lost, lostHash := randomChunk(t, 1000)
	ts.mustPut(t, lost)
	for _, p := range ts.files(t) {
		if filepath.Base(p) == lostHash.String() {
			os.Remove(p)
		}
	}
	// A temp file from an interrupted write.
	leaf := filepath.Dir(ts.files(t)[0])
	os.WriteFile(filepath.Join(leaf, ".tmp-123"), []byte("partial"), 0o600)

	rep, err := ts.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.ReconcileReport{TempRemoved: 1, Adopted: 1, Quarantined: 1, Missing: 1, MissingList: []chunk.Hash{lostHash}}
	if rep.TempRemoved != want.TempRemoved || rep.Adopted != want.Adopted || rep.Quarantined != want.Quarantined ||
		rep.Missing != want.Missing || len(rep.MissingList) != 1 || rep.MissingList[0] != lostHash {
		t.Fatalf("Reconcile = %+v, want %+v", rep, want)
	}
	c, err := ts.Stat(ctx, orphanHash)
	if err != nil || c.UploadedBy != "reconcile" || !c.RetainUntil.Equal(epoch.Add(store.DefaultMinRetention)) {
		t.Errorf("adopted chunk = %+v, %v; want uploader reconcile with min retention", c, err)
	}
	if _, err := ts.Stat(ctx, corruptHash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("corrupt orphan indexed: %v", err)
	}
	// A second run finds nothing new to do but still reports the loss.
	rep, err = ts.Reconcile(ctx)
	if err != nil || rep.TempRemoved+rep.Adopted+rep.Quarantined != 0 || rep.Missing != 1 {
		t.Errorf("second Reconcile = %+v, %v", rep, err)
	}
}

func TestIndexDownFailsBeforeDiskWork(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	dead, err := pgxpool.New(context.Background(), "postgres://vault:x@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	s := store.New(dead, ts.blobs, ts.clk, slog.New(slog.DiscardHandler), nil, store.Options{})
	b, h := randomChunk(t, 1000)
	_, err = s.PutChunk(context.Background(), "agent-1", h, bytes.NewReader(b), time.Time{})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if f := ts.files(t); len(f) != 0 {
		t.Errorf("files written while the index was down: %v", f)
	}
	// Once the index is back, the same upload succeeds.
	if res := ts.mustPut(t, b); !res.Created {
		t.Errorf("retry: %+v, want created", res)
	}
}

func TestRevokeAndAudit(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	if ok, err := ts.IsRevoked(ctx, "abc"); ok || err != nil {
		t.Fatalf("IsRevoked before = %v, %v", ok, err)
	}
	if err := ts.RevokeToken(ctx, "cli:root", "abc", "lost laptop", store.RevokeOptions{Unregistered: true}); err != nil {
		t.Fatal(err)
	}
	if err := ts.RevokeToken(ctx, "cli:root", "abc", "again", store.RevokeOptions{Unregistered: true}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second revoke err = %v, want ErrConflict", err)
	}
	if ok, err := ts.IsRevoked(ctx, "abc"); !ok || err != nil {
		t.Fatalf("IsRevoked after = %v, %v", ok, err)
	}
	b, h := randomChunk(t, 10)
	ts.mustPut(t, b)
	ts.Retain(ctx, "agent-1", []chunk.Hash{h}, epoch.AddDate(1, 0, 0))

	n, err := ts.VerifyAudit(ctx)
	if err != nil || n != 3 {
		t.Fatalf("VerifyAudit = %d, %v; want 3 entries (revoke, commit, retain), intact", n, err)
	}
	entries, _ := ts.AuditEntries(ctx, 0, 10)
	entries = adminEntries(entries)
	if entries[0].Action != "token.revoke" || entries[1].Action != "chunk.retain" {
		t.Errorf("actions = %s, %s", entries[0].Action, entries[1].Action)
	}
	// A rewritten entry no longer verifies.
	entries[0].Payload = entries[0].Payload[:len(entries[0].Payload)-1] + " }"
	if _, err := store.VerifyAuditChain(make([]byte, 32), entries); !errors.Is(err, store.ErrAuditChainBroken) {
		t.Errorf("tampered chain err = %v, want ErrAuditChainBroken", err)
	}
}

// A revocation made by another process (here: another Store on the same
// database) reaches a server's in-memory list through LISTEN/NOTIFY.
func TestRevocationListener(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ts.WatchRevocations(ctx)
	other := store.New(ts.pool, ts.blobs, ts.clk, slog.New(slog.DiscardHandler), nil, store.Options{})
	if err := other.RevokeToken(ctx, "cli:root", "jti-1", "", store.RevokeOptions{Unregistered: true}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := ts.IsRevoked(ctx, "jti-1")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("revocation never seen")
		}
		runtime.Gosched()
	}
	for _, jti := range []string{"jti-2", "jti-3"} {
		if err := other.RevokeToken(ctx, "cli:root", jti, "", store.RevokeOptions{Unregistered: true}); err != nil {
			t.Fatal(err)
		}
	}
	for ok := false; !ok; runtime.Gosched() {
		ok, _ = ts.IsRevoked(ctx, "jti-3")
		if time.Now().After(deadline) {
			t.Fatal("later revocation never seen")
		}
	}
	if ok, _ := ts.IsRevoked(ctx, "never"); ok {
		t.Error("unrevoked token reported revoked")
	}
}

// The register: an issued token is listed with its scope; revoke refuses
// an id that was never issued (a typo during an incident must not report
// success) and accepts a registered one; the runtime role can neither
// change nor delete a register row nor un-distrust a key.
func TestTokenRegisterRefusesUnknownIDs(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	now := ts.clk.Now()
	tok := store.IssuedToken{JTI: strings.Repeat("ab", 16), Role: "agent", Subject: "db01", Scope: []byte(`{"sources":["db01"]}`),
		KeyID: strings.Repeat("cd", 8), IssuedAt: now, ExpiresAt: now.Add(time.Hour), IssuedBy: "cli:root"}
	if err := ts.RegisterToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := ts.RegisterToken(ctx, tok); !errors.Is(err, store.ErrConflict) {
		t.Errorf("registering an id twice: %v, want ErrConflict", err)
	}
	for name, bad := range map[string]store.IssuedToken{
		"short jti":        {JTI: "ab", Role: "admin", Subject: "a", KeyID: tok.KeyID, IssuedAt: now, ExpiresAt: now.Add(time.Hour), IssuedBy: "x"},
		"agent no scope":   {JTI: strings.Repeat("01", 16), Role: "agent", Subject: "a", KeyID: tok.KeyID, IssuedAt: now, ExpiresAt: now.Add(time.Hour), IssuedBy: "x"},
		"admin with scope": {JTI: strings.Repeat("02", 16), Role: "admin", Subject: "a", Scope: []byte(`{"all":true}`), KeyID: tok.KeyID, IssuedAt: now, ExpiresAt: now.Add(time.Hour), IssuedBy: "x"},
		"expired at issue": {JTI: strings.Repeat("03", 16), Role: "admin", Subject: "a", KeyID: tok.KeyID, IssuedAt: now, ExpiresAt: now, IssuedBy: "x"},
		"unknown role":     {JTI: strings.Repeat("04", 16), Role: "root", Subject: "a", KeyID: tok.KeyID, IssuedAt: now, ExpiresAt: now.Add(time.Hour), IssuedBy: "x"},
	} {
		if err := ts.RegisterToken(ctx, bad); err == nil {
			t.Errorf("RegisterToken(%s) succeeded", name)
		}
	}
	if err := ts.RevokeToken(ctx, "cli:root", strings.Repeat("ab", 15)+"ac", "typo", store.RevokeOptions{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoking an id never issued: %v, want ErrNotFound", err)
	}
	if err := ts.RevokeToken(ctx, "cli:root", tok.JTI, "stolen", store.RevokeOptions{}); err != nil {
		t.Fatalf("revoking a registered token: %v", err)
	}
	list, err := ts.ListTokens(ctx, store.TokenQuery{})
	if err != nil || len(list) != 1 {
		t.Fatalf("ListTokens = %+v, %v; want the one token", list, err)
	}
	if got := list[0]; got.JTI != tok.JTI || got.Subject != "db01" || got.RevokedAt == nil || !strings.Contains(string(got.Scope), "db01") {
		t.Errorf("listed %+v, want %s of db01, revoked, with its scope", got, tok.JTI)
	}
	if active, _ := ts.ListTokens(ctx, store.TokenQuery{Active: true, Now: now}); len(active) != 0 {
		t.Errorf("active tokens = %+v, want none (the only one is revoked)", active)
	}

	if err := ts.DistrustKey(ctx, "cli:root", tok.KeyID, make([]byte, 32), "stolen laptop"); err != nil {
		t.Fatal(err)
	}
	if ok, err := ts.IsKeyDistrusted(ctx, tok.KeyID); err != nil || !ok {
		t.Errorf("IsKeyDistrusted after DistrustKey = %v, %v", ok, err)
	}
	if ok, _ := ts.IsKeyDistrusted(ctx, strings.Repeat("ef", 8)); ok {
		t.Errorf("an unknown key is distrusted")
	}
	for _, stmt := range []string{
		`UPDATE issued_tokens SET subject = 'web09'`,
		`DELETE FROM issued_tokens`,
		`DELETE FROM distrusted_keys`,
		`UPDATE distrusted_keys SET kid = '0000000000000000'`,
	} {
		if _, err := ts.pool.Exec(ctx, stmt); err == nil {
			t.Errorf("runtime role: %s succeeded", stmt)
		}
	}
	if ok, _ := ts.IsKeyDistrusted(ctx, tok.KeyID); !ok {
		t.Errorf("the key is trusted again after the runtime role's attempts")
	}
}
