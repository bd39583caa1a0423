package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/client"
)

func TestPlural(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		n    int64
		word string
		want string
	}{
		{0, "chunk", "0 chunks"},
		{1, "chunk", "1 chunk"},
		{2, "chunk", "2 chunks"},
		{1, "directory", "1 directory"},
		{3, "directory", "3 directories"},
		{2, "entry", "2 entries"},
		{1, "hash", "1 hash"},
		{5, "hash", "5 hashes"},
		{2, "symbolic link", "2 symbolic links"},
		{1, "byte", "1 byte"},
	} {
		if got := plural(tt.n, tt.word); got != tt.want {
			t.Errorf("plural(%d, %q) = %q, want %q", tt.n, tt.word, got, tt.want)
		}
	}
	if got := byReason(nil); got != "none" {
		t.Errorf("byReason(nil) = %q, want none", got)
	}
	if got := byReason(map[string]int64{"held": 2, "retained": 5, "referenced": 2}); got != "5 retained, 2 held, 2 referenced" {
		t.Errorf("byReason = %q", got)
	}
	if got, want := idList([]int64{}), "none"; got != want {
		t.Errorf("idList(empty) = %q, want %q", got, want)
	}
	if got, want := idList([]int64{3, 14}), "3, 14"; got != want {
		t.Errorf("idList = %q, want %q", got, want)
	}
}

// TestDeletionShowReadsRight: one chunk is "1 chunk", and an empty skip
// list is "none", not Go's "map[]".
func TestDeletionShowReadsRight(t *testing.T) {
	t.Parallel()
	var d client.Deletion
	if err := json.Unmarshal([]byte(`{"id": 7, "kind": "chunks", "state": "executed", "delay": "72h",
		"report": {"deleted": 1, "skipped": {}, "bytes_freed": 10, "snapshots_deleted": 0},
		"affected": {"chunks": 1, "snapshots": 1, "bytes": 10}}`), &d); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d.ExecutedAt = &now
	var out bytes.Buffer
	printDeletion(&out, d, now)
	for _, want := range []string{"1 chunk, 1 snapshot, 10 B", "1 chunk and 0 snapshots deleted", "skipped: none"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("deletion show lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "map[") || strings.Contains(out.String(), "1 chunks") {
		t.Errorf("deletion show prints Go syntax or a bad plural:\n%s", out.String())
	}
}

// TestCLICountsUsePlural keeps the CLI's counted nouns going through
// plural: a format string that puts a count before a plural noun prints
// "1 chunks" for one.
func TestCLICountsUsePlural(t *testing.T) {
	t.Parallel()
	bad := regexp.MustCompile(`%d (chunks|snapshots|files|directories|symbolic links|entries|hashes|approvals|lines|packs|bytes|problems)\b|"[^"]*[a-z]\(s\)[^"]*"`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := bad.FindString(line); m != "" && strings.Contains(line, `"`) {
				t.Errorf("%s:%d: %q: count it with plural()", f, i+1, m)
			}
		}
	}
}
