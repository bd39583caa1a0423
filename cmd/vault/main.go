// Command vault is the wormvault server and its tools: init, serve, migrate,
// token. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wormvault/wormvault/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "vault: %v\n", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: vault <command> [flags]

commands:
  init     create a vault data directory: id, token-signing key, identity file
  serve    run the vault server (as the runtime role: refuses to start while migrations are pending)
  migrate  apply database migrations as the schema owner (--owner-url) and exit
  reindex  rebuild the database index from the data directory (journal, files, packs), as the schema owner
  scrub    re-hash every stored chunk now (server stopped); status: the scrub's position and damaged chunks
  token    issue or revoke access tokens
  admin    keygen; deletions: request, approve, cancel, list, show; admins; execute-due
  hash     print the BLAKE3 address of files (the name to PUT a chunk under)
  audit    verify the signed audit log (auditor, over HTTP): verify, prove-retained
  retention retention summary and what expires before a date (auditor, over HTTP)
  snapshots list and show snapshots (over HTTP)
  holds    list and show legal holds (over HTTP)
  restic   restic repositories and their retention (over HTTP; restic itself uses /restic/REPO/)
  bench    measure ingest against the machine's limits (disk, BLAKE3, PostgreSQL)
  push     back up files and directories, or standard input (agent token)
  restore  restore a snapshot into a directory, or one file to stdout (reader token)
  health   probe a running vault's /readyz and exit 0 only if it is ready (container healthchecks)
  version  print the version (also --version)

Run 'vault <command> -h' for a command's flags.
`

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	getenv = config.WithFiles(getenv)
	switch cmd {
	case "init":
		return runInit(ctx, rest, getenv, stdout, stderr)
	case "serve":
		return runServe(ctx, rest, getenv, stderr)
	case "migrate":
		return runMigrate(ctx, rest, getenv, stderr)
	case "reindex":
		return runReindex(ctx, rest, getenv, stdout, stderr)
	case "scrub":
		return runScrub(ctx, rest, getenv, stdout, stderr)
	case "token":
		return runToken(ctx, rest, getenv, stdout, stderr)
	case "hash":
		return runHash(rest, stdin, stdout)
	case "admin":
		return runAdmin(ctx, rest, getenv, stdin, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, getenv, stdout, stderr)
	case "retention":
		return runRetention(ctx, rest, getenv, stdout, stderr)
	case "snapshots":
		return runSnapshots(ctx, rest, getenv, stdout, stderr)
	case "holds":
		return runHolds(ctx, rest, getenv, stdout, stderr)
	case "restic":
		return runRestic(ctx, rest, getenv, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "push":
		return runPush(ctx, rest, getenv, stdin, stdout, stderr)
	case "restore":
		return runRestore(ctx, rest, getenv, stdout, stderr)
	case "health":
		return runHealth(ctx, rest, getenv, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "vault", version())
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
