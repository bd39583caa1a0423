package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/semaphore"
)

// Bounded resources (issue 14): slow bodies and batch memory.

// Defaults for the limits in Options.
const (
	// DefaultBatchMemory bounds the bytes of batch bodies held at once.
	DefaultBatchMemory = 256 << 20
	// batchWait is how long a batch waits for memory before it is told to
	// retry (503).
	batchWait = 10 * time.Second
)

var (
	// errTooSlow: a request body arrived slower than the minimum rate.
	errTooSlow = errors.New("api: request body arrived slower than the minimum rate")
	// errBusy: the server is at a resource bound; retry later.
	errBusy = errors.New("api: server busy")
)

// minBodyRate cuts a request whose body arrives slower than rate bytes per
// second, averaged from the handler's first read of it (time the server
// itself spends, e.g. waiting for batch memory, does not count), once
// grace has passed:
// a client trickling a body would otherwise hold its connection, its
// goroutine and its upload's resources for the whole read timeout. The
// bound is a read deadline on the connection, so a client that sends
// nothing at all is cut too, not only one that sends slowly.
func (h *handler) minBodyRate(next http.Handler) http.Handler {
	if h.minRate <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &rateBody{ReadCloser: r.Body, rc: http.NewResponseController(w),
				rate: h.minRate, grace: h.rateGrace}
		}
		next.ServeHTTP(w, r)
	})
}

type rateBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	rate  int64
	grace time.Duration
	n     int64
	// polling: the connection cannot take deadlines (a test recorder),
	// so the rate is checked after each read only.
	polling bool
	done    bool
	err     error // the rate error, once cut
}

// due is when the body must have delivered more than it has.
func (b *rateBody) due() time.Time {
	return b.start.Add(b.grace + time.Duration(float64(b.n)/float64(b.rate)*float64(time.Second)))
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.done {
		return b.ReadCloser.Read(p)
	}
	if b.start.IsZero() {
		b.start = time.Now()
	}
	due := b.due()
	if !time.Now().Before(due) {
		return 0, b.tooSlow()
	}
	if !b.polling {
		if err := b.rc.SetReadDeadline(due); err != nil {
			b.polling = true
		}
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.finish()
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return n, b.tooSlow()
	case err == nil && b.polling && time.Now().After(b.due()):
		return n, b.tooSlow()
	}
	return n, err
}

// finish lifts the deadline once the body is read: the server's own
// read of the connection (which detects a client that leaves) must not
// inherit it.
func (b *rateBody) finish() {
	b.done = true
	if !b.polling {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}

func (b *rateBody) tooSlow() error {
	b.err = fmt.Errorf("%w: %d bytes in %s, at least %d bytes/s required after %s",
		errTooSlow, b.n, time.Since(b.start).Round(time.Millisecond), b.rate, b.grace)
	return b.err
}

// batchMemory bounds the bytes of batch bodies held in memory at once: a
// batch reserves its declared length (or the largest batch, if it does not
// declare one) before reading a byte, and waits at most batchWait for it.
type batchMemory struct {
	sem   *semaphore.Weighted
	limit int64
	wait  time.Duration
}

func newBatchMemory(limit int64, wait time.Duration) *batchMemory {
	if limit <= 0 {
		limit = DefaultBatchMemory
	}
	if wait <= 0 {
		wait = batchWait
	}
	return &batchMemory{sem: semaphore.NewWeighted(limit), limit: limit, wait: wait}
}

// acquire reserves n bytes, or fails with errBusy after batchWait (or
// ctx's error). The returned release must be called.
func (m *batchMemory) acquire(ctx context.Context, n int64) (release func(), err error) {
	n = min(n, m.limit)
	wctx, cancel := context.WithTimeout(ctx, m.wait)
	defer cancel()
	if err := m.sem.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: batch bodies already hold %d bytes of memory", errBusy, m.limit)
	}
	return func() { m.sem.Release(n) }, nil
}
