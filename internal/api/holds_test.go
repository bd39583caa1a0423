package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

type holdResponse struct {
	ID          int64      `json:"id"`
	Name        string     `json:"name"`
	Reason      string     `json:"reason"`
	Kind        string     `json:"kind"`
	Source      string     `json:"source"`
	TargetCount int        `json:"target_count"`
	PlacedBy    string     `json:"placed_by"`
	PlacedAt    time.Time  `json:"placed_at"`
	Active      bool       `json:"active"`
	ReleasedAt  *time.Time `json:"released_at"`
	Chunks      []string   `json:"chunks"`
	Snapshots   []int64    `json:"snapshots"`
}

func TestHolds(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 3)
	root := ts.putManifest(t, manifest.Manifest{Chunks: data[:2]})
	s := ts.commitSnapshot(t, snapshotBody("db01", "s", t0.AddDate(1, 0, 0), root))
	admin := ts.token(t, auth.RoleAdmin)

	place := func(body map[string]any) holdResponse {
		t.Helper()
		resp := ts.postJSON(t, "/v1/holds", admin, body)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST /v1/holds %v: %d %s", body, resp.StatusCode, resp.body)
		}
		var h holdResponse
		decodeJSON(t, resp, &h)
		return h
	}
	hc := place(map[string]any{"name": "case 1", "reason": "litigation", "chunks": []string{data[2].String()}})
	hs := place(map[string]any{"name": "case 2", "reason": "regulator", "snapshots": []int64{s.ID}})
	hsrc := place(map[string]any{"name": "case 3", "reason": "everything from db01", "source": "db01"})
	if hc.Kind != "chunks" || !slices.Equal(hc.Chunks, []string{data[2].String()}) || hc.PlacedBy != "test-admin" ||
		!hc.Active || hc.ReleasedAt != nil || !hc.PlacedAt.Equal(t0) {
		t.Errorf("chunk hold = %+v", hc)
	}
	if hs.Kind != "snapshots" || !slices.Equal(hs.Snapshots, []int64{s.ID}) || hsrc.Kind != "source" || hsrc.Source != "db01" {
		t.Errorf("holds = %+v, %+v", hs, hsrc)
	}

	// Auditors see them.
	auditor := ts.token(t, auth.RoleAuditor)
	resp := ts.do(t, http.MethodGet, "/v1/holds?limit=2", auditor, nil, nil)
	var page struct {
		Holds []holdResponse `json:"holds"`
		Next  string         `json:"next"`
	}
	decodeJSON(t, resp, &page)
	if len(page.Holds) != 2 || page.Holds[0].ID != hc.ID || page.Next == "" {
		t.Fatalf("GET /v1/holds: %s", resp.body)
	}
	resp = ts.do(t, http.MethodGet, "/v1/holds?limit=2&cursor="+page.Next, auditor, nil, nil)
	decodeJSON(t, resp, &page)
	if len(page.Holds) != 1 || page.Holds[0].ID != hsrc.ID || page.Next != "" {
		t.Fatalf("GET /v1/holds page 2: %s", resp.body)
	}
	resp = ts.do(t, http.MethodGet, fmt.Sprintf("/v1/holds/%d", hc.ID), auditor, nil, nil)
	var got holdResponse
	decodeJSON(t, resp, &got)
	if resp.StatusCode != http.StatusOK || got.Reason != "litigation" || len(got.Chunks) != 1 {
		t.Errorf("GET hold: %d %s", resp.StatusCode, resp.body)
	}
	var snap snapshotResponse
	decodeJSON(t, ts.do(t, http.MethodGet, fmt.Sprintf("/v1/snapshots/%d", s.ID), auditor, nil, nil), &snap)
	if !snap.Held || len(snap.Holds) != 2 || snap.Holds[0].Via != "snapshot" || snap.Holds[1].Via != "source" {
		t.Errorf("held snapshot = %+v", snap)
	}

	// A plain DELETE cannot release a hold: that takes a signed deletion
	// request. It is refused naming the command, and nothing is created.
	unchanged := ts.vaultState(t)
	resp = ts.do(t, http.MethodDelete, fmt.Sprintf("/v1/holds/%d", hc.ID), admin, nil, nil)
	body := wantError(t, resp, http.StatusConflict, "requires_approval")
	if !strings.Contains(body, fmt.Sprintf("--hold %d", hc.ID)) {
		t.Errorf("DELETE hold: message %q does not name the deletions request command", body)
	}
	if after := ts.vaultState(t); after != unchanged {
		t.Errorf("DELETE hold changed the vault:\nbefore %s\nafter  %s", unchanged, after)
	}
	before := ts.vaultState(t)
	wantError(t, ts.do(t, http.MethodDelete, "/v1/holds/999", admin, nil, nil), http.StatusNotFound, "not_found")
	wantError(t, ts.do(t, http.MethodGet, "/v1/holds/999", auditor, nil, nil), http.StatusNotFound, "not_found")
	wantError(t, ts.do(t, http.MethodGet, "/v1/holds/0x1", auditor, nil, nil), http.StatusBadRequest, "invalid")
	if after := ts.vaultState(t); after != before {
		t.Errorf("release attempts changed the state:\n %s\n %s", before, after)
	}
}

func TestPlaceHoldBadInput(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 2)
	root := ts.putManifest(t, manifest.Manifest{Chunks: data})
	ts.commitSnapshot(t, snapshotBody("db01", "s", t0.AddDate(1, 0, 0), root))
	_, absent := randomChunk(t, 10)
	tests := []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"unknown chunk", map[string]any{"name": "n", "reason": "r", "chunks": []string{data[0].String(), absent.String()}}, 422, "missing_chunks"},
		{"unknown snapshot", map[string]any{"name": "n", "reason": "r", "snapshots": []int64{42}}, 404, "not_found"},
		{"unknown source", map[string]any{"name": "n", "reason": "r", "source": "db99"}, 404, "not_found"},
		{"no target", map[string]any{"name": "n", "reason": "r"}, 400, "invalid"},
		{"two targets", map[string]any{"name": "n", "reason": "r", "source": "db01", "snapshots": []int64{1}}, 400, "invalid"},
		{"no reason", map[string]any{"name": "n", "source": "db01"}, 400, "invalid"},
		{"bad hash", map[string]any{"name": "n", "reason": "r", "chunks": []string{"xyz"}}, 400, "invalid"},
		{"unknown field", map[string]any{"name": "n", "reason": "r", "source": "db01", "until": "forever"}, 400, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.vaultState(t)
			wantError(t, ts.postJSON(t, "/v1/holds", ts.token(t, auth.RoleAdmin), tt.body), tt.status, tt.code)
			if after := ts.vaultState(t); after != before {
				t.Errorf("state changed:\n before %s\n after  %s", before, after)
			}
		})
	}
	var e struct {
		Error struct {
			Missing []chunk.Hash `json:"missing"`
		} `json:"error"`
	}
	decodeJSON(t, ts.postJSON(t, "/v1/holds", ts.token(t, auth.RoleAdmin), tests[0].body), &e)
	if !slices.Equal(e.Error.Missing, []chunk.Hash{absent}) {
		t.Errorf("missing = %v, want [%s]", e.Error.Missing, absent)
	}
}
