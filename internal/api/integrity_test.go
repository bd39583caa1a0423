package api

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
)

// ownerExec runs statements with the audit tables' triggers disabled, as
// the tables' owner (or a superuser) could. It is the one place to point
// at an owner connection once tests run as the runtime role.
func ownerExec(t testing.TB, ts *testServer, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	owner := pgtest.OwnerPool(t, ts.pool)
	for _, tbl := range []string{"audit_log", "audit_hashes", "audit_checkpoints"} {
		if _, err := owner.Exec(ctx, "ALTER TABLE "+tbl+" DISABLE TRIGGER USER"); err != nil {
			t.Fatalf("disable triggers on %s: %v", tbl, err)
		}
	}
	for _, sql := range sqls {
		if _, err := owner.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// auditSize is the number of entries in the audit log.
func (ts *testServer) auditSize(t testing.TB) int64 {
	t.Helper()
	var n int64
	if err := ts.pool.QueryRow(context.Background(), "SELECT coalesce(max(seq), 0) FROM audit_log").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// hashesRead returns the stored-hash indexes that appending leaf n reads:
// the roots of the complete subtrees that the new leaf completes.
func hashesRead(t testing.TB, n int64) []int64 {
	t.Helper()
	var read []int64
	_, err := tlog.StoredHashes(n, []byte("probe"), tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		read = append(read, idx...)
		return make([]tlog.Hash, len(idx)), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return read
}

// TestAuditTreeFailureIs500 removes a stored hash of the audit log's tree
// as the tables' owner could. A proof that needs the hash and the
// checkpoint signer fail; the client gets 500 "integrity" with no
// Retry-After, never 503 "retry later"; each failure is logged as an ALERT
// and counted; /readyz shows it. (Appends go on: they take the new
// entries' tree hashes from the data directory's journal, whose tree is
// the authority, not from the damaged table.)
func TestAuditTreeFailureIs500(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ctx := context.Background()
	agent := ts.token(t, auth.RoleAgent)
	b, h := randomChunk(t, 100)
	ts.put(t, h, b, http.StatusCreated)
	until := t0.Add(minRetention)
	retain := func() response {
		until = until.Add(24 * time.Hour) // later each time: each call is an extension, an entry
		return ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": []string{h.String()}, "retain_until": until})
	}
	// Grow the log until the next append needs a stored hash other than
	// the last one (a missing last hash is recomputed from its entry).
	var victim int64 = -1
	for victim < 0 {
		if resp := retain(); resp.StatusCode != http.StatusOK {
			t.Fatalf("retain: %d %s", resp.StatusCode, resp.body)
		}
		n := ts.auditSize(t)
		for _, i := range hashesRead(t, n) {
			if i != tlog.StoredHashCount(n)-1 {
				victim = i
			}
		}
	}
	n := ts.auditSize(t)
	skey, _, err := note.GenerateKey(rand.Reader, audit.Origin(testVaultID))
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	if _, _, err := ts.store.SignCheckpoint(ctx, signer); err != nil {
		t.Fatal(err)
	}
	retained := ts.retainUntil(t, h)

	ownerExec(t, ts, "DELETE FROM audit_hashes WHERE idx = "+strconv.FormatInt(victim, 10))

	auditor := ts.token(t, auth.RoleAuditor)
	if resp := retain(); resp.StatusCode != http.StatusOK {
		t.Errorf("an append over the damaged table: %d %s, want 200 (its hashes come from the journal)", resp.StatusCode, resp.body)
	}
	for _, req := range []struct {
		name string
		do   func() response
	}{
		{"an inclusion proof", func() response {
			return ts.do(t, http.MethodGet, "/v1/audit/proof/inclusion?index="+strconv.FormatInt(n-1, 10)+"&size="+strconv.FormatInt(n, 10), auditor, nil, nil)
		}},
	} {
		resp := req.do()
		wantError(t, resp, http.StatusInternalServerError, "integrity")
		if resp.Header.Get("Retry-After") != "" {
			t.Errorf("%s: Retry-After on an integrity failure", req.name)
		}
	}
	if got := ts.retainUntil(t, h); !got.After(retained) {
		t.Errorf("retain_until = %v after the extension, want later than %v", got, retained)
	}
	if n := strings.Count(ts.logs.String(), "ALERT: audit log integrity failure"); n != 1 {
		t.Errorf("%d ALERT log lines for the one failure, want 1; log:\n%s", n, ts.logs.String())
	}

	// The signer finds the tree it signed can no longer be computed: it
	// stops, and readiness says so until a restart.
	if _, _, err := ts.store.SignCheckpoint(ctx, signer); !errors.Is(err, store.ErrRollback) {
		t.Fatalf("SignCheckpoint over a broken tree = %v, want ErrRollback", err)
	}
	wantError(t, ts.do(t, http.MethodGet, "/readyz", "", nil, nil), http.StatusInternalServerError, "integrity")
	if resp := ts.do(t, http.MethodGet, "/metrics", ts.token(t, auth.RoleMetrics), nil, nil); !strings.Contains(string(resp.body), "wormvault_integrity_errors_total 2") {
		t.Errorf("/metrics does not count 2 integrity errors:\n%s", grepLines(string(resp.body), "integrity"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
