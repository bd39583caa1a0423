package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/wormvault/wormvault/internal/agent"
	"github.com/wormvault/wormvault/internal/client"
)

const restoreUsage = `usage: vault restore [flags] SNAPSHOT TARGET_DIR
       vault restore --stdout [--file PATH] SNAPSHOT

Restores a snapshot made by 'vault push' into TARGET_DIR (created if
absent; it must be empty), with modes and modification times, or writes one
file of it to standard output. SNAPSHOT is a snapshot id (see 'vault
snapshots list --source NAME') or "latest" (the newest, of --source if
given). Every chunk is verified against its BLAKE3 hash before any of its
bytes is written; a file whose content fails is not written at all, and is
named in the error.

Needs a reader token: --token-file, or VAULT_TOKEN (or VAULT_TOKEN_FILE).
The vault is --url or VAULT_URL.
`

func runRestore(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restore", stderr)
	af := addAgentFlags(fs, getenv, "reader")
	toStdout := fs.Bool("stdout", false, "write the snapshot's only file (or --file) to standard output")
	file := fs.String("file", "", "with --stdout: the path of the file in the snapshot, e.g. db.sql")
	source := fs.String("source", "", `with SNAPSHOT "latest": the newest snapshot of this source`)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *toStdout && len(pos) != 1:
		return errors.New("restore: --stdout wants exactly one argument, SNAPSHOT")
	case !*toStdout && len(pos) != 2:
		fs.Usage()
		return errors.New("restore: want SNAPSHOT TARGET_DIR")
	case !*toStdout && *file != "":
		return errors.New("restore: --file is for --stdout")
	}
	c, err := af.client(getenv, "reader")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	snap, err := findSnapshot(ctx, c, pos[0], *source)
	if err != nil {
		return agentErr("restore", "reader", err)
	}
	o := agent.RestoreOptions{Workers: af.workers, Progress: &agent.Progress{}}
	tree, err := agent.ReadTree(ctx, c, snap.ManifestRoot, o)
	if err != nil {
		return agentErr("restore", "reader", fmt.Errorf("snapshot %d: %w", snap.ID, err))
	}

	if *toStdout {
		e, err := pickFile(tree, *file)
		if err != nil {
			return fmt.Errorf("restore: snapshot %d: %w", snap.ID, err)
		}
		bw := bufio.NewWriterSize(stdout, 1<<20)
		if err := agent.WriteFile(ctx, c, e, bw, o); err != nil {
			bw.Flush() // the verified prefix
			return agentErr("restore", "reader", err)
		}
		return bw.Flush()
	}

	target := pos[1]
	var total int64 = -1
	if isTerminal(stderr) {
		total = tree.Index.Bytes
	}
	rep := startReporter(stderr, "restore", o.Progress, total, af.progress)
	o.Retry.OnRetry = func(err error, attempt int, wait time.Duration) {
		rep.println(fmt.Sprintf("vault restore: retrying in %s (attempt %d): %v", wait.Round(time.Millisecond), attempt, err))
	}
	res, err := agent.Restore(ctx, c, tree, target, o)
	rep.finish()
	if err != nil {
		return agentErr("restore", "reader", err)
	}
	cn := res.Counts
	fmt.Fprintf(stdout, "restored snapshot %d (source %s, name %s) into %s: %s, %s, %s, %s in %s (%.1f MB/s)\n",
		snap.ID, snap.Source, snap.Name, target, plural(cn.Files, "file"), plural(cn.Dirs, "directory"), plural(cn.Symlinks, "symbolic link"), humanBytes(cn.Bytes),
		res.Duration.Round(time.Millisecond), mbPerSec(cn.Bytes, res.Duration))
	return nil
}

// findSnapshot resolves SNAPSHOT: an id, or "latest".
func findSnapshot(ctx context.Context, c *client.Client, arg, source string) (client.Snapshot, error) {
	if arg == "latest" {
		p, err := c.Snapshots(ctx, client.SnapshotFilter{Source: source}, client.Page{Limit: 1})
		if err != nil {
			return client.Snapshot{}, err
		}
		if len(p.Snapshots) == 0 {
			if source != "" {
				return client.Snapshot{}, fmt.Errorf("source %q has no snapshots", source)
			}
			return client.Snapshot{}, errors.New("the vault has no snapshots")
		}
		return p.Snapshots[0], nil
	}
	if source != "" {
		return client.Snapshot{}, errors.New(`--source is for SNAPSHOT "latest"`)
	}
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id <= 0 {
		return client.Snapshot{}, fmt.Errorf("%q is not a snapshot id (or \"latest\")", arg)
	}
	s, err := c.Snapshot(ctx, id)
	return s.Snapshot, err
}

// pickFile returns the file to write to standard output: the one named,
// or the snapshot's only entry.
func pickFile(t *agent.Tree, name string) (agent.Entry, error) {
	if name != "" {
		for _, e := range t.Entries {
			if e.Path == name {
				if e.Type != agent.TypeFile {
					return agent.Entry{}, fmt.Errorf("%s is a %s, not a file", name, e.Type)
				}
				return e, nil
			}
		}
		return agent.Entry{}, fmt.Errorf("no file %q in the snapshot", name)
	}
	if len(t.Entries) != 1 || t.Entries[0].Type != agent.TypeFile {
		return agent.Entry{}, fmt.Errorf("--stdout without --file needs a single-file snapshot (this one has %s); name one with --file", plural(len(t.Entries), "entry"))
	}
	return t.Entries[0], nil
}
