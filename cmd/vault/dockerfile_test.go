package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfilePinsBaseImages: every base image is named by tag and
// pinned by digest (image:tag@sha256:...), so that a moved tag cannot
// change what a rebuild ships; the comment above says how to refresh them.
func TestDockerfilePinsBaseImages(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	pinned := regexp.MustCompile(`^FROM [a-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}( AS [a-z]+)?$`)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "FROM ") {
			continue
		}
		n++
		if !pinned.MatchString(line) {
			t.Errorf("Dockerfile: %q is not image:tag@sha256:<digest>", line)
		}
	}
	if n < 2 {
		t.Errorf("Dockerfile has %d FROM lines, want the build and the runtime stage", n)
	}
	if !strings.Contains(string(b), "docker buildx imagetools inspect") {
		t.Error("Dockerfile does not say how to refresh its digests")
	}
}
