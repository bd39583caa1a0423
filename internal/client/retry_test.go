package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

var quick = Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, MaxElapsed: 10 * time.Second}

func TestTransient(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"503", &Error{StatusCode: 503, Code: "unavailable"}, true},
		{"502 from a proxy", fmt.Errorf("wrapped: %w", &Error{StatusCode: 502}), true},
		{"504", &Error{StatusCode: 504}, true},
		{"429", &Error{StatusCode: 429}, true},
		{"400", &Error{StatusCode: 400, Code: "invalid"}, false},
		{"401", &Error{StatusCode: 401, Code: "unauthenticated"}, false},
		{"403", &Error{StatusCode: 403, Code: "forbidden"}, false},
		{"409", &Error{StatusCode: 409, Code: "conflict"}, false},
		{"413", &Error{StatusCode: 413, Code: "too_large"}, false},
		{"422", &Error{StatusCode: 422, Code: "hash_mismatch"}, false},
		{"500", &Error{StatusCode: 500, Code: "internal"}, false},
		{"507", &Error{StatusCode: 507, Code: "insufficient_storage"}, false},
		{"refused", &url.Error{Op: "Post", URL: "u", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, true},
		{"reset", fmt.Errorf("client: %w", &url.Error{Op: "Put", URL: "u", Err: syscall.ECONNRESET}), true},
		{"cut short", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"server closed", &url.Error{Op: "Get", URL: "u", Err: io.EOF}, true},
		{"cancelled", &url.Error{Op: "Get", URL: "u", Err: context.Canceled}, false},
		{"hash mismatch", fmt.Errorf("x: %w", chunk.ErrHashMismatch), false},
		{"unknown host", &url.Error{Op: "Get", URL: "u", Err: &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", IsNotFound: true}}}, false},
		{"plain error", errors.New("something"), false},
	} {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestBackoffRetriesTransientOnly(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	c := stub(t, func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case strings.HasSuffix(r.URL.Path, "/missing") && n <= 2:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"code":"unavailable","message":"later"}}`)
		case strings.HasSuffix(r.URL.Path, "/missing"):
			io.WriteString(w, `{"missing":[]}`)
		default:
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"error":{"code":"forbidden","message":"no"}}`)
		}
	})
	ctx := context.Background()
	var retries []int
	b := quick
	b.OnRetry = func(_ error, attempt int, wait time.Duration) {
		retries = append(retries, attempt)
		if wait <= 0 || wait > b.Max {
			t.Errorf("wait %v outside (0, %v]", wait, b.Max)
		}
	}
	err := b.Do(ctx, func(ctx context.Context) error {
		_, err := c.MissingChunks(ctx, []chunk.Hash{chunk.Sum(nil)})
		return err
	})
	if err != nil || calls.Load() != 3 || len(retries) != 2 {
		t.Errorf("after two 503s: err %v, %d calls, retries %v; want success on the third", err, calls.Load(), retries)
	}

	calls.Store(0)
	retries = nil
	err = b.Do(ctx, func(ctx context.Context) error {
		_, err := c.Snapshot(ctx, 1)
		return err
	})
	if !IsCode(err, "forbidden") || calls.Load() != 1 || len(retries) != 0 {
		t.Errorf("403: err %v, %d calls, retries %v; want one call, no retry", err, calls.Load(), retries)
	}
}

func TestBackoffGivesUp(t *testing.T) {
	t.Parallel()
	unavailable := &Error{StatusCode: 503, Code: "unavailable"}
	calls := 0
	err := Backoff{Initial: time.Millisecond, MaxAttempts: 4}.Do(context.Background(), func(context.Context) error {
		calls++
		return unavailable
	})
	if !errors.Is(err, unavailable) || calls != 4 || !strings.Contains(err.Error(), "gave up after 4 attempts") {
		t.Errorf("MaxAttempts 4: %d calls, err %v", calls, err)
	}

	calls = 0
	err = Backoff{Initial: 20 * time.Millisecond, MaxElapsed: 30 * time.Millisecond}.Do(context.Background(), func(context.Context) error {
		calls++
		return unavailable
	})
	if !errors.Is(err, unavailable) || calls > 3 {
		t.Errorf("MaxElapsed: %d calls, err %v", calls, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = Backoff{Initial: time.Hour}.Do(ctx, func(context.Context) error {
		calls++
		cancel()
		return unavailable
	})
	if calls != 1 || err == nil {
		t.Errorf("cancelled: %d calls, err %v", calls, err)
	}
}

func TestPutBatch(t *testing.T) {
	t.Parallel()
	items := []BatchItem{{Data: []byte("one")}, {Data: []byte("")}, {Data: []byte("three")}}
	for i := range items {
		items[i].Hash = chunk.Sum(items[i].Data)
	}
	var gotCT, gotRetain string
	var frames []BatchItem
	answer := ""
	c := stub(t, func(w http.ResponseWriter, r *http.Request) {
		gotCT, gotRetain = r.Header.Get("Content-Type"), r.Header.Get(HeaderRetainUntil)
		body, _ := io.ReadAll(r.Body)
		frames = nil
		for off := 0; off < len(body); {
			h := chunk.Hash(body[off : off+chunk.Size])
			n := int(binary.BigEndian.Uint32(body[off+chunk.Size:]))
			off += BatchFrameOverhead
			frames = append(frames, BatchItem{Hash: h, Data: body[off : off+n]})
			off += n
		}
		io.WriteString(w, answer)
	})
	result := func(h chunk.Hash, status string) string {
		return `{"hash":"` + h.String() + `","status":"` + status + `"}`
	}
	answer = `{"results":[` + result(items[0].Hash, "created") + "," + result(items[1].Hash, "exists") + "," +
		`{"hash":"` + items[2].Hash.String() + `","status":"refused","code":"hash_mismatch","message":"m"}]}`
	until := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	res, err := c.PutBatch(context.Background(), items, until)
	if err != nil {
		t.Fatal(err)
	}
	if gotCT != BatchContentType || gotRetain != "2027-01-02T03:04:05Z" || len(frames) != 3 {
		t.Errorf("request: Content-Type %q, retain %q, %d frames", gotCT, gotRetain, len(frames))
	}
	for i := range frames {
		if frames[i].Hash != items[i].Hash || string(frames[i].Data) != string(items[i].Data) {
			t.Errorf("frame %d = %q, want %q", i, frames[i].Data, items[i].Data)
		}
	}
	if !res[0].Stored() || !res[1].Stored() || res[2].Stored() || res[2].Code != "hash_mismatch" {
		t.Errorf("results = %+v", res)
	}

	// An answer that does not match the request is an error.
	answer = `{"results":[` + result(items[1].Hash, "created") + "]}"
	if _, err := c.PutBatch(context.Background(), items, time.Time{}); err == nil {
		t.Errorf("PutBatch accepted %s for 3 chunks", answer)
	}
	big := []BatchItem{{Data: make([]byte, MaxBatchChunk+1)}}
	if _, err := c.PutBatch(context.Background(), big, time.Time{}); err == nil {
		t.Errorf("PutBatch accepted a chunk over MaxBatchChunk")
	}
}
