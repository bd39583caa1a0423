package restic_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
)

// A stolen agent token of web09 (scope: restic repository web09) attacks
// db01's restic repository with the real restic client's victim watching:
//
//   - poisoning: junk written as snapshots/, index/, keys/ (and data/,
//     locks/) under names that are the junk's own SHA-256, which would
//     make restic fail "ciphertext verification failed" on restore and
//     check;
//   - config squatting: creating db02 and writing its config before its
//     owner's restic init.
//
// Every attempt is 403 and stores nothing; the victim's restore latest and
// check --read-data pass, and db02's owner initialises db02 afterwards.
func TestStolenAgentTokenCannotPoisonOrSquatResticRepository(t *testing.T) {
	resticBinary(t)
	ts := newTestServer(t, clock.Real{})
	victim := ts.scopedToken(t, auth.RoleAgent, "db01", auth.Scope{Sources: []string{"db01"}, Restic: []string{"db01"}})
	victimReader := ts.scopedToken(t, auth.RoleReader, "db01-restore", auth.Scope{Restic: []string{"db01"}})
	attacker := ts.scopedToken(t, auth.RoleAgent, "web09", auth.Scope{Sources: []string{"web09"}, Restic: []string{"web09"}})
	db02 := ts.scopedToken(t, auth.RoleAgent, "db02", auth.Scope{Restic: []string{"db02"}})

	rr := newResticRun(t, ts, "db01")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"etc/db.conf": 3000, "dump.sql": 200_000, "empty": 0} {
		if err := os.WriteFile(filepath.Join(src, name), bytes.Repeat([]byte(name), n/len(name)+1)[:n], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rr.must(victim, password, "init")
	rr.backup(victim, src)

	filesBefore, reposBefore := ts.count(t, "restic_files"), ts.count(t, "restic_repositories")
	junk, name := content(t, 300)
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/restic/db01/snapshots/" + name},
		{http.MethodPost, "/restic/db01/index/" + name},
		{http.MethodPost, "/restic/db01/keys/" + name},
		{http.MethodPost, "/restic/db01/data/" + name},
		{http.MethodPost, "/restic/db01/locks/" + name},
		{http.MethodPost, "/restic/db01/config"},
		{http.MethodPost, "/restic/db01/?create=true"},
		{http.MethodGet, "/restic/db01/keys/"},
		{http.MethodGet, "/restic/db01/config"},
		{http.MethodDelete, "/restic/db01/locks/" + name},
		// Config squatting: a repository outside the scope is not created.
		{http.MethodPost, "/restic/db02/?create=true"},
		{http.MethodPost, "/restic/db02/config"},
	} {
		body := junk
		if strings.Contains(c.path, "create") || c.method != http.MethodPost {
			body = nil
		}
		want(t, ts.do(t, c.method, c.path, basic(attacker), body, nil), http.StatusForbidden, "forbidden")
	}
	// The victim's reader token cannot write or reach web09 either.
	want(t, ts.do(t, http.MethodGet, "/restic/web09/keys/", basic(victimReader), nil, nil), http.StatusForbidden, "forbidden")
	if f, r := ts.count(t, "restic_files"), ts.count(t, "restic_repositories"); f != filesBefore || r != reposBefore {
		t.Errorf("refused writes stored something: restic_files %d -> %d, repositories %d -> %d", filesBefore, f, reposBefore, r)
	}

	// The victim's restic still works, end to end.
	if out := rr.must(victimReader, password, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
		t.Errorf("check --read-data:\n%s", out)
	}
	target := t.TempDir()
	rr.must(victimReader, password, "restore", "latest", "--target", target)
	sameTree(t, src, filepath.Join(target, src))

	// db02's owner initialises db02: nothing was squatted.
	newResticRun(t, ts, "db02").must(db02, password, "init")
	// The repository records the scope that created it.
	var scope string
	if err := ts.pool.QueryRow(t.Context(), "SELECT created_scope::text FROM restic_repositories WHERE name = 'db02'").Scan(&scope); err != nil {
		t.Fatal(err)
	}
	if scope != `{"restic": ["db02"]}` {
		t.Errorf("db02 created_scope = %s, want the creating token's scope", scope)
	}
}
