package audit

import (
	"strings"
	"testing"
)

// A policy request's targets read back exactly, and a text that is not the
// canonical form of one policy (a term edited, a line repeated or
// missing) is refused: one signed digest means one policy version.
func TestPolicyTargetsAreCanonical(t *testing.T) {
	t.Parallel()
	p := RetentionPolicy{Name: "standard", Pattern: "db-*", DailyDays: 14, WeeklyWeeks: 8, MonthlyMonths: 13, YearlyYears: 7, MinimumDays: 30}
	for _, pattern := range []string{"db-*", ""} {
		p.Pattern = pattern
		text, err := Targets{Kind: KindPolicy, Policy: &p}.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseTargets(text)
		if err != nil || got.Kind != KindPolicy || got.Policy == nil || *got.Policy != p {
			t.Fatalf("round trip of %q: %+v, %v", text, got.Policy, err)
		}
	}
	text, _ := Targets{Kind: KindPolicy, Policy: &p}.Canonical()
	for _, bad := range []string{
		strings.Replace(text, "daily-days: 14", "daily-days: 014", 1),
		strings.Replace(text, "minimum-days: 30\n", "", 1),
		text + "daily-days: 1\n",
		strings.Replace(text, "pattern: -", "pattern: ", 1),
		strings.Replace(text, "kind: policy", "kind: admin_set", 1),
	} {
		if _, err := ParseTargets(bad); err == nil {
			t.Errorf("accepted a non-canonical policy text:\n%s", bad)
		}
	}
	if _, err := (Targets{Kind: KindPolicy}).Canonical(); err == nil {
		t.Error("a policy request without a policy")
	}
	for _, k := range []string{"admin_set", "policy", "expiry_authorisation"} {
		if !Governed(k) {
			t.Errorf("%s is not governed", k)
		}
	}
	for _, k := range []string{"chunks", "snapshots", "expired", "hold_release"} {
		if Governed(k) {
			t.Errorf("%s is governed", k)
		}
	}
}
