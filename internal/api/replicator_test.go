package api

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/manifest"
)

// replicatorRoutes are the routes a replicator token may use: what a
// pulling replica reads (snapshots, holds, chunks, the audit log's
// checkpoints, entries and consistency proofs) and the read-only batch
// query it asks which chunks are gone. Everything else must be 403.
var replicatorRoutes = map[string]bool{
	"HEAD /v1/chunks/{hash}":          true,
	"GET /v1/chunks/{hash}":           true,
	"POST /v1/chunks/missing":         true,
	"GET /v1/snapshots":               true,
	"GET /v1/snapshots/{id}":          true,
	"GET /v1/holds":                   true,
	"GET /v1/holds/{id}":              true,
	"GET /v1/audit/checkpoint":        true,
	"GET /v1/audit/key":               true,
	"GET /v1/audit/entries":           true,
	"GET /v1/audit/proof/consistency": true,
	"GET /healthz":                    true, // no token needed
	"GET /readyz":                     true,
}

var routeParam = regexp.MustCompile(`\{[a-z]+(:[^}]*)?\}`)

// TestReplicatorTokenCannotWrite walks every route of the router (so a
// route added later is covered without editing this test) and sends it
// with a replicator token: every route outside replicatorRoutes answers
// 403 and changes nothing; the routes in it answer, and change nothing
// either. A replicator token leaked from a replica therefore reads
// backups, as a reader token would, and cannot write, delete, hold,
// approve, administer or read metadata beyond what replication needs.
func TestReplicatorTokenCannotWrite(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	data := ts.putChunks(t, 2)
	root := ts.putManifest(t, manifest.Manifest{Chunks: data})
	s := ts.commitSnapshot(t, snapshotBody("db01", "s", t0.AddDate(1, 0, 0), root))
	resp := ts.postJSON(t, "/v1/holds", ts.token(t, auth.RoleAdmin), map[string]any{"name": "case", "reason": "r", "snapshots": []int64{s.ID}})
	resp.mustStatus(t, http.StatusCreated)
	tok := ts.token(t, auth.RoleReplicator)

	routes, ok := NewHandler(Options{Store: ts.store, Verifier: ts.verifier, Log: ts.logs.logger()}).(chi.Routes)
	if !ok {
		t.Fatal("NewHandler is not a chi router")
	}
	fill := func(route string) string {
		return routeParam.ReplaceAllStringFunc(route, func(p string) string {
			switch {
			case strings.HasPrefix(p, "{hash"):
				return data[0].String()
			case strings.HasPrefix(p, "{id"):
				return strconv.FormatInt(s.ID, 10)
			}
			return "x"
		})
	}
	bodies := map[string]string{
		"/v1/chunks/missing": `{"hashes":["` + data[0].String() + `"]}`,
		"/v1/chunks/retain":  `{"hashes":["` + data[0].String() + `"],"retain_until":"` + t0.AddDate(5, 0, 0).Format(time.RFC3339) + `"}`,
		"/v1/snapshots":      `{"source":"db01","name":"evil","taken_at":"` + t0.Format(time.RFC3339) + `","retain_until":"` + t0.AddDate(1, 0, 0).Format(time.RFC3339) + `","manifest_root":"` + root.String() + `"}`,
		"/v1/holds":          `{"name":"evil","reason":"r","source":"db01"}`,
		"/v1/deletions":      `{"kind":"snapshots","snapshots":[` + strconv.FormatInt(s.ID, 10) + `],"reason":"evil"}`,
	}
	tested, allowed := 0, 0
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if method == http.MethodConnect || method == http.MethodTrace {
			return nil // not sent by net/http's client as a normal request
		}
		route = strings.TrimSuffix(strings.ReplaceAll(route, "/*/", "/"), "/*")
		key := method + " " + route
		path := fill(route)
		t.Run(key, func(t *testing.T) {
			tested++
			before := ts.state(t)
			var body any
			hdr := http.Header{}
			if b, ok := bodies[path]; ok && method != http.MethodGet && method != http.MethodHead {
				body = []byte(b)
				hdr.Set("Content-Type", "application/json")
			} else if method == http.MethodPut || method == http.MethodPost {
				body = []byte("x")
			}
			resp := ts.do(t, method, path, tok, body, hdr)
			if replicatorRoutes[key] {
				allowed++
				if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode >= 500 {
					t.Errorf("%s %s as replicator: %d %s, want an answer", method, path, resp.StatusCode, resp.body)
				}
			} else if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s as replicator: %d %s, want 403", method, path, resp.StatusCode, resp.body)
			}
			ts.assertUnchanged(t, before)
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The walk must have reached the API, the restic protocol and every
	// allowed route (a renamed route would otherwise pass unnoticed).
	if tested < 50 || allowed != len(replicatorRoutes) {
		t.Errorf("walked %d routes, %d of them allowed; want >= 50 and %d", tested, allowed, len(replicatorRoutes))
	}
}
