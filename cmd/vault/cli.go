package main

// The command tree and its dispatcher. One table (commands) names every
// command, its positional arguments and a one-line summary; the dispatcher
// walks it, and help is generated from it, so a command added here has a
// working -h, and help_test.go checks every entry of the same table.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// cliEnv is the process around a command: its environment and streams.
type cliEnv struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// cmd is one node of the command tree: a group (subs), a leaf (run), or a
// command that runs itself unless its first argument names a subcommand
// (scrub and scrub status).
type cmd struct {
	name    string
	args    string // synopsis after the command's name, e.g. "[flags] ID"
	summary string
	// usage, when set, replaces the generated usage line and summary: a
	// command's own longer text, starting with its "usage:" line.
	usage string
	// text follows the generated part of a group's usage.
	text string
	run  func(ctx context.Context, args []string, e cliEnv) error
	subs []*cmd
}

// apiText is what every auditor command over HTTP has in common.
const apiText = `Talks to the vault at VAULT_URL (or --url) with the token in VAULT_TOKEN
(an auditor or admin token). Tables by default, --json for JSON.
`

// commands returns the whole command tree, rooted at "vault".
func commands() *cmd {
	// leaf adapts the commands' signatures to the tree's.
	type std = func(context.Context, []string, func(string) string, io.Writer, io.Writer) error
	leaf := func(name, args, summary string, f std) *cmd {
		return &cmd{name: name, args: args, summary: summary, run: func(ctx context.Context, a []string, e cliEnv) error {
			return f(ctx, a, e.getenv, e.stdout, e.stderr)
		}}
	}
	deletionAction := func(action string) func(ctx context.Context, a []string, e cliEnv) error {
		return func(ctx context.Context, a []string, e cliEnv) error {
			return runDeletionAction(ctx, action, a, e.getenv, e.stdin, e.stdout, e.stderr)
		}
	}
	return &cmd{name: "vault", summary: "an immutable, append-only backup vault and its tools", subs: []*cmd{
		leaf("init", "[flags]", "create a vault data directory: id, token-signing key, identity file", runInit),
		{name: "serve", args: "[flags]", summary: "run the vault server (as the runtime role: refuses to start while migrations are pending)",
			run: func(ctx context.Context, a []string, e cliEnv) error { return runServe(ctx, a, e.getenv, e.stderr) }},
		{name: "migrate", usage: migrateUsage, summary: "apply database migrations as the schema owner (--owner-url) and exit",
			run: func(ctx context.Context, a []string, e cliEnv) error { return runMigrate(ctx, a, e.getenv, e.stderr) }},
		{name: "reindex", usage: reindexUsage, summary: "rebuild the database index from the data directory (journal, files, packs), as the schema owner",
			run: func(ctx context.Context, a []string, e cliEnv) error {
				return runReindex(ctx, a, e.getenv, e.stdout, e.stderr)
			}},
		{name: "scrub", usage: scrubUsage, summary: "re-hash every stored chunk now (server stopped); status: the scrub's position and damaged chunks",
			run: func(ctx context.Context, a []string, e cliEnv) error {
				return runScrub(ctx, a, e.getenv, e.stdout, e.stderr)
			},
			subs: []*cmd{
				{name: "status", args: "[flags]", summary: "the scrub's position, its last full pass and the damage records; only reads the database",
					run: func(ctx context.Context, a []string, e cliEnv) error {
						return runScrubStatus(ctx, a, e.getenv, e.stdout, e.stderr)
					}},
			}},
		{name: "replicate", usage: replicateUsage, summary: "pull one replication pass from a primary vault into this one (server stopped); status, acknowledge",
			run: func(ctx context.Context, a []string, e cliEnv) error {
				return runReplicate(ctx, a, e.getenv, e.stdout, e.stderr)
			},
			subs: []*cmd{
				leaf("status", "[flags]", "the primaries this vault pulls from: last pass, kept checkpoint, alarm, disappearances", runReplicateStatus),
				leaf("acknowledge", "[flags] --source NAME --reason TEXT", "clear a replication alarm (admin): the next pass pins the primary's current checkpoint", runReplicateAcknowledge),
			}},
		{name: "token", summary: "issue, list or revoke access tokens; rotate the token-signing key", subs: []*cmd{
			leaf("issue", "[flags]", "issue a token for a role (printed once, on stdout)", runTokenIssue),
			leaf("list", "[flags]", "the tokens issued, with their state", runTokenList),
			leaf("revoke", "[flags] TOKEN_ID", "revoke an issued token by its id (jti)", runTokenRevoke),
			leaf("rotate-key", "[flags]", "make a new token-signing key; tokens of the old one stay valid until distrusted", runTokenRotateKey),
		}},
		{name: "admin", summary: "keygen; deletions: request, approve, cancel, list, show; admins; policies; expiry; quotas; execute-due", text: adminText, subs: []*cmd{
			{name: "keygen", args: "--out FILE", summary: "make your personal admin key (raw Ed25519); prints the public key",
				run: func(_ context.Context, a []string, e cliEnv) error { return runKeygen(a, e.stdout, e.stderr) }},
			{name: "deletions", summary: "request, approve, cancel, list and show deletion requests", text: adminText, subs: []*cmd{
				{name: "request", args: "(--chunks H,H | --snapshots ID,ID | --expired-before DATE [--source S] | --hold ID) --reason TEXT SIGN",
					summary: "request a deletion (signed by you; executes after the approvals and the delay)",
					run: func(ctx context.Context, a []string, e cliEnv) error {
						return runDeletionRequest(ctx, a, e.getenv, e.stdin, e.stdout, e.stderr)
					}},
				{name: "approve", args: "[flags] ID SIGN", summary: "approve a request (not your own; once per admin)", run: deletionAction("approve")},
				{name: "cancel", args: "[flags] ID --reason TEXT SIGN", summary: "cancel a request before it executes", run: deletionAction("cancel")},
				leaf("list", "[--state S] [flags]", "deletion requests, newest first", runDeletionList),
				{name: "show", args: "[flags] ID", summary: "a request's targets, approvals, time left and outcome", run: deletionAction("show")},
			}},
			{name: "admins", summary: "show the admin set; request a change to it", text: adminText, subs: []*cmd{
				leaf("show", "[flags]", "the admin set and its policy", runAdminsShow),
				{name: "change", args: "(--add NAME=PUBFILE | --remove NAME | --rotate NAME=PUBFILE | --policy APPROVALS,DELAY,GOV_APPROVALS,GOV_DELAY) --reason TEXT SIGN",
					summary: "request an admin-set change (governance quorum and delay)",
					run: func(ctx context.Context, a []string, e cliEnv) error {
						return runAdminsChange(ctx, a, e.getenv, e.stdin, e.stdout, e.stderr)
					}},
			}},
			{name: "policies", summary: "retention policies: list, show, set (create or lengthen), request (shorten, re-point, detach)",
				text: policiesText + "\n" + adminText, subs: []*cmd{
					leaf("list", "[flags]", "every retention policy's current version (auditor or admin token)", runPoliciesList),
					leaf("show", "[flags] NAME", "a policy and all its versions (auditor or admin token)", runPoliciesShow),
					leaf("set", "[flags] NAME [--pattern GLOB] [--daily D] [--weekly W] [--monthly M] [--yearly Y] [--minimum D]",
						"create a policy, or lengthen its terms, at once (admin token); unset terms keep the current ones", runPoliciesSet),
					{name: "request", args: "[flags] NAME (--pattern GLOB | --detach | --daily D ...) --reason TEXT SIGN",
						summary: "request a shorter term, another pattern or detaching (signed; governance quorum and delay)",
						run: func(ctx context.Context, a []string, e cliEnv) error {
							return runPoliciesRequest(ctx, a, e.getenv, e.stdin, e.stdout, e.stderr)
						}},
				}},
			{name: "expiry", summary: "routine expiry: authorise it (governed), suspend it (any one admin), show it and its runs", text: expiryText, subs: []*cmd{
				{name: "authorise", args: "--interval D (--max-percent N | --max-chunks N) --reason TEXT SIGN",
					summary: "request a standing expiry authorisation (governance quorum and delay; approve with deletions approve)",
					run: func(ctx context.Context, a []string, e cliEnv) error {
						return runExpiryAuthorise(ctx, a, e.getenv, e.stdin, e.stdout, e.stderr)
					}},
				{name: "suspend", args: "[flags] ID --reason TEXT SIGN", summary: "suspend an expiry authorisation at once (any one admin; final)",
					run: func(ctx context.Context, a []string, e cliEnv) error {
						return runExpirySuspend(ctx, a, e.getenv, e.stdin, e.stdout, e.stderr)
					}},
				leaf("show", "[--runs N] [flags]", "expiry authorisations, their terms and state, and their latest runs", runExpiryShow),
			}},
			leaf("execute-due", "[flags]", "run the executor now (approved requests whose delay has passed, and due expiry runs)", runExecuteDue),
			{name: "quotas", summary: "set, show and list the quotas of token subjects (bytes per UTC day, bytes stored)", text: quotasText, subs: []*cmd{
				leaf("set", "SUBJECT --daily SIZE|none --total SIZE|none [--reason TEXT] [flags]", "replace a subject's quota (admin token; audited, no approval needed)", runQuotasSet),
				leaf("show", "[flags] SUBJECT", "a subject's quota and its usage today and in total", runQuotasShow),
				leaf("list", "[flags]", "every subject with a quota or stored content, with its usage", runQuotasList),
			}},
		}},
		{name: "hash", args: "FILE... | -", summary: "print the BLAKE3 address of files, or of stdin for - (the name to PUT a chunk under)",
			run: func(_ context.Context, a []string, e cliEnv) error { return runHash(a, e.stdin, e.stdout, e.stderr) }},
		{name: "audit", summary: "verify the signed audit log (auditor, over HTTP): verify, prove-retained", text: auditText, subs: []*cmd{
			leaf("verify", "--state DIR [flags]", "check the signed checkpoint, recompute the log and replay its rules; non-zero on any failure", runAuditVerify),
			leaf("prove-retained", "--state DIR [flags] HASH", "print and check the inclusion proof of a chunk's commit entry", runAuditProve),
		}},
		{name: "retention", summary: "retention summary and what expires before a date (auditor, over HTTP)", text: apiText, subs: []*cmd{
			leaf("summary", "[flags]", "chunks and bytes by retention month, expired, held, pending deletion", runRetentionSummary),
			leaf("expiring", "--before DATE [flags]", "snapshots and chunks retained until before DATE (YYYY-MM-DD or RFC 3339)", runRetentionExpiring),
		}},
		{name: "snapshots", summary: "list and show snapshots (over HTTP)", text: apiText, subs: []*cmd{
			leaf("list", "[flags]", "snapshots, newest first", runSnapshotsList),
			leaf("show", "[flags] ID", "one snapshot: its metadata and retention", runSnapshotsShow),
		}},
		{name: "holds", summary: "list and show legal holds (over HTTP)", text: apiText + holdsText, subs: []*cmd{
			leaf("list", "[flags]", "legal holds, oldest first, active and released", runHoldsList),
			leaf("show", "[flags] ID", "one hold and everything it holds", runHoldsShow),
		}},
		{name: "restic", summary: "restic repositories and their retention (over HTTP; restic itself uses /restic/REPO/)", text: apiText, subs: []*cmd{
			leaf("repos", "[flags]", "restic repositories with their retention and size", runResticRepos),
			leaf("retention", "[flags] REPO DURATION", "set a repository's retention (admin token)", runResticRetention),
		}},
		leaf("bench", "[flags]", "measure ingest against the machine's limits (disk, BLAKE3, PostgreSQL)", runBench),
		{name: "push", usage: pushUsage, summary: "back up files and directories, or standard input (agent token)",
			run: func(ctx context.Context, a []string, e cliEnv) error {
				return runPush(ctx, a, e.getenv, e.stdin, e.stdout, e.stderr)
			}},
		{name: "restore", usage: restoreUsage, summary: "restore a snapshot into a directory, or one file to stdout (reader token)",
			run: func(ctx context.Context, a []string, e cliEnv) error {
				return runRestore(ctx, a, e.getenv, e.stdout, e.stderr)
			}},
		leaf("health", "[flags]", "probe a running vault's /readyz and exit 0 only if it is ready (container healthchecks)", runHealth),
		{name: "version", summary: "print the version (also --version)",
			run: func(_ context.Context, a []string, e cliEnv) error {
				fs := newFlagSet("version", e.stderr)
				if err := fs.Parse(a); err != nil {
					return err
				}
				if fs.NArg() > 0 {
					return fmt.Errorf("version: unexpected argument %q", fs.Arg(0))
				}
				fmt.Fprintln(e.stdout, "vault", version())
				return nil
			}},
		completionCmd(),
	}}
}

// isHelp reports whether an argument asks for help, as the flag package
// understands it.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--h", "--help":
		return true
	}
	return false
}

// wantsHelp reports whether a leaf's arguments ask for help: a help flag
// anywhere before "--", since commands take flags after positional
// arguments too.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelp(a) {
			return true
		}
	}
	return false
}

// dispatch runs the command args name under c (whose full name is path).
// Help goes to stdout and returns nil; a missing or unknown subcommand
// prints the usage to stderr and returns an error.
func (c *cmd) dispatch(ctx context.Context, path string, args []string, e cliEnv) error {
	if len(c.subs) > 0 && len(args) > 0 {
		for _, s := range c.subs {
			if s.name == args[0] {
				return s.dispatch(ctx, path+" "+s.name, args[1:], e)
			}
		}
	}
	if c.run == nil {
		switch {
		case len(args) == 0:
			c.writeUsage(e.stderr, path)
			return fmt.Errorf("%s: want a command: %s", path, c.subNames())
		case isHelp(args[0]) || args[0] == "help":
			c.writeUsage(e.stdout, path)
			return nil
		}
		c.writeUsage(e.stderr, path)
		return fmt.Errorf("%s: unknown subcommand %q", path, args[0])
	}
	if wantsHelp(args) {
		// The command prints its usage (writeLeafUsage, through its flag
		// set) where it prints errors; asked for, help goes to stdout.
		err := c.run(ctx, []string{"-h"}, cliEnv{getenv: e.getenv, stdin: strings.NewReader(""), stdout: e.stdout, stderr: e.stdout})
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	return c.run(ctx, args, e)
}

func (c *cmd) subNames() string {
	names := make([]string, len(c.subs))
	for i, s := range c.subs {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// writeUsage prints a group's usage: its summary and its subcommands.
func (c *cmd) writeUsage(w io.Writer, path string) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\n%s\n\ncommands:\n", path, c.summary)
	c.writeSubs(w)
	if c.text != "" {
		fmt.Fprintf(w, "\n%s", c.text)
	}
	fmt.Fprintf(w, "\nRun '%s <command> -h' for a command's flags and arguments.\n", path)
}

func (c *cmd) writeSubs(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range c.subs {
		fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.summary)
	}
	tw.Flush()
}

// find returns the command named by path ("token issue"), or nil.
func (c *cmd) find(path string) *cmd {
	for _, name := range strings.Fields(path) {
		var next *cmd
		for _, s := range c.subs {
			if s.name == name {
				next = s
			}
		}
		if next == nil {
			return nil
		}
		c = next
	}
	return c
}

// newFlagSet returns the flag set of the command named by path ("token
// issue"): errors and usage go to out, and the usage comes from the
// command tree, so that every command's -h has the same shape.
func newFlagSet(path string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { writeLeafUsage(fs.Output(), path, fs) }
	return fs
}

// writeLeafUsage prints a command's usage line and summary (or its own
// usage text), its subcommands if any, and its flags.
func writeLeafUsage(w io.Writer, path string, fs *flag.FlagSet) {
	c := commands().find(path)
	if c == nil {
		c = &cmd{args: "[flags]"}
	}
	if c.usage != "" {
		fmt.Fprint(w, c.usage)
	} else {
		line := "vault " + path
		if c.args != "" {
			line += " " + c.args
		}
		fmt.Fprintf(w, "usage: %s\n\n%s\n", line, c.summary)
		if c.text != "" {
			fmt.Fprintf(w, "\n%s", c.text)
		}
	}
	if len(c.subs) > 0 {
		fmt.Fprint(w, "\ncommands:\n")
		c.writeSubs(w)
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nflags:\n")
		fs.PrintDefaults()
	}
}
