package main

// vault admin policies: retention policies on the server. Creating a
// policy and lengthening its terms take effect at once (admin token);
// shortening a term, changing the pattern or detaching goes through a
// signed request with the governance quorum and delay, like an admin-set
// change.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/wormvault/wormvault/internal/client"
)

// policiesText is the policy commands' shared help.
const policiesText = `A policy keeps each snapshot of the sources its pattern matches (a glob: * and ?)
from the vault's commit time: a daily for --daily days, the source's first snapshot of
an ISO week for --weekly weeks, of a month for --monthly months, of a year for --yearly
years (UTC, by the vault's clock, never the agent's taken_at), and never less than
--minimum days. Agents may ask for longer, up to the policy's longest term; never shorter.
set creates a policy or lengthens it at once; request shortens, re-points or detaches
one (signed; governance quorum and delay).
`

// policyTerms are the term flags of set and request.
type policyTerms struct {
	pattern                                 *string
	daily, weekly, monthly, yearly, minimum *int
}

func addPolicyTerms(fs *flag.FlagSet) policyTerms {
	return policyTerms{
		pattern: fs.String("pattern", "", "the sources the policy covers, a glob such as 'db-*' or '*'"),
		daily:   fs.Int("daily", 0, "keep every snapshot this many days"),
		weekly:  fs.Int("weekly", 0, "keep the first snapshot of each ISO week this many weeks"),
		monthly: fs.Int("monthly", 0, "keep the first snapshot of each month this many months"),
		yearly:  fs.Int("yearly", 0, "keep the first snapshot of each year this many years"),
		minimum: fs.Int("minimum", 0, "keep every snapshot at least this many days"),
	}
}

// apply sets the terms given on the command line over p.
func (pt policyTerms) apply(fs *flag.FlagSet, p *client.RetentionPolicy) {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "pattern":
			p.Pattern = *pt.pattern
		case "daily":
			p.DailyDays = *pt.daily
		case "weekly":
			p.WeeklyWeeks = *pt.weekly
		case "monthly":
			p.MonthlyMonths = *pt.monthly
		case "yearly":
			p.YearlyYears = *pt.yearly
		case "minimum":
			p.MinimumDays = *pt.minimum
		}
	})
}

func policyErr(cmd string, err error) error {
	if client.IsCode(err, "governed") {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return adminErr(cmd, err)
}

func runPoliciesList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin policies list", stderr)
	f := addAPIFlags(fs, getenv)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	list, err := c.Policies(ctx)
	if err != nil {
		return policyErr("admin policies list", err)
	}
	if f.json {
		return writeJSONValue(stdout, list)
	}
	return writePolicies(stdout, list)
}

func writePolicies(stdout io.Writer, list []client.RetentionPolicy) error {
	tw := newTable(stdout)
	fmt.Fprintln(tw, "NAME\tVERSION\tPATTERN\tDAILY\tWEEKLY\tMONTHLY\tYEARLY\tMINIMUM\tSINCE\tBY")
	for _, p := range list {
		pattern := p.Pattern
		if pattern == "" {
			pattern = "(detached)"
		}
		by := p.CreatedBy
		if p.RequestID != nil {
			by += " (request " + strconv.FormatInt(*p.RequestID, 10) + ")"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%dd\t%dw\t%dm\t%dy\t%dd\t%s\t%s\n", p.Name, p.Version, pattern, p.DailyDays, p.WeeklyWeeks,
			p.MonthlyMonths, p.YearlyYears, p.MinimumDays, fmtTime(p.CreatedAt), by)
	}
	return tw.Flush()
}

func runPoliciesShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin policies show", stderr)
	f := addAPIFlags(fs, getenv)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("admin policies show: want NAME")
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	p, err := c.Policy(ctx, pos[0])
	if err != nil {
		return policyErr("admin policies show", err)
	}
	if f.json {
		return writeJSONValue(stdout, p)
	}
	fmt.Fprintf(stdout, "Retention policy %s, version %d; every version, newest first:\n", p.Name, p.Version)
	return writePolicies(stdout, p.Versions)
}

func runPoliciesSet(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	const cmd = "admin policies set"
	fs := newFlagSet(cmd, stderr)
	f := addAPIFlags(fs, getenv)
	pt := addPolicyTerms(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New(cmd + ": want NAME, e.g. 'vault admin policies set standard --pattern \"*\" --daily 14 --weekly 8 --monthly 13 --yearly 7 --minimum 30'")
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	// Terms not given keep the current version's: "set NAME --yearly 10"
	// lengthens one term.
	p := client.RetentionPolicy{Name: pos[0]}
	if cur, err := c.Policy(ctx, pos[0]); err == nil {
		p = cur.RetentionPolicy
	} else if !client.IsCode(err, "not_found") {
		return policyErr(cmd, err)
	}
	pt.apply(fs, &p)
	p = client.RetentionPolicy{Name: p.Name, Pattern: p.Pattern, DailyDays: p.DailyDays, WeeklyWeeks: p.WeeklyWeeks,
		MonthlyMonths: p.MonthlyMonths, YearlyYears: p.YearlyYears, MinimumDays: p.MinimumDays}
	res, err := c.SetPolicy(ctx, p)
	if err != nil {
		return policyErr(cmd, err)
	}
	if f.json {
		return writeJSONValue(stdout, res)
	}
	if !res.Changed {
		fmt.Fprintf(stdout, "retention policy %s is already version %d with these terms: nothing changed\n", res.Name, res.Version)
		return nil
	}
	fmt.Fprintf(stdout, "retention policy %s is now version %d (in effect for the next commits)\n", res.Name, res.Version)
	return writePolicies(stdout, []client.RetentionPolicy{res.RetentionPolicy})
}

func runPoliciesRequest(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	const cmd = "admin policies request"
	fs := newFlagSet(cmd, stderr)
	f := addAPIFlags(fs, getenv)
	sf := addSignFlags(fs, getenv)
	pt := addPolicyTerms(fs)
	detach := fs.Bool("detach", false, "detach the policy: it covers no source any more")
	reason := fs.String("reason", "", "why (required; shown to approvers and in the audit log)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New(cmd + ": want NAME")
	}
	if strings.TrimSpace(*reason) == "" {
		return errors.New(cmd + ": --reason is required")
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	// The request names the whole next version: the current one with the
	// terms given here.
	cur, err := c.Policy(ctx, pos[0])
	if err != nil {
		return policyErr(cmd, err)
	}
	p := client.RetentionPolicy{Name: cur.Name, Pattern: cur.Pattern, DailyDays: cur.DailyDays, WeeklyWeeks: cur.WeeklyWeeks,
		MonthlyMonths: cur.MonthlyMonths, YearlyYears: cur.YearlyYears, MinimumDays: cur.MinimumDays}
	pt.apply(fs, &p)
	if *detach {
		if p.Pattern != cur.Pattern {
			return errors.New(cmd + ": give --detach or --pattern, not both")
		}
		p.Pattern = ""
	}
	return requestSigned(ctx, cmd, client.DeletionRequest{Kind: "policy", Policy: &p, Reason: *reason}, f, sf, getenv, stdin, stdout)
}
