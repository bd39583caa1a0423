package restic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
)

// EnvSkipRestic, set to 1, skips the tests that run the real restic client
// when it is not installed. For developers without root only: CI installs
// restic (scripts/test.sh) and must never set it.
const EnvSkipRestic = "VAULT_SKIP_RESTIC"

// resticBinary finds the restic client or fails the test saying how to get
// it; it skips, loudly, only when EnvSkipRestic=1.
func resticBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("restic")
	if err == nil {
		return bin
	}
	if os.Getenv(EnvSkipRestic) == "1" {
		t.Logf("!!! %s=1: SKIPPING the restic integration test, the restic client is not installed. "+
			"The vault's restic support is NOT tested by this run. Install restic (apt-get install restic) to run it.", EnvSkipRestic)
		t.Skip("restic client not installed and " + EnvSkipRestic + "=1")
	}
	t.Fatalf("the restic client is not installed (%v): scripts/test.sh installs it when run as root "+
		"(apt-get install restic); otherwise install it yourself, or set %s=1 to skip this test (never in CI)", err, EnvSkipRestic)
	return ""
}

// resticRun runs restic commands against one repository on the server.
type resticRun struct {
	t     *testing.T
	bin   string
	url   string // http://127.0.0.1:port/restic/REPO/
	cache string
	home  string
}

func newResticRun(t *testing.T, ts *testServer, repo string) *resticRun {
	return &resticRun{t: t, bin: resticBinary(t), url: ts.URL + "/restic/" + repo + "/", cache: t.TempDir(), home: t.TempDir()}
}

// run executes restic with token as the basic-auth password and returns
// stdout, stderr and the error of a non-zero exit.
func (rr *resticRun) run(token, password string, args ...string) (string, string, error) {
	rr.t.Helper()
	repo := "rest:" + strings.Replace(rr.url, "http://", "http://restic:"+token+"@", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rr.bin, append([]string{"-r", repo}, args...)...)
	cmd.Env = []string{"HOME=" + rr.home, "RESTIC_PASSWORD=" + password, "RESTIC_CACHE_DIR=" + rr.cache, "PATH=/usr/bin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	rr.t.Logf("restic %s: %v in %.1fs", strings.Join(args, " "), err, time.Since(start).Seconds())
	return stdout.String(), stderr.String(), err
}

// must runs a command that has to succeed.
func (rr *resticRun) must(token, password string, args ...string) string {
	rr.t.Helper()
	out, errOut, err := rr.run(token, password, args...)
	if err != nil {
		rr.t.Fatalf("restic %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

const password = "correct horse battery staple"

// backupSummary is the last line of restic backup --json.
type backupSummary struct {
	MessageType string `json:"message_type"`
	FilesNew    int    `json:"files_new"`
	FilesChange int    `json:"files_changed"`
	DataAdded   int64  `json:"data_added"`
	SnapshotID  string `json:"snapshot_id"`
}

func (rr *resticRun) backup(token, dir string) backupSummary {
	rr.t.Helper()
	out := rr.must(token, password, "backup", "--json", "--host", "test-host", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var s backupSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil || s.MessageType != "summary" || s.SnapshotID == "" {
		rr.t.Fatalf("backup summary %q: %v", lines[len(lines)-1], err)
	}
	return s
}

func (rr *resticRun) snapshots(token string) []string {
	rr.t.Helper()
	var list []struct {
		ID string `json:"id"`
	}
	out := rr.must(token, password, "snapshots", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		rr.t.Fatalf("snapshots --json %q: %v", out, err)
	}
	ids := make([]string, len(list))
	for i, s := range list {
		ids[i] = s.ID
	}
	return ids
}

// makeTree writes a deterministic tree of about 12 MiB: files from empty to
// several MiB, nested directories, a duplicate and a symlink.
func makeTree(t *testing.T, dir string, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed)}))
	write := func(rel string, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return b
	}
	write("empty", 0)
	write("one", 1)
	for i, n := range []int{100, 4 << 10, 70 << 10, 300 << 10, 1 << 20, 3 << 20, 6 << 20} {
		write(filepath.Join("d"+string(rune('a'+i%3)), "sub", "f"+string(rune('0'+i))), n)
	}
	dup := write("docs/report.bin", 512<<10)
	if err := os.WriteFile(filepath.Join(dir, "docs", "report-copy.bin"), dup, 0o644); err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("compressible text line\n"), 20_000)
	if err := os.WriteFile(filepath.Join(dir, "docs", "notes.txt"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("docs/notes.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}

// sameTree fails unless got holds exactly want's files, links and bytes.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		q := filepath.Join(got, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, err := os.Readlink(q)
			if err != nil || a != b {
				t.Errorf("restored link %s = %q, %v; want %q", rel, b, err, a)
			}
		case d.Type().IsRegular():
			a, _ := os.ReadFile(p)
			b, err := os.ReadFile(q)
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("restored %s differs (%d bytes, want %d; %v)", rel, len(b), len(a), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(got, p); err == nil && !seen[rel] {
			t.Errorf("restore has %s, which the source does not", rel)
		}
		return nil
	})
}

// TestResticClient runs the real restic client against the vault: two
// repositories in parallel, one through backup, check and restore, the
// other through forget --prune, which the vault refuses (restic 0.14
// retries each refused DELETE for about 45 seconds before giving up).
func TestResticClient(t *testing.T) {
	resticBinary(t)
	// restic's packs are 16 MiB by default (at most 128 MiB with
	// --pack-size): the vault's default 64 MiB chunk limit holds them.
	ts := newTestServerSize(t, clock.Real{}, 64<<20)
	agent, reader := ts.token(t, auth.RoleAgent), ts.token(t, auth.RoleReader)

	t.Run("backup-check-restore", func(t *testing.T) {
		t.Parallel()
		rr := newResticRun(t, ts, "host-a")
		src := filepath.Join(t.TempDir(), "src")
		makeTree(t, src, 1)

		rr.must(agent, password, "init")
		first := rr.backup(agent, src)
		if first.FilesNew < 10 || first.DataAdded < 10<<20 {
			t.Errorf("first backup: %+v, want every file new and >10 MiB added", first)
		}
		dataFiles := ts.countType(t, "host-a", "data")

		// The second backup sends only what changed.
		if err := os.WriteFile(filepath.Join(src, "docs", "new.bin"), bytes.Repeat([]byte{7, 1, 9}, 40_000), 0o644); err != nil {
			t.Fatal(err)
		}
		second := rr.backup(agent, src)
		if second.FilesNew != 1 || second.DataAdded > 1<<20 {
			t.Errorf("second backup: %+v, want one new file and under 1 MiB added", second)
		}
		if n := ts.countType(t, "host-a", "data"); n > dataFiles+2 {
			t.Errorf("second backup: %d data files, was %d; want at most 2 more", n, dataFiles)
		}

		if ids := rr.snapshots(reader); len(ids) != 2 {
			t.Errorf("snapshots = %v, want 2", ids)
		}
		if out := rr.must(reader, password, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
			t.Errorf("check --read-data:\n%s", out)
		}
		target := t.TempDir()
		rr.must(reader, password, "restore", "latest", "--target", target)
		sameTree(t, src, filepath.Join(target, src))

		// Refused: a wrong password, a token that is not the vault's.
		if _, errOut, err := rr.run(reader, "wrong password", "snapshots"); err == nil || !strings.Contains(errOut, "wrong password") {
			t.Errorf("wrong password: %v, %s; want refused", err, errOut)
		}
		other := newTestServer(t, clock.Real{})
		for _, tok := range []string{"not-a-token", other.token(t, auth.RoleReader), agent[:len(agent)-2]} {
			if _, errOut, err := rr.run(tok, password, "snapshots"); err == nil || !strings.Contains(errOut, "401") {
				t.Errorf("wrong token: %v, %s; want 401", err, errOut)
			}
		}
	})

	t.Run("forget-prune-refused", func(t *testing.T) {
		t.Parallel()
		rr := newResticRun(t, ts, "host-b")
		src := filepath.Join(t.TempDir(), "src")
		makeTree(t, src, 2)
		rr.must(agent, password, "init")
		rr.backup(agent, src)
		if err := os.Remove(filepath.Join(src, "docs", "report.bin")); err != nil {
			t.Fatal(err)
		}
		rr.backup(agent, src)
		before := ts.files(t, "host-b")

		out, errOut, err := rr.run(agent, password, "forget", "--keep-last", "1", "--prune")
		if err == nil || !strings.Contains(errOut, "403") {
			t.Fatalf("forget --prune: %v; want refused with 403\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("forget --prune did not run: %v", err)
		}

		// Nothing was lost: every file is still there, restic agrees.
		if after := ts.files(t, "host-b"); !equalSets(before, after) {
			t.Errorf("files changed by a refused forget --prune:\nbefore %v\nafter  %v", before, after)
		}
		if ids := rr.snapshots(reader); len(ids) != 2 {
			t.Errorf("snapshots after forget --prune = %v, want both", ids)
		}
		if out := rr.must(reader, password, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
			t.Errorf("check --read-data after forget --prune:\n%s", out)
		}
		if n := ts.countType(t, "host-b", "locks"); n != 0 {
			t.Errorf("%d locks left; restic removes its own", n)
		}
	})
}

// countType counts a repository's files of one type.
func (ts *testServer) countType(t testing.TB, repo, typ string) int {
	t.Helper()
	var n int
	if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM restic_files WHERE repo = $1 AND type = $2", repo, typ).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// files lists a repository's files other than locks, as type/name.
func (ts *testServer) files(t testing.TB, repo string) []string {
	t.Helper()
	rows, err := ts.pool.Query(context.Background(), "SELECT type || '/' || name FROM restic_files WHERE repo = $1 AND type <> 'locks' ORDER BY 1", repo)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func equalSets(a, b []string) bool { return len(a) > 0 && slices.Equal(a, b) }
