package main

// vault admin: the admin's side of deletion. Every command talks to the
// vault over HTTP with an admin token from VAULT_TOKEN; the approvals and
// the delay are enforced by the vault, not here.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/client"
)

const adminUsage = `usage: vault admin <command>

  deletions request --chunks H,H | --snapshots ID,ID | --expired-before DATE [--source S] | --hold ID  --reason TEXT
  deletions approve ID        approve a request (not your own; once per admin)
  deletions cancel ID --reason TEXT
  deletions list [--state S]  requests, newest first
  deletions show ID           targets, approvals, time left, outcome
  execute-due                 run the executor now (approved requests whose delay has passed)

Set VAULT_URL and VAULT_TOKEN (an admin token).
`

func runAdmin(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, adminUsage)
		return errors.New("admin: want a command")
	}
	switch args[0] {
	case "deletions":
		if len(args) < 2 {
			fmt.Fprint(stderr, adminUsage)
			return errors.New("admin deletions: want request, approve, cancel, list or show")
		}
		switch args[1] {
		case "request":
			return runDeletionRequest(ctx, args[2:], getenv, stdout, stderr)
		case "approve", "cancel", "show":
			return runDeletionAction(ctx, args[1], args[2:], getenv, stdout, stderr)
		case "list":
			return runDeletionList(ctx, args[2:], getenv, stdout, stderr)
		}
	case "execute-due":
		return runExecuteDue(ctx, args[1:], getenv, stdout, stderr)
	}
	fmt.Fprint(stderr, adminUsage)
	return fmt.Errorf("admin: unknown command %q", strings.Join(args, " "))
}

func runDeletionRequest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin deletions request", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addAPIFlags(fs, getenv)
	chunks := fs.String("chunks", "", "comma-separated chunk hashes")
	snapshots := fs.String("snapshots", "", "comma-separated snapshot ids")
	expired := fs.String("expired-before", "", "everything whose retention ended before this date (YYYY-MM-DD or RFC 3339)")
	source := fs.String("source", "", "with --expired-before: only this source")
	hold := fs.Int64("hold", 0, "release this legal hold")
	reason := fs.String("reason", "", "why (required; shown to approvers and in the audit log)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	req := client.DeletionRequest{Reason: *reason, Source: *source}
	n := 0
	if *chunks != "" {
		req.Kind, req.Chunks, n = "chunks", splitList(*chunks), n+1
	}
	if *snapshots != "" {
		for _, s := range splitList(*snapshots) {
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return fmt.Errorf("admin deletions request: --snapshots: %q is not an id", s)
			}
			req.Snapshots = append(req.Snapshots, id)
		}
		req.Kind, n = "snapshots", n+1
	}
	if *expired != "" {
		t, err := parseDate("expired-before", *expired)
		if err != nil {
			return err
		}
		req.Kind, req.Before, n = "expired", t, n+1
	}
	if *hold != 0 {
		req.Kind, req.Hold, n = "hold_release", *hold, n+1
	}
	if n != 1 {
		return errors.New("admin deletions request: give exactly one of --chunks, --snapshots, --expired-before, --hold")
	}
	if strings.TrimSpace(*reason) == "" {
		return errors.New("admin deletions request: --reason is required")
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	d, err := c.RequestDeletion(ctx, req)
	if err != nil {
		return adminErr("admin deletions request", err)
	}
	if f.json {
		return writeJSONValue(stdout, d)
	}
	printDeletion(stdout, d, time.Now())
	fmt.Fprintf(stdout, "\nOther admins approve it with: vault admin deletions approve %d\n", d.ID)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runDeletionAction(ctx context.Context, action string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin deletions "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addAPIFlags(fs, getenv)
	reason := fs.String("reason", "", "why (required to cancel)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	cmd := "admin deletions " + action
	if len(pos) != 1 {
		return fmt.Errorf("%s: want one request id", cmd)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("%s: %q is not a request id", cmd, pos[0])
	}
	if action == "cancel" && strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%s: --reason is required", cmd)
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	var d client.Deletion
	switch action {
	case "approve":
		// Show what is being approved first: approvers approve exactly
		// the frozen targets and their digest.
		if d, err = c.GetDeletion(ctx, id); err == nil {
			d, err = c.ApproveDeletion(ctx, id)
		}
	case "cancel":
		d, err = c.CancelDeletion(ctx, id, *reason)
	default:
		d, err = c.GetDeletion(ctx, id)
	}
	if err != nil {
		return adminErr(cmd, err)
	}
	if f.json {
		return writeJSONValue(stdout, d)
	}
	printDeletion(stdout, d, time.Now())
	return nil
}

func runDeletionList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin deletions list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addAPIFlags(fs, getenv)
	state := fs.String("state", "", "only requests in this state: requested, scheduled, cancelled, expired, executing, executed")
	limit := fs.Int("limit", 100, "at most this many")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	list, _, err := c.Deletions(ctx, *state, 0, *limit)
	if err != nil {
		return adminErr("admin deletions list", err)
	}
	if f.json {
		return writeJSONValue(stdout, list)
	}
	now := time.Now()
	tw := newTable(stdout)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tAPPROVALS\tREQUESTED BY\tEXECUTES\tREASON")
	for _, d := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", d.ID, d.Kind, d.State, len(d.Approvals), d.ApprovalsRequired,
			d.RequestedBy, executes(d, now), oneLine(d.Reason, 40))
	}
	return tw.Flush()
}

func executes(d client.Deletion, now time.Time) string {
	switch {
	case d.ExecutedAt != nil:
		return "done " + fmtTime(*d.ExecutedAt)
	case d.ExecutesAt == nil:
		return "-"
	case d.ExecutesAt.After(now):
		return fmtTime(*d.ExecutesAt) + " (in " + d.ExecutesAt.Sub(now).Round(time.Minute).String() + ")"
	}
	return fmtTime(*d.ExecutesAt) + " (due)"
}

func printDeletion(w io.Writer, d client.Deletion, now time.Time) {
	tw := newTable(w)
	fmt.Fprintf(tw, "Request\t%d (%s)\n", d.ID, d.Kind)
	fmt.Fprintf(tw, "State\t%s\n", d.State)
	fmt.Fprintf(tw, "Reason\t%s\n", d.Reason)
	fmt.Fprintf(tw, "Requested\t%s by %s\n", fmtTime(d.RequestedAt), d.RequestedBy)
	var who []string
	for _, a := range d.Approvals {
		who = append(who, a.Approver)
	}
	fmt.Fprintf(tw, "Approvals\t%d of %d %s\n", len(d.Approvals), d.ApprovalsRequired, orDash(strings.Join(who, ", ")))
	fmt.Fprintf(tw, "Delay\t%s after the quorum\n", d.Delay)
	if d.State == "requested" {
		fmt.Fprintf(tw, "Expires\t%s without a quorum\n", fmtTime(d.ExpiresAt))
	}
	fmt.Fprintf(tw, "Executes\t%s\n", executes(d, now))
	if d.CancelledBy != nil {
		fmt.Fprintf(tw, "Cancelled\t%s by %s: %s\n", fmtTime(*d.CancelledAt), *d.CancelledBy, *d.CancelReason)
	}
	if d.Affected != nil {
		fmt.Fprintf(tw, "Affected\t%d chunks, %d snapshots, %s (when requested)\n", d.Affected.Chunks, d.Affected.Snapshots, humanBytes(d.Affected.Bytes))
	}
	if d.Report != nil {
		fmt.Fprintf(tw, "Result\t%d chunks and %d snapshots deleted, %s freed; skipped %v\n",
			d.Report.Deleted, d.Report.Snapshots, humanBytes(d.Report.BytesFreed), d.Report.Skipped)
	}
	fmt.Fprintf(tw, "Digest\t%s\n", d.Digest)
	tw.Flush()
	fmt.Fprintf(w, "Targets:\n%s", indent(d.Targets, 20))
}

// indent shows at most max lines of text, indented.
func indent(text string, max int) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	var b strings.Builder
	for i, l := range lines {
		if i == max {
			fmt.Fprintf(&b, "  ... %d more lines (--json shows all)\n", len(lines)-max)
			break
		}
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

func runExecuteDue(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin execute-due", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addAPIFlags(fs, getenv)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	executed, expired, err := c.ExecuteDue(ctx)
	if err != nil {
		return adminErr("admin execute-due", err)
	}
	if f.json {
		return writeJSONValue(stdout, map[string][]int64{"executed": executed, "expired": expired})
	}
	fmt.Fprintf(stdout, "executed: %v\nexpired: %v\n", executed, expired)
	return nil
}

func adminErr(cmd string, err error) error {
	switch {
	case client.IsCode(err, "forbidden"):
		return fmt.Errorf("%s: %w (this needs an admin token)", cmd, err)
	case client.IsCode(err, "self_approval"):
		return fmt.Errorf("%s: %w (another admin must approve)", cmd, err)
	}
	return cliErr(cmd, err)
}
