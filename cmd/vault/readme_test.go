package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/pgtest"
)

// The README's walkthroughs are run verbatim by TestREADMEWalkthroughs:
// every ```sh block that follows a line `<!-- walkthrough -->`, in order,
// as one bash session, in a directory laid out as a checkout after
// `make run` (bin/vault, scripts/run.sh, .devdb/), against a vault that
// scripts/run.sh itself started. The test changes only what cannot be the
// same on a test machine: the listen address, /tmp, and the one-minute
// sleeps of the dev-mode deletion walkthrough (its server runs with
// two-second delays instead). Each substitution must apply, so a README
// edit cannot silently drop what the test relies on.
//
// What the README promises is checked:
//   - every command succeeds, unless its line or the comment lines right
//     after it say it fails ("fails", "refused", "# → vault: …", "# → 4xx");
//   - every JSON member a `# → ` comment shows with a concrete value
//     ("code":"hash_mismatch", "extended":1, …) appears in the output, in
//     the order of the comments.
const walkthroughMarker = "<!-- walkthrough -->"

// walkthroughSubstitutions: README text → what the test runs instead.
var walkthroughSubstitutions = []struct{ from, to string }{
	{"sleep 61", "sleep 3"},  // the scratch chunk's 2 s minimum retention must pass
	{"sleep 66", "sleep 10"}, // 2 s deletion delay, 1 s executor interval, a loaded CI machine
}

func TestREADMEWalkthroughs(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README walkthroughs need %s: %v", tool, err)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := walkthroughBlocks(string(readme))
	if len(blocks) < 4 {
		t.Fatalf("README has %d blocks marked %q; the walkthroughs have at least 4", len(blocks), walkthroughMarker)
	}
	script := strings.Join(blocks, "\n")
	if _, err := exec.LookPath("restic"); err != nil && strings.Contains(script, "restic init") {
		if os.Getenv("VAULT_SKIP_RESTIC") != "1" {
			t.Fatalf("the README's restic walkthrough needs the restic client (apt-get install restic; `make test` installs it as root)")
		}
		t.Skip("VAULT_SKIP_RESTIC=1 and restic is not installed: the README walkthroughs are not run")
	}

	// A checkout as `make run` leaves it.
	top := t.TempDir()
	for _, d := range []string{"bin", "scripts", ".devdb", "tmp"} {
		if err := os.MkdirAll(filepath.Join(top, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(mustBuildPlainVault(t), filepath.Join(top, "bin", "vault")); err != nil {
		t.Fatal(err)
	}
	runSh, err := os.ReadFile("../../scripts/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "scripts", "run.sh"), runSh, 0o755); err != nil {
		t.Fatal(err)
	}
	db := pgtest.New(t)
	if err := os.WriteFile(filepath.Join(top, ".devdb", "env"), []byte("VAULT_DATABASE_URL="+db.URL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)

	// `make run`, in the deletion walkthrough's dev mode from the start.
	var serverLog bytes.Buffer
	srv := exec.Command("bash", "scripts/run.sh")
	srv.Dir = top
	srv.Env = append(os.Environ(), "VAULT_DATABASE_URL="+db.URL, "VAULT_OWNER_DATABASE_URL="+db.OwnerURL,
		"VAULT_LISTEN="+addr, "VAULT_DEV=1", "VAULT_MIN_RETENTION=2s", "VAULT_DELETION_DELAY=2s",
		"VAULT_EXECUTOR_INTERVAL=1s")
	srv.Stdout, srv.Stderr = &serverLog, &serverLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			srv.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("make run's output:\n%s", serverLog.String())
		}
	})
	mustWaitUntil(t, 60*time.Second, "make run's vault to answer /readyz", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	script = strings.ReplaceAll(script, "127.0.0.1:8420", addr)
	script = strings.ReplaceAll(script, "/tmp/", filepath.Join(top, "tmp")+"/")
	for _, s := range walkthroughSubstitutions {
		if !strings.Contains(script, s.from) {
			t.Fatalf("the walkthroughs no longer contain %q: update walkthroughSubstitutions", s.from)
		}
		script = strings.ReplaceAll(script, s.from, s.to)
	}
	lines := strings.Split(script, "\n")
	prelude := "set -o errtrace\ntrap 'echo \"WALKTHROUGH-FAILED $LINENO\"' ERR\n"
	const preludeLines = 2
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The script's own exit status is its last command's, which may be one
	// that is meant to fail: the trap judges every command, and the end
	// marker shows the shell got through them all.
	const end = "WALKTHROUGH-END"
	sh := exec.CommandContext(ctx, "bash", "-c", prelude+script+"\necho "+end)
	sh.Dir = top
	sh.Env = append(os.Environ(), "HOME="+top)
	var out bytes.Buffer
	sh.Stdout, sh.Stderr = &out, &out
	err = sh.Run()
	output := out.String()
	if !strings.Contains(output, end) {
		t.Errorf("the walkthroughs' shell stopped before their end: %v", err)
	}
	for _, m := range regexp.MustCompile(`WALKTHROUGH-FAILED (\d+)`).FindAllStringSubmatch(output, -1) {
		n, _ := strconv.Atoi(m[1])
		if cmd, ok := failureExpected(lines, n-1-preludeLines); !ok {
			t.Errorf("README command failed: %s", cmd)
		}
	}
	rest := output
	for _, want := range promisedOutputs(script) {
		i := strings.Index(rest, want)
		if i < 0 {
			t.Errorf("README promises %s in the output (after the previous promise); it is not there", want)
			continue
		}
		rest = rest[i+len(want):]
	}
	if t.Failed() {
		t.Logf("the walkthroughs as run:\n%s\n\ntheir output:\n%s", numbered(lines), output)
	}
}

// walkthroughBlocks returns the body of every ```sh block that follows a
// walkthrough marker line.
func walkthroughBlocks(readme string) []string {
	var blocks []string
	lines := strings.Split(readme, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != walkthroughMarker {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || strings.TrimSpace(lines[j]) != "```sh" {
			blocks = append(blocks, "echo 'README: a walkthrough marker is not followed by a ```sh block'; false")
			continue
		}
		var body []string
		for j++; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
			body = append(body, lines[j])
		}
		blocks = append(blocks, strings.Join(body, "\n"))
		i = j
	}
	return blocks
}

// failureExpected reports whether the command around line n (0-based) is
// one the README says fails, and returns the command's text.
func failureExpected(lines []string, n int) (string, bool) {
	if n < 0 || n >= len(lines) {
		return fmt.Sprintf("line %d (outside the walkthroughs)", n+1), false
	}
	start, end := n, n
	for start > 0 && strings.HasSuffix(lines[start-1], "\\") {
		start--
	}
	for end < len(lines)-1 && strings.HasSuffix(lines[end], "\\") {
		end++
	}
	text := strings.Join(lines[start:end+1], "\n")
	notes := text
	for k := end + 1; k < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[k]), "#"); k++ {
		notes += "\n" + lines[k]
	}
	for _, m := range []string{"fails", "refused", "# → vault:", "# → 4"} {
		if strings.Contains(notes, m) {
			return text, true
		}
	}
	return text, false
}

// promisedOutputs returns the JSON members with concrete values that the
// walkthroughs' `# → ` comments show, in order.
func promisedOutputs(script string) []string {
	member := regexp.MustCompile(`"[a-z_]+":("[^"…<>]*"|-?[0-9]+|true|false)`)
	var out []string
	for _, l := range strings.Split(script, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "# → ") {
			continue
		}
		out = append(out, member.FindAllString(l, -1)...)
	}
	return out
}

func numbered(lines []string) string {
	var b strings.Builder
	for i, l := range lines {
		fmt.Fprintf(&b, "%4d  %s\n", i+1, l)
	}
	return b.String()
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
