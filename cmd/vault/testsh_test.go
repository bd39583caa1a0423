package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeTestShowsProgress runs scripts/test.sh in a scratch tree with
// stub go, gofmt, restic, docker-compose and fuzz.sh: every stage says so
// before it starts, cmd/vault's tests run after all the others (go test
// prints in package order, so a first cmd/vault would hold every other
// line back for minutes), and a failure is reported and exits non-zero.
func TestMakeTestShowsProgress(t *testing.T) {
	t.Parallel()
	bash := mustLookPath(t, "bash")
	script, err := os.ReadFile("../../scripts/test.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, fail := range []bool{false, true} {
		top := t.TempDir()
		bin := filepath.Join(top, "stubbin")
		for dir, files := range map[string]map[string]string{
			"scripts": {"test.sh": string(script), "fuzz.sh": "#!/bin/sh\necho 'fuzz.sh: stub' >&2\n"},
			"stubbin": {
				// go logs each call on stderr, in order with the stages;
				// go list names two packages; go test fails on request.
				"go": `#!/bin/sh
echo "STUB go $*" >&2
if [ "$1" = list ]; then echo github.com/wormvault/wormvault/cmd/vault; echo github.com/wormvault/wormvault/internal/chunk; fi
if [ "$1" = test ] && [ -n "$STUB_GO_TEST_FAILS" ]; then exit 3; fi
exit 0
`,
				"gofmt":          "#!/bin/sh\nexit 0\n",
				"restic":         "#!/bin/sh\nexit 0\n",
				"docker-compose": "#!/bin/sh\nexit 0\n",
			},
		} {
			if err := os.MkdirAll(filepath.Join(top, dir), 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range files {
				if err := os.WriteFile(filepath.Join(top, dir, name), []byte(content), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
		cmd := exec.Command(bash, filepath.Join(top, "scripts", "test.sh"))
		cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + top,
			"VAULT_TEST_DATABASE_URL=postgres://stub", "VAULT_TEST_RUNTIME_URL=postgres://stub"}
		if fail {
			cmd.Env = append(cmd.Env, "STUB_GO_TEST_FAILS=1")
		}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		out := stderr.String()

		// Each stage line comes before the commands of its stage.
		order := []string{
			"test.sh: [1/6] database", "test.sh: [2/6] tools", "test.sh: [3/6] go vet", "STUB go vet ./...",
			"test.sh: [4/6] fuzz", "fuzz.sh: stub", "test.sh: [5/6] go test", "STUB go test -race -count=1 -timeout 30m github.com/wormvault/wormvault/internal/chunk",
			"test.sh: [6/6] go test -race ./cmd/vault", "STUB go test -race -count=1 -timeout 30m ./cmd/vault",
		}
		rest := out
		for _, want := range order {
			i := strings.Index(rest, want)
			if i < 0 {
				t.Fatalf("fail=%v: test.sh output lacks %q after the previous line:\n%s", fail, want, out)
			}
			rest = rest[i+len(want):]
		}
		if strings.Contains(out, "timeout 30m github.com/wormvault/wormvault/cmd/vault") {
			t.Errorf("fail=%v: cmd/vault runs with the other packages:\n%s", fail, out)
		}
		switch {
		case !fail && (err != nil || !strings.Contains(out, "[done] all tests passed")):
			t.Errorf("passing run: err %v, output:\n%s", err, out)
		case fail && (err == nil || !strings.Contains(out, "[done] FAILED")):
			t.Errorf("failing run: err %v (want exit 3), output:\n%s", err, out)
		case fail:
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
				t.Errorf("failing run: err %v, want exit status 3", err)
			}
		}
	}
}
