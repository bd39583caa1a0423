package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/wormvault/wormvault/internal/client"
)

func runResticRepos(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restic repos", stderr)
	af := addAPIFlags(fs, getenv)
	if err := parseNoArgs("restic repos", fs, args); err != nil {
		return err
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("restic repos: %w", err)
	}
	repos, err := c.ResticRepositories(ctx)
	if err != nil {
		return cliErr("restic repos", err)
	}
	if af.json {
		return writeJSONValue(stdout, repos)
	}
	if len(repos) == 0 {
		fmt.Fprintln(stdout, "(no restic repositories)")
		return nil
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "REPOSITORY\tFILES\tSIZE\tLAST SNAPSHOT\tMIN RETENTION\tEFFECTIVE\tCREATED BY")
	for _, r := range repos {
		last := "-"
		if r.LastSnapshotAt != nil {
			last = fmtTime(*r.LastSnapshotAt)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Files, humanBytes(r.Bytes), last,
			r.MinRetention, r.EffectiveRetention, r.CreatedBy)
	}
	return tw.Flush()
}

func runResticRetention(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restic retention", stderr)
	af := addAPIFlags(fs, getenv)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("restic retention: want REPO DURATION, e.g. 'vault restic retention db01 400d'")
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("restic retention: %w", err)
	}
	r, err := c.SetResticRetention(ctx, pos[0], pos[1])
	if err != nil {
		if client.IsCode(err, "forbidden") {
			return fmt.Errorf("restic retention: %w (this needs an admin token)", err)
		}
		return cliErr("restic retention", err)
	}
	if af.json {
		return writeJSONValue(stdout, r)
	}
	tw := newTable(stdout)
	for _, kv := range [][2]string{
		{"repository", r.Name},
		{"min retention", r.MinRetention},
		{"effective retention", r.EffectiveRetention},
		{"chunks extended", strconv.FormatInt(r.ExtendedChunks, 10)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}
