package agent

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wormvault/wormvault/internal/agent/agenttest"
)

func TestDedupShare(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		c    Counts
		want float64
	}{
		{"nothing yet", Counts{}, 0},
		// Read but not yet checked or uploaded is not deduplicated.
		{"all new, a third in flight", Counts{Bytes: 300, UploadedBytes: 200}, 0},
		{"all new, with metadata", Counts{Bytes: 300, UploadedBytes: 310}, 0},
		{"half in the vault", Counts{Bytes: 200, KnownBytes: 100, UploadedBytes: 100}, 0.5},
		{"the same file twice", Counts{Bytes: 200, RepeatedBytes: 100, UploadedBytes: 100}, 0.5},
		{"all in the vault", Counts{Bytes: 200, KnownBytes: 200}, 1},
	} {
		if got := tt.c.DedupShare(); got != tt.want {
			t.Errorf("%s: %+v.DedupShare() = %g, want %g", tt.name, tt.c, got, tt.want)
		}
	}
}

// blockFirstUpload holds the first chunk upload until release is closed,
// after telling arrived, so that a test sees a push with chunks read but
// not yet uploaded.
func blockFirstUpload(arrived chan<- struct{}, release <-chan struct{}) func(http.Handler) http.Handler {
	var once sync.Once
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut || strings.HasSuffix(r.URL.Path, "/chunks/batch") {
				once.Do(func() {
					close(arrived)
					<-release
				})
			}
			next.ServeHTTP(w, r)
		})
	}
}

// TestPushProgressAllNewIsNotDeduplicated: while all-new data is being
// uploaded, the progress says 0% deduplicated, not the share still in
// flight (issue 16 saw 25-32%).
func TestPushProgressAllNewIsNotDeduplicated(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}), make(chan struct{})
	v := agenttest.New(t, agenttest.Options{Middleware: blockFirstUpload(arrived, release)})
	src := t.TempDir()
	for i, name := range []string{"a", "b", "c"} {
		agenttest.WriteRandomFile(t, filepath.Join(src, name), 3<<20, uint64(100+i), 0o644)
	}
	prog := &Progress{}
	o := pushOptions("all-new")
	o.Progress = prog
	done := make(chan error, 1)
	var res PushResult
	go func() {
		var err error
		res, err = Push(context.Background(), v.Client(t, v.Agent), []string{src}, o)
		done <- err
	}()
	<-arrived
	mid := prog.Counts()
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Push: %v", err)
	}
	if mid.Bytes <= mid.UploadedBytes {
		t.Fatalf("mid-push counts %+v: nothing in flight, the test saw nothing", mid)
	}
	if got := mid.DedupShare(); got != 0 {
		t.Errorf("mid-push, all new, %d bytes read and %d uploaded: %.1f%% deduplicated, want 0%%", mid.Bytes, mid.UploadedBytes, 100*got)
	}
	if got := res.Counts.DedupShare(); got != 0 || res.Counts.KnownBytes != 0 || res.Counts.RepeatedBytes != 0 {
		t.Errorf("all-new push: %.1f%% deduplicated, counts %+v; want 0%%", 100*got, res.Counts)
	}
}

// TestPushDedupCountsRepeatsWithinPush: the same content twice in one push
// is sent once and counted as deduplicated.
func TestPushDedupCountsRepeatsWithinPush(t *testing.T) {
	t.Parallel()
	v := agenttest.New(t, agenttest.Options{})
	src := t.TempDir()
	a := filepath.Join(src, "a")
	agenttest.WriteRandomFile(t, a, 3<<20, 7, 0o644)
	b, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(src, "b"), b, 0o644)
	res := mustPush(t, v.Client(t, v.Agent), []string{src}, pushOptions("twice"))
	c := res.Counts
	// Half the content is a repeat; the metadata chunks are sent too.
	if got := c.DedupShare(); c.RepeatedBytes != 3<<20 || got < 0.45 || got >= 0.5 {
		t.Errorf("one file twice: repeated %d bytes, %.1f%% deduplicated (counts %+v); want %d repeated, just under 50%%", c.RepeatedBytes, 100*got, c, 3<<20)
	}
}
