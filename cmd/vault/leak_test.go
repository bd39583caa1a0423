package main

// Issue 13, acceptance 1, end to end with the real binary: what one leaked
// database credential can do to a running vault. The database is an index
// (invariant 8): the attacks may cost availability, never content,
// retention or holds.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
)

// leakVault is a running vault with some content, and what protects it.
type leakVault struct {
	bin, dir string
	db       pgtest.DB
	args     []string
	srv      *vaultServer
	client   *http.Client

	agent, reader, auditor, admin string
	chunks                        map[chunk.Hash][]byte
	held                          chunk.Hash
	longer                        chunk.Hash
}

func newLeakVault(t *testing.T) *leakVault {
	t.Helper()
	v := &leakVault{bin: mustBuildVault(t), db: pgtest.New(t), chunks: map[chunk.Hash][]byte{}}
	v.dir = filepath.Join(t.TempDir(), "data")
	mustRunVault(t, v.bin, "init", "--data-dir", v.dir)
	v.agent = mustIssueToken(t, v.bin, v.dir, v.db.URL, "agent", "web09")
	v.reader = mustIssueToken(t, v.bin, v.dir, v.db.URL, "reader", "restore")
	v.auditor = mustIssueToken(t, v.bin, v.dir, v.db.URL, "auditor", "audit")
	v.admin = mustIssueToken(t, v.bin, v.dir, v.db.URL, "admin", "alice")
	// The server connects as the runtime role, as `make run` and the
	// compose file make it do.
	v.args = []string{"--data-dir", v.dir, "--database-url", v.db.URL, "--listen", "127.0.0.1:0", "--pack-threshold", "256KiB"}
	v.client = newTestClient(t)
	v.start(t)

	rng := rand.New(rand.NewPCG(13, 13))
	for i := range 9 {
		n := 4 << 10 // packed
		if i%3 == 0 {
			n = 300 << 10 // a file of its own
		}
		b := make([]byte, n)
		fillRandom(rng, b)
		h := chunk.Sum(b)
		if status, err := putChunk(v.client, v.srv.url, v.agent, h, b); err != nil || status != http.StatusCreated {
			t.Fatalf("PUT %s: %d, %v", h, status, err)
		}
		v.chunks[h] = b
		if i == 0 {
			v.held = h
		}
		if i == 1 {
			v.longer = h
		}
	}
	v.must(t, http.MethodPost, "/v1/chunks/retain", v.agent,
		map[string]any{"hashes": []string{v.longer.String()}, "retain_until": time.Now().AddDate(3, 0, 0).UTC().Format(time.RFC3339)}, http.StatusOK)
	v.must(t, http.MethodPost, "/v1/holds", v.admin,
		map[string]any{"name": "case 13", "reason": "litigation", "chunks": []string{v.held.String()}}, http.StatusCreated)
	return v
}

func (v *leakVault) start(t *testing.T) {
	t.Helper()
	v.srv = mustStartVault(t, v.bin, v.args...)
	mustWaitReady(t, v.client, v.srv)
}

func (v *leakVault) stop(t *testing.T) {
	t.Helper()
	v.srv.signal(t, syscall.SIGTERM)
	if err := v.srv.waitExit(t, 60*time.Second); err != nil {
		t.Fatalf("vault serve exited with %v", err)
	}
}

// must does one API call and checks its status; it returns the body.
func (v *leakVault) must(t *testing.T, method, path, token string, body any, want int) []byte {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, v.srv.url+path, r)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := v.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, out, want)
	}
	return out
}

// protection is what keeps each chunk: its retention and holds, as the
// auditor sees them.
func (v *leakVault) protection(t *testing.T) map[chunk.Hash]string {
	t.Helper()
	out := map[chunk.Hash]string{}
	for h := range v.chunks {
		var r struct {
			RetainUntil time.Time `json:"retain_until"`
			Holds       []struct {
				ID int64 `json:"id"`
			} `json:"holds"`
		}
		if err := json.Unmarshal(v.must(t, http.MethodGet, "/v1/chunks/"+h.String()+"/retention", v.auditor, nil, http.StatusOK), &r); err != nil {
			t.Fatal(err)
		}
		out[h] = r.RetainUntil.UTC().Format(time.RFC3339Nano) + " holds " + strings.Repeat("h", len(r.Holds))
	}
	return out
}

// mustReadAll reads every chunk back, verified by the server and here.
func (v *leakVault) mustReadAll(t *testing.T) {
	t.Helper()
	for h, want := range v.chunks {
		status, got := mustGetChunk(t, v.client, v.srv.url, v.reader, h)
		if status != http.StatusOK || !bytes.Equal(got, want) {
			t.Errorf("GET %s: %d, %d bytes; want 200 and its %d bytes", h, status, len(got), len(want))
		}
	}
}

// contentFiles hashes every file holding content (chunk files and packs).
func contentFiles(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for _, sub := range []string{"blake3", "packs"} {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[p] = sha256.Sum256(b)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// mustKeepContent checks that every file of before is still there,
// byte for byte (a restart may add a new, empty pack).
func mustKeepContent(t *testing.T, before, after map[string][32]byte) {
	t.Helper()
	for p, h := range before {
		if got, ok := after[p]; !ok || got != h {
			t.Errorf("content file %s changed or vanished", p)
		}
	}
}

// sqlAs runs statements in one session on url and returns the error.
func sqlAs(t *testing.T, url, sql string) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// With the runtime credential only (the one in the server's environment),
// each attack of issue 13 is refused by the database, nothing changes,
// and a chunk uploaded after the integrator's position was jumped is still
// logged. After a restart every chunk reads back with its protection.
func TestLeakedRuntimeCredentialDestroysNothing(t *testing.T) {
	t.Parallel()
	v := newLeakVault(t)
	files := contentFiles(t, v.dir)
	prot := v.protection(t)
	v.stop(t)

	settings := "SELECT set_config('wormvault.deletion_id', '1', false), set_config('wormvault.now', '2199-01-01', false); "
	for _, attack := range []string{
		// 1. wipe everything
		`INSERT INTO deletion_requests (kind, targets, digest, reason, requested_by, requested_at, approvals_required, delay, expires_at, state)
		 VALUES ('expired', 'x', decode(repeat('00', 32), 'hex'), 'wipe', 'mallory', now(), 1, '1 second', now() + interval '1 day', 'executing')`,
		settings + "DELETE FROM chunks",
		settings + "UPDATE holds SET released_at = now(), released_by = 'mallory'",
		settings + "DELETE FROM packs_indexed",
		"UPDATE chunks SET retain_until = stored_at",
		"TRUNCATE chunks",
		"ALTER TABLE chunks DISABLE TRIGGER USER",
		// 2. forge the admin set and a tombstone naming a live chunk
		`INSERT INTO admin_set_versions (version, approvals_required, delay, governance_approvals, governance_delay, created_at, request_id)
		 VALUES (2, 1, '1 second', 1, '1 second', now(), 1)`,
		`INSERT INTO chunk_tombstones (hash, size, stored_at, uploaded_by, pack_id, pack_offset, deleted_at, deletion_id)
		 SELECT hash, size, stored_at, uploaded_by, pack_id, pack_offset, now(), 1 FROM chunks`,
		// 3. erase the evidence
		"DELETE FROM audit_log",
		"ALTER TABLE audit_log DISABLE TRIGGER USER",
	} {
		if err := sqlAs(t, v.db.URL, attack); err == nil {
			t.Errorf("as the runtime role, %q succeeded", attack)
		}
	}
	// 4. hide new chunks from the log: the position may move forward, and
	// no longer decides anything.
	if err := sqlAs(t, v.db.URL, "UPDATE audit_integrator SET chunk_seq = chunk_seq + 1000000"); err != nil {
		t.Fatalf("moving the integrator forward: %v", err)
	}

	v.start(t)
	mustKeepContent(t, files, contentFiles(t, v.dir))
	v.mustReadAll(t)
	if got := v.protection(t); !mapsEqual(got, prot) {
		t.Errorf("protection changed:\n before %v\n after  %v", prot, got)
	}
	b := []byte("uploaded after the integrator jumped")
	h := chunk.Sum(b)
	if status, err := putChunk(v.client, v.srv.url, v.agent, h, b); err != nil || status != http.StatusCreated {
		t.Fatalf("PUT after the attacks: %d, %v", status, err)
	}
	var logged int
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, v.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'chunk.commit'
		AND payload LIKE '%' || $1 || '%'`, h.String()).Scan(&logged); err != nil || logged != 1 {
		t.Errorf("chunk.commit entries of a chunk stored after the jump: %d, %v; want 1", logged, err)
	}
}

// With the owner's credential, the wipe of attack 1 goes through in the
// database: rows deleted, holds released, tombstones for every chunk, a
// forged executed request. Content is untouched, the restart refuses to
// serve the wiped index (the attempt is visible), and `vault reindex`
// repairs it from the journal: every chunk reads back with its retention
// and its hold.
func TestLeakedOwnerCredentialWipeIsRepaired(t *testing.T) {
	t.Parallel()
	v := newLeakVault(t)
	files := contentFiles(t, v.dir)
	prot := v.protection(t)
	v.stop(t)

	err := sqlAs(t, v.db.OwnerURL, `BEGIN;
		ALTER TABLE chunks DISABLE TRIGGER USER; ALTER TABLE holds DISABLE TRIGGER USER;
		ALTER TABLE deletion_requests DISABLE TRIGGER USER; ALTER TABLE chunk_tombstones DISABLE TRIGGER USER;
		ALTER TABLE packs_indexed DISABLE TRIGGER USER;
		INSERT INTO deletion_requests (id, kind, targets, digest, reason, requested_by, requested_at, approvals_required, delay, expires_at, state, executed_at)
		OVERRIDING SYSTEM VALUE VALUES (999, 'expired', 'x', decode(repeat('00', 32), 'hex'), 'wipe', 'mallory', now(), 1, '1 second', now() + interval '1 day', 'executed', now());
		INSERT INTO chunk_tombstones (hash, size, stored_at, uploaded_by, pack_id, pack_offset, deleted_at, deletion_id)
		SELECT hash, size, stored_at, uploaded_by, pack_id, pack_offset, now(), 999 FROM chunks;
		UPDATE holds SET released_at = now(), released_by = 'mallory';
		DELETE FROM chunks; DELETE FROM packs_indexed;
		ALTER TABLE chunks ENABLE TRIGGER USER; ALTER TABLE holds ENABLE TRIGGER USER;
		ALTER TABLE deletion_requests ENABLE TRIGGER USER; ALTER TABLE chunk_tombstones ENABLE TRIGGER USER;
		ALTER TABLE packs_indexed ENABLE TRIGGER USER;
		COMMIT`)
	if err != nil {
		t.Fatalf("the owner's wipe: %v", err)
	}

	// The restart refuses to serve an index that is not the journal's.
	refused := mustStartFailing(t, v.bin, v.args...)
	if !strings.Contains(refused, "vault reindex") || !strings.Contains(refused, "ALERT") {
		t.Errorf("serve over the wiped index: log does not raise an alert naming vault reindex:\n%s", refused)
	}
	mustKeepContent(t, files, contentFiles(t, v.dir))

	out, _ := mustRunVault(t, v.bin, "reindex", "--data-dir", v.dir, "--database-url", v.db.OwnerURL)
	t.Logf("vault reindex:\n%s", out)
	v.start(t)
	mustKeepContent(t, files, contentFiles(t, v.dir))
	v.mustReadAll(t)
	if got := v.protection(t); !mapsEqual(got, prot) {
		t.Errorf("protection after reindex:\n got  %v\n want %v", got, prot)
	}
}

// mustStartFailing runs `vault serve` expecting it to refuse to start, and
// returns its output.
func mustStartFailing(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve"}, args...)...)
	cmd.Env = subprocessEnv()
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err == nil {
		t.Fatalf("vault serve started over a wiped index; output:\n%s", out.String())
	}
	return out.String()
}

func mapsEqual(a, b map[chunk.Hash]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		if b[k] != x {
			return false
		}
	}
	return true
}
