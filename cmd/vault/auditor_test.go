package main

// The auditor commands (retention, snapshots, holds) against a real server
// over HTTP: a vault with several sources and snapshots.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

var auditorEpoch = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type auditorFixture struct {
	url    string
	store  *store.Store
	tokens map[auth.Role]string
	snaps  map[string]client.Committed // by source/name
}

// newAuditorFixture serves a vault holding three sources: db01 (two
// snapshots, a year and two years), db02 (one, three months) and web01
// (one, six months, under a legal hold), plus loose chunks at the minimum
// retention.
func newAuditorFixture(t testing.TB) *auditorFixture {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	blobs, err := disk.Open(t.TempDir(), disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(auditorEpoch)
	pgtest.FollowClock(t, pool, clk)
	log := slog.New(slog.DiscardHandler)
	st := store.New(pool, blobs, clk, log, nil, store.Options{})
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	verifier := auth.NewVerifier(key.Public().(ed25519.PublicKey), "cli-test", st, clk)
	srv := httptest.NewServer(api.NewHandler(api.Options{Store: st, Verifier: verifier, Log: log}))
	t.Cleanup(srv.Close)
	f := &auditorFixture{url: srv.URL, store: st, tokens: map[auth.Role]string{}, snaps: map[string]client.Committed{}}
	issuer := auth.NewIssuer(key, "cli-test", clk)
	for _, role := range []auth.Role{auth.RoleAgent, auth.RoleReader, auth.RoleAuditor, auth.RoleAdmin} {
		tok, _, err := issueAll(issuer, role, "cli-"+string(role), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[role] = tok
	}

	agent := f.client(t, auth.RoleAgent)
	put := func(b []byte) chunk.Hash {
		h := chunk.Sum(b)
		if _, err := agent.PutChunk(ctx, h, bytes.NewReader(b), time.Time{}); err != nil {
			t.Fatalf("PutChunk: %v", err)
		}
		return h
	}
	var data []chunk.Hash
	for i := range 12 {
		data = append(data, put(fmt.Appendf(nil, "chunk %d %s", i, strings.Repeat("x", i*100))))
	}
	commit := func(source, name string, until time.Time, refs []chunk.Hash, tags ...string) {
		b, _ := manifest.Manifest{Chunks: refs}.Marshal()
		c, err := agent.CommitSnapshot(ctx, client.NewSnapshot{Source: source, Name: name, TakenAt: auditorEpoch.Add(-time.Hour),
			RetainUntil: until, Tags: tags, ManifestRoot: put(b)})
		if err != nil {
			t.Fatalf("CommitSnapshot %s/%s: %v", source, name, err)
		}
		f.snaps[source+"/"+name] = c
	}
	commit("db01", "2026-11-24", auditorEpoch.AddDate(1, 0, 0), data[0:4], "daily")
	commit("db01", "2026-11-25", auditorEpoch.AddDate(2, 0, 0), data[1:5], "monthly")
	commit("db02", "2026-11-25", auditorEpoch.AddDate(0, 3, 0), data[5:7], "daily")
	commit("web01", "2026-11-25", auditorEpoch.AddDate(0, 6, 0), data[7:9])
	if _, err := f.client(t, auth.RoleAdmin).PlaceHold(ctx, client.NewHold{Name: "case 7", Reason: "litigation hold\non web01", Source: "web01"}); err != nil {
		t.Fatalf("PlaceHold: %v", err)
	}
	return f
}

func (f *auditorFixture) client(t testing.TB, role auth.Role) *client.Client {
	t.Helper()
	c, err := client.New(f.url, f.tokens[role], nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs the CLI with role's token.
func (f *auditorFixture) run(t testing.TB, role auth.Role, args ...string) cliResult {
	t.Helper()
	return runCLI(t, map[string]string{"VAULT_URL": f.url, "VAULT_TOKEN": f.tokens[role]}, nil, args...)
}

func (f *auditorFixture) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	r := f.run(t, auth.RoleAuditor, args...)
	if r.err != nil {
		t.Fatalf("vault %s: %v\nstderr: %s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// table returns the lines of the table whose header line starts with
// header, up to the next blank line, and checks that every column starts
// at the same offset in every line (text/tabwriter's alignment).
func table(t testing.TB, out, header string) []string {
	t.Helper()
	lines := strings.Split(out, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, header) })
	if start < 0 {
		t.Fatalf("no table with header %q in:\n%s", header, out)
	}
	var rows []string
	for _, l := range lines[start:] {
		if strings.TrimSpace(l) == "" {
			break
		}
		rows = append(rows, l)
	}
	cols := columnStarts(rows[0])
	for _, r := range rows[1:] {
		for _, c := range cols[1:] {
			if c >= len(r) || r[c-1] != ' ' || r[c] == ' ' {
				t.Fatalf("row %q not aligned with header %q (column at %d)", r, rows[0], c)
			}
		}
	}
	return rows[1:]
}

// columnStarts returns where each header column starts: header names are
// separated by at least two spaces.
func columnStarts(header string) []int {
	starts := []int{0}
	for i := 2; i < len(header); i++ {
		if header[i] != ' ' && header[i-1] == ' ' && header[i-2] == ' ' {
			starts = append(starts, i)
		}
	}
	return starts
}

func TestRetentionCommands(t *testing.T) {
	t.Parallel()
	f := newAuditorFixture(t)

	out := f.mustRun(t, "retention", "summary")
	months := table(t, out, "RETAINED UNTIL")
	var names []string
	for _, m := range months {
		names = append(names, strings.Fields(m)[0])
	}
	// Loose chunks: December; db02: February; web01: May; db01: 2027-11
	// and 2028-11.
	if !slices.Equal(names, []string{"2026-12", "2027-02", "2027-05", "2027-11", "2028-11"}) {
		t.Errorf("months = %v\n%s", names, out)
	}
	counts := table(t, out, "CHUNKS")
	if len(counts) != 4 || !strings.HasPrefix(counts[0], "stored") || !strings.HasPrefix(counts[2], "held") {
		t.Errorf("counts table = %q", counts)
	}
	if held := strings.Fields(counts[2]); held[1] != "3" { // web01's two chunks and its manifest
		t.Errorf("held row = %q, want 3 chunks", counts[2])
	}
	snaps := table(t, out, "SNAPSHOTS")
	if strings.Join(strings.Fields(snaps[0]), " ") != "4 0 1 1" {
		t.Errorf("snapshot row = %q, want 4 total, 0 expired, 1 held, 1 hold", snaps[0])
	}

	// --json gives the same figures as the store.
	var got client.RetentionSummary
	if err := json.Unmarshal([]byte(f.mustRun(t, "retention", "summary", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	want, _ := f.store.RetentionSummary(context.Background())
	if got.Total.Chunks != want.Total.Chunks || got.Total.Bytes != want.Total.Bytes || got.Held.Chunks != want.Held.Chunks ||
		len(got.Months) != len(want.Months) || got.Snapshots.Total != 4 || got.ActiveHolds != 1 {
		t.Errorf("--json summary = %+v, store says %+v", got, want)
	}

	// Expiring before June 2027: db02 and web01 (soonest first), and their
	// chunks plus the loose ones.
	out = f.mustRun(t, "retention", "expiring", "--before", "2027-06-01")
	rows := table(t, out, "ID")
	if len(rows) != 2 || strings.Fields(rows[0])[1] != "db02" || strings.Fields(rows[1])[1] != "web01" ||
		strings.Fields(rows[1])[len(strings.Fields(rows[1]))-1] != "yes" {
		t.Errorf("expiring snapshots = %q", rows)
	}
	chunkRows := table(t, out, "HASH")
	if len(chunkRows) != 3+3+3 { // 3 loose, db02's 2 + manifest, web01's 2 + manifest
		t.Errorf("expiring chunks: %d rows, want 9:\n%s", len(chunkRows), out)
	}

	// JSON, limited: the cut is reported on stderr, stdout stays JSON.
	r := f.run(t, auth.RoleAuditor, "retention", "expiring", "--before=2030-01-01", "--json", "--limit", "2")
	if r.err != nil {
		t.Fatal(r.err)
	}
	var lists struct {
		Snapshots []client.Snapshot      `json:"snapshots"`
		Chunks    []client.ExpiringChunk `json:"chunks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &lists); err != nil {
		t.Fatalf("--json output %q: %v", r.stdout, err)
	}
	if len(lists.Snapshots) != 2 || len(lists.Chunks) != 2 || !strings.Contains(r.stderr, "--limit 0") {
		t.Errorf("limited JSON = %+v, stderr %q", lists, r.stderr)
	}
	r = f.run(t, auth.RoleAuditor, "retention", "expiring", "--before=2030-01-01", "--show", "chunks", "--json", "--limit", "0")
	if err := json.Unmarshal([]byte(r.stdout), &lists); err != nil || len(lists.Chunks) != 12+4 || r.stderr != "" {
		t.Errorf("all chunks: %d, err %v, stderr %q", len(lists.Chunks), err, r.stderr)
	}
}

func TestSnapshotsAndHoldsCommands(t *testing.T) {
	t.Parallel()
	f := newAuditorFixture(t)

	rows := table(t, f.mustRun(t, "snapshots", "list"), "ID")
	if len(rows) != 4 {
		t.Fatalf("snapshots list: %q", rows)
	}
	rows = table(t, f.mustRun(t, "snapshots", "list", "--source", "db01", "--tag", "daily"), "ID")
	if len(rows) != 1 || strings.Fields(rows[0])[2] != "2026-11-24" {
		t.Errorf("filtered list = %q", rows)
	}
	var list []client.Snapshot
	if err := json.Unmarshal([]byte(f.mustRun(t, "snapshots", "list", "--json", "--limit", "0")), &list); err != nil || len(list) != 4 {
		t.Errorf("snapshots list --json: %d, %v", len(list), err)
	}
	web := f.snaps["web01/2026-11-25"]
	out := f.mustRun(t, "snapshots", "show", fmt.Sprint(web.ID), "--json")
	var d client.SnapshotDetail
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.ID != web.ID || !d.Held || len(d.Holds) != 1 || d.UniqueChunks != 3 {
		t.Errorf("snapshots show --json = %s (%v)", out, err)
	}
	out = f.mustRun(t, "snapshots", "show", fmt.Sprint(web.ID))
	if !strings.Contains(out, "held:") || !strings.Contains(out, "via source") {
		t.Errorf("snapshots show = %s", out)
	}

	rows = table(t, f.mustRun(t, "holds", "list"), "ID")
	if len(rows) != 1 || !strings.Contains(rows[0], "source web01") || !strings.Contains(rows[0], "litigation hold on web01") {
		t.Errorf("holds list = %q", rows)
	}
	out = f.mustRun(t, "holds", "show", "1")
	if !strings.Contains(out, "cli-admin") || !strings.Contains(out, "active:") {
		t.Errorf("holds show = %s", out)
	}
}

func TestAuditorCommandErrors(t *testing.T) {
	t.Parallel()
	f := newAuditorFixture(t)
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"no URL", map[string]string{"VAULT_TOKEN": f.tokens[auth.RoleAuditor]}, []string{"retention", "summary"}, "VAULT_URL"},
		{"no token", map[string]string{"VAULT_URL": f.url}, []string{"holds", "list"}, "VAULT_TOKEN"},
		{"agent token", map[string]string{"VAULT_URL": f.url, "VAULT_TOKEN": f.tokens[auth.RoleAgent]}, []string{"retention", "summary"}, "auditor"},
		{"bad token", map[string]string{"VAULT_URL": f.url, "VAULT_TOKEN": "x"}, []string{"snapshots", "list"}, "unauthenticated"},
		{"no --before", nil, []string{"retention", "expiring"}, "--before"},
		{"bad date", nil, []string{"retention", "expiring", "--before", "next week"}, "YYYY-MM-DD"},
		{"unknown subcommand", nil, []string{"retention", "shorten"}, "unknown subcommand"},
		{"no subcommand", nil, []string{"holds"}, "want a command: list, show"},
		{"unknown snapshot", nil, []string{"snapshots", "show", "999"}, "not_found"},
		{"bad id", nil, []string{"holds", "show", "one"}, "not a hold id"},
		{"negative limit", nil, []string{"snapshots", "list", "--limit", "-1"}, "--limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			if env == nil {
				env = map[string]string{"VAULT_URL": f.url, "VAULT_TOKEN": f.tokens[auth.RoleAuditor]}
			}
			r := runCLI(t, env, nil, tt.args...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Errorf("vault %q: err = %v, want it to mention %q", tt.args, r.err, tt.wantErr)
			}
		})
	}
}
