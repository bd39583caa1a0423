package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/audit"
)

// DeletePolicy is the kind of a request that shortens, re-points or
// detaches a retention policy: a governance kind (governed).
const DeletePolicy = "policy"

// ErrGovernedChange: a change that could shorten retention was asked for
// directly; it needs a signed request with the governance quorum and delay.
var ErrGovernedChange = errors.New("store: the change needs a governed request")

// RetentionPolicy is one version of a named retention policy. At commit, a
// snapshot of a source the pattern matches is classed by the vault's clock
// (yearly: the source's first committed snapshot of the calendar year, UTC;
// monthly: of the month; weekly: of the ISO week; every snapshot is also a
// daily) and retained from its commit time for the longest term of its
// classes, never less than the minimum.
type RetentionPolicy struct {
	Name string `json:"name"`
	// Pattern is a glob over source names (* any run of characters, ?
	// one); "" means detached: the policy covers no source.
	Pattern       string    `json:"pattern"`
	DailyDays     int       `json:"daily_days"`
	WeeklyWeeks   int       `json:"weekly_weeks"`
	MonthlyMonths int       `json:"monthly_months"`
	YearlyYears   int       `json:"yearly_years"`
	MinimumDays   int       `json:"minimum_days"`
	Version       int64     `json:"version"`
	CreatedAt     time.Time `json:"created_at"`
	CreatedBy     string    `json:"created_by"`
	// RequestID is the policy request whose execution made this version
	// (nil for versions an admin added directly: creation, lengthening).
	RequestID *int64 `json:"request_id,omitempty"`
}

func (p RetentionPolicy) audit() audit.RetentionPolicy {
	return audit.RetentionPolicy{Name: p.Name, Pattern: p.Pattern, DailyDays: p.DailyDays, WeeklyWeeks: p.WeeklyWeeks,
		MonthlyMonths: p.MonthlyMonths, YearlyYears: p.YearlyYears, MinimumDays: p.MinimumDays}
}

func retentionPolicyOf(a audit.RetentionPolicy) RetentionPolicy {
	return RetentionPolicy{Name: a.Name, Pattern: a.Pattern, DailyDays: a.DailyDays, WeeklyWeeks: a.WeeklyWeeks,
		MonthlyMonths: a.MonthlyMonths, YearlyYears: a.YearlyYears, MinimumDays: a.MinimumDays}
}

// sameTerms reports whether p and q say the same thing (the version
// bookkeeping aside).
func (p RetentionPolicy) sameTerms(q RetentionPolicy) bool { return p.audit() == q.audit() }

// lengthens reports whether p, as the next version of cur, can only make
// retention longer: the same pattern and no shorter term.
func (p RetentionPolicy) lengthens(cur RetentionPolicy) bool {
	return p.Pattern == cur.Pattern && p.DailyDays >= cur.DailyDays && p.WeeklyWeeks >= cur.WeeklyWeeks &&
		p.MonthlyMonths >= cur.MonthlyMonths && p.YearlyYears >= cur.YearlyYears && p.MinimumDays >= cur.MinimumDays
}

// check refuses a policy the database cannot hold, and one whose longest
// term would run past the vault's maximum retention.
func (s *Store) checkPolicy(now time.Time, p RetentionPolicy) error {
	if err := p.audit().Check(); err != nil {
		return policyErr(err)
	}
	if longest := p.longest(now); longest.After(now.Add(s.opts.MaxRetention)) {
		return invalid("terms", "the longest term reaches %s, more than the vault's maximum retention (%s) ahead",
			longest.UTC().Format(time.RFC3339), s.opts.MaxRetention)
	}
	return nil
}

// globRegexp turns a source glob into an anchored regular expression: a
// source name may contain '/', which path.Match would treat apart.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// Matches reports whether the policy covers source.
func (p RetentionPolicy) Matches(source string) bool {
	return p.Pattern != "" && globRegexp(p.Pattern).MatchString(source)
}

// SnapshotClass is what a snapshot is, among its source's commits, by the
// vault's clock.
type SnapshotClass struct {
	Weekly, Monthly, Yearly bool
}

// String names the longest-lived class.
func (c SnapshotClass) String() string {
	switch {
	case c.Yearly:
		return "yearly"
	case c.Monthly:
		return "monthly"
	case c.Weekly:
		return "weekly"
	}
	return "daily"
}

// classify classes a snapshot committed at now whose source's previous
// commit (at or before now) was at last; zero if it has none.
func classify(now, last time.Time) SnapshotClass {
	if last.IsZero() {
		return SnapshotClass{Weekly: true, Monthly: true, Yearly: true}
	}
	now = now.UTC()
	y, m, d := now.Date()
	year := time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
	month := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	// ISO weeks start on Monday.
	week := time.Date(y, m, d-(int(now.Weekday())+6)%7, 0, 0, 0, 0, time.UTC)
	return SnapshotClass{Weekly: last.Before(week), Monthly: last.Before(month), Yearly: last.Before(year)}
}

// until returns how long the policy keeps a snapshot of class c committed
// at commit: the longest term of its classes, at least the minimum.
// Calendar terms count in calendar units (AddDate).
func (p RetentionPolicy) until(commit time.Time, c SnapshotClass) time.Time {
	u := latest(commit.AddDate(0, 0, p.DailyDays), commit.AddDate(0, 0, p.MinimumDays))
	if c.Weekly {
		u = latest(u, commit.AddDate(0, 0, 7*p.WeeklyWeeks))
	}
	if c.Monthly {
		u = latest(u, commit.AddDate(0, p.MonthlyMonths, 0))
	}
	if c.Yearly {
		u = latest(u, commit.AddDate(p.YearlyYears, 0, 0))
	}
	return u
}

// longest is the latest retention the policy gives anything committed at
// now: the most an agent may ask for under it.
func (p RetentionPolicy) longest(now time.Time) time.Time {
	return p.until(now, SnapshotClass{Weekly: true, Monthly: true, Yearly: true})
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

type policyRow struct {
	Name          string    `db:"name"`
	Version       int64     `db:"version"`
	Pattern       *string   `db:"pattern"`
	DailyDays     int       `db:"daily_days"`
	WeeklyWeeks   int       `db:"weekly_weeks"`
	MonthlyMonths int       `db:"monthly_months"`
	YearlyYears   int       `db:"yearly_years"`
	MinimumDays   int       `db:"minimum_days"`
	CreatedAt     time.Time `db:"created_at"`
	CreatedBy     string    `db:"created_by"`
	RequestID     *int64    `db:"request_id"`
}

func (r policyRow) policy() RetentionPolicy {
	return RetentionPolicy{Name: r.Name, Pattern: deref(r.Pattern), DailyDays: r.DailyDays, WeeklyWeeks: r.WeeklyWeeks,
		MonthlyMonths: r.MonthlyMonths, YearlyYears: r.YearlyYears, MinimumDays: r.MinimumDays, Version: r.Version,
		CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, RequestID: r.RequestID}
}

const (
	policyColumns      = `name, version, pattern, daily_days, weekly_weeks, monthly_months, yearly_years, minimum_days, created_at, created_by, request_id`
	currentPoliciesSQL = `SELECT DISTINCT ON (name) ` + policyColumns + ` FROM retention_policy_versions ORDER BY name, version DESC`
	policyVersionsSQL  = `SELECT ` + policyColumns + ` FROM retention_policy_versions WHERE name = $1 ORDER BY version DESC`
	insertPolicySQL    = `INSERT INTO retention_policy_versions (` + policyColumns + `)
		VALUES (@name, @version, @pattern, @daily, @weekly, @monthly, @yearly, @minimum, @at, @by, @req)`
)

func currentPolicies(ctx context.Context, q querier) ([]RetentionPolicy, error) {
	rows, _ := q.Query(ctx, currentPoliciesSQL)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[policyRow])
	if err != nil {
		return nil, err
	}
	out := make([]RetentionPolicy, len(list))
	for i, r := range list {
		out[i] = r.policy()
	}
	return out, nil
}

func policyVersions(ctx context.Context, q querier, name string) ([]RetentionPolicy, error) {
	rows, _ := q.Query(ctx, policyVersionsSQL, name)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[policyRow])
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("retention policy %q: %w", name, ErrNotFound)
	}
	out := make([]RetentionPolicy, len(list))
	for i, r := range list {
		out[i] = r.policy()
	}
	return out, nil
}

// Policies returns the current version of every retention policy, by name.
func (s *Store) Policies(ctx context.Context) ([]RetentionPolicy, error) {
	list, err := currentPolicies(ctx, s.pool)
	return list, dbErr("list retention policies", err)
}

// PolicyVersions returns every version of policy name, newest first, or
// ErrNotFound.
func (s *Store) PolicyVersions(ctx context.Context, name string) ([]RetentionPolicy, error) {
	list, err := policyVersions(ctx, s.pool, name)
	return list, dbErr("retention policy", err)
}

// policyLock serialises policy versions (and their use at commit is under
// snapshotsLock, which a commit holds while it reads them).
const policyLock = 0x706f6c // "pol"

// SetPolicy creates policy p, or makes it the next version of an existing
// policy if that can only lengthen retention (same pattern, no shorter
// term), with its audit entry; it takes effect at once. Anything that
// could shorten retention (a shorter term, another pattern, detaching)
// returns ErrGovernedChange: it needs RequestPolicyChange. A policy equal
// to the current version changes nothing (changed false).
func (s *Store) SetPolicy(ctx context.Context, actor string, p RetentionPolicy) (res RetentionPolicy, changed bool, err error) {
	now := s.clk.Now()
	if err := s.checkPolicy(now, p); err != nil {
		return RetentionPolicy{}, false, err
	}
	if p.Pattern == "" {
		return RetentionPolicy{}, false, invalid("pattern", "is required (detaching a policy needs a governed request)")
	}
	err = s.inTx(ctx, "set retention policy", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", policyLock); err != nil {
			return sqlErr("lock policies", err)
		}
		versions, err := policyVersions(ctx, tx, p.Name)
		switch {
		case errors.Is(err, ErrNotFound):
			p.Version = 1
		case err != nil:
			return sqlErr("retention policy", err)
		default:
			cur := versions[0]
			if p.sameTerms(cur) {
				res = cur
				return nil
			}
			if !p.lengthens(cur) {
				return fmt.Errorf("store: retention policy %q: the change shortens a term, changes the pattern or detaches it; "+
					"request it with `vault admin policies request` (governance quorum and delay): %w", p.Name, ErrGovernedChange)
			}
			p.Version = cur.Version + 1
		}
		if err := s.insertPolicy(ctx, tx, actor, now, p, nil); err != nil {
			return err
		}
		res, changed = p, true
		res.CreatedAt, res.CreatedBy = now.UTC(), actor
		return nil
	})
	if err != nil {
		return RetentionPolicy{}, false, err
	}
	if changed {
		s.log.InfoContext(ctx, "retention policy set", "policy", p.Name, "version", res.Version, "pattern", p.Pattern, "subject", actor)
	}
	return res, changed, nil
}

// insertPolicy writes version p.Version of p with its audit entry (whose
// details are what reindex rebuilds the row from).
func (s *Store) insertPolicy(ctx context.Context, tx pgx.Tx, actor string, now time.Time, p RetentionPolicy, requestID *int64) error {
	var pattern *string
	if p.Pattern != "" {
		pattern = &p.Pattern
	}
	if _, err := tx.Exec(ctx, insertPolicySQL, pgx.NamedArgs{
		"name": p.Name, "version": p.Version, "pattern": pattern, "daily": p.DailyDays, "weekly": p.WeeklyWeeks,
		"monthly": p.MonthlyMonths, "yearly": p.YearlyYears, "minimum": p.MinimumDays, "at": now, "by": actor, "req": requestID,
	}); err != nil {
		return sqlErr("insert retention policy", err)
	}
	action := "retention_policy.set"
	if requestID != nil {
		action = "retention_policy.change"
	}
	return sqlErr("audit", s.appendAudit(ctx, tx, now, actor, action, policyDetails(p, requestID)))
}

func policyDetails(p RetentionPolicy, requestID *int64) map[string]any {
	d := map[string]any{
		"name": p.Name, "version": p.Version, "pattern": p.Pattern, "daily_days": p.DailyDays,
		"weekly_weeks": p.WeeklyWeeks, "monthly_months": p.MonthlyMonths, "yearly_years": p.YearlyYears,
		"minimum_days": p.MinimumDays,
	}
	if requestID != nil {
		d["deletion_id"] = *requestID
	}
	return d
}

// RequestPolicyChange records a governed request to make p the next
// version of an existing policy (a shorter term, another pattern, or
// detached with an empty pattern). Like every request it executes only
// once signed, approved by the governance quorum and past the governance
// delay; any admin can cancel it before.
func (s *Store) RequestPolicyChange(ctx context.Context, actor string, p RetentionPolicy, reason string) (Deletion, error) {
	now := s.clk.Now()
	if err := s.checkPolicy(now, p); err != nil {
		return Deletion{}, err
	}
	versions, err := s.PolicyVersions(ctx, p.Name)
	if err != nil {
		return Deletion{}, err
	}
	if p.sameTerms(versions[0]) {
		return Deletion{}, invalid("policy", "the change is the current version %d of %q: it changes nothing", versions[0].Version, p.Name)
	}
	return s.RequestDeletion(ctx, actor, DeletionTargets{Kind: DeletePolicy, Policy: &p}, reason)
}

// applyPolicyChange makes the next version of a policy from an executing
// policy request, as the journal's request entry names it. Rerun after a
// crash, it finds the version it made.
func (s *Store) applyPolicyChange(ctx context.Context, id int64, now time.Time, p *RetentionPolicy, rep *ExecReport) error {
	if p == nil {
		return fmt.Errorf("store: deletion %d: %w: no retention policy in the journal", id, ErrIntegrity)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", policyLock); err != nil {
			return err
		}
		var done int64
		err := tx.QueryRow(ctx, "SELECT version FROM retention_policy_versions WHERE request_id = $1", id).Scan(&done)
		if err == nil {
			return nil // made before a crash; the version names its request
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		versions, err := policyVersions(ctx, tx, p.Name)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if err != nil {
			// The policy is gone from the index: nothing to change, and
			// the report says why.
			rep.Skipped["policy:not_found"]++
			return s.appendAudit(ctx, tx, now, "executor", "retention_policy.skipped", map[string]any{"deletion_id": id, "reason": err.Error()})
		}
		next := *p
		next.Version = versions[0].Version + 1
		reqID := id
		return s.insertPolicy(ctx, tx, "executor", now, next, &reqID)
	})
	return dbErr("change retention policy", err)
}

// policyRetention is what the policies matching source give a snapshot
// committed at now: its class, the retention they compute (the longest any
// of them gives), the most an agent may ask for, and their names. ok is
// false if no policy covers source. tx must hold snapshotsLock, so that
// the class cannot race another commit of the source.
func policyRetention(ctx context.Context, tx pgx.Tx, source string, now time.Time) (c SnapshotClass, until, most time.Time, names []string, ok bool, err error) {
	list, err := currentPolicies(ctx, tx)
	if err != nil {
		return c, until, most, nil, false, sqlErr("read retention policies", err)
	}
	var matching []RetentionPolicy
	for _, p := range list {
		if p.Matches(source) {
			matching = append(matching, p)
			names = append(names, p.Name)
		}
	}
	if len(matching) == 0 {
		return c, until, most, nil, false, nil
	}
	// Every row counts, deleted snapshots (tombstones) too: a snapshot
	// was the first of its week even if it has been deleted since.
	var last *time.Time
	if err := tx.QueryRow(ctx, `SELECT max(committed_at) FROM snapshots WHERE source = $1 AND committed_at <= $2`,
		source, now).Scan(&last); err != nil {
		return c, until, most, nil, false, sqlErr("last commit of the source", err)
	}
	var prev time.Time
	if last != nil {
		prev = *last
	}
	c = classify(now, prev)
	for _, p := range matching {
		until = latest(until, p.until(now, c))
		most = latest(most, p.longest(now))
	}
	return c, until.UTC().Truncate(time.Microsecond), most.UTC().Truncate(time.Microsecond), names, true, nil
}

// retentionPolicy replays retention_policy.set and retention_policy.change:
// each records a whole version (policyDetails).
func (r *reindexer) retentionPolicy(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		DeletionID    *int64 `json:"deletion_id"`
		Name          string `json:"name"`
		Version       int64  `json:"version"`
		Pattern       string `json:"pattern"`
		DailyDays     int    `json:"daily_days"`
		WeeklyWeeks   int    `json:"weekly_weeks"`
		MonthlyMonths int    `json:"monthly_months"`
		YearlyYears   int    `json:"yearly_years"`
		MinimumDays   int    `json:"minimum_days"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	var pattern *string
	if d.Pattern != "" {
		pattern = &d.Pattern
	}
	_, err := tx.Exec(ctx, insertPolicySQL, pgx.NamedArgs{
		"name": d.Name, "version": d.Version, "pattern": pattern, "daily": d.DailyDays, "weekly": d.WeeklyWeeks,
		"monthly": d.MonthlyMonths, "yearly": d.YearlyYears, "minimum": d.MinimumDays, "at": e.At, "by": e.Actor, "req": d.DeletionID,
	})
	return err
}
