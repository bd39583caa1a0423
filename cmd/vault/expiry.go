package main

// vault admin expiry: routine expiry under a standing authorisation
// (issue 15, part 3). authorise makes a governed request (the governance
// quorum and delay) whose other admins approve it with `vault admin
// deletions approve`; once executed it is in force, and the vault's
// executor removes what has expired on its terms. suspend is one admin's
// signed cancel of it, effective at once. show lists authorisations and
// their latest runs.

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

// expiryText is the expiry commands' shared help.
const expiryText = `An expiry authorisation lets the vault's executor remove, every INTERVAL,
the chunks whose retention has ended, that no retained snapshot references
and no legal hold covers (and the expired snapshots' records): a manual
"expired" deletion, made by the executor, with the same checks, tombstones,
audit entries and report. It is approved once, with the governance quorum
and delay, and needs at least one per-run ceiling: a run whose candidates
exceed it removes nothing and alarms. Any one admin suspends it at once;
resuming needs a new authorisation. Without one, nothing expires by itself.
` + adminText

func runExpiryAuthorise(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	const cmd = "admin expiry authorise"
	fs := newFlagSet(cmd, stderr)
	f := addAPIFlags(fs, getenv)
	sf := addSignFlags(fs, getenv)
	interval := fs.Duration("interval", 24*time.Hour, "run at most this often (1h to 366 days)")
	maxPercent := fs.Int("max-percent", 0, "per-run ceiling: at most this percentage (1 to 100) of the stored bytes (0: not set)")
	maxChunks := fs.Int64("max-chunks", 0, "per-run ceiling: at most this many chunks (0: not set)")
	reason := fs.String("reason", "", "why (required; shown to approvers and in the audit log)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *maxPercent == 0 && *maxChunks == 0 {
		return fmt.Errorf("%s: give a ceiling: --max-percent, --max-chunks or both", cmd)
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%s: --reason is required", cmd)
	}
	terms := &client.ExpiryTerms{Interval: interval.String(), MaxPercent: *maxPercent, MaxChunks: *maxChunks}
	return requestSigned(ctx, cmd, client.DeletionRequest{Kind: "expiry_authorisation", Expiry: terms, Reason: *reason},
		f, sf, getenv, stdin, stdout)
}

func runExpirySuspend(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	const cmd = "admin expiry suspend"
	fs := newFlagSet(cmd, stderr)
	f := addAPIFlags(fs, getenv)
	sf := addSignFlags(fs, getenv)
	reason := fs.String("reason", "", "why (required)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%s: want one authorisation id", cmd)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("%s: %q is not an authorisation id", cmd, pos[0])
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%s: --reason is required", cmd)
	}
	if err := sf.check(cmd); err != nil {
		return err
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	d, err := c.GetDeletion(ctx, id)
	if err != nil {
		return adminErr(cmd, err)
	}
	if d.Kind != "expiry_authorisation" {
		return fmt.Errorf("%s: request %d is a %s request, not an expiry authorisation (cancel it with vault admin deletions cancel)", cmd, id, d.Kind)
	}
	out := stdout
	if f.json {
		out = io.Discard
	}
	printDeletion(out, d, time.Now())
	// A suspension is the signed cancel of the authorisation.
	sig, err := signAction(ctx, c, sf, d, "cancel", *reason, stdin, out)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if d, err = c.CancelDeletion(ctx, id, sig); err != nil {
		return adminErr(cmd, err)
	}
	if f.json {
		return writeJSONValue(stdout, d)
	}
	fmt.Fprintf(stdout, "\nExpiry authorisation %d suspended by %s: no run starts under it, and a run under way stops before its next batch.\n", id, sig.Signer)
	return nil
}

func runExpiryShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	const cmd = "admin expiry show"
	fs := newFlagSet(cmd, stderr)
	f := addAPIFlags(fs, getenv)
	runs := fs.Int("runs", 10, "show at most this many of each authorisation's latest runs (1 to 100)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *runs < 1 || *runs > 100 {
		return errors.New(cmd + ": --runs must be 1 to 100")
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	list, err := c.Expiry(ctx, *runs)
	if err != nil {
		return adminErr(cmd, err)
	}
	if f.json {
		return writeJSONValue(stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "No expiry authorisation: nothing expires by itself.")
		return nil
	}
	for i, e := range list {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		a := e.Authorisation
		state := a.State
		switch {
		case e.InForce:
			state = "in force"
		case a.State == "cancelled":
			state = "suspended"
			if a.CancelledBy != nil {
				state += " by " + *a.CancelledBy
			}
		}
		terms := "?"
		if t := e.Terms; t != nil {
			terms = fmt.Sprintf("every %s, at most %s of the stored bytes and %s chunks per run", t.Interval,
				orNone(t.MaxPercent != 0, strconv.Itoa(t.MaxPercent)+"%"), orNone(t.MaxChunks != 0, strconv.FormatInt(t.MaxChunks, 10)))
		}
		fmt.Fprintf(stdout, "Authorisation %d: %s; %s\n  %s\n", a.ID, state, terms, a.Reason)
		if len(e.Runs) == 0 {
			fmt.Fprintln(stdout, "  no runs yet")
			continue
		}
		tw := newTable(stdout)
		fmt.Fprintln(tw, "RUN\tSTARTED\tSTATE\tDELETED\tSNAPSHOTS\tFREED\tNOTE")
		for _, r := range e.Runs {
			var deleted, snaps int64
			freed, note := "-", ""
			if rep := r.Report; rep != nil {
				deleted, snaps, freed = rep.Deleted, rep.Snapshots, humanBytes(rep.BytesFreed)
				note = rep.Stopped
			}
			if r.Refusal != nil {
				note = *r.Refusal
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\n", r.ID, fmtTime(r.RequestedAt), r.State, deleted, snaps, freed, orDash(note))
		}
		tw.Flush()
	}
	fmt.Fprintln(stdout, "\nA run's objects: vault admin deletions show RUN")
	return nil
}

func orNone(set bool, s string) string {
	if !set {
		return "any"
	}
	return s
}
