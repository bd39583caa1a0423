package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/config"
)

// quotasText follows the usage of `vault admin quotas`.
const quotasText = `A quota belongs to a token subject (every token issued with that subject):
new bytes per UTC day (over it: 429 until the next UTC day) and bytes stored
in all (over it: 507 until an admin raises it). A chunk counts against its
first uploader only; uploading content already stored costs nothing.
Changing a quota deletes nothing, so it needs no approval; it is audited.
Set VAULT_URL and VAULT_TOKEN: an admin token to set, auditor or admin to read.
`

// parseQuotaLimit reads a --daily or --total value: a size such as 10GiB,
// or "none" for no limit.
func parseQuotaLimit(name, v string) (*int64, error) {
	if v == "none" {
		return nil, nil
	}
	n, err := config.ParseSize(v)
	if err != nil {
		return nil, fmt.Errorf("admin quotas set: --%s %q: %w (a size such as 50GiB, or none)", name, v, err)
	}
	if n < 0 {
		return nil, fmt.Errorf("admin quotas set: --%s must not be negative", name)
	}
	return &n, nil
}

func runQuotasSet(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin quotas set", stderr)
	af := addAPIFlags(fs, getenv)
	daily := fs.String("daily", "", "new bytes the subject may store per UTC day, e.g. 50GiB, or none (required)")
	total := fs.String("total", "", "bytes the subject may have stored in all, e.g. 2TiB, or none (required)")
	reason := fs.String("reason", "", "why, for the audit log")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("admin quotas set: want SUBJECT, e.g. 'vault admin quotas set web01 --daily 50GiB --total 2TiB'")
	}
	if *daily == "" || *total == "" {
		// Both, so that setting one never removes the other by surprise.
		return errors.New("admin quotas set: --daily and --total are both required (a size, or none)")
	}
	d, err := parseQuotaLimit("daily", *daily)
	if err != nil {
		return err
	}
	t, err := parseQuotaLimit("total", *total)
	if err != nil {
		return err
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("admin quotas set: %w", err)
	}
	u, err := c.SetQuota(ctx, pos[0], d, t, *reason)
	if err != nil {
		if client.IsCode(err, "forbidden") {
			return fmt.Errorf("admin quotas set: %w (this needs an admin token)", err)
		}
		return cliErr("admin quotas set", err)
	}
	return writeQuota(stdout, u, af.json)
}

func runQuotasShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin quotas show", stderr)
	af := addAPIFlags(fs, getenv)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("admin quotas show: want SUBJECT")
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("admin quotas show: %w", err)
	}
	u, err := c.Quota(ctx, pos[0])
	if err != nil {
		return cliErr("admin quotas show", err)
	}
	return writeQuota(stdout, u, af.json)
}

func runQuotasList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin quotas list", stderr)
	af := addAPIFlags(fs, getenv)
	if err := parseNoArgs("admin quotas list", fs, args); err != nil {
		return err
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("admin quotas list: %w", err)
	}
	list, err := c.Quotas(ctx)
	if err != nil {
		return cliErr("admin quotas list", err)
	}
	if af.json {
		return writeJSONValue(stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "(no quotas and no stored content)")
		return nil
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "SUBJECT\tTODAY\tDAILY QUOTA\tSTORED\tTOTAL QUOTA")
	for _, u := range list {
		d, t := quotaLimits(u)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Subject, humanBytes(u.UsedToday), d, humanBytes(u.UsedTotal), t)
	}
	return tw.Flush()
}

func quotaLimits(u client.QuotaUsage) (daily, total string) {
	f := func(p *int64) string {
		if p == nil {
			return "none"
		}
		return humanBytes(*p)
	}
	if u.Quota == nil {
		return "none", "none"
	}
	return f(u.Quota.DailyBytes), f(u.Quota.TotalBytes)
}

func writeQuota(w io.Writer, u client.QuotaUsage, asJSON bool) error {
	if asJSON {
		return writeJSONValue(w, u)
	}
	d, t := quotaLimits(u)
	rows := [][2]string{
		{"subject", u.Subject},
		{"daily quota", d},
		{"stored today (" + u.Day.Format("2006-01-02") + " UTC)", humanBytes(u.UsedToday) + " (" + strconv.FormatInt(u.UsedToday, 10) + " bytes)"},
		{"total quota", t},
		{"stored", humanBytes(u.UsedTotal) + " (" + strconv.FormatInt(u.UsedTotal, 10) + " bytes)"},
	}
	if u.Quota != nil {
		rows = append(rows, [2]string{"set", fmtTime(u.Quota.SetAt) + " by " + u.Quota.SetBy})
		if u.Quota.Reason != "" {
			rows = append(rows, [2]string{"reason", strings.TrimSpace(u.Quota.Reason)})
		}
	}
	tw := newTable(w)
	for _, kv := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}
