package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Retry defaults: waits grow from a quarter second to half a minute, and
// an operation is given up after five minutes of failures, long enough to
// ride out a vault restart.
const (
	DefaultRetryInitial    = 250 * time.Millisecond
	DefaultRetryMax        = 30 * time.Second
	DefaultRetryMaxElapsed = 5 * time.Minute
)

// Backoff retries an operation that failed transiently (Transient) with
// capped exponential waits. The zero value uses the defaults above.
type Backoff struct {
	// Initial is the first wait; each further wait doubles, up to Max.
	Initial time.Duration
	Max     time.Duration
	// MaxElapsed gives up once this much time has passed since the first
	// attempt (negative: no limit).
	MaxElapsed time.Duration
	// MaxAttempts gives up after this many attempts (0: no limit).
	MaxAttempts int
	// OnRetry, if set, is told of each transient failure before the wait.
	OnRetry func(err error, attempt int, wait time.Duration)
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultRetryInitial
	}
	if b.Max <= 0 {
		b.Max = DefaultRetryMax
	}
	if b.MaxElapsed == 0 {
		b.MaxElapsed = DefaultRetryMaxElapsed
	}
	return b
}

// Do runs op until it succeeds, fails permanently, ctx is done, or the
// policy gives up; it returns op's last error. op may run several times,
// so it must be idempotent (every vault upload is: content is addressed by
// its hash).
func (b Backoff) Do(ctx context.Context, op func(ctx context.Context) error) error {
	b = b.withDefaults()
	start := time.Now()
	wait := b.Initial
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil || ctx.Err() != nil || !Transient(err) {
			return err
		}
		if b.MaxAttempts > 0 && attempt >= b.MaxAttempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		// Jitter spreads the retries of parallel workers after an outage.
		d := wait/2 + rand.N(wait/2+1)
		if b.MaxElapsed > 0 && time.Since(start)+d > b.MaxElapsed {
			return fmt.Errorf("%w (gave up after %d attempts in %s)", err, attempt, time.Since(start).Round(time.Millisecond))
		}
		if b.OnRetry != nil {
			b.OnRetry(err, attempt, d)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, b.Max)
	}
}

// Transient reports whether err is worth retrying: the vault or a proxy
// in front of it is briefly unavailable (502, 503, 504, 429), or the
// connection failed (refused, reset, cut short, timed out); not a daily
// quota's 429, which lasts until the next UTC day. Refusals of
// the request itself (400, 401, 403, 404, 409, 413, 422), server errors
// (500, 507), content that does not match its hash, certificate errors,
// unknown host names and a cancelled context are permanent.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, chunk.ErrHashMismatch) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		if e.Code == "quota_daily_exceeded" {
			// A 429 that lasts until the next UTC day: retrying for
			// minutes only adds load; the next backup run will do.
			return false
		}
		switch e.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusTooManyRequests:
			return true
		}
		return false
	}
	var (
		ne      net.Error
		opErr   *net.OpError
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
	)
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &host):
		return false // retrying cannot make a certificate valid
	case errors.As(err, &dnsErr):
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	case errors.As(err, &opErr):
		// Any other failure to connect, send or receive.
		return true
	}
	return false
}
