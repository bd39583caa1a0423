// Command vault is the wormvault server and its tools; cli.go holds the
// command tree ("vault -h" lists it). See README.md.
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
	// Help asked for is not a failure; dispatch already returns nil for
	// it, and ErrHelp is its last line of defence.
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "vault: %v\n", err)
		os.Exit(1)
	}
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-version" || args[0] == "--version") {
		args = []string{"version"}
	}
	e := cliEnv{getenv: config.WithFiles(getenv), stdin: stdin, stdout: stdout, stderr: stderr}
	return commands().dispatch(ctx, "vault", args, e)
}
