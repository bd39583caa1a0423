package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/store"
)

// putChunks uploads n random chunks as an agent.
func (ts *testServer) putChunks(t testing.TB, n int) []chunk.Hash {
	t.Helper()
	out := make([]chunk.Hash, n)
	for i := range out {
		b, h := randomChunk(t, 50+i)
		ts.put(t, h, b, http.StatusCreated)
		out[i] = h
	}
	return out
}

// putManifest uploads m as a chunk and returns its hash.
func (ts *testServer) putManifest(t testing.TB, m manifest.Manifest) chunk.Hash {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h := chunk.Sum(b)
	resp := ts.do(t, http.MethodPut, chunkPath(h), ts.token(t, auth.RoleAgent), b, nil)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT manifest: status %d, body %s", resp.StatusCode, resp.body)
	}
	return h
}

type snapshotResponse struct {
	ID             int64     `json:"id"`
	Source         string    `json:"source"`
	Name           string    `json:"name"`
	TakenAt        time.Time `json:"taken_at"`
	CommittedAt    time.Time `json:"committed_at"`
	CommittedBy    string    `json:"committed_by"`
	RetainUntil    time.Time `json:"retain_until"`
	Tags           []string  `json:"tags"`
	ManifestRoot   string    `json:"manifest_root"`
	ManifestCount  int       `json:"manifest_count"`
	ChunkCount     int64     `json:"chunk_count"`
	TotalBytes     int64     `json:"total_bytes"`
	Held           bool      `json:"held"`
	ExtendedChunks int64     `json:"extended_chunks"`
	Changed        bool      `json:"changed"`
	UniqueChunks   int64     `json:"unique_chunks"`
	UniqueBytes    int64     `json:"unique_bytes"`
	Holds          []struct {
		ID  int64  `json:"id"`
		Via string `json:"via"`
	} `json:"holds"`
}

func snapshotBody(source, name string, until time.Time, root chunk.Hash) map[string]any {
	return map[string]any{"source": source, "name": name, "taken_at": t0.Add(-time.Hour),
		"retain_until": until, "manifest_root": root.String()}
}

// commitSnapshot commits body as an agent and requires 201.
func (ts *testServer) commitSnapshot(t testing.TB, body map[string]any) snapshotResponse {
	t.Helper()
	resp := ts.postJSON(t, "/v1/snapshots", ts.token(t, auth.RoleAgent), body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/snapshots: status %d, body %s", resp.StatusCode, resp.body)
	}
	var s snapshotResponse
	decodeJSON(t, resp, &s)
	return s
}

// vaultState is everything snapshots, holds and retention could change.
func (ts *testServer) vaultState(t testing.TB) string {
	t.Helper()
	var s string
	err := ts.pool.QueryRow(context.Background(), `SELECT concat_ws(' | ',
		(SELECT string_agg(encode(hash, 'hex') || '=' || retain_until, ',' ORDER BY hash) FROM chunks),
		(SELECT string_agg(id || ':' || source || '/' || name || '=' || retain_until, ',' ORDER BY id) FROM snapshots),
		(SELECT count(*) FROM snapshot_chunks), (SELECT count(*) FROM holds),
		(SELECT count(*) FROM hold_chunks), (SELECT count(*) FROM hold_snapshots),
		(SELECT count(*) FROM audit_log))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSnapshotLifecycle(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 6)
	leaf1 := ts.putManifest(t, manifest.Manifest{Chunks: data[:3]})
	leaf2 := ts.putManifest(t, manifest.Manifest{Chunks: data[3:]})
	root := ts.putManifest(t, manifest.Manifest{Children: []chunk.Hash{leaf1, leaf2}})
	until := t0.AddDate(1, 0, 0)
	body := snapshotBody("db01", "2026-03-04", until, root)
	body["tags"] = []string{"daily", "pg"}
	s := ts.commitSnapshot(t, body)
	if s.ID == 0 || s.Source != "db01" || s.CommittedBy != "test-agent" || !s.RetainUntil.Equal(until) ||
		s.ManifestCount != 3 || s.ChunkCount != 9 || s.ExtendedChunks != 9 || s.ManifestRoot != root.String() ||
		!slices.Equal(s.Tags, []string{"daily", "pg"}) || !s.CommittedAt.Equal(t0) {
		t.Errorf("committed snapshot = %+v", s)
	}
	for _, h := range append(slices.Clone(data), leaf1, leaf2, root) {
		if got := ts.retainUntil(t, h); !got.Equal(until) {
			t.Errorf("chunk %s retained until %s, want %s", h, got, until)
		}
	}

	// Readers and auditors see it, with detail.
	for _, role := range []auth.Role{auth.RoleReader, auth.RoleAuditor, auth.RoleAdmin} {
		resp := ts.do(t, http.MethodGet, fmt.Sprintf("/v1/snapshots/%d", s.ID), ts.token(t, role), nil, nil)
		var d snapshotResponse
		decodeJSON(t, resp, &d)
		if resp.StatusCode != http.StatusOK || d.ID != s.ID || d.UniqueChunks != 9 || d.UniqueBytes != s.TotalBytes || d.Holds == nil {
			t.Errorf("GET snapshot as %s: %d %s", role, resp.StatusCode, resp.body)
		}
	}
	resp := ts.do(t, http.MethodGet, "/v1/snapshots?source=db01&tag=pg&taken_from=2026-03-01&taken_before=2026-03-05T00:00:00Z", ts.token(t, auth.RoleReader), nil, nil)
	var page struct {
		Snapshots []snapshotResponse `json:"snapshots"`
		Next      *string            `json:"next"`
	}
	decodeJSON(t, resp, &page)
	if resp.StatusCode != http.StatusOK || len(page.Snapshots) != 1 || page.Snapshots[0].ID != s.ID || page.Next == nil || *page.Next != "" {
		t.Errorf("GET /v1/snapshots: %d %s", resp.StatusCode, resp.body)
	}

	// Extending the snapshot extends its chunks; the same date again is a
	// no-op; an earlier one is refused.
	later := t0.AddDate(2, 0, 0)
	agent := ts.token(t, auth.RoleAgent)
	path := fmt.Sprintf("/v1/snapshots/%d/retain", s.ID)
	resp = ts.postJSON(t, path, agent, map[string]any{"retain_until": later})
	var ext snapshotResponse
	decodeJSON(t, resp, &ext)
	if resp.StatusCode != http.StatusOK || !ext.Changed || ext.ExtendedChunks != 9 || !ext.RetainUntil.Equal(later) {
		t.Errorf("POST %s: %d %s", path, resp.StatusCode, resp.body)
	}
	if got := ts.retainUntil(t, data[0]); !got.Equal(later) {
		t.Errorf("chunk retained until %s after extension, want %s", got, later)
	}
	resp = ts.postJSON(t, path, agent, map[string]any{"retain_until": later})
	decodeJSON(t, resp, &ext)
	if resp.StatusCode != http.StatusOK || ext.Changed {
		t.Errorf("POST %s again: %d %s", path, resp.StatusCode, resp.body)
	}
	before := ts.vaultState(t)
	wantError(t, ts.postJSON(t, path, agent, map[string]any{"retain_until": until}), http.StatusConflict, "retention_locked")
	wantError(t, ts.postJSON(t, "/v1/snapshots/999/retain", agent, map[string]any{"retain_until": later}), http.StatusNotFound, "not_found")
	wantError(t, ts.postJSON(t, "/v1/snapshots/x/retain", agent, map[string]any{"retain_until": later}), http.StatusBadRequest, "invalid")
	wantError(t, ts.postJSON(t, path, agent, map[string]any{}), http.StatusBadRequest, "invalid")
	if after := ts.vaultState(t); after != before {
		t.Errorf("refused extensions changed the state:\n %s\n %s", before, after)
	}

	// The audit log has both, by the agent.
	resp = ts.do(t, http.MethodGet, "/v1/audit?after=0", ts.token(t, auth.RoleAuditor), nil, nil)
	var audit struct {
		Entries []store.AuditEntry `json:"entries"`
	}
	decodeJSON(t, resp, &audit)
	var actions []string
	for _, e := range audit.Entries {
		if e.Actor == "test-agent" && strings.HasPrefix(e.Action, "snapshot.") {
			actions = append(actions, e.Action)
		}
	}
	if !slices.Equal(actions, []string{"snapshot.commit", "snapshot.retain"}) {
		t.Errorf("audit actions = %v", actions)
	}
}

// Bad input: a clear JSON error with the right status, and nothing changed.
func TestCommitSnapshotBadInput(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 3)
	_, absent := randomChunk(t, 10)
	good := ts.putManifest(t, manifest.Manifest{Chunks: data})
	withMissing := ts.putManifest(t, manifest.Manifest{Chunks: append(slices.Clone(data), absent)})
	notManifest := data[0]
	badVersion := chunk.Sum([]byte(`{"version":7}`))
	ts.put(t, badVersion, []byte(`{"version":7}`), http.StatusCreated)
	deep := good
	for range store.DefaultMaxManifestDepth {
		deep = ts.putManifest(t, manifest.Manifest{Children: []chunk.Hash{deep}})
	}
	until := t0.AddDate(1, 0, 0)
	ts.commitSnapshot(t, snapshotBody("db01", "taken", until, good))

	with := func(k string, v any) map[string]any {
		b := snapshotBody("db01", "new", until, good)
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return b
	}
	tests := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"chunk missing", snapshotBody("db01", "new", until, withMissing), 422, "missing_chunks"},
		{"root missing", snapshotBody("db01", "new", until, absent), 422, "missing_chunks"},
		{"root not a manifest", snapshotBody("db01", "new", until, notManifest), 400, "invalid"},
		{"manifest of another version", snapshotBody("db01", "new", until, badVersion), 400, "invalid"},
		{"tree too deep", snapshotBody("db01", "new", until, deep), 400, "invalid"},
		{"retention under the minimum", with("retain_until", t0.Add(minRetention-time.Minute)), 400, "invalid"},
		{"retention 200 years", with("retain_until", t0.AddDate(200, 0, 0)), 400, "invalid"},
		{"retention missing", with("retain_until", nil), 400, "invalid"},
		{"retention not a time", with("retain_until", "next year"), 400, "invalid"},
		{"taken tomorrow", with("taken_at", t0.Add(25*time.Hour)), 400, "invalid"},
		{"duplicate name", snapshotBody("db01", "taken", until, good), 409, "conflict"},
		{"bad source", with("source", "../../etc"), 400, "invalid"},
		{"bad tag", with("tags", []string{"a b"}), 400, "invalid"},
		{"uppercase root", with("manifest_root", strings.ToUpper(good.String())), 400, "invalid"},
		{"unknown field", with("files", []string{}), 400, "invalid"},
		{"not JSON", "{", 400, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.vaultState(t)
			var resp response
			if s, ok := tt.body.(string); ok {
				resp = ts.do(t, http.MethodPost, "/v1/snapshots", ts.token(t, auth.RoleAgent), s, nil)
			} else {
				resp = ts.postJSON(t, "/v1/snapshots", ts.token(t, auth.RoleAgent), tt.body)
			}
			wantError(t, resp, tt.status, tt.code)
			if after := ts.vaultState(t); after != before {
				t.Errorf("state changed:\n before %s\n after  %s", before, after)
			}
		})
	}

	// The 422 names the missing chunks.
	resp := ts.postJSON(t, "/v1/snapshots", ts.token(t, auth.RoleAgent), snapshotBody("db01", "new", until, withMissing))
	var e struct {
		Error struct {
			Missing      []string `json:"missing"`
			MissingTotal int64    `json:"missing_total"`
		} `json:"error"`
	}
	decodeJSON(t, resp, &e)
	if !slices.Equal(e.Error.Missing, []string{absent.String()}) || e.Error.MissingTotal != 1 {
		t.Errorf("422 body = %s, want missing [%s]", resp.body, absent)
	}
}

// Every write of this issue is refused to the roles that may not make it,
// and the auditor may not write anything; reads are refused to agents.
func TestSnapshotHoldRetentionRoles(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 2)
	root := ts.putManifest(t, manifest.Manifest{Chunks: data})
	s := ts.commitSnapshot(t, snapshotBody("db01", "s", t0.AddDate(1, 0, 0), root))
	const (
		agent   = auth.RoleAgent
		reader  = auth.RoleReader
		auditor = auth.RoleAuditor
		admin   = auth.RoleAdmin
	)
	holdBody, _ := json.Marshal(map[string]any{"name": "n", "reason": "r", "snapshots": []int64{s.ID}})
	commitBody, _ := json.Marshal(snapshotBody("db01", "other", t0.AddDate(1, 0, 0), root))
	retainBody := `{"retain_until":"` + t0.AddDate(3, 0, 0).Format(time.RFC3339) + `"}`
	id := fmt.Sprint(s.ID)
	tests := []struct {
		method, path string
		body         any
		denied       []auth.Role
	}{
		{http.MethodPost, "/v1/snapshots", commitBody, []auth.Role{reader, auditor, admin}},
		{http.MethodPost, "/v1/snapshots/" + id + "/retain", retainBody, []auth.Role{reader, auditor, admin}},
		{http.MethodGet, "/v1/snapshots", nil, []auth.Role{agent}},
		{http.MethodGet, "/v1/snapshots/" + id, nil, []auth.Role{agent}},
		{http.MethodPost, "/v1/holds", holdBody, []auth.Role{agent, reader, auditor}},
		{http.MethodGet, "/v1/holds", nil, []auth.Role{agent, reader}},
		{http.MethodGet, "/v1/holds/1", nil, []auth.Role{agent, reader}},
		{http.MethodDelete, "/v1/holds/1", nil, []auth.Role{agent, reader, auditor}},
		{http.MethodGet, "/v1/retention/summary", nil, []auth.Role{agent, reader}},
		{http.MethodGet, "/v1/retention/chunks?before=2030-01-01", nil, []auth.Role{agent, reader}},
		{http.MethodGet, "/v1/retention/snapshots?before=2030-01-01", nil, []auth.Role{agent, reader}},
		{http.MethodGet, chunkPath(data[0]) + "/retention", nil, []auth.Role{agent, reader}},
	}
	for _, tt := range tests {
		for _, role := range tt.denied {
			t.Run(tt.method+" "+tt.path+"/"+string(role), func(t *testing.T) {
				before := ts.vaultState(t)
				wantError(t, ts.do(t, tt.method, tt.path, ts.token(t, role), tt.body, nil), http.StatusForbidden, "forbidden")
				wantError(t, ts.do(t, tt.method, tt.path, "", tt.body, nil), http.StatusUnauthorized, "unauthenticated")
				if after := ts.vaultState(t); after != before {
					t.Errorf("state changed:\n before %s\n after  %s", before, after)
				}
			})
		}
	}
}

func TestErrorStatusSnapshotErrors(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{&store.MissingChunksError{Total: 1}, http.StatusUnprocessableEntity, "missing_chunks"},
		{fmt.Errorf("store: commit: %w", &store.MissingChunksError{Total: 3}), http.StatusUnprocessableEntity, "missing_chunks"},
		{store.ErrRequiresApproval, http.StatusConflict, "requires_approval"},
		{fmt.Errorf("store: release hold 3: %w", store.ErrRequiresApproval), http.StatusConflict, "requires_approval"},
	}
	for _, tt := range tests {
		if status, code := errorStatus(tt.err); status != tt.status || code != tt.code {
			t.Errorf("errorStatus(%v) = %d %s, want %d %s", tt.err, status, code, tt.status, tt.code)
		}
	}
}

// Acceptance 3: no API path shortens any retention. A seeded random walk
// through every write the API offers (uploads with and without a
// retention header, chunk retention, snapshot commits and extensions,
// holds, time passing) checks after each step that no chunk's or
// snapshot's retain_until moved earlier, and that every snapshot's chunks
// are retained at least as long as it.
func TestNoAPIPathShortensRetention(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	rng := rand.New(rand.NewPCG(5, 2026))
	agent, admin := ts.token(t, auth.RoleAgent), ts.token(t, auth.RoleAdmin)
	bodies := map[chunk.Hash][]byte{}
	var hashes []chunk.Hash
	var snapshots []int64
	newChunk := func() {
		b, h := randomChunk(t, 20+rng.IntN(200))
		ts.put(t, h, b, http.StatusCreated)
		bodies[h] = b
		hashes = append(hashes, h)
	}
	for range 8 {
		newChunk()
	}
	someTime := func() time.Time { // from a year ago to four years ahead
		return ts.clk.Now().Add(time.Duration(rng.Int64N(int64(5*365*24*time.Hour)))).AddDate(-1, 0, 0).Truncate(time.Second)
	}
	some := func() []chunk.Hash {
		out := slices.Clone(hashes)
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out[:1+rng.IntN(len(out))]
	}
	strs := func(hs []chunk.Hash) []string {
		out := make([]string, len(hs))
		for i, h := range hs {
			out[i] = h.String()
		}
		return out
	}

	prevChunks, prevSnaps := map[string]time.Time{}, map[int64]time.Time{}
	for step := range 150 {
		var resp response
		op := rng.IntN(7)
		switch op {
		case 0: // re-upload with a retention header
			h := hashes[rng.IntN(len(hashes))]
			resp = ts.do(t, http.MethodPut, chunkPath(h), agent, bodies[h], http.Header{HeaderRetainUntil: {someTime().Format(time.RFC3339)}})
		case 1:
			resp = ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": strs(some()), "retain_until": someTime()})
		case 2:
			root := ts.putManifest(t, manifest.Manifest{Chunks: some()})
			resp = ts.postJSON(t, "/v1/snapshots", agent, snapshotBody(fmt.Sprintf("src%d", rng.IntN(3)), fmt.Sprint(step), someTime(), root))
			if resp.StatusCode == http.StatusCreated {
				var s snapshotResponse
				decodeJSON(t, resp, &s)
				snapshots = append(snapshots, s.ID)
			}
		case 3:
			if len(snapshots) > 0 {
				id := snapshots[rng.IntN(len(snapshots))]
				resp = ts.postJSON(t, fmt.Sprintf("/v1/snapshots/%d/retain", id), agent, map[string]any{"retain_until": someTime()})
			}
		case 4:
			resp = ts.postJSON(t, "/v1/holds", admin, map[string]any{"name": "h", "reason": "r", "chunks": strs(some())})
		case 5:
			newChunk()
		case 6:
			ts.clk.Advance(time.Duration(rng.IntN(90*24)) * time.Hour)
			agent, admin = ts.token(t, auth.RoleAgent), ts.token(t, auth.RoleAdmin)
		}
		if resp.Response != nil && resp.StatusCode >= 500 {
			t.Fatalf("step %d (op %d): %d %s", step, op, resp.StatusCode, resp.body)
		}

		rows, _ := ts.pool.Query(context.Background(), "SELECT encode(hash, 'hex'), retain_until FROM chunks")
		for rows.Next() {
			var h string
			var until time.Time
			rows.Scan(&h, &until)
			if prev, ok := prevChunks[h]; ok && until.Before(prev) {
				t.Fatalf("step %d (op %d): chunk %s retention moved from %s to %s", step, op, h, prev, until)
			}
			prevChunks[h] = until
		}
		rows.Close()
		rows, _ = ts.pool.Query(context.Background(), "SELECT id, retain_until FROM snapshots")
		for rows.Next() {
			var id int64
			var until time.Time
			rows.Scan(&id, &until)
			if prev, ok := prevSnaps[id]; ok && until.Before(prev) {
				t.Fatalf("step %d (op %d): snapshot %d retention moved from %s to %s", step, op, id, prev, until)
			}
			prevSnaps[id] = until
		}
		rows.Close()
		var short int
		ts.pool.QueryRow(context.Background(), `SELECT count(*) FROM snapshot_chunks sc
			JOIN snapshots s ON s.id = sc.snapshot_id JOIN chunks c ON c.hash = sc.hash
			WHERE c.retain_until < s.retain_until`).Scan(&short)
		if short != 0 {
			t.Fatalf("step %d (op %d): %d snapshot references retained for less than their snapshot", step, op, short)
		}
	}
	if len(snapshots) < 5 {
		t.Errorf("the walk committed only %d snapshots; it should exercise more", len(snapshots))
	}
	if _, err := ts.store.VerifyAudit(context.Background()); err != nil {
		t.Errorf("VerifyAudit: %v", err)
	}
}
