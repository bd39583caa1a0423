package api

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// A chunk the scrub found damaged is missing to agents and absent to HEAD
// (404 damaged, with Vault-Damaged), refused to readers, listed for
// auditors with its snapshots; a PUT of the right bytes repairs it
// (200, created false, repaired true), and GET serves it again.
func TestDamagedChunkOverHTTP(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ctx := context.Background()
	b, h := randomChunk(t, 5000)
	ts.put(t, h, b, http.StatusCreated)
	path := ts.absPath(blobFile(h))
	os.Chmod(path, 0o640)
	bad := bytes.Clone(b)
	bad[10] ^= 1
	if err := os.WriteFile(path, bad, 0o440); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.Scrub(ctx, store.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	agent, reader, auditor := ts.token(t, auth.RoleAgent), ts.token(t, auth.RoleReader), ts.token(t, auth.RoleAuditor)

	resp := ts.do(t, http.MethodHead, chunkPath(h), agent, nil, nil)
	wantError(t, resp, http.StatusNotFound, "damaged")
	if resp.Header.Get(HeaderDamaged) != "true" {
		t.Errorf("HEAD of a damaged chunk: %s = %q, want true", HeaderDamaged, resp.Header.Get(HeaderDamaged))
	}
	var missing struct{ Missing []string }
	decodeJSON(t, ts.postJSON(t, "/v1/chunks/missing", agent, map[string]any{"hashes": []string{h.String()}}), &missing)
	if len(missing.Missing) != 1 || missing.Missing[0] != h.String() {
		t.Errorf("missing = %v, want the damaged chunk", missing.Missing)
	}
	wantError(t, ts.do(t, http.MethodGet, chunkPath(h), reader, nil, nil), http.StatusInternalServerError, "corrupt")

	var page struct {
		Damaged []store.Damage `json:"damaged"`
		Next    string         `json:"next"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/damaged", auditor, nil, nil), &page)
	if len(page.Damaged) != 1 || page.Damaged[0].Hash != h || page.Damaged[0].DetectedBy != "scrub" || page.Damaged[0].RepairedAt != nil {
		t.Fatalf("damage report = %+v", page)
	}
	wantError(t, ts.do(t, http.MethodGet, "/v1/damaged", agent, nil, nil), http.StatusForbidden, "forbidden")
	for _, q := range []string{"?limit=0", "?after=-1", "?all=maybe", "?cursor=x"} {
		wantError(t, ts.do(t, http.MethodGet, "/v1/damaged"+q, auditor, nil, nil), http.StatusBadRequest, "invalid")
	}

	// Wrong bytes: 422, and still damaged.
	other, _ := randomChunk(t, 5000)
	wantError(t, ts.do(t, http.MethodPut, chunkPath(h), agent, other, nil), http.StatusUnprocessableEntity, "hash_mismatch")
	resp = ts.do(t, http.MethodPut, chunkPath(h), agent, b, nil)
	var put struct {
		Created  *bool `json:"created"`
		Repaired bool  `json:"repaired"`
	}
	decodeJSON(t, resp, &put)
	if resp.StatusCode != http.StatusOK || put.Created == nil || *put.Created || !put.Repaired {
		t.Fatalf("PUT of the right bytes: %d %s, want 200 created false repaired true", resp.StatusCode, resp.body)
	}
	if resp := ts.do(t, http.MethodHead, chunkPath(h), agent, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD after repair: %d", resp.StatusCode)
	}
	resp = ts.do(t, http.MethodGet, chunkPath(h), reader, nil, nil)
	if resp.StatusCode != http.StatusOK || chunk.Sum(resp.body) != h {
		t.Errorf("GET after repair: %d, content verifies %v", resp.StatusCode, chunk.Sum(resp.body) == h)
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/damaged?all=true", auditor, nil, nil), &page)
	if len(page.Damaged) != 1 || page.Damaged[0].RepairedAt == nil || page.Damaged[0].RepairedBy == "" {
		t.Errorf("damage report after repair = %+v", page)
	}
	var st store.ScrubStatus
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/scrub", auditor, nil, nil), &st)
	if st.Passes != 1 || st.LastPassDamaged != 1 || st.Damage.Open != 0 || st.Damage.Repaired != 1 {
		t.Errorf("scrub status = %+v", st)
	}
}
