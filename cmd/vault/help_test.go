package main

import (
	"strings"
	"testing"
)

// walk calls f for every command of the tree under c, with its full name
// ("vault admin deletions approve"), the root included.
func walk(c *cmd, path string, f func(c *cmd, path string)) {
	f(c, path)
	for _, s := range c.subs {
		walk(s, path+" "+s.name, f)
	}
}

// TestHelpEveryCommand asks every command and subcommand of the tree that
// run dispatches on for help, the ways people ask: each exits 0 with its
// usage on stdout, named in full, listing a group's subcommands. Help runs
// nothing: there is no environment, no database and no vault here.
func TestHelpEveryCommand(t *testing.T) {
	t.Parallel()
	n := 0
	walk(commands(), "vault", func(c *cmd, path string) {
		n++
		args := strings.Fields(path)[1:]
		asks := [][]string{{"-h"}, {"--help"}, {"-help"}}
		if c.run == nil {
			asks = append(asks, []string{"help"})
		}
		for _, ask := range asks {
			argv := append(append([]string{}, args...), ask...)
			t.Run(strings.Join(argv, " "), func(t *testing.T) {
				t.Parallel()
				r := runCLI(t, nil, nil, argv...)
				if r.err != nil {
					t.Fatalf("%s %s: error %v (want exit 0)\nstderr: %s", path, ask[0], r.err, r.stderr)
				}
				if r.stderr != "" {
					t.Errorf("%s %s: stderr = %q, want help on stdout only", path, ask[0], r.stderr)
				}
				if !strings.Contains(r.stdout, "usage: "+path) {
					t.Errorf("%s %s: stdout does not name the command (want %q):\n%s", path, ask[0], "usage: "+path, r.stdout)
				}
				for _, s := range c.subs {
					if !strings.Contains(r.stdout, "\n  "+s.name+" ") {
						t.Errorf("%s %s: subcommand %q not listed:\n%s", path, ask[0], s.name, r.stdout)
					}
				}
				if strings.Contains(r.stdout, "Usage of ") {
					t.Errorf("%s %s: the flag package's default usage, not the command's:\n%s", path, ask[0], r.stdout)
				}
			})
		}
	})
	if n < 40 {
		t.Errorf("walked %d commands; the tree is smaller than the CLI", n)
	}
}

// TestHelpPlaceholders checks that no flag's placeholder is a piece of
// its help text: flag.UnquoteUsage takes the first `quoted` word of a
// flag's usage as its placeholder ("-key vault admin keygen").
func TestHelpPlaceholders(t *testing.T) {
	t.Parallel()
	walk(commands(), "vault", func(c *cmd, path string) {
		if c.run == nil {
			return
		}
		r := runCLI(t, nil, nil, append(strings.Fields(path)[1:], "-h")...)
		for _, line := range strings.Split(r.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) > 2 && strings.HasPrefix(f[0], "-") && strings.HasPrefix(line, "  -") {
				t.Errorf("%s -h: flag line %q has a multi-word placeholder", path, line)
			}
		}
	})
}

// TestUsageErrors: a missing or unknown subcommand and a bad flag exit
// non-zero with the usage on stderr, not stdout.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, argv := range [][]string{
		nil,
		{"destroy"},
		{"token"},
		{"token", "forge"},
		{"admin", "deletions"},
		{"admin", "admins", "drop"},
		{"token", "issue", "--no-such-flag"},
		{"hash", "--no-such-flag"},
		{"admin", "deletions", "show", "--no-such-flag", "1"},
	} {
		t.Run(strings.Join(argv, " "), func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, nil, nil, argv...)
			if r.err == nil {
				t.Fatalf("vault %q: no error", argv)
			}
			if !strings.Contains(r.stderr, "usage: vault") {
				t.Errorf("vault %q: stderr has no usage:\n%s", argv, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("vault %q: stdout = %q, want nothing", argv, r.stdout)
			}
		})
	}
}

// TestHelpAfterDoubleDash: "--" ends the flags, so a file named -h is
// hashed, not taken for a help request.
func TestHelpAfterDoubleDash(t *testing.T) {
	t.Parallel()
	r := runCLI(t, nil, strings.NewReader("x"), "hash", "--", "-")
	if r.err != nil || len(strings.TrimSpace(r.stdout)) != 64 {
		t.Fatalf("vault hash -- -: %v, stdout %q", r.err, r.stdout)
	}
	if r := runCLI(t, nil, nil, "hash", "--", "-h"); r.err == nil || !strings.Contains(r.err.Error(), "-h") {
		t.Fatalf("vault hash -- -h: error %v, want one about the file -h", r.err)
	}
}

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"version", "--version", "-version"} {
		r := runCLI(t, nil, nil, arg)
		if r.err != nil || !strings.HasPrefix(r.stdout, "vault ") {
			t.Errorf("vault %s: %v, stdout %q", arg, r.err, r.stdout)
		}
	}
}
