package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/wormvault/wormvault/internal/auth"
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

// DefaultMaxRequestsPerToken is the default cap on one token's concurrent
// requests: well above what an agent uses (vault push runs a few uploads
// at once), far below the connection caps, so that one stolen or runaway
// token cannot hold every connection and worker the server has.
const DefaultMaxRequestsPerToken = 64

// errTooManyRequests: the token is at its cap on concurrent requests.
var errTooManyRequests = errors.New("api: too many concurrent requests with this token")

// tokenLimiter caps the requests in flight per token (by its id, jti):
// one request beyond the cap is refused at once (429), not queued, so a
// token's excess never waits on a socket. Entries live only while a token
// has requests in flight.
type tokenLimiter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
	// acquired, if set, is called after each admission (tests).
	acquired func(jti string)
}

func newTokenLimiter(max int, acquired func(string)) *tokenLimiter {
	return &tokenLimiter{max: max, n: make(map[string]int), acquired: acquired}
}

// limit wraps next, which runs after authentication: every request of a
// token beyond its cap is refused with errTooManyRequests. A zero or
// negative cap admits everything.
func (l *tokenLimiter) limit(writeError func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if l.max <= 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := auth.FromContext(r.Context())
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			key := p.JTI
			if key == "" {
				key = "subject:" + p.Subject
			}
			l.mu.Lock()
			if l.n[key] >= l.max {
				l.mu.Unlock()
				writeError(w, r, fmt.Errorf("%w: %d in flight for the token of %q, at most %d", errTooManyRequests, l.max, p.Subject, l.max))
				return
			}
			l.n[key]++
			l.mu.Unlock()
			defer func() {
				l.mu.Lock()
				if l.n[key]--; l.n[key] <= 0 {
					delete(l.n, key)
				}
				l.mu.Unlock()
			}()
			if l.acquired != nil {
				l.acquired(key)
			}
			next.ServeHTTP(w, r)
		})
	}
}
