package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Quotas (migrations/014_quotas.sql). A quota belongs to a token subject:
// every token issued with that subject shares it. It bounds the bytes of
// new chunks the subject stores per UTC day, and the bytes of the chunks
// it stored that are still stored. A chunk is attributed to its first
// uploader (chunks.uploaded_by): a later upload of the same content by
// anyone stores nothing, so it costs nothing.
//
// An upload is checked before its body is read, against its declared size
// (Content-Length, batch frame sizes), and counted after commit, by a
// trigger on the chunks table. Uploads admitted at the same time are each
// checked against the usage committed before them, so the usage may
// overshoot a quota by at most the bytes of the subject's uploads in
// flight when it was reached (bounded by the per-token request cap times
// the largest chunk).

// Quota kinds: the label values of wormvault_quota_refusals_total and
// QuotaError.Kind.
const (
	QuotaDaily = "daily"
	QuotaTotal = "total"
)

// MaxQuotaBytes bounds a quota (1 EiB): a larger figure is a typo.
const MaxQuotaBytes = 1 << 60

// DefaultQuotaCacheTTL is how long the quota settings are reused before
// they are read again: a change made through another server takes effect
// here within it. Changes through this store take effect at once.
const DefaultQuotaCacheTTL = 10 * time.Second

// ErrQuotaExceeded: an upload would exceed its subject's quota. Errors
// wrapping it are *QuotaError.
var ErrQuotaExceeded = errors.New("store: quota exceeded")

// QuotaError reports an upload refused by its subject's quota.
type QuotaError struct {
	Subject string
	Kind    string // QuotaDaily or QuotaTotal
	Limit   int64
	Used    int64
	// Size is the upload's declared size (at least 1 byte if undeclared).
	Size int64
	// RetryAfter, for a daily quota, is the time left until the next UTC
	// day, when the daily quota starts again.
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	if e.Kind == QuotaDaily {
		return fmt.Sprintf("store: the daily quota of %q is %d bytes of new content per UTC day; %d stored today, this upload needs up to %d more; retry after %s (the next UTC day)",
			e.Subject, e.Limit, e.Used, e.Size, e.RetryAfter.Round(time.Second))
	}
	return fmt.Sprintf("store: the total storage quota of %q is %d bytes; %d stored, this upload needs up to %d more; an admin must raise the quota",
		e.Subject, e.Limit, e.Used, e.Size)
}

// Unwrap makes errors.Is(err, ErrQuotaExceeded) hold.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }

// Quota is a subject's quota setting. A nil limit is no limit.
type Quota struct {
	Subject    string    `json:"subject"`
	DailyBytes *int64    `json:"daily_bytes"`
	TotalBytes *int64    `json:"total_bytes"`
	SetAt      time.Time `json:"set_at"`
	SetBy      string    `json:"set_by"`
	Reason     string    `json:"reason,omitempty"`
}

func (q Quota) limited() bool { return q.DailyBytes != nil || q.TotalBytes != nil }

// QuotaUsage is a subject's quota (nil if none was ever set) and usage.
type QuotaUsage struct {
	Subject string `json:"subject"`
	Quota   *Quota `json:"quota"`
	// Day is the UTC day UsedToday counts.
	Day       time.Time `json:"day"`
	UsedToday int64     `json:"used_today"`
	UsedTotal int64     `json:"used_total"`
}

// quotaCache holds the latest setting of every subject that has one.
type quotaCache struct {
	mu     sync.Mutex
	at     time.Time
	quotas map[string]Quota
}

type quotaRow struct {
	Subject    string    `db:"subject"`
	DailyBytes *int64    `db:"daily_bytes"`
	TotalBytes *int64    `db:"total_bytes"`
	SetAt      time.Time `db:"set_at"`
	SetBy      string    `db:"set_by"`
	Reason     string    `db:"reason"`
}

func (r quotaRow) quota() Quota {
	return Quota{Subject: r.Subject, DailyBytes: r.DailyBytes, TotalBytes: r.TotalBytes, SetAt: r.SetAt, SetBy: r.SetBy, Reason: r.Reason}
}

const currentQuotasSQL = `
SELECT DISTINCT ON (subject) subject, daily_bytes, total_bytes, set_at, set_by, reason
FROM quota_settings ORDER BY subject, seq DESC`

// quotaFor returns subject's quota, from settings at most QuotaCacheTTL
// old; ok is false if it has no limit.
func (s *Store) quotaFor(ctx context.Context, subject string) (q Quota, ok bool, err error) {
	c := &s.quotas
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.clk.Now()
	if c.quotas == nil || now.Sub(c.at) >= s.opts.QuotaCacheTTL || now.Before(c.at) {
		ctx, cancel := s.lookupCtx(ctx)
		defer cancel()
		rows, _ := s.pool.Query(ctx, currentQuotasSQL)
		list, err := pgx.CollectRows(rows, pgx.RowToStructByName[quotaRow])
		if err != nil {
			return Quota{}, false, dbErr("read quotas", err)
		}
		c.quotas = make(map[string]Quota, len(list))
		for _, r := range list {
			if q := r.quota(); q.limited() {
				c.quotas[r.Subject] = q
			}
		}
		c.at = now
	}
	q, ok = c.quotas[subject]
	return q, ok, nil
}

func (s *Store) forgetQuotas() {
	s.quotas.mu.Lock()
	s.quotas.quotas = nil
	s.quotas.mu.Unlock()
}

const quotaUsageSQL = `
SELECT coalesce((SELECT bytes FROM quota_daily WHERE subject = @subject AND day = @day), 0),
       coalesce((SELECT bytes FROM quota_totals WHERE subject = @subject), 0)`

// utcDay is the UTC day of t, as a date at midnight UTC.
func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func (s *Store) usage(ctx context.Context, subject string, day time.Time) (today, total int64, err error) {
	ctx, cancel := s.lookupCtx(ctx)
	defer cancel()
	err = s.pool.QueryRow(ctx, quotaUsageSQL, pgx.NamedArgs{"subject": subject, "day": day}).Scan(&today, &total)
	if err != nil {
		return 0, 0, dbErr("read quota usage of "+subject, err)
	}
	return today, total, nil
}

// quotaCheck is one upload's view of its subject's quota and usage.
type quotaCheck struct {
	s       *Store
	q       Quota
	now     time.Time
	today   int64
	total   int64
	limited bool
}

// checkQuota reads subject's quota and usage; a check of a subject without
// a quota admits everything and costs no database round trip (but the
// settings' read every QuotaCacheTTL).
func (s *Store) checkQuota(ctx context.Context, subject string, now time.Time) (*quotaCheck, error) {
	q, ok, err := s.quotaFor(ctx, subject)
	if err != nil || !ok {
		return &quotaCheck{s: s}, err
	}
	today, total, err := s.usage(ctx, subject, utcDay(now))
	if err != nil {
		return nil, err
	}
	s.metrics.quotaUsed.WithLabelValues(subject, QuotaDaily).Set(float64(today))
	s.metrics.quotaUsed.WithLabelValues(subject, QuotaTotal).Set(float64(total))
	return &quotaCheck{s: s, q: q, now: now, today: today, total: total, limited: true}, nil
}

// refuse returns the *QuotaError that an upload of size new bytes meets,
// or nil. The total quota is checked first: waiting a day does not help
// with it.
func (c *quotaCheck) refuse(size int64) *QuotaError {
	if !c.limited {
		return nil
	}
	if t := c.q.TotalBytes; t != nil && c.total+size > *t {
		return &QuotaError{Subject: c.q.Subject, Kind: QuotaTotal, Limit: *t, Used: c.total, Size: size}
	}
	if d := c.q.DailyBytes; d != nil && c.today+size > *d {
		next := utcDay(c.now).Add(24 * time.Hour)
		return &QuotaError{Subject: c.q.Subject, Kind: QuotaDaily, Limit: *d, Used: c.today, Size: size, RetryAfter: next.Sub(c.now)}
	}
	return nil
}

// take counts size bytes admitted, for the next items of the same batch.
func (c *quotaCheck) take(size int64) {
	c.today += size
	c.total += size
}

// refused counts a refusal in the metrics and returns it as an error.
func (c *quotaCheck) refused(ctx context.Context, e *QuotaError) error {
	c.s.metrics.quotaRefusals.WithLabelValues(e.Subject, e.Kind).Inc()
	c.s.log.InfoContext(ctx, "upload refused by quota", "subject", e.Subject, "kind", e.Kind,
		"limit", e.Limit, "used", e.Used, "size", e.Size)
	return e
}

// admitQuota refuses, before its body is read, an upload of chunk h of
// size bytes (-1: not declared) by subject that its quota cannot take.
// A chunk already stored is admitted whatever the quota: it stores
// nothing. An undeclared size counts as one byte: refused only once the
// quota is used up (the body is still bounded by MaxChunkSize).
func (s *Store) admitQuota(ctx context.Context, subject string, h chunk.Hash, size int64, now time.Time) error {
	c, err := s.checkQuota(ctx, subject, now)
	if err != nil {
		return err
	}
	if size < 0 {
		size = 1
	}
	e := c.refuse(size)
	if e == nil {
		return nil
	}
	if _, err := s.Stat(ctx, h); err == nil {
		return nil // a dedup hit
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return c.refused(ctx, e)
}

// admitBatchQuota refuses, with a *QuotaError each, the new chunks of a
// batch that the uploader's quota cannot take, in order: chunks already
// stored, and each chunk that still fits, are admitted; results[i].Err
// is set for the others. It returns the first refusal if every chunk to
// store was refused, so that the whole request is answered with it.
func (s *Store) admitBatchQuota(ctx context.Context, uploader string, items []BatchItem, results []BatchResult, now time.Time) error {
	c, err := s.checkQuota(ctx, uploader, now)
	if err != nil || !c.limited {
		return err
	}
	var need int64
	seen := make(map[chunk.Hash]bool, len(items))
	for i, it := range items {
		if results[i].Err == nil && !seen[it.Hash] {
			seen[it.Hash] = true
			need += int64(len(it.Data))
		}
	}
	if c.refuse(need) == nil {
		return nil
	}
	var hashes []chunk.Hash
	for i, it := range items {
		if results[i].Err == nil {
			hashes = append(hashes, it.Hash)
		}
	}
	present, err := s.present(ctx, s.pool, hashes)
	if err != nil {
		return err
	}
	var first error
	admitted := 0
	taken := make(map[chunk.Hash]bool, len(items))
	for i, it := range items {
		if results[i].Err != nil {
			continue
		}
		if _, ok := present[it.Hash]; ok || taken[it.Hash] {
			admitted++
			continue
		}
		size := int64(len(it.Data))
		if e := c.refuse(size); e != nil {
			results[i].Err = c.refused(ctx, e)
			if first == nil {
				first = results[i].Err
			}
			continue
		}
		c.take(size)
		taken[it.Hash] = true
		admitted++
	}
	if admitted == 0 && first != nil {
		return fmt.Errorf("store: every chunk of the batch was refused: %w", first)
	}
	return nil
}

// checkSubject accepts what a token's subject may be (auth.Issuer's
// rule): 1 to 128 printable characters of valid UTF-8.
func checkSubject(subject string) error {
	switch {
	case subject == "":
		return invalid("subject", "required")
	case !utf8.ValidString(subject):
		return invalid("subject", "not valid UTF-8")
	case utf8.RuneCountInString(subject) > 128:
		return invalid("subject", "longer than 128 characters")
	case strings.IndexFunc(subject, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return invalid("subject", "contains a non-printable character")
	}
	return nil
}

// QuotaChange is a quota to set. A nil limit removes that limit.
type QuotaChange struct {
	Subject    string
	DailyBytes *int64
	TotalBytes *int64
	Reason     string
}

const insertQuotaSQL = `
INSERT INTO quota_settings (subject, daily_bytes, total_bytes, set_at, set_by, reason)
VALUES (@subject, @daily, @total, @now, @by, @reason)`

// SetQuota records subject's new quota, with its audit entry (quota.set)
// in the same transaction, and returns it with the subject's usage.
// Raising, lowering or removing a quota deletes nothing (uploads beyond it
// are refused, stored content stays), so it needs no approval. It returns
// an *InvalidError for a bad subject, a negative or absurd limit (over
// MaxQuotaBytes) or an overlong reason.
func (s *Store) SetQuota(ctx context.Context, actor string, c QuotaChange) (QuotaUsage, error) {
	if err := checkSubject(c.Subject); err != nil {
		return QuotaUsage{}, err
	}
	for _, l := range []struct {
		field string
		v     *int64
	}{{"daily_bytes", c.DailyBytes}, {"total_bytes", c.TotalBytes}} {
		switch {
		case l.v == nil:
		case *l.v < 0:
			return QuotaUsage{}, invalid(l.field, "must not be negative, got %d", *l.v)
		case *l.v > MaxQuotaBytes:
			return QuotaUsage{}, invalid(l.field, "%d bytes is more than %d (1 EiB)", *l.v, int64(MaxQuotaBytes))
		}
	}
	if len(c.Reason) > 1000 {
		return QuotaUsage{}, invalid("reason", "longer than 1000 bytes")
	}
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insertQuotaSQL, pgx.NamedArgs{
			"subject": c.Subject, "daily": c.DailyBytes, "total": c.TotalBytes, "now": now, "by": actor, "reason": c.Reason,
		}); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, now, actor, "quota.set", map[string]any{
			"subject": c.Subject, "daily_bytes": c.DailyBytes, "total_bytes": c.TotalBytes, "reason": c.Reason,
		})
	})
	if err != nil {
		return QuotaUsage{}, dbErr("set quota of "+c.Subject, err)
	}
	s.forgetQuotas()
	s.log.InfoContext(ctx, "quota set", "subject", c.Subject, "daily_bytes", c.DailyBytes, "total_bytes", c.TotalBytes, "actor", actor)
	return s.QuotaUsage(ctx, c.Subject)
}

const quotaOfSQL = `
SELECT subject, daily_bytes, total_bytes, set_at, set_by, reason
FROM quota_settings WHERE subject = $1 ORDER BY seq DESC LIMIT 1`

// QuotaUsage returns subject's quota (nil if none was ever set) and its
// usage today and in total. A subject that never uploaded and has no
// quota is not an error: its usage is zero.
func (s *Store) QuotaUsage(ctx context.Context, subject string) (QuotaUsage, error) {
	if err := checkSubject(subject); err != nil {
		return QuotaUsage{}, err
	}
	day := utcDay(s.clk.Now())
	u := QuotaUsage{Subject: subject, Day: day}
	rows, _ := s.pool.Query(ctx, quotaOfSQL, subject)
	q, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[quotaRow])
	switch {
	case err == nil:
		qq := q.quota()
		u.Quota = &qq
	case !errors.Is(err, pgx.ErrNoRows):
		return QuotaUsage{}, dbErr("read quota of "+subject, err)
	}
	if u.UsedToday, u.UsedTotal, err = s.usage(ctx, subject, day); err != nil {
		return QuotaUsage{}, err
	}
	return u, nil
}

const listQuotasSQL = `
WITH q AS (` + currentQuotasSQL + `),
subjects AS (SELECT subject FROM q UNION SELECT subject FROM quota_totals)
SELECT s.subject, q.daily_bytes, q.total_bytes, q.set_at, q.set_by, q.reason,
       coalesce(d.bytes, 0) AS used_today, coalesce(t.bytes, 0) AS used_total
FROM subjects s
LEFT JOIN q ON q.subject = s.subject
LEFT JOIN quota_daily d ON d.subject = s.subject AND d.day = @day
LEFT JOIN quota_totals t ON t.subject = s.subject
ORDER BY s.subject`

// ListQuotas returns every subject that has a quota setting or has stored
// content, with its quota and usage, by subject.
func (s *Store) ListQuotas(ctx context.Context) ([]QuotaUsage, error) {
	day := utcDay(s.clk.Now())
	type row struct {
		Subject    string     `db:"subject"`
		DailyBytes *int64     `db:"daily_bytes"`
		TotalBytes *int64     `db:"total_bytes"`
		SetAt      *time.Time `db:"set_at"`
		SetBy      *string    `db:"set_by"`
		Reason     *string    `db:"reason"`
		UsedToday  int64      `db:"used_today"`
		UsedTotal  int64      `db:"used_total"`
	}
	rows, _ := s.pool.Query(ctx, listQuotasSQL, pgx.NamedArgs{"day": day})
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return nil, dbErr("list quotas", err)
	}
	out := make([]QuotaUsage, len(list))
	for i, r := range list {
		out[i] = QuotaUsage{Subject: r.Subject, Day: day, UsedToday: r.UsedToday, UsedTotal: r.UsedTotal}
		if r.SetAt != nil {
			out[i].Quota = &Quota{Subject: r.Subject, DailyBytes: r.DailyBytes, TotalBytes: r.TotalBytes,
				SetAt: *r.SetAt, SetBy: deref(r.SetBy), Reason: deref(r.Reason)}
		}
	}
	return out, nil
}
