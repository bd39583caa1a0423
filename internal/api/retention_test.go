package api

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/manifest"
)

func TestRetentionEndpoints(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 5) // retained until t0 + 30 days: April 2026
	r1 := ts.putManifest(t, manifest.Manifest{Chunks: data[:2]})
	r2 := ts.putManifest(t, manifest.Manifest{Chunks: data[1:3]})
	s1 := ts.commitSnapshot(t, snapshotBody("db01", "a", time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC), r1))
	s2 := ts.commitSnapshot(t, snapshotBody("web01", "b", time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC), r2))
	ts.postJSON(t, "/v1/holds", ts.token(t, auth.RoleAdmin), map[string]any{"name": "h", "reason": "r", "source": "web01"})
	auditor := ts.token(t, auth.RoleAuditor)

	// Summary.
	resp := ts.do(t, http.MethodGet, "/v1/retention/summary", auditor, nil, nil)
	var sum struct {
		At     time.Time `json:"at"`
		Total  struct{ Chunks, Bytes int64 }
		Months []struct {
			Month  string `json:"month"`
			Chunks int64  `json:"chunks"`
		} `json:"months"`
		Expired         struct{ Chunks int64 }
		Held            struct{ Chunks int64 }
		PendingDeletion struct{ Chunks int64 } `json:"pending_deletion"`
		Snapshots       struct{ Total, Expired, Held int64 }
		ActiveHolds     int64 `json:"active_holds"`
	}
	decodeJSON(t, resp, &sum)
	var months []string
	var counts []int64
	for _, m := range sum.Months {
		months, counts = append(months, m.Month), append(counts, m.Chunks)
	}
	// April: data[3:5]; September: data[0], r1; March 2027: data[1:3], r2.
	if !slices.Equal(months, []string{"2026-04", "2026-09", "2027-03"}) || !slices.Equal(counts, []int64{2, 2, 3}) ||
		sum.Total.Chunks != 7 || sum.Held.Chunks != 3 || sum.Expired.Chunks != 0 || sum.Snapshots.Total != 2 ||
		sum.Snapshots.Held != 1 || sum.ActiveHolds != 1 || !sum.At.Equal(t0) {
		t.Errorf("summary = %s", resp.body)
	}

	// Chunks expiring before October: April's two, then September's two.
	var chunks []string
	var held []bool
	cursor := ""
	for pages := 0; ; pages++ {
		q := url.Values{"before": {"2026-10-01"}, "limit": {"1"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		resp := ts.do(t, http.MethodGet, "/v1/retention/chunks?"+q.Encode(), auditor, nil, nil)
		var page struct {
			Chunks []struct {
				Hash        string    `json:"hash"`
				RetainUntil time.Time `json:"retain_until"`
				UploadedBy  string    `json:"uploaded_by"`
				Held        bool      `json:"held"`
			} `json:"chunks"`
			Next string `json:"next"`
		}
		decodeJSON(t, resp, &page)
		for _, c := range page.Chunks {
			chunks, held = append(chunks, c.Hash), append(held, c.Held)
		}
		if cursor = page.Next; cursor == "" || pages > 10 {
			break
		}
	}
	if len(chunks) != 4 || slices.Contains(held, true) {
		t.Errorf("expiring chunks = %v (held %v), want 4 unheld", chunks, held)
	}

	resp = ts.do(t, http.MethodGet, "/v1/retention/snapshots?before=2030-01-01T00:00:00Z", auditor, nil, nil)
	var sp struct {
		Snapshots []snapshotResponse `json:"snapshots"`
	}
	decodeJSON(t, resp, &sp)
	if len(sp.Snapshots) != 2 || sp.Snapshots[0].ID != s1.ID || sp.Snapshots[1].ID != s2.ID || !sp.Snapshots[1].Held {
		t.Errorf("expiring snapshots = %s", resp.body)
	}

	// One chunk's whole story.
	resp = ts.do(t, http.MethodGet, chunkPath(data[1])+"/retention", auditor, nil, nil)
	var cr struct {
		Hash          string    `json:"hash"`
		Size          int64     `json:"size"`
		StoredAt      time.Time `json:"stored_at"`
		RetainUntil   time.Time `json:"retain_until"`
		UploadedBy    string    `json:"uploaded_by"`
		Expired       bool      `json:"expired"`
		Held          bool      `json:"held"`
		Holds         []struct{ Via, Source string }
		Snapshots     []struct{ ID int64 }
		SnapshotCount int64  `json:"snapshot_count"`
		DeletionState string `json:"deletion_state"`
	}
	decodeJSON(t, resp, &cr)
	if cr.Hash != data[1].String() || cr.UploadedBy != "test-agent" || !cr.RetainUntil.Equal(s2.RetainUntil) || cr.Expired ||
		!cr.Held || len(cr.Holds) != 1 || cr.Holds[0].Via != "source" || cr.SnapshotCount != 2 || len(cr.Snapshots) != 2 ||
		cr.Snapshots[0].ID != s2.ID || cr.DeletionState != "none" || !cr.StoredAt.Equal(t0) {
		t.Errorf("chunk retention = %s", resp.body)
	}

	// Bad queries.
	first := ts.do(t, http.MethodGet, "/v1/retention/chunks?before=2026-10-01&limit=1", auditor, nil, nil)
	var fp struct{ Next string }
	decodeJSON(t, first, &fp)
	for _, path := range []string{
		"/v1/retention/chunks",
		"/v1/retention/chunks?before=soon",
		"/v1/retention/chunks?before=2026-10-01&limit=0",
		"/v1/retention/chunks?before=2026-10-01&limit=5000",
		"/v1/retention/chunks?before=2026-10-01&befor=2027-01-01",
		"/v1/retention/chunks?before=2026-10-01&before=2027-01-01",
		"/v1/retention/chunks?before=2026-10-01&cursor=" + flipChar(fp.Next, 7),
		"/v1/retention/chunks?before=2026-10-01&cursor=" + fp.Next[:len(fp.Next)-1],
		"/v1/retention/chunks?before=2026-11-01&cursor=" + fp.Next,
		"/v1/retention/snapshots?before=2026-10-01&cursor=" + fp.Next,
		"/v1/snapshots?cursor=" + fp.Next,
		"/v1/snapshots?sorce=db01",
		"/v1/snapshots?taken_from=yesterday",
		"/v1/retention/summary?x=1",
		"/v1/holds?cursor=abc",
	} {
		wantError(t, ts.do(t, http.MethodGet, path, auditor, nil, nil), http.StatusBadRequest, "invalid")
	}
}

func flipChar(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
