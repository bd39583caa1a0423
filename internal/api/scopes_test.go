package api

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

// A stolen agent token of web09 tries to commit as db01: an empty
// snapshot that `restore latest --source db01` would pick (impersonation),
// and tomorrow's name of db01 so that the real commit gets 409 (name
// squatting). Both are 403 and change nothing; db01's own token then
// commits that very name.
func TestStolenAgentTokenCannotCommitAsAnotherSource(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 2)
	root := ts.putManifest(t, manifest.Manifest{Chunks: data})
	web09, _ := ts.scopedToken(t, auth.RoleAgent, "web09", auth.Scope{Sources: []string{"web09"}, Restic: []string{"web09"}})
	db01, _ := ts.scopedToken(t, auth.RoleAgent, "db01", auth.Scope{Sources: []string{"db01"}})
	resticOnly, _ := ts.scopedToken(t, auth.RoleAgent, "laptop", auth.Scope{Restic: []string{"laptop"}})
	until := t0.Add(60 * 24 * time.Hour)
	tomorrow := t0.Add(24 * time.Hour).Format("2006-01-02")

	before := ts.vaultState(t)
	for _, tt := range []struct {
		name  string
		token string
		body  map[string]any
	}{
		{"impersonation", web09, snapshotBody("db01", "latest-"+t0.Format("2006-01-02"), until, root)},
		{"name squatting", web09, snapshotBody("db01", tomorrow, until, root)},
		{"glob-like source", web09, snapshotBody("web09x", tomorrow, until, root)},
		{"token with restic repositories only", resticOnly, snapshotBody("laptop", tomorrow, until, root)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, ts.postJSON(t, "/v1/snapshots", tt.token, tt.body), http.StatusForbidden, "forbidden")
		})
	}
	if after := ts.vaultState(t); after != before {
		t.Fatalf("refused commits changed the vault:\nbefore %s\nafter  %s", before, after)
	}

	ts.postJSON(t, "/v1/snapshots", db01, snapshotBody("db01", tomorrow, until, root)).mustStatus(t, http.StatusCreated)
	ts.postJSON(t, "/v1/snapshots", web09, snapshotBody("web09", tomorrow, until, root)).mustStatus(t, http.StatusCreated)
	glob, _ := ts.scopedToken(t, auth.RoleAgent, "web-fleet", auth.Scope{Sources: []string{"web-*"}})
	ts.postJSON(t, "/v1/snapshots", glob, snapshotBody("web-17", tomorrow, until, root)).mustStatus(t, http.StatusCreated)
	wantError(t, ts.postJSON(t, "/v1/snapshots", glob, snapshotBody("web-17/sub", tomorrow, until, root)), http.StatusForbidden, "forbidden")
}

// The same token cannot change the retention of another source's
// snapshots (pinning them for a century); its own it may extend.
func TestStolenAgentTokenCannotRetainAnotherSourcesSnapshot(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 1)
	root := ts.putManifest(t, manifest.Manifest{Chunks: data})
	until := t0.Add(60 * 24 * time.Hour)
	victim := ts.commitSnapshot(t, snapshotBody("db01", "d1", until, root))
	own := ts.commitSnapshot(t, snapshotBody("web09", "w1", until, root))
	web09, _ := ts.scopedToken(t, auth.RoleAgent, "web09", auth.Scope{Sources: []string{"web09"}})

	before := ts.vaultState(t)
	longer := map[string]any{"retain_until": t0.Add(99 * 365 * 24 * time.Hour)}
	wantError(t, ts.postJSON(t, snapshotPath(victim.ID)+"/retain", web09, longer), http.StatusForbidden, "forbidden")
	if after := ts.vaultState(t); after != before {
		t.Fatalf("refused extension changed the vault:\nbefore %s\nafter  %s", before, after)
	}
	ts.postJSON(t, snapshotPath(own.ID)+"/retain", web09, map[string]any{"retain_until": until.Add(24 * time.Hour)}).mustStatus(t, http.StatusOK)
	wantError(t, ts.postJSON(t, snapshotPath(999)+"/retain", web09, longer), http.StatusNotFound, "not_found")
}

// A restore token for db01 lists and reads db01's snapshots and the chunks
// they reference, and nothing of web09.
func TestScopedReaderReadsOnlyItsSources(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 3)
	dbRoot := ts.putManifest(t, manifest.Manifest{Chunks: data[:2]})
	webRoot := ts.putManifest(t, manifest.Manifest{Chunks: data[1:]})
	until := t0.Add(60 * 24 * time.Hour)
	dbSnap := ts.commitSnapshot(t, snapshotBody("db01", "d1", until, dbRoot))
	webSnap := ts.commitSnapshot(t, snapshotBody("web09", "w1", until, webRoot))
	reader, _ := ts.scopedToken(t, auth.RoleReader, "restore-db01", auth.Scope{Sources: []string{"db0?"}})

	var page struct {
		Snapshots []snapshotResponse `json:"snapshots"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/snapshots", reader, nil, nil), &page)
	if len(page.Snapshots) != 1 || page.Snapshots[0].ID != dbSnap.ID {
		t.Errorf("scoped list = %+v, want only snapshot %d of db01", page.Snapshots, dbSnap.ID)
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/snapshots?source=db01", reader, nil, nil), &page)
	if len(page.Snapshots) != 1 {
		t.Errorf("?source=db01: %d snapshots, want 1", len(page.Snapshots))
	}
	wantError(t, ts.do(t, http.MethodGet, "/v1/snapshots?source=web09", reader, nil, nil), http.StatusForbidden, "forbidden")
	ts.do(t, http.MethodGet, snapshotPath(dbSnap.ID), reader, nil, nil).mustStatus(t, http.StatusOK)
	wantError(t, ts.do(t, http.MethodGet, snapshotPath(webSnap.ID), reader, nil, nil), http.StatusForbidden, "forbidden")

	for _, tt := range []struct {
		name string
		h    chunk.Hash
		want int
	}{
		{"db01 only", data[0], http.StatusOK},
		{"shared", data[1], http.StatusOK},
		{"db01's manifest", dbRoot, http.StatusOK},
		{"web09 only", data[2], http.StatusForbidden},
		{"web09's manifest", webRoot, http.StatusForbidden},
	} {
		if resp := ts.do(t, http.MethodGet, chunkPath(tt.h), reader, nil, nil); resp.StatusCode != tt.want {
			t.Errorf("GET chunk (%s): status %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
	// An unscoped reader (explicitly all sources) still reads everything.
	ts.do(t, http.MethodGet, chunkPath(data[2]), ts.token(t, auth.RoleReader), nil, nil).mustStatus(t, http.StatusOK)
}

func snapshotPath(id int64) string { return "/v1/snapshots/" + strconv.FormatInt(id, 10) }
