package main

// Tests that keep docs/operations.md true: its metrics table against what a
// running server exports, the commands and flags it shows against the
// command tree, and what it says of upgrades against what the binary does.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/replica"
	"github.com/wormvault/wormvault/migrations"
)

const operationsDoc = "../../docs/operations.md"

// notMetrics are wormvault_ names the operations guide may use that are
// not metrics.
var notMetrics = map[string]bool{
	migrations.RuntimeRole: true, // the database group role
}

// replicaOnly are the metrics only a replicating vault exports (serve
// --replicate-from, or vault replicate): described in the guide's "A
// second location" section, read from the replicator's own registration.
var replicaOnly = func() map[string]bool {
	names := map[string]bool{}
	replica.NewMetrics(registerFunc(func(c prometheus.Collector) error {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if m := regexp.MustCompile(`fqName: "([a-z0-9_]+)"`).FindStringSubmatch(d.String()); m != nil {
				names[m[1]] = true
			}
		}
		return nil
	}))
	return names
}()

// registerFunc is a prometheus.Registerer that hands each collector to a
// function.
type registerFunc func(prometheus.Collector) error

func (f registerFunc) Register(c prometheus.Collector) error { return f(c) }
func (f registerFunc) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := f(c); err != nil {
			panic(err)
		}
	}
}
func (f registerFunc) Unregister(prometheus.Collector) bool { return false }

// docMetric is one row of the Monitoring section's metrics table.
type docMetric struct {
	typ    string
	labels []string
}

// docMetricTable reads the table of the "## Monitoring" section of
// docs/operations.md: | `name` | type | labels | meaning |.
func docMetricTable(t *testing.T, doc string) map[string]docMetric {
	t.Helper()
	start := strings.Index(doc, "\n## Monitoring\n")
	if start < 0 {
		t.Fatalf("%s has no \"## Monitoring\" section", operationsDoc)
	}
	section := doc[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	ticked := regexp.MustCompile("`([a-z0-9_]+)`")
	rows := map[string]docMetric{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `wormvault_") {
			continue
		}
		cols := strings.Split(strings.Trim(line, "|"), "|")
		if len(cols) < 4 {
			t.Errorf("%s: metrics table row %q has %d columns, want metric | type | labels | meaning", operationsDoc, line, len(cols))
			continue
		}
		name := strings.Trim(strings.TrimSpace(cols[0]), "`")
		if _, dup := rows[name]; dup {
			t.Errorf("%s: %s has two rows in the metrics table", operationsDoc, name)
		}
		var labels []string
		for _, m := range ticked.FindAllStringSubmatch(cols[2], -1) {
			labels = append(labels, m[1])
		}
		sort.Strings(labels)
		rows[name] = docMetric{typ: strings.TrimSpace(cols[1]), labels: labels}
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no metrics table rows (| `wormvault_...` | type | labels | meaning |) in the Monitoring section", operationsDoc)
	}
	return rows
}

// scrapedFamilies reads a /metrics exposition: each wormvault_ family's
// type and the label names its samples carry (le and quantile aside).
func scrapedFamilies(t *testing.T, body string) map[string]docMetric {
	t.Helper()
	fams := map[string]docMetric{}
	labelSets := map[string]map[string]bool{}
	labelRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "wormvault_") {
			fams[f[2]] = docMetric{typ: f[3]}
			labelSets[f[2]] = map[string]bool{}
			continue
		}
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "wormvault_") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		fam := name
		if _, ok := fams[fam]; !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if _, ok := fams[strings.TrimSuffix(name, suffix)]; ok {
					fam = strings.TrimSuffix(name, suffix)
				}
			}
		}
		if _, ok := fams[fam]; !ok {
			t.Fatalf("/metrics: sample %q of no declared family", line)
		}
		if i := strings.IndexByte(line, '{'); i >= 0 {
			for _, m := range labelRE.FindAllStringSubmatch(line[i:strings.IndexByte(line, '}')], -1) {
				if m[1] != "le" && m[1] != "quantile" {
					labelSets[fam][m[1]] = true
				}
			}
		}
	}
	for name, set := range labelSets {
		f := fams[name]
		for l := range set {
			f.labels = append(f.labels, l)
		}
		sort.Strings(f.labels)
		fams[name] = f
	}
	return fams
}

// TestOperationsDocListsEveryMetric starts a server, makes the events after
// which the labelled metrics first appear (a refused batch chunk, a
// connection over the per-client cap; requests), scrapes /metrics with a
// metrics token, and compares with docs/operations.md: every exported
// wormvault_ family has a row in the Monitoring table with its type and
// labels, and every wormvault_ name the guide mentions anywhere is
// exported.
func TestOperationsDocListsEveryMetric(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	table := docMetricTable(t, doc)

	bin := mustBuildVault(t)
	db := pgtest.New(t)
	dir := filepath.Join(t.TempDir(), "data")
	mustRunVault(t, bin, "init", "--data-dir", dir)
	agent := mustIssueToken(t, bin, dir, db.URL, "agent", "web01")
	metrics := mustIssueToken(t, bin, dir, db.URL, "metrics", "prometheus")
	// A subject with a total quota of 0 bytes: its first upload is refused
	// (507), which makes the quota metrics appear.
	quota01 := mustIssueToken(t, bin, dir, db.URL, "agent", "quota01")
	conn, err := pgx.Connect(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `INSERT INTO quota_settings (subject, total_bytes, set_at, set_by, reason)
		VALUES ('quota01', 0, now(), 'opsdocs', 'test')`)
	conn.Close(context.Background())
	if err != nil {
		t.Fatalf("set a quota: %v", err)
	}
	srv := mustStartVault(t, bin, "--data-dir", dir, "--database-url", db.URL, "--listen", "127.0.0.1:0",
		"--max-conns-per-client", "2")
	c := newTestClient(t)
	mustWaitReady(t, c, srv)

	// A batch with a chunk whose bytes are not its address: refused
	// (hash_mismatch), counted in wormvault_batch_chunks_refused_total.
	var body bytes.Buffer
	good, bad := []byte("opsdocs good chunk"), []byte("opsdocs bad chunk")
	for _, f := range []struct {
		h    chunk.Hash
		data []byte
	}{{chunk.Sum(good), good}, {chunk.Sum([]byte("not these bytes")), bad}} {
		body.Write(f.h[:])
		binary.Write(&body, binary.BigEndian, uint32(len(f.data)))
		body.Write(f.data)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.url+"/v1/chunks/batch", &body)
	req.Header.Set("Authorization", "Bearer "+agent)
	req.Header.Set("Content-Type", "application/vnd.wormvault.batch")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	var batch struct {
		Results []struct{ Status, Code string } `json:"results"`
	}
	err = json.NewDecoder(resp.Body).Decode(&batch)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("batch: %d, %v", resp.StatusCode, err)
	}

	qdata := []byte("opsdocs quota chunk")
	if code, err := putChunk(c, srv.url, quota01, chunk.Sum(qdata), qdata); err != nil || code != http.StatusInsufficientStorage {
		t.Fatalf("upload over a total quota of 0: %d, %v; want 507", code, err)
	}

	// Three idle connections from 127.0.0.2 against a per-client cap of
	// two: the third is closed on accept (reason per_client).
	addr := strings.TrimPrefix(srv.url, "http://")
	for i := 0; i < 3; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
		conn, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		defer conn.Close()
	}

	var scraped map[string]docMetric
	mustWaitUntil(t, 30*time.Second, "the per-client refusal to be counted", func() bool {
		scraped = scrapedFamilies(t, mustScrape(t, c, srv.url, metrics))
		return len(scraped["wormvault_connections_refused_total"].labels) > 0
	})
	for _, must := range []string{"wormvault_batch_chunks_refused_total", "wormvault_http_request_duration_seconds", "wormvault_deletions",
		"wormvault_quota_refusals_total", "wormvault_quota_used_bytes"} {
		if len(scraped[must].labels) == 0 {
			t.Fatalf("%s was not exported with its labels after the events that make it appear; got %v", must, scraped[must])
		}
	}

	for name, got := range scraped {
		want, ok := table[name]
		switch {
		case !ok:
			t.Errorf("%s: the server exports %s (%s, labels %v), missing from the Monitoring table", operationsDoc, name, got.typ, got.labels)
		case want.typ != got.typ:
			t.Errorf("%s: %s is a %s, the table says %q", operationsDoc, name, got.typ, want.typ)
		case !slices.Equal(want.labels, got.labels):
			t.Errorf("%s: %s has labels %v, the table says %v", operationsDoc, name, got.labels, want.labels)
		}
	}
	for _, name := range regexp.MustCompile(`\bwormvault_[a-z0-9_]*[a-z0-9]`).FindAllString(doc, -1) {
		fam := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f := strings.TrimSuffix(name, suffix); f != name && scraped[f].typ == "histogram" {
				fam = f
			}
		}
		if _, ok := scraped[fam]; !ok && !notMetrics[name] && !replicaOnly[name] {
			t.Errorf("%s names %s, which the server does not export", operationsDoc, name)
		}
	}
	for name := range replicaOnly {
		if !strings.Contains(doc, name) {
			t.Errorf("%s: the replica metric %s is not described", operationsDoc, name)
		}
	}
	t.Logf("%d wormvault_ metric families exported, %d rows in the table", len(scraped), len(table))
}

// mustScrape returns the body of /metrics, read with a metrics token.
func mustScrape(t *testing.T, c *http.Client, base, token string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// TestOperationsDocCommandsExist checks every `vault ...` line of the
// guide's shell blocks against the command tree: the command exists, and
// each --flag it passes is one of that command's flags (in its -h).
func TestOperationsDocCommandsExist(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	word := regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	flagRE := regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`)
	n := 0
	inBlock := false
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line) // fences may be indented in a list
		if strings.HasPrefix(line, "```") {
			inBlock = strings.TrimPrefix(line, "```") == "sh" && !inBlock
			continue
		}
		if !inBlock || !strings.HasPrefix(line, "vault ") {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		n++
		fields := strings.Fields(line)
		// The command's path: the longest run of words naming a node.
		node, path := commands(), []string{}
		for _, f := range fields[1:] {
			if !word.MatchString(f) {
				break
			}
			var next *cmd
			for _, s := range node.subs {
				if s.name == f {
					next = s
				}
			}
			if next == nil {
				break
			}
			node, path = next, append(path, f)
		}
		if node.run == nil {
			t.Errorf("%s: %q names no runnable command (stops at \"vault %s\")", operationsDoc, line, strings.Join(path, " "))
			continue
		}
		help := runCLI(t, nil, nil, append(path, "-h")...).stdout
		for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
			if !strings.Contains(help, "\n  -"+m[1]+" ") && !strings.Contains(help, "\n  -"+m[1]+"\n") {
				t.Errorf("%s: %q passes --%s, which vault %s does not have", operationsDoc, line, m[1], strings.Join(path, " "))
			}
		}
	}
	if n < 10 {
		t.Errorf("%s: found %d vault command lines in sh blocks; the parser is broken", operationsDoc, n)
	}
}

// TestOlderBinaryRefusesNewerSchema is what "Upgrading" promises about
// rolling a binary back: on a schema newer than its migrations, serve
// refuses to start and migrate refuses to run (it never migrates down).
func TestOlderBinaryRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	_, latest, err := migrations.Status(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	// A newer binary's migration, as far as this one can tell.
	if _, err := owner.Exec(ctx, "UPDATE public.schema_version SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	dir := mustInitVault(t)

	r := runCLI(t, nil, nil, "serve", "--data-dir", dir, "--database-url", db.URL, "--listen", "127.0.0.1:0")
	if r.err == nil || !strings.Contains(r.err.Error(), "newer than this vault's") {
		t.Errorf("serve on a schema newer than the binary: %v, want a refusal saying the schema is newer", r.err)
	}
	r = runCLI(t, nil, nil, "migrate", "--owner-url", db.OwnerURL)
	if r.err == nil {
		t.Errorf("migrate by an older binary on a newer schema succeeded")
	}
	var version int32
	if err := owner.QueryRow(ctx, "SELECT version FROM public.schema_version").Scan(&version); err != nil || version != latest+1 {
		t.Errorf("schema version after the refusals = %d, %v; want %d (untouched)", version, err, latest+1)
	}
	t.Logf("migrate: %v", r.err)
}

// TestOperationsDocLinksResolve: every link to a section of
// docs/operations.md, from the README, the docs and the deploy files,
// names a heading the guide has.
func TestOperationsDocLinksResolve(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range title {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				b.WriteRune(r)
			}
		}
		anchors[b.String()] = true
	}
	link := regexp.MustCompile(`operations\.md#([a-z0-9_-]+)`)
	files := []string{"../../README.md"}
	for _, glob := range []string{"../../docs/*.md", "../../deploy/*/*"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			n++
			if !anchors[m[1]] {
				t.Errorf("%s links to operations.md#%s, which is no heading of %s", f, m[1], operationsDoc)
			}
		}
	}
	if n < 10 {
		t.Errorf("found %d links to operations.md sections; the README's pointers are missing", n)
	}
}
