package api

import (
	"context"
	"crypto/rand"
	"net/http"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/auth"
)

func TestAuditLogEndpoints(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ctx := context.Background()
	tok := ts.token(t, auth.RoleAuditor)

	// No checkpoint yet.
	wantError(t, ts.do(t, http.MethodGet, "/v1/audit/checkpoint", tok, nil, nil), http.StatusNotFound, "not_found")

	var hashes []string
	for range 3 {
		b, h := randomChunk(t, 100)
		ts.put(t, h, b, http.StatusCreated)
		hashes = append(hashes, h.String())
	}
	// Logged in the transactions that indexed them: nothing to backfill.
	if n, err := ts.store.IntegrateChunks(ctx, 0); err != nil || n != 0 {
		t.Fatalf("IntegrateChunks = %d, %v; want 0", n, err)
	}
	skey, vkey, _ := note.GenerateKey(rand.Reader, audit.Origin(testVaultID))
	signer, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	if _, _, err := ts.store.SignCheckpoint(ctx, signer); err != nil {
		t.Fatal(err)
	}

	resp := ts.do(t, http.MethodGet, "/v1/audit/checkpoint", tok, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("checkpoint: %d %s", resp.StatusCode, resp.body)
	}
	cp, err := audit.OpenCheckpoint(resp.body, v)
	if err != nil || cp.Size != 3 {
		t.Fatalf("checkpoint %q: %+v, %v", resp.body, cp, err)
	}

	var entries struct {
		Entries []audit.RawEntry `json:"entries"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/audit/entries?from=0&to=3", tok, nil, nil), &entries)
	if len(entries.Entries) != 3 {
		t.Fatalf("entries = %+v", entries)
	}
	var tree audit.Tree
	for _, e := range entries.Entries {
		tree.Append(tlog.RecordHash([]byte(e.Payload)))
	}
	if tree.Root() != cp.Root {
		t.Fatalf("entries hash to %s, checkpoint says %s", tree.Root(), cp.Root)
	}

	var inc struct {
		Index   int64            `json:"index"`
		Proof   tlog.RecordProof `json:"proof"`
		Payload string           `json:"payload"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/audit/proof/inclusion?size=3&chunk="+hashes[1], tok, nil, nil), &inc)
	if err := tlog.CheckRecord(inc.Proof, 3, cp.Root, inc.Index, tlog.RecordHash([]byte(inc.Payload))); err != nil || inc.Index != 1 {
		t.Errorf("inclusion of chunk 1: index %d, %v", inc.Index, err)
	}
	var cons struct {
		Proof tlog.TreeProof `json:"proof"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/audit/proof/consistency?from=1&to=3", tok, nil, nil), &cons)
	var one audit.Tree
	one.Append(tlog.RecordHash([]byte(entries.Entries[0].Payload)))
	if err := tlog.CheckTree(cons.Proof, 3, cp.Root, 1, one.Root()); err != nil {
		t.Errorf("consistency 1..3: %v", err)
	}

	before := ts.countRows(t, "audit_log")
	for _, path := range []string{
		"/v1/audit/entries?from=-1&to=2",
		"/v1/audit/entries?from=x&to=2",
		"/v1/audit/entries?to=2",
		"/v1/audit/entries?from=2&to=2",
		"/v1/audit/proof/inclusion?index=3&size=3",
		"/v1/audit/proof/inclusion?index=0&size=0",
		"/v1/audit/proof/inclusion?index=0&size=99",
		"/v1/audit/proof/inclusion?index=0",
		"/v1/audit/proof/inclusion?size=3&chunk=zz",
		"/v1/audit/proof/consistency?from=0&to=3",
		"/v1/audit/proof/consistency?from=3&to=2",
		"/v1/audit/proof/consistency?from=1&to=4",
	} {
		wantError(t, ts.do(t, http.MethodGet, path, tok, nil, nil), http.StatusBadRequest, "invalid")
	}
	_, missing := randomChunk(t, 10)
	wantError(t, ts.do(t, http.MethodGet, "/v1/audit/proof/inclusion?size=3&chunk="+missing.String(), tok, nil, nil), http.StatusNotFound, "not_found")
	wantError(t, ts.do(t, http.MethodGet, "/v1/audit/checkpoint", ts.token(t, auth.RoleAgent), nil, nil), http.StatusForbidden, "forbidden")
	wantError(t, ts.do(t, http.MethodGet, "/v1/audit/key", tok, nil, nil), http.StatusNotFound, "not_found")
	if after := ts.countRows(t, "audit_log"); after != before {
		t.Errorf("audit rows %d → %d after refused requests", before, after)
	}
}
