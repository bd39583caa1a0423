package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAuditVerifyMillionOverHTTP is acceptance 2 of issue 9 end to end:
// a log of VAULT_AUDIT_DB_ENTRIES chunk commits built by the integrator in
// PostgreSQL, then `vault audit verify` over HTTP. Slow; run with
//
//	VAULT_AUDIT_DB_ENTRIES=1000000 go test -run TestAuditVerifyMillionOverHTTP -v -timeout 60m ./cmd/vault/
func TestAuditVerifyMillionOverHTTP(t *testing.T) {
	env := os.Getenv("VAULT_AUDIT_DB_ENTRIES")
	if env == "" {
		t.Skip("set VAULT_AUDIT_DB_ENTRIES (e.g. 1000000) to run")
	}
	n, err := strconv.ParseInt(env, 10, 64)
	if err != nil || n < 1 {
		t.Fatalf("VAULT_AUDIT_DB_ENTRIES=%q", env)
	}
	f := newAuditLogFixture(t)
	ctx := context.Background()
	start := time.Now()
	// Index rows only: the verifier looks chunks up with HEAD, which reads
	// the index.
	if _, err := f.pool.Exec(ctx, `INSERT INTO chunks (hash, size, stored_at, retain_until, uploaded_by)
		SELECT sha256(int8send(i)), 4096, $2::timestamptz, $2::timestamptz + interval '30 days', 'agent-bulk'
		FROM generate_series(1, $1::bigint) AS i`, n-4, auditorEpoch); err != nil {
		t.Fatal(err)
	}
	t.Logf("inserted %d chunk rows in %s", n-4, time.Since(start))
	start = time.Now()
	for {
		k, err := f.store.IntegrateChunks(ctx, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
	}
	f.integrate(t)
	t.Logf("integrated into the log (tree hashes included) in %s", time.Since(start))

	state := filepath.Join(t.TempDir(), "state")
	var out, errOut bytes.Buffer
	start = time.Now()
	err = run(ctx, []string{"audit", "verify", "--state", state, "--key", f.keys.vkey, "--check-chunks", "1000"},
		envOf(f.env), strings.NewReader(""), &out, &errOut)
	if err != nil {
		t.Fatalf("verify: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	t.Logf("vault audit verify over %d entries: %s (in-process server included)\n%s", n, time.Since(start), out.String())
}
