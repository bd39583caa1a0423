package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsResticURLsFollowListenAddress: a restic repository URL in the
// README or docs/restic.md names the vault through VAULT_URL, not a
// literal port: copied against a vault on another --listen address, a
// literal 8420 would talk to nothing (or to another vault). In the README
// walkthroughs, the address appears once, where VAULT_URL is set.
func TestDocsResticURLsFollowListenAddress(t *testing.T) {
	t.Parallel()
	literal := regexp.MustCompile(`rest:https?://[^ ]*@[0-9a-z.]+:[0-9]+/restic/`)
	for _, f := range []string{"../../README.md", "../../docs/restic.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := literal.FindString(line); m != "" && !strings.Contains(line, "example") {
				t.Errorf("%s:%d: restic URL with a literal address %q; use $VAULT_ADDR (from VAULT_URL)", f, i+1, m)
			}
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range walkthroughBlocks(string(readme)) {
		for _, line := range strings.Split(block, "\n") {
			if strings.Contains(line, "127.0.0.1:8420") && !strings.HasPrefix(line, "export VAULT_URL=") {
				t.Errorf("README walkthrough line %q names the address itself; use $VAULT_URL", line)
			}
		}
	}
}
