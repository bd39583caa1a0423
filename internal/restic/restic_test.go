package restic_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/restic"
	"github.com/wormvault/wormvault/internal/store"
)

// newRepo creates repository name as an agent.
func (ts *testServer) newRepo(t testing.TB, name string) {
	t.Helper()
	want(t, ts.do(t, http.MethodPost, "/restic/"+name+"/?create=true", basic(ts.token(t, auth.RoleAgent)), nil, nil), http.StatusOK, "")
}

func TestInitAndConfig(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, clock.NewFake(t0))
	agent := basic(ts.token(t, auth.RoleAgent))

	// restic init: HEAD config must not be 200, then create, then config.
	want(t, ts.do(t, http.MethodHead, "/restic/r1/config", agent, nil, nil), http.StatusNotFound, "")
	want(t, ts.do(t, http.MethodPost, "/restic/r1/", agent, nil, nil), http.StatusBadRequest, "invalid")
	want(t, ts.do(t, http.MethodPost, "/restic/r1/?create=true", agent, nil, nil), http.StatusOK, "")
	want(t, ts.do(t, http.MethodPost, "/restic/r1?create=true", agent, nil, nil), http.StatusOK, "") // idempotent
	want(t, ts.do(t, http.MethodGet, "/restic/r1/", agent, nil, nil), http.StatusMethodNotAllowed, "method_not_allowed")
	want(t, ts.do(t, http.MethodDelete, "/restic/r1/", agent, nil, nil), http.StatusMethodNotAllowed, "method_not_allowed")
	want(t, ts.do(t, http.MethodPost, "/restic/bad%20name/?create=true", agent, nil, nil), http.StatusBadRequest, "invalid")

	cfg := []byte("an encrypted restic config")
	want(t, ts.do(t, http.MethodPost, "/restic/r1/config", agent, cfg, nil), http.StatusOK, "")
	resp := ts.do(t, http.MethodHead, "/restic/r1/config", agent, nil, nil)
	want(t, resp, http.StatusOK, "")
	if resp.ContentLength != int64(len(cfg)) {
		t.Errorf("HEAD config: Content-Length %d, want %d", resp.ContentLength, len(cfg))
	}
	resp = ts.do(t, http.MethodGet, "/restic/r1/config", agent, nil, http.Header{"Range": {"bytes=0-"}})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(resp.body, cfg) {
		t.Errorf("GET config = %d %q, want 206 with the config", resp.StatusCode, resp.body)
	}

	// Written once: the same bytes again succeed (a retried upload),
	// different ones are refused and change nothing.
	want(t, ts.do(t, http.MethodPost, "/restic/r1/config", agent, cfg, nil), http.StatusOK, "")
	chunks := ts.count(t, "chunks")
	want(t, ts.do(t, http.MethodPost, "/restic/r1/config", agent, []byte("another config"), nil), http.StatusConflict, "conflict")
	want(t, ts.do(t, http.MethodDelete, "/restic/r1/config", agent, nil, nil), http.StatusForbidden, "not_deletable")
	if got := ts.do(t, http.MethodGet, "/restic/r1/config", agent, nil, nil); !bytes.Equal(got.body, cfg) {
		t.Errorf("config after refused writes = %q", got.body)
	}
	if n := ts.count(t, "chunks"); n != chunks {
		t.Errorf("refused config stored a chunk: %d chunks, want %d", n, chunks)
	}

	// A repository that was never created.
	want(t, ts.do(t, http.MethodHead, "/restic/r2/config", agent, nil, nil), http.StatusNotFound, "")
	want(t, ts.do(t, http.MethodPost, "/restic/r2/config", agent, cfg, nil), http.StatusNotFound, "not_found")
	want(t, ts.do(t, http.MethodGet, "/restic/r2/keys/", agent, nil, nil), http.StatusNotFound, "not_found")
}

func TestFilesAndListings(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, clock.NewFake(t0))
	agent, reader := basic(ts.token(t, auth.RoleAgent)), basic(ts.token(t, auth.RoleReader))
	ts.newRepo(t, "r")

	small, smallName := content(t, 100)
	large, largeName := content(t, 700_000)
	for _, f := range []struct {
		name string
		b    []byte
	}{{smallName, small}, {largeName, large}} {
		want(t, ts.do(t, http.MethodPost, "/restic/r/data/"+f.name, agent, f.b, nil), http.StatusOK, "")
		resp := ts.do(t, http.MethodHead, "/restic/r/data/"+f.name, agent, nil, nil)
		want(t, resp, http.StatusOK, "")
		if resp.ContentLength != int64(len(f.b)) {
			t.Errorf("HEAD: Content-Length %d, want %d", resp.ContentLength, len(f.b))
		}
		if got := ts.do(t, http.MethodGet, "/restic/r/data/"+f.name, reader, nil, nil); got.StatusCode != http.StatusOK || !bytes.Equal(got.body, f.b) {
			t.Errorf("GET data: %d, %d bytes; want 200 and the content", got.StatusCode, len(got.body))
		}
	}
	// A retry of a stored file: 200, nothing new.
	files, chunks := ts.count(t, "restic_files"), ts.count(t, "chunks")
	want(t, ts.do(t, http.MethodPost, "/restic/r/data/"+largeName, agent, large, nil), http.StatusOK, "")

	// Content that is not what its name says: refused, nothing stored.
	want(t, ts.do(t, http.MethodPost, "/restic/r/data/"+smallName, agent, large[:100], nil), http.StatusUnprocessableEntity, "hash_mismatch")
	_, otherName := content(t, 1)
	want(t, ts.do(t, http.MethodPost, "/restic/r/index/"+otherName, agent, small, nil), http.StatusUnprocessableEntity, "hash_mismatch")
	want(t, ts.do(t, http.MethodPost, "/restic/r/data/"+strings.ToUpper(smallName), agent, small, nil), http.StatusBadRequest, "invalid")
	want(t, ts.do(t, http.MethodPost, "/restic/r/trees/"+smallName, agent, small, nil), http.StatusNotFound, "not_found")
	big := make([]byte, testMaxChunk+1)
	want(t, ts.do(t, http.MethodPost, "/restic/r/data/"+otherName, agent, big, nil), http.StatusRequestEntityTooLarge, "too_large")
	want(t, ts.do(t, http.MethodPost, "/restic/r/locks/"+otherName, agent, big[:store.MaxResticLockSize+1], nil), http.StatusRequestEntityTooLarge, "too_large")
	if f, c := ts.count(t, "restic_files"), ts.count(t, "chunks"); f != files || c != chunks {
		t.Errorf("refused uploads changed the index: %d files, %d chunks; want %d, %d", f, c, files, chunks)
	}

	// Listings: v1 by default, v2 when asked; the type needs its slash.
	names := []string{smallName, largeName}
	slices.Sort(names)
	resp := ts.do(t, http.MethodGet, "/restic/r/data/", agent, nil, nil)
	var v1 []string
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != restic.ContentTypeV1 ||
		json.Unmarshal(resp.body, &v1) != nil || !slices.Equal(v1, names) {
		t.Errorf("v1 listing: %d %q %s; want %v", resp.StatusCode, resp.Header.Get("Content-Type"), resp.body, names)
	}
	resp = ts.do(t, http.MethodGet, "/restic/r/data/", agent, nil, http.Header{"Accept": {restic.ContentTypeV2}})
	var v2 []struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	}
	if resp.Header.Get("Content-Type") != restic.ContentTypeV2 || json.Unmarshal(resp.body, &v2) != nil || len(v2) != 2 {
		t.Fatalf("v2 listing: %q %s", resp.Header.Get("Content-Type"), resp.body)
	}
	for _, it := range v2 {
		if wantSize := map[string]int{smallName: len(small), largeName: len(large)}[it.Name]; it.Size != int64(wantSize) {
			t.Errorf("v2 listing: %s size %d, want %d", it.Name, it.Size, wantSize)
		}
	}
	if resp := ts.do(t, http.MethodGet, "/restic/r/snapshots/", agent, nil, nil); resp.StatusCode != http.StatusOK || strings.TrimSpace(string(resp.body)) != "[]" {
		t.Errorf("empty listing: %d %s, want 200 []", resp.StatusCode, resp.body)
	}
	want(t, ts.do(t, http.MethodGet, "/restic/r/data", agent, nil, nil), http.StatusNotFound, "not_found")
	want(t, ts.do(t, http.MethodGet, "/restic/r/config/", agent, nil, nil), http.StatusNotFound, "not_found")
	want(t, ts.do(t, http.MethodPut, "/restic/r/data/"+smallName, agent, small, nil), http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestRange(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, clock.NewFake(t0))
	agent, reader := basic(ts.token(t, auth.RoleAgent)), basic(ts.token(t, auth.RoleReader))
	ts.newRepo(t, "r")
	for _, n := range []int{1000, 400_000} { // packed, and a file of its own
		b, name := content(t, n)
		want(t, ts.do(t, http.MethodPost, "/restic/r/data/"+name, agent, b, nil), http.StatusOK, "")
		size := len(b)
		for _, c := range []struct {
			rng        string
			status     int
			start, end int // inclusive; for 206 and 200
		}{
			{"", 200, 0, size - 1},
			{"bytes=0-", 206, 0, size - 1},
			{"bytes=10-19", 206, 10, 19},
			{"bytes=100-", 206, 100, size - 1},
			{fmt.Sprintf("bytes=%d-%d", size-5, size+100), 206, size - 5, size - 1},
			{"bytes=-7", 206, size - 7, size - 1},
			{fmt.Sprintf("bytes=-%d", size+7), 206, 0, size - 1},
			{"bytes=0-0,5-9", 200, 0, size - 1}, // several ranges: the whole file
			{"items=0-9", 200, 0, size - 1},     // another unit: ignored
			{fmt.Sprintf("bytes=%d-", size), 416, 0, 0},
			{"bytes=20-10", 416, 0, 0},
			{"bytes=-0", 416, 0, 0},
			{"bytes=x-", 416, 0, 0},
		} {
			resp := ts.do(t, http.MethodGet, "/restic/r/data/"+name, reader, nil, http.Header{"Range": {c.rng}})
			if resp.StatusCode != c.status {
				t.Errorf("%d bytes, Range %q: status %d, want %d", size, c.rng, resp.StatusCode, c.status)
				continue
			}
			switch c.status {
			case 416:
				want(t, resp, 416, "range_not_satisfiable")
				if got := resp.Header.Get("Content-Range"); got != "bytes */"+strconv.Itoa(size) {
					t.Errorf("Range %q: Content-Range %q", c.rng, got)
				}
				continue
			case 206:
				if got, w := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, size); got != w {
					t.Errorf("Range %q: Content-Range %q, want %q", c.rng, got, w)
				}
			}
			if !bytes.Equal(resp.body, b[c.start:c.end+1]) || resp.ContentLength != int64(c.end-c.start+1) {
				t.Errorf("%d bytes, Range %q: got %d bytes (Content-Length %d), want bytes %d-%d", size, c.rng, len(resp.body), resp.ContentLength, c.start, c.end)
			}
		}
	}
}

func TestAuthenticationAndRoles(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, clock.NewFake(t0))
	agentTok := ts.token(t, auth.RoleAgent)
	agent := basic(agentTok)
	ts.newRepo(t, "r")
	b, name := content(t, 200)
	for _, typ := range []string{"data", "keys", "locks", "snapshots", "index"} {
		want(t, ts.do(t, http.MethodPost, "/restic/r/"+typ+"/"+name, agent, b, nil), http.StatusOK, "")
	}
	want(t, ts.do(t, http.MethodPost, "/restic/r/config", agent, b, nil), http.StatusOK, "")

	// Credentials: basic-auth password or bearer; anything else is 401.
	resp := ts.do(t, http.MethodGet, "/restic/r/keys/", cred{}, nil, nil)
	want(t, resp, http.StatusUnauthorized, "unauthenticated")
	if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("401 without a Basic challenge: %q", resp.Header.Get("WWW-Authenticate"))
	}
	want(t, ts.do(t, http.MethodGet, "/restic/r/keys/", bearer(agentTok), nil, nil), http.StatusOK, "")
	want(t, ts.do(t, http.MethodGet, "/restic/r/keys/", basic("not-a-token"), nil, nil), http.StatusUnauthorized, "unauthenticated")
	want(t, ts.do(t, http.MethodGet, "/restic/r/keys/", basic(agentTok+"x"), nil, nil), http.StatusUnauthorized, "unauthenticated")
	other := newTestServer(t, clock.NewFake(t0)) // another vault's signing key
	want(t, ts.do(t, http.MethodGet, "/restic/r/keys/", basic(other.token(t, auth.RoleReader)), nil, nil), http.StatusUnauthorized, "unauthenticated")

	roles := []auth.Role{auth.RoleAgent, auth.RoleReader, auth.RoleAuditor, auth.RoleAdmin}
	const (
		ok = http.StatusOK
		no = http.StatusForbidden // forbidden for the role, or not_deletable
	)
	// Columns: agent, reader, auditor, admin. A POST of a fresh file uses
	// new content per row, named by its SHA-256.
	for _, c := range []struct {
		method, path string
		fresh        bool
		status       [4]int
	}{
		{"POST", "/restic/r2/?create=true", false, [4]int{ok, no, no, no}},
		{"HEAD", "/restic/r/config", false, [4]int{ok, ok, ok, ok}},
		{"GET", "/restic/r/config", false, [4]int{ok, ok, no, no}},
		{"GET", "/restic/r/data/", false, [4]int{ok, ok, ok, ok}},
		{"GET", "/restic/r/locks/", false, [4]int{ok, ok, ok, ok}},
		{"HEAD", "/restic/r/data/" + name, false, [4]int{ok, ok, ok, ok}},
		{"GET", "/restic/r/data/" + name, false, [4]int{no, ok, no, no}},
		{"GET", "/restic/r/keys/" + name, false, [4]int{ok, ok, no, no}},
		{"GET", "/restic/r/locks/" + name, false, [4]int{ok, ok, no, no}},
		{"GET", "/restic/r/snapshots/" + name, false, [4]int{ok, ok, no, no}},
		{"GET", "/restic/r/index/" + name, false, [4]int{ok, ok, no, no}},
		{"POST", "/restic/r/data/", true, [4]int{ok, no, no, no}},
		{"POST", "/restic/r/keys/", true, [4]int{ok, no, no, no}},
		{"POST", "/restic/r/snapshots/", true, [4]int{ok, no, no, no}},
		{"POST", "/restic/r/index/", true, [4]int{ok, no, no, no}},
		{"POST", "/restic/r/locks/", true, [4]int{ok, ok, no, no}},
		{"POST", "/restic/r/config", false, [4]int{ok, no, no, no}}, // the same config again
		{"DELETE", "/restic/r/data/" + name, false, [4]int{no, no, no, no}},
		{"DELETE", "/restic/r/config", false, [4]int{no, no, no, no}},
	} {
		path, body := c.path, []byte(nil)
		if c.fresh {
			var fresh string
			body, fresh = content(t, 50)
			path += fresh
		} else if c.method == http.MethodPost && !strings.Contains(path, "create") {
			body = b
		}
		for i, role := range roles {
			resp := ts.do(t, c.method, path, basic(ts.token(t, role)), body, nil)
			if resp.StatusCode != c.status[i] {
				t.Errorf("%s %s as %s: %d, want %d; body %s", c.method, path, role, resp.StatusCode, c.status[i], resp.body)
			}
		}
	}
}

func TestDeleteOnlyLocks(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, clock.NewFake(t0))
	agent, reader := basic(ts.token(t, auth.RoleAgent)), basic(ts.token(t, auth.RoleReader))
	ts.newRepo(t, "r")
	b, name := content(t, 300)
	for _, typ := range []string{"data", "keys", "snapshots", "index", "locks"} {
		want(t, ts.do(t, http.MethodPost, "/restic/r/"+typ+"/"+name, agent, b, nil), http.StatusOK, "")
	}
	for _, typ := range []string{"data", "keys", "snapshots", "index"} {
		want(t, ts.do(t, http.MethodDelete, "/restic/r/"+typ+"/"+name, agent, nil, nil), http.StatusForbidden, "not_deletable")
		want(t, ts.do(t, http.MethodHead, "/restic/r/"+typ+"/"+name, agent, nil, nil), http.StatusOK, "")
	}
	want(t, ts.do(t, http.MethodDelete, "/restic/r/locks/"+name, reader, nil, nil), http.StatusOK, "")
	want(t, ts.do(t, http.MethodHead, "/restic/r/locks/"+name, agent, nil, nil), http.StatusNotFound, "")
	want(t, ts.do(t, http.MethodDelete, "/restic/r/locks/"+name, agent, nil, nil), http.StatusOK, "") // idempotent
	if n := ts.count(t, "restic_files"); n != 4 {
		t.Errorf("%d restic files, want the 4 non-lock files", n)
	}
}

func TestRepositoryRetentionAPI(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, clock.NewFake(t0))
	admin, auditor, agent := ts.token(t, auth.RoleAdmin), ts.token(t, auth.RoleAuditor), ts.token(t, auth.RoleAgent)
	ts.newRepo(t, "r")
	path := "/v1/restic/repositories/r/retention"
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	want(t, ts.do(t, http.MethodPut, path, bearer(agent), []byte(`{"min_retention":"400d"}`), jsonHeader), http.StatusForbidden, "forbidden")
	want(t, ts.do(t, http.MethodPut, path, bearer(admin), []byte(`{"min_retention":"soon"}`), jsonHeader), http.StatusBadRequest, "invalid")
	resp := ts.do(t, http.MethodPut, path, bearer(admin), []byte(`{"min_retention":"400d"}`), jsonHeader)
	want(t, resp, http.StatusOK, "")
	var got struct {
		Name               string `json:"name"`
		MinRetention       string `json:"min_retention"`
		EffectiveRetention string `json:"effective_retention"`
	}
	if err := json.Unmarshal(resp.body, &got); err != nil || got.Name != "r" || got.MinRetention != "9600h0m0s" || got.EffectiveRetention != "9600h0m0s" {
		t.Errorf("set retention = %s", resp.body)
	}
	want(t, ts.do(t, http.MethodPut, path, bearer(admin), []byte(`{"min_retention":"40d"}`), jsonHeader), http.StatusConflict, "retention_locked")
	resp = ts.do(t, http.MethodGet, "/v1/restic/repositories", bearer(auditor), nil, nil)
	want(t, resp, http.StatusOK, "")
	if !strings.Contains(string(resp.body), `"min_retention":"9600h0m0s"`) {
		t.Errorf("repositories = %s", resp.body)
	}
}

// Listings stream page by page; every name comes once, in order.
func TestListingPages(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, clock.NewFake(t0))
	ts.newRepo(t, "r")
	var names []string
	for range 7 {
		b, name := content(t, 40)
		if _, _, err := ts.store.PutResticFile(t.Context(), "agent", "r", store.ResticIndex, name, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	h := restic.NewHandler(restic.Options{Store: ts.store, Verifier: ts.verifier, Log: slog.New(slog.DiscardHandler), ListPage: 3,
		WriteError: func(w http.ResponseWriter, r *http.Request, err error) {
			t.Errorf("%s %s: %v", r.Method, r.URL, err)
			w.WriteHeader(http.StatusInternalServerError)
		}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, accept := range []string{"", restic.ContentTypeV2} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/r/index/", nil)
		req.SetBasicAuth("", ts.token(t, auth.RoleReader))
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		if accept == "" {
			err = json.NewDecoder(resp.Body).Decode(&got)
		} else {
			var items []struct{ Name string }
			err = json.NewDecoder(resp.Body).Decode(&items)
			for _, it := range items {
				got = append(got, it.Name)
			}
		}
		resp.Body.Close()
		if err != nil || !slices.Equal(got, names) {
			t.Errorf("listing (Accept %q) in pages of 3: %v, %v; want %v", accept, got, err, names)
		}
	}
}
