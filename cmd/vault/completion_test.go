package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// mustCompletionScript runs `vault completion SHELL` and writes the script
// to a file.
func mustCompletionScript(t *testing.T, shell string) (script, file string) {
	t.Helper()
	r := runCLI(t, nil, nil, "completion", shell)
	if r.err != nil {
		t.Fatalf("vault completion %s: %v\n%s", shell, r.err, r.stderr)
	}
	file = filepath.Join(t.TempDir(), "vault."+shell)
	if err := os.WriteFile(file, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return r.stdout, file
}

// TestCompletionListsEveryCommand walks the command tree: every command at
// every level has its case in both scripts, and leaves offer their flags.
func TestCompletionListsEveryCommand(t *testing.T) {
	t.Parallel()
	for _, shell := range []string{"bash", "zsh"} {
		t.Run(shell, func(t *testing.T) {
			t.Parallel()
			script, _ := mustCompletionScript(t, shell)
			n := 0
			walk(commands(), "vault", func(c *cmd, path string) {
				n++
				if !strings.Contains(script, `"`+path+`"`) {
					t.Errorf("%s script has no case for %q", shell, path)
				}
				for _, s := range c.subs {
					if !strings.Contains(script, `"`+path+" "+s.name+`"`) {
						t.Errorf("%s script does not descend from %q into %q", shell, path, s.name)
					}
				}
			})
			if n < 40 {
				t.Errorf("walked %d commands; the tree is smaller than the CLI", n)
			}
			for _, want := range []string{"--role", "--subject", "--log-level", "--expired-before", "--version"} {
				if !strings.Contains(script, " "+want) {
					t.Errorf("%s script does not offer the flag %s", shell, want)
				}
			}
		})
	}
}

func TestCompletionBashSyntax(t *testing.T) {
	t.Parallel()
	bash := mustLookPath(t, "bash")
	_, file := mustCompletionScript(t, "bash")
	if out, err := exec.Command(bash, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("bash -n rejects the completion script: %v\n%s", err, out)
	}
}

func TestCompletionZshSyntax(t *testing.T) {
	t.Parallel()
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("zsh is not installed")
	}
	_, file := mustCompletionScript(t, "zsh")
	if out, err := exec.Command(zsh, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n rejects the completion script: %v\n%s", err, out)
	}
	// Run the completion function with zsh's completion builtins replaced
	// by stubs that print what they were given.
	const stubs = `compdef() { }; compadd() { print -r -- "$*" }; _describe() { print -rl -- "${(@P)4}" }; _files() { print FILES }`
	for _, tt := range []struct {
		words   string
		current int
		want    string
	}{
		{"vault admin del", 3, "deletions:"},
		{"vault token issue --r", 4, "--role"},
		{"vault hash x", 3, "FILES"},
	} {
		prog := stubs + "; source " + file + "; words=(" + tt.words + "); CURRENT=" + strconv.Itoa(tt.current) + "; _vault"
		out, err := exec.Command(zsh, "-f", "-c", prog).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tt.want) {
			t.Errorf("zsh completion of %q: %v, output %q, want it to contain %q", tt.words, err, out, tt.want)
		}
	}
}

// TestCompletionBashCompletes sources the script and calls the completion
// function as bash would.
func TestCompletionBashCompletes(t *testing.T) {
	t.Parallel()
	bash := mustLookPath(t, "bash")
	_, file := mustCompletionScript(t, "bash")
	for _, tt := range []struct {
		words []string // the last one is being completed
		want  string
	}{
		{[]string{"vault", "admin", "del"}, "deletions"},
		{[]string{"vault", "admin", "deletions", "ap"}, "approve"},
		{[]string{"vault", "tok"}, "token"},
		{[]string{"vault", "scrub", "st"}, "status"},
		{[]string{"vault", "token", "issue", "--su"}, "--subject"},
		{[]string{"vault", "completion", ""}, "bash zsh"},
		// A positional argument ends the walk, as it ends dispatch's.
		{[]string{"vault", "hash", "scrub", "st"}, ""},
		{[]string{"vault", "nosuch", "st"}, ""},
		{[]string{"vault", "admin", "x", "deletions", "ap"}, ""},
	} {
		prog := "source " + file + "; COMP_WORDS=(" + strings.Join(quoteAll(tt.words), " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(tt.words)-1) + `; _vault; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", tt.words, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("completing %q: got %q, want %q", tt.words, got, tt.want)
		}
	}
}

// TestCompletionBadInput: an unknown shell or an extra argument is an error
// with nothing on stdout.
func TestCompletionBadInput(t *testing.T) {
	t.Parallel()
	for _, argv := range [][]string{{"completion"}, {"completion", "fish"}, {"completion", "bash", "extra"}} {
		r := runCLI(t, nil, nil, argv...)
		if r.err == nil || r.stdout != "" {
			t.Errorf("vault %q: error %v, stdout %q; want an error and no script", argv, r.err, r.stdout)
		}
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test: %v", name, err)
	}
	return p
}

func quoteAll(words []string) []string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return q
}
