package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

func ptr(v int64) *int64 { return &v }

// TestQuotaUsageCountsFirstUploaderOnly: the usage counters follow the
// chunks table: the first uploader pays, a re-upload by anyone costs
// nothing, a new UTC day starts the daily count again while the total
// stays.
func TestQuotaUsageCountsFirstUploaderOnly(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	put := func(subject string, b []byte) {
		t.Helper()
		if _, err := ts.PutChunk(ctx, subject, chunk.Sum(b), bytes.NewReader(b), time.Time{}); err != nil {
			t.Fatalf("PutChunk by %s: %v", subject, err)
		}
	}
	a, _ := randomChunk(t, 100)
	b, _ := randomChunk(t, 50)
	put("host-a", a)
	put("host-b", a) // dedup: host-b pays nothing
	put("host-b", b)
	want := func(subject string, today, total int64) {
		t.Helper()
		u, err := ts.QuotaUsage(ctx, subject)
		if err != nil || u.UsedToday != today || u.UsedTotal != total {
			t.Errorf("usage of %s: %+v, %v; want today %d, total %d", subject, u, err, today, total)
		}
	}
	want("host-a", 100, 100)
	want("host-b", 50, 50)
	ts.clk.Advance(24 * time.Hour)
	want("host-a", 0, 100)
	c, _ := randomChunk(t, 10)
	put("host-a", c)
	want("host-a", 10, 110)
}

// TestQuotaCheckedBeforeTheBody: a declared size over the quota is
// refused before a byte of the body is read; the usage may overshoot by
// at most an undeclared body admitted below the quota.
func TestQuotaCheckedBeforeTheBody(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	if _, err := ts.SetQuota(ctx, "admin-1", store.QuotaChange{Subject: "host-a", DailyBytes: ptr(100)}); err != nil {
		t.Fatal(err)
	}
	b, h := randomChunk(t, 150)
	body := &countingReader{r: bytes.NewReader(b)}
	_, err := ts.PutChunkSized(ctx, "host-a", h, body, int64(len(b)), time.Time{})
	var qe *store.QuotaError
	if !errors.As(err, &qe) || qe.Kind != store.QuotaDaily || qe.Limit != 100 || qe.RetryAfter != 12*time.Hour {
		t.Fatalf("PutChunkSized over the daily quota: %v, want a daily QuotaError retrying in 12h", err)
	}
	if body.n != 0 {
		t.Errorf("%d bytes of the refused body were read", body.n)
	}
	if n := ts.count(t, "chunks"); n != 0 {
		t.Errorf("%d chunks stored", n)
	}
	// Undeclared: admitted below the quota, whatever its size.
	if _, err := ts.PutChunk(ctx, "host-a", h, bytes.NewReader(b), time.Time{}); err != nil {
		t.Fatalf("undeclared body below the quota: %v", err)
	}
	other, oh := randomChunk(t, 1)
	if _, err := ts.PutChunk(ctx, "host-a", oh, bytes.NewReader(other), time.Time{}); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("undeclared body once the quota is used up: %v, want ErrQuotaExceeded", err)
	}
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestRuntimeRoleCannotRewriteQuotaUsage: the usage counters are written
// by the triggers only, and quota settings are insert-only, whatever SQL
// the runtime role runs.
func TestRuntimeRoleCannotRewriteQuotaUsage(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	b, _ := randomChunk(t, 10)
	ts.mustPut(t, b)
	if _, err := ts.SetQuota(ctx, "admin-1", store.QuotaChange{Subject: "agent-1", TotalBytes: ptr(1000)}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ sql, code string }{
		{"UPDATE quota_totals SET bytes = 0", "42501"},
		{"DELETE FROM quota_totals", "42501"},
		{"INSERT INTO quota_daily (subject, day, bytes) VALUES ('x', '2026-01-01', -5)", "42501"},
		{"UPDATE quota_daily SET bytes = 0", "42501"},
		{"UPDATE quota_settings SET total_bytes = NULL", "42501"},
		{"DELETE FROM quota_settings", "42501"},
		{"TRUNCATE quota_settings", "42501"},
	} {
		_, err := ts.pool.Exec(ctx, tt.sql)
		if got := sqlState(err); got != tt.code {
			t.Errorf("%s: %v (SQLSTATE %q), want %s", tt.sql, err, got, tt.code)
		}
	}
	u, err := ts.QuotaUsage(ctx, "agent-1")
	if err != nil || u.UsedTotal != 10 || u.Quota == nil || *u.Quota.TotalBytes != 1000 {
		t.Errorf("after the attempts: %+v, %v", u, err)
	}
}
