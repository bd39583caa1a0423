package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/store"
)

// examplePolicy is issue 15's: daily 14 days, weekly 8 weeks, monthly 13
// months, yearly 7 years, minimum 30 days.
func examplePolicy(pattern string) store.RetentionPolicy {
	return store.RetentionPolicy{Name: "standard", Pattern: pattern, DailyDays: 14, WeeklyWeeks: 8, MonthlyMonths: 13,
		YearlyYears: 7, MinimumDays: 30}
}

// newPolicyStore is a store whose vault-wide minimum retention (one day)
// stays out of the policies' way.
func newPolicyStore(t testing.TB) *testStore {
	return newSnapshotStore(t, store.Options{MinRetention: day})
}

func (ts *testStore) mustSetPolicy(t testing.TB, p store.RetentionPolicy) store.RetentionPolicy {
	t.Helper()
	got, _, err := ts.SetPolicy(context.Background(), "admin-a", p)
	if err != nil {
		t.Fatalf("SetPolicy(%s): %v", p.Name, err)
	}
	return got
}

// oneRoot stores a one-chunk manifest tree and returns its root.
func (ts *testStore) oneRoot(t testing.TB) chunk.Hash {
	t.Helper()
	return ts.mustManifest(t, manifest.Manifest{Chunks: ts.mustChunks(t, 1)})
}

// 400 daily snapshots committed over 400 simulated days keep exactly the
// set the policy's rules give, computed here independently: classes from
// the calendar (time.ISOWeek, year and month of each commit, first commit
// of each wins), terms with AddDate. With the example (minimum 30
// days) the minimum keeps every snapshot of the last 30 days; without a
// minimum the dailies are exactly the last 14.
func TestPolicyKeepsExpectedSetOver400Days(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		minimum      int
		wantRecent   int // retained among the last 30 days
		wantDailies  int // retained among the last 14 days
		wantYearlies int
	}{
		{"example policy (minimum 30 days)", 30, 30, 14, 2},
		{"no minimum", 0, 14 + 3, 14, 2}, // + two weeklies and a monthly among days 14 to 29 back
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newPolicyStore(t)
			ctx := context.Background()
			p := examplePolicy("host-*")
			p.MinimumDays = tt.minimum
			ts.mustSetPolicy(t, p)
			root := ts.oneRoot(t)

			start := ts.clk.Now() // 2026-11-25, a Wednesday
			const days = 400
			commits := make([]time.Time, days)
			for d := range days {
				commits[d] = ts.clk.Now()
				ts.mustCommit(t, store.NewSnapshot{Source: "host-1", Name: fmt.Sprintf("d%03d", d), TakenAt: ts.clk.Now(),
					ManifestRoot: root})
				if d < days-1 {
					ts.clk.Advance(day)
				}
			}
			now := ts.clk.Now()
			if now.Sub(start) != (days-1)*day {
				t.Fatalf("clock at %s", now)
			}

			// The model.
			seenYear, seenMonth, seenWeek := map[int]bool{}, map[string]bool{}, map[string]bool{}
			want := map[string]bool{}
			recent, dailies, yearlies := 0, 0, 0
			for d, c := range commits {
				y, w := c.ISOWeek()
				weekly, monthly, yearly := !seenWeek[fmt.Sprint(y, w)], !seenMonth[c.Format("2006-01")], !seenYear[c.Year()]
				seenWeek[fmt.Sprint(y, w)], seenMonth[c.Format("2006-01")], seenYear[c.Year()] = true, true, true
				ends := []time.Time{c.AddDate(0, 0, 14), c.AddDate(0, 0, tt.minimum)}
				if weekly {
					ends = append(ends, c.AddDate(0, 0, 56))
				}
				if monthly {
					ends = append(ends, c.AddDate(0, 13, 0))
				}
				if yearly {
					ends = append(ends, c.AddDate(7, 0, 0))
				}
				kept := false
				for _, e := range ends {
					kept = kept || e.After(now)
				}
				if !kept {
					continue
				}
				want[fmt.Sprintf("d%03d", d)] = true
				if now.Sub(c) < 30*day {
					recent++
				}
				if now.Sub(c) < 14*day {
					dailies++
				}
				if yearly {
					yearlies++
				}
			}
			if recent != tt.wantRecent || dailies != tt.wantDailies || yearlies != tt.wantYearlies {
				t.Fatalf("the model keeps %d of the last 30 days, %d of the last 14, %d yearlies; want %d, %d, %d",
					recent, dailies, yearlies, tt.wantRecent, tt.wantDailies, tt.wantYearlies)
			}

			got := map[string]bool{}
			page := store.SnapshotPage{Next: ""}
			for first := true; first || page.Next != ""; first = false {
				var err error
				page, err = ts.ListSnapshots(ctx, store.SnapshotQuery{Source: "host-1", Limit: 500, Cursor: page.Next})
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range page.Snapshots {
					if s.RetainUntil.After(now) {
						got[s.Name] = true
					}
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d snapshots retained at day 400, want %d", len(got), len(want))
			}
			for n := range want {
				if !got[n] {
					t.Errorf("snapshot %s expired, the policy keeps it", n)
				}
			}
			for n := range got {
				if !want[n] {
					t.Errorf("snapshot %s retained, the policy lets it expire", n)
				}
			}
			t.Logf("%d of %d snapshots retained at day 400", len(got), days)
		})
	}
}

// An agent's taken_at decides nothing: the forger's snapshots, committed
// at the same vault times as the honest ones with taken_at dates chosen
// to look like a new year, month and week (or a very old backup), get the
// same retention, and listings order by commit time. A taken_at more than
// five minutes ahead is refused, nothing stored.
func TestForgedTakenAtChangesNothing(t *testing.T) {
	t.Parallel()
	ts := newPolicyStore(t)
	ctx := context.Background()
	ts.mustSetPolicy(t, examplePolicy("*"))
	root := ts.oneRoot(t)
	forged := []time.Time{
		time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Hour), // far ahead: refused below, so keep it out here
		time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2021, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1999, 12, 27, 0, 0, 0, 0, time.UTC),
	}[1:]
	for i := range 20 {
		honest := ts.mustCommit(t, store.NewSnapshot{Source: "honest", Name: fmt.Sprint("s", i), TakenAt: ts.clk.Now(), ManifestRoot: root})
		forger := ts.mustCommit(t, store.NewSnapshot{Source: "forger", Name: fmt.Sprint("s", i), TakenAt: forged[i%len(forged)],
			ManifestRoot: root})
		if !forger.Snapshot.RetainUntil.Equal(honest.Snapshot.RetainUntil) || forger.Class != honest.Class {
			t.Errorf("commit %d: forged taken_at gives %s (%s), the honest one %s (%s)", i, forger.Snapshot.RetainUntil,
				forger.Class, honest.Snapshot.RetainUntil, honest.Class)
		}
		ts.clk.Advance(3 * day)
	}
	// Newest first by commit time, whatever taken_at says.
	page, err := ts.ListSnapshots(ctx, store.SnapshotQuery{Source: "forger", Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Snapshots) != 3 || page.Snapshots[0].Name != "s19" || page.Snapshots[1].Name != "s18" || page.Snapshots[2].Name != "s17" {
		t.Errorf("listing = %v, want s19, s18, s17", names(page.Snapshots))
	}
	page, err = ts.ListSnapshots(ctx, store.SnapshotQuery{Source: "forger", Limit: 3, Cursor: page.Next})
	if err != nil || len(page.Snapshots) != 3 || page.Snapshots[0].Name != "s16" {
		t.Errorf("second page = %v, %v; want s16 first", names(page.Snapshots), err)
	}

	before := ts.vaultState(t)
	for _, ahead := range []time.Duration{store.MaxTakenAhead + time.Second, 24 * time.Hour, 10 * 365 * day} {
		_, err := ts.CommitSnapshot(ctx, "agent-1", store.NewSnapshot{Source: "forger", Name: "future",
			TakenAt: ts.clk.Now().Add(ahead), ManifestRoot: root})
		var inv *store.InvalidError
		if !errors.As(err, &inv) || inv.Field != "taken_at" || !strings.Contains(err.Error(), "ahead of the vault's clock") {
			t.Errorf("taken_at %s ahead: %v, want an invalid taken_at", ahead, err)
		}
	}
	if after := ts.vaultState(t); after != before {
		t.Errorf("refused commits changed the vault:\n%s\n%s", before, after)
	}
	// Within the tolerance it is accepted.
	ts.mustCommit(t, store.NewSnapshot{Source: "forger", Name: "fast-clock", TakenAt: ts.clk.Now().Add(store.MaxTakenAhead),
		ManifestRoot: root})
}

func names(list []store.Snapshot) []string {
	var out []string
	for _, s := range list {
		out = append(out, s.Name)
	}
	return out
}

// An agent asking for less than the policy gives gets the policy's date;
// for more (up to the policy's longest term) gets what it asked. A source
// no policy covers keeps the agent's retention.
func TestAgentCannotShortenPolicyRetention(t *testing.T) {
	t.Parallel()
	ts := newPolicyStore(t)
	ts.mustSetPolicy(t, examplePolicy("db-*"))
	root := ts.oneRoot(t)
	now := ts.clk.Now()
	short := now.Add(2 * day)

	first := ts.mustCommit(t, store.NewSnapshot{Source: "db-1", Name: "a", TakenAt: now, RetainUntil: short, ManifestRoot: root})
	if want := now.AddDate(7, 0, 0); !first.Snapshot.RetainUntil.Equal(want) || first.Class != "yearly" {
		t.Errorf("first snapshot of the year: %s (%s), want the yearly term %s", first.Snapshot.RetainUntil, first.Class, want)
	}
	if got := ts.retainUntil(t, root); got.Before(first.Snapshot.RetainUntil) {
		t.Errorf("its chunks are retained until %s, before the snapshot's %s", got, first.Snapshot.RetainUntil)
	}
	ts.clk.Advance(time.Hour)
	second := ts.mustCommit(t, store.NewSnapshot{Source: "db-1", Name: "b", TakenAt: ts.clk.Now(), RetainUntil: short, ManifestRoot: root})
	if want := ts.clk.Now().AddDate(0, 0, 30); !second.Snapshot.RetainUntil.Equal(want) || second.Class != "daily" {
		t.Errorf("second snapshot of the day: %s (%s), want the minimum %s", second.Snapshot.RetainUntil, second.Class, want)
	}
	longer := ts.clk.Now().AddDate(2, 0, 0)
	third := ts.mustCommit(t, store.NewSnapshot{Source: "db-1", Name: "c", TakenAt: ts.clk.Now(), RetainUntil: longer, ManifestRoot: root})
	if !third.Snapshot.RetainUntil.Equal(longer) {
		t.Errorf("asking for longer: %s, want %s", third.Snapshot.RetainUntil, longer)
	}
	free := ts.mustCommit(t, store.NewSnapshot{Source: "web-1", Name: "a", TakenAt: ts.clk.Now(), RetainUntil: short, ManifestRoot: root})
	if !free.Snapshot.RetainUntil.Equal(short) || len(free.Policies) != 0 {
		t.Errorf("a source without policy: %s %v, want the agent's %s", free.Snapshot.RetainUntil, free.Policies, short)
	}
	// Without a policy the agent must say how long.
	if _, err := ts.CommitSnapshot(context.Background(), "agent-1", store.NewSnapshot{Source: "web-1", Name: "b",
		TakenAt: ts.clk.Now(), ManifestRoot: root}); !isInvalid(err) {
		t.Errorf("no retain_until and no policy: %v, want invalid", err)
	}
}

// Long retention outside the policy: more than the policy's longest term
// is refused, with nothing stored; exactly the longest term is accepted.
func TestRetentionAbovePolicyMaximumRefused(t *testing.T) {
	t.Parallel()
	ts := newPolicyStore(t)
	ctx := context.Background()
	ts.mustSetPolicy(t, examplePolicy("db-*"))
	root := ts.oneRoot(t)
	now := ts.clk.Now()
	most := now.AddDate(7, 0, 0)
	before := ts.vaultState(t)
	_, err := ts.CommitSnapshot(ctx, "agent-1", store.NewSnapshot{Source: "db-1", Name: "a", TakenAt: now,
		RetainUntil: most.Add(time.Second), ManifestRoot: root})
	var inv *store.InvalidError
	if !errors.As(err, &inv) || inv.Field != "retain_until" || !strings.Contains(err.Error(), "standard") {
		t.Fatalf("asking past the policy's longest term: %v, want an invalid retain_until naming the policy", err)
	}
	if after := ts.vaultState(t); after != before {
		t.Errorf("a refused commit changed the vault:\n%s\n%s", before, after)
	}
	res := ts.mustCommit(t, store.NewSnapshot{Source: "db-1", Name: "a", TakenAt: now, RetainUntil: most, ManifestRoot: root})
	if !res.Snapshot.RetainUntil.Equal(most) {
		t.Errorf("retained until %s, want %s", res.Snapshot.RetainUntil, most)
	}
}

// Bad policies are refused with the field named, and nothing is stored.
func TestSetPolicyRefusesBadInput(t *testing.T) {
	t.Parallel()
	ts := newPolicyStore(t)
	ctx := context.Background()
	before := ts.vaultState(t)
	for _, tt := range []struct {
		field string
		p     store.RetentionPolicy
	}{
		{"name", store.RetentionPolicy{Name: "Bad Name", Pattern: "*", DailyDays: 1}},
		{"pattern", store.RetentionPolicy{Name: "p", Pattern: "a b", DailyDays: 1}},
		{"pattern", store.RetentionPolicy{Name: "p", DailyDays: 1}},
		{"daily_days", store.RetentionPolicy{Name: "p", Pattern: "*", DailyDays: -1}},
		{"terms", store.RetentionPolicy{Name: "p", Pattern: "*"}},
		{"terms", store.RetentionPolicy{Name: "p", Pattern: "*", YearlyYears: 100, MonthlyMonths: 1}},
	} {
		_, _, err := ts.SetPolicy(ctx, "admin-a", tt.p)
		var inv *store.InvalidError
		if !errors.As(err, &inv) || inv.Field != tt.field {
			t.Errorf("%+v: %v, want invalid %s", tt.p, err, tt.field)
		}
	}
	if after := ts.vaultState(t); after != before {
		t.Errorf("refused policies changed the vault")
	}
	if list, err := ts.Policies(ctx); err != nil || len(list) != 0 {
		t.Errorf("policies = %v, %v; want none", list, err)
	}
}

// Lengthening takes effect at once; shortening, re-pointing or detaching
// directly is refused, naming the request command, and goes through a
// signed request with the governance quorum and delay. The runtime role
// cannot write a shortening version by SQL, nor change one.
func TestShorteningPolicyNeedsGovernedRequest(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	p := examplePolicy("db-*")
	ds.mustSetPolicy(t, p)

	longer := p
	longer.YearlyYears = 10
	got, changed, err := ds.SetPolicy(ctx, "admin-a", longer)
	if err != nil || !changed || got.Version != 2 {
		t.Fatalf("lengthening: %+v %v %v, want version 2 at once", got, changed, err)
	}
	if _, changed, err := ds.SetPolicy(ctx, "admin-a", longer); err != nil || changed {
		t.Errorf("setting the same policy again: changed %v, %v", changed, err)
	}
	shorter := longer
	shorter.DailyDays = 7
	repointed := longer
	repointed.Pattern = "nothing-*"
	for _, c := range []store.RetentionPolicy{shorter, repointed} {
		if _, _, err := ds.SetPolicy(ctx, "admin-a", c); !errors.Is(err, store.ErrGovernedChange) ||
			!strings.Contains(err.Error(), "vault admin policies request") {
			t.Errorf("direct change %+v: %v, want ErrGovernedChange naming the request command", c, err)
		}
	}
	if v, _ := ds.PolicyVersions(ctx, p.Name); len(v) != 2 {
		t.Fatalf("%d versions after refused changes, want 2", len(v))
	}

	// By SQL, as the runtime role: a shortening version, a rewrite of the
	// current one, a forged request link.
	for _, q := range []struct{ sql, code string }{
		{`INSERT INTO retention_policy_versions (name, version, pattern, daily_days, weekly_weeks, monthly_months, yearly_years,
			minimum_days, created_at, created_by) VALUES ('standard', 3, 'db-*', 1, 8, 13, 10, 30, now(), 'mallory')`, "WV008"},
		{`INSERT INTO retention_policy_versions (name, version, pattern, daily_days, weekly_weeks, monthly_months, yearly_years,
			minimum_days, created_at, created_by) VALUES ('standard', 3, NULL, 14, 8, 13, 10, 30, now(), 'mallory')`, "WV008"},
		{`UPDATE retention_policy_versions SET yearly_years = 0 WHERE name = 'standard'`, "42501"},
		{`DELETE FROM retention_policy_versions`, "42501"},
	} {
		if _, err := ds.pool.Exec(ctx, q.sql); sqlState(err) != q.code {
			t.Errorf("%s: %v, want %s", q.sql, err, q.code)
		}
	}

	d, err := ds.RequestPolicyChange(ctx, "admin-a", shorter, "dailies for a week are enough")
	if err != nil {
		t.Fatalf("RequestPolicyChange: %v", err)
	}
	if d.Kind != store.DeletePolicy || d.ApprovalsRequired != 2 || time.Duration(d.Delay) != 7*day {
		t.Errorf("policy request %s: %d approvals, %s; want the governance 2, 168h", d.Kind, d.ApprovalsRequired, time.Duration(d.Delay))
	}
	sig, err := ds.sign("admin-a", d.ID, approval.ActionRequest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.SignRequest(ctx, "admin-a", d.ID, sig); err != nil {
		t.Fatal(err)
	}
	ds.mustApprove(t, "admin-b", d.ID)
	ds.mustApprove(t, "admin-c", d.ID)
	ds.clk.Advance(delay) // the deletion delay is not enough
	if rep, _ := ds.RunDue(ctx); len(rep.Executed) != 0 {
		t.Fatal("a policy change executed before the governance delay")
	}
	if v, _ := ds.PolicyVersions(ctx, p.Name); len(v) != 2 {
		t.Fatalf("the policy changed before its request executed")
	}
	ds.clk.Advance(7 * day)
	if rep, err := ds.RunDue(ctx); err != nil || len(rep.Executed) != 1 {
		t.Fatalf("RunDue = %+v, %v", rep, err)
	}
	v, err := ds.PolicyVersions(ctx, p.Name)
	if err != nil || len(v) != 3 || v[0].DailyDays != 7 || v[0].RequestID == nil || *v[0].RequestID != d.ID {
		t.Fatalf("versions after the request = %+v, %v; want version 3 with daily 7 made by request %d", v, err, d.ID)
	}
	// Rerunning changes nothing more.
	if _, err := ds.RunDue(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := ds.PolicyVersions(ctx, p.Name); len(v) != 3 {
		t.Errorf("%d versions after a rerun, want 3", len(v))
	}
	// A request replayed into the database again is refused.
	if _, err := ds.pool.Exec(ctx, `INSERT INTO retention_policy_versions (name, version, pattern, daily_days, weekly_weeks,
		monthly_months, yearly_years, minimum_days, created_at, created_by, request_id)
		VALUES ('standard', 4, NULL, 1, 0, 0, 0, 0, now(), 'mallory', $1)`, d.ID); sqlState(err) != "WV008" {
		t.Errorf("a second version from an executed request: %v, want WV008", err)
	}
	// Detaching goes the same way; a request that changes nothing is bad input.
	if _, err := ds.RequestPolicyChange(ctx, "admin-a", v[0], "same"); !isInvalid(err) {
		t.Errorf("a request for the current version: %v, want invalid", err)
	}
	detached := v[0]
	detached.Pattern = ""
	if _, err := ds.RequestPolicyChange(ctx, "admin-a", detached, "retire it"); err != nil {
		t.Errorf("detach request: %v", err)
	}
	unknown := examplePolicy("x")
	unknown.Name = "unknown"
	if _, err := ds.RequestPolicyChange(ctx, "admin-a", unknown, "no such"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a request for an unknown policy: %v, want ErrNotFound", err)
	}
}
