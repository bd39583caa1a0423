package main

// vault admin: the admin's side of deletion. Every command talks to the
// vault over HTTP with an admin token from VAULT_TOKEN; the approvals and
// the delay are enforced by the vault, not here.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/client"
)

// adminText is the part of the admin commands' help that they share.
const adminText = `SIGN is --key FILE (from keygen) or --ssh-key FILE (ssh-ed25519, via ssh-keygen -Y sign),
plus --yes to sign without confirming. The statement is shown before signing.
Set VAULT_URL and VAULT_TOKEN (an admin token): the token authenticates the call;
only your key's signature counts as your approval.
`

func runDeletionRequest(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin deletions request", stderr)
	f := addAPIFlags(fs, getenv)
	sf := addSignFlags(fs, getenv)
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
	return requestSigned(ctx, "admin deletions request", req, f, sf, getenv, stdin, stdout)
}

// requestSigned makes a request and signs its request statement: until
// it is signed, it takes no approvals.
func requestSigned(ctx context.Context, cmd string, req client.DeletionRequest, f *apiFlags, sf *signFlags,
	getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	if err := sf.check(cmd); err != nil {
		return err
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	d, err := c.RequestDeletion(ctx, req)
	if err != nil {
		return adminErr(cmd, err)
	}
	out := stdout
	if f.json {
		out = io.Discard
	}
	printDeletion(out, d, time.Now())
	sig, err := signAction(ctx, c, sf, d, "request", "", stdin, out)
	if err != nil {
		return fmt.Errorf("%s: request %d made but not signed (it takes no approvals and will expire): %w", cmd, d.ID, err)
	}
	signed, err := c.SignDeletion(ctx, d.ID, sig)
	if err != nil {
		return adminErr(cmd, err)
	}
	if f.json {
		return writeJSONValue(stdout, signed)
	}
	fmt.Fprintf(stdout, "\nRequest %d signed by %s. Other admins approve it with:\n  vault admin deletions approve %d --key FILE | --ssh-key FILE\n", d.ID, sig.Signer, d.ID)
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

func runDeletionAction(ctx context.Context, action string, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin deletions "+action, stderr)
	f := addAPIFlags(fs, getenv)
	sf := addSignFlags(fs, getenv)
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
	if action != "show" {
		if err := sf.check(cmd); err != nil {
			return err
		}
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	d, err := c.GetDeletion(ctx, id)
	if err != nil {
		return adminErr(cmd, err)
	}
	if action != "show" {
		// Show what is being signed first: approvers approve exactly the
		// frozen targets and their digest.
		out := stdout
		if f.json {
			out = io.Discard
		}
		printDeletion(out, d, time.Now())
		action := map[string]string{"approve": "approve", "cancel": "cancel"}[action]
		sig, err := signAction(ctx, c, sf, d, action, *reason, stdin, out)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if action == "approve" {
			d, err = c.ApproveDeletion(ctx, id, sig)
		} else {
			d, err = c.CancelDeletion(ctx, id, sig)
		}
		if err != nil {
			return adminErr(cmd, err)
		}
		if !f.json {
			fmt.Fprintln(stdout)
		}
	}
	if f.json {
		return writeJSONValue(stdout, d)
	}
	printDeletion(stdout, d, time.Now())
	return nil
}

func runDeletionList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin deletions list", stderr)
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
	if d.RequestedByAdmin != nil {
		fmt.Fprintf(tw, "Signed by\t%s (admin set %d)\n", *d.RequestedByAdmin, *d.AdminSetVersion)
	} else if d.State == "requested" {
		fmt.Fprintf(tw, "Signed by\tnobody yet: no approvals count until the requester signs\n")
	}
	if d.Refusal != nil {
		fmt.Fprintf(tw, "Refused\t%s\n", *d.Refusal)
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
		fmt.Fprintf(tw, "Affected\t%s, %s, %s (when requested)\n", plural(d.Affected.Chunks, "chunk"), plural(d.Affected.Snapshots, "snapshot"), humanBytes(d.Affected.Bytes))
	}
	if d.Report != nil {
		fmt.Fprintf(tw, "Result\t%s and %s deleted, %s freed; skipped: %s\n",
			plural(d.Report.Deleted, "chunk"), plural(d.Report.Snapshots, "snapshot"), humanBytes(d.Report.BytesFreed), byReason(d.Report.Skipped))
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
			fmt.Fprintf(&b, "  ... %s more (--json shows all)\n", plural(len(lines)-max, "line"))
			break
		}
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

func runExecuteDue(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin execute-due", stderr)
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
	fmt.Fprintf(stdout, "executed: %s\nexpired: %s\n", idList(executed), idList(expired))
	return nil
}

func adminErr(cmd string, err error) error {
	switch {
	case client.IsCode(err, "forbidden"):
		return fmt.Errorf("%s: %w (this needs an admin token)", cmd, err)
	case client.IsCode(err, "self_approval"):
		return fmt.Errorf("%s: %w (another admin must approve)", cmd, err)
	case client.IsCode(err, "bad_signature"):
		return fmt.Errorf("%s: %w (sign with your own admin key, as enrolled in the admin set)", cmd, err)
	}
	return cliErr(cmd, err)
}

func runAdminsShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin admins show", stderr)
	f := addAPIFlags(fs, getenv)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	set, err := c.AdminSet(ctx)
	if err != nil {
		return adminErr("admin admins show", err)
	}
	if f.json {
		return writeJSONValue(stdout, set)
	}
	p := set.Policy
	fmt.Fprintf(stdout, "Admin set version %d: deletions need %s and wait %s; admin-set changes need %d and wait %s\n",
		set.Version, plural(p.ApprovalsRequired, "approval"), p.Delay, p.GovernanceApprovals, p.GovernanceDelay)
	tw := newTable(stdout)
	fmt.Fprintln(tw, "NAME\tKIND\tFINGERPRINT\tADDED")
	for _, a := range set.Admins {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Kind, a.Fingerprint, fmtTime(a.AddedAt))
	}
	return tw.Flush()
}

func runAdminsChange(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	const cmd = "admin admins change"
	fs := newFlagSet(cmd, stderr)
	f := addAPIFlags(fs, getenv)
	sf := addSignFlags(fs, getenv)
	add := fs.String("add", "", "add an admin: NAME=PUBKEYFILE")
	remove := fs.String("remove", "", "remove an admin: NAME")
	rotate := fs.String("rotate", "", "replace an admin's key: NAME=PUBKEYFILE")
	policy := fs.String("policy", "", "set the policy: APPROVALS,DELAY,GOVERNANCE_APPROVALS,GOVERNANCE_DELAY (e.g. 2,72h,3,168h)")
	reason := fs.String("reason", "", "why (required)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	var ch client.AdminChange
	n := 0
	for _, kv := range []struct{ op, v string }{{"add", *add}, {"rotate", *rotate}} {
		if kv.v == "" {
			continue
		}
		name, file, ok := strings.Cut(kv.v, "=")
		if !ok {
			return fmt.Errorf("%s: --%s wants NAME=PUBKEYFILE", cmd, kv.op)
		}
		k, err := readAdminKey(file)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		ch, n = client.AdminChange{Op: kv.op, Admin: name, Key: k.String()}, n+1
	}
	if *remove != "" {
		ch, n = client.AdminChange{Op: "remove", Admin: *remove}, n+1
	}
	if *policy != "" {
		var p client.AdminChange
		parts := strings.Split(*policy, ",")
		if len(parts) != 4 {
			return fmt.Errorf("%s: --policy wants APPROVALS,DELAY,GOVERNANCE_APPROVALS,GOVERNANCE_DELAY", cmd)
		}
		var err1, err2 error
		p.ApprovalsRequired, err1 = strconv.Atoi(parts[0])
		p.GovernanceApprovals, err2 = strconv.Atoi(parts[2])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%s: --policy: approvals are numbers", cmd)
		}
		p.Op, p.Delay, p.GovernanceDelay = "policy", parts[1], parts[3]
		ch, n = p, n+1
	}
	if n != 1 {
		return fmt.Errorf("%s: give exactly one of --add, --remove, --rotate, --policy", cmd)
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%s: --reason is required", cmd)
	}
	return requestSigned(ctx, cmd, client.DeletionRequest{Kind: "admin_set", Change: &ch, Reason: *reason}, f, sf, getenv, stdin, stdout)
}
