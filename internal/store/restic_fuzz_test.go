package store

import (
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzResticNames attacks the checks between a restic URL and the vault's
// index: every repository name and file name they accept must be a single,
// harmless path element (no separator, no dot-dot, no leading dot), so no
// request can reach outside its repository.
func FuzzResticNames(f *testing.F) {
	f.Add("db01", "data", strings.Repeat("ab", 32))
	f.Add("..", "config", "config")
	f.Add("a/b", "keys", strings.Repeat("AB", 32))
	f.Add(".hidden", "locks", "../"+strings.Repeat("a", 61))
	f.Add("r", "index", strings.Repeat("0", 64)+"\x00")
	f.Fuzz(func(t *testing.T, repo, typ, name string) {
		if CheckResticRepository(repo) == nil {
			if !harmless(repo) || len(repo) > 128 {
				t.Fatalf("repository name %q accepted", repo)
			}
		}
		if CheckResticFile(typ, name) == nil {
			if !harmless(name) || !harmless(typ) {
				t.Fatalf("file %q/%q accepted", typ, name)
			}
			if name != ResticConfig && len(name) != 64 {
				t.Fatalf("file name %q accepted: not 64 hex digits", name)
			}
		}
	})
}

func harmless(s string) bool {
	return s != "" && !strings.HasPrefix(s, ".") && !strings.ContainsAny(s, "/\\\x00") &&
		path.Base(s) == s && filepath.Base(s) == s && path.Clean(s) == s
}
