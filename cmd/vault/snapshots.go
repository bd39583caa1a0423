package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/wormvault/wormvault/internal/client"
)

func runSnapshotsList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("snapshots list", stderr)
	af := addAPIFlags(fs, getenv)
	source := fs.String("source", "", "only this source")
	var tags []string
	fs.Func("tag", "only snapshots with this tag (repeatable: all must match)", func(v string) error {
		tags = append(tags, v)
		return nil
	})
	fromText := fs.String("from", "", "taken at or after this date (YYYY-MM-DD or RFC 3339)")
	beforeText := fs.String("before", "", "taken before this date (YYYY-MM-DD or RFC 3339)")
	limit := fs.Int("limit", 100, "at most this many snapshots (0: all)")
	err := parseNoArgs("snapshots list", fs, args)
	if err != nil {
		return err
	}
	if *limit < 0 {
		return errors.New("snapshots list: --limit must be 0 (all) or more")
	}
	f := client.SnapshotFilter{Source: *source, Tags: tags}
	if *fromText != "" {
		if f.TakenFrom, err = parseDate("from", *fromText); err != nil {
			return fmt.Errorf("snapshots list: %w", err)
		}
	}
	if *beforeText != "" {
		if f.TakenBefore, err = parseDate("before", *beforeText); err != nil {
			return fmt.Errorf("snapshots list: %w", err)
		}
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("snapshots list: %w", err)
	}

	var arr *jsonArray
	tw := newTable(stdout)
	if af.json {
		io.WriteString(stdout, "[")
		arr = &jsonArray{w: stdout}
	} else {
		fmt.Fprintln(tw, "ID\tSOURCE\tNAME\tTAKEN\tRETAIN UNTIL\tCHUNKS\tSIZE\tHELD\tTAGS")
	}
	rows := 0
	more, err := pager(*limit, func(size int, cursor string) (int, string, error) {
		p, err := c.Snapshots(ctx, f, client.Page{Limit: size, Cursor: cursor})
		for _, s := range p.Snapshots {
			if arr != nil {
				if err := arr.add(s); err != nil {
					return 0, "", err
				}
				continue
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Source, s.Name, fmtTime(s.TakenAt),
				fmtTime(s.RetainUntil), s.ChunkCount, humanBytes(s.TotalBytes), yesNo(s.Held), orDash(strings.Join(s.Tags, ",")))
		}
		rows += len(p.Snapshots)
		tw.Flush()
		return len(p.Snapshots), p.Next, err
	})
	if err != nil {
		return cliErr("snapshots list", err)
	}
	if arr != nil {
		arr.close()
		io.WriteString(stdout, "\n")
	} else if rows == 0 {
		fmt.Fprintln(stdout, "(no snapshots)")
	}
	noteMore(stderr, more, "snapshots", *limit)
	return nil
}

func runSnapshotsShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, af, id, err := idCommand("snapshots show", "snapshot", args, getenv, stderr)
	if err != nil {
		return err
	}
	s, err := c.Snapshot(ctx, id)
	if err != nil {
		return cliErr("snapshots show", err)
	}
	if af.json {
		return writeJSONValue(stdout, s)
	}
	tw := newTable(stdout)
	for _, kv := range [][2]string{
		{"id", strconv.FormatInt(s.ID, 10)},
		{"source", s.Source},
		{"name", s.Name},
		{"taken at", fmtTime(s.TakenAt)},
		{"committed at", fmtTime(s.CommittedAt)},
		{"committed by", s.CommittedBy},
		{"retain until", fmtTime(s.RetainUntil)},
		{"tags", orDash(strings.Join(s.Tags, ", "))},
		{"manifest root", s.ManifestRoot.String()},
		{"manifests", strconv.Itoa(s.ManifestCount)},
		{"chunks", strconv.FormatInt(s.ChunkCount, 10)},
		{"size", fmt.Sprintf("%s (%s)", plural(s.TotalBytes, "byte"), humanBytes(s.TotalBytes))},
		{"unique chunks", strconv.FormatInt(s.UniqueChunks, 10)},
		{"unique size", fmt.Sprintf("%s (%s)", plural(s.UniqueBytes, "byte"), humanBytes(s.UniqueBytes))},
		{"held", yesNo(s.Held)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	for _, h := range s.Holds {
		fmt.Fprintf(tw, "hold:\t#%d %s (via %s): %s\n", h.ID, oneLine(h.Name, 40), h.Via, oneLine(h.Reason, 80))
	}
	return tw.Flush()
}
