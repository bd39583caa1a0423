package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/wormvault/wormvault/internal/client"
)

func runRetentionSummary(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("retention summary", stderr)
	af := addAPIFlags(fs, getenv)
	if err := parseNoArgs("retention summary", fs, args); err != nil {
		return err
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("retention summary: %w", err)
	}
	s, err := c.RetentionSummary(ctx)
	if err != nil {
		return cliErr("retention summary", err)
	}
	if af.json {
		return writeJSONValue(stdout, s)
	}
	fmt.Fprintf(stdout, "Retention at %s\n\n", fmtTime(s.At))
	tw := newTable(stdout)
	fmt.Fprintln(tw, "CHUNKS\tCOUNT\tBYTES\tSIZE")
	for _, row := range []struct {
		name string
		c    client.Count
	}{{"stored", s.Total}, {"expired", s.Expired}, {"held", s.Held}, {"pending deletion", s.PendingDeletion}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", row.name, row.c.Chunks, row.c.Bytes, humanBytes(row.c.Bytes))
	}
	tw.Flush()

	fmt.Fprintln(stdout)
	tw = newTable(stdout)
	fmt.Fprintln(tw, "RETAINED UNTIL\tCHUNKS\tBYTES\tSIZE\tEXPIRED")
	current := s.At.UTC().Format("2006-01")
	for _, m := range s.Months {
		expired := "no"
		switch {
		case m.Month < current:
			expired = "yes"
		case m.Month == current:
			expired = "partly"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", m.Month, m.Chunks, m.Bytes, humanBytes(m.Bytes), expired)
	}
	if len(s.Months) == 0 {
		fmt.Fprintln(tw, "(no chunks)\t\t\t\t")
	}
	tw.Flush()

	fmt.Fprintln(stdout)
	tw = newTable(stdout)
	fmt.Fprintln(tw, "SNAPSHOTS\tEXPIRED\tHELD\tACTIVE HOLDS")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\n", s.Snapshots.Total, s.Snapshots.Expired, s.Snapshots.Held, s.ActiveHolds)
	return tw.Flush()
}

func runRetentionExpiring(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("retention expiring", stderr)
	af := addAPIFlags(fs, getenv)
	beforeText := fs.String("before", "", "list what is retained until before this date (YYYY-MM-DD or RFC 3339); required")
	what := fs.String("show", "both", "snapshots, chunks or both")
	limit := fs.Int("limit", 100, "at most this many rows per list (0: all)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return fmt.Errorf("retention expiring: unexpected argument %q", pos[0])
	case *beforeText == "":
		return errors.New("retention expiring: --before DATE is required")
	case *what != "both" && *what != "snapshots" && *what != "chunks":
		return fmt.Errorf("retention expiring: --show %q: want snapshots, chunks or both", *what)
	case *limit < 0:
		return errors.New("retention expiring: --limit must be 0 (all) or more")
	}
	before, err := parseDate("before", *beforeText)
	if err != nil {
		return fmt.Errorf("retention expiring: %w", err)
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("retention expiring: %w", err)
	}
	showSnaps, showChunks := *what != "chunks", *what != "snapshots"

	if af.json {
		io.WriteString(stdout, "{")
		sep := ""
		if showSnaps {
			io.WriteString(stdout, `"snapshots": [`)
			arr := &jsonArray{w: stdout}
			more, err := pager(*limit, func(size int, cursor string) (int, string, error) {
				p, err := c.ExpiringSnapshots(ctx, before, client.Page{Limit: size, Cursor: cursor})
				for _, s := range p.Snapshots {
					if err := arr.add(s); err != nil {
						return 0, "", err
					}
				}
				return len(p.Snapshots), p.Next, err
			})
			if err != nil {
				return cliErr("retention expiring", err)
			}
			arr.close()
			noteMore(stderr, more, "snapshots", *limit)
			sep = ",\n"
		}
		if showChunks {
			fmt.Fprintf(stdout, `%s"chunks": [`, sep)
			arr := &jsonArray{w: stdout}
			more, err := pager(*limit, func(size int, cursor string) (int, string, error) {
				p, err := c.ExpiringChunks(ctx, before, client.Page{Limit: size, Cursor: cursor})
				for _, ch := range p.Chunks {
					if err := arr.add(ch); err != nil {
						return 0, "", err
					}
				}
				return len(p.Chunks), p.Next, err
			})
			if err != nil {
				return cliErr("retention expiring", err)
			}
			arr.close()
			noteMore(stderr, more, "chunks", *limit)
		}
		_, err := io.WriteString(stdout, "}\n")
		return err
	}

	if showSnaps {
		fmt.Fprintf(stdout, "Snapshots retained until before %s\n", fmtTime(before))
		tw := newTable(stdout)
		fmt.Fprintln(tw, "ID\tSOURCE\tNAME\tTAKEN\tRETAIN UNTIL\tCHUNKS\tSIZE\tHELD")
		rows := 0
		more, err := pager(*limit, func(size int, cursor string) (int, string, error) {
			p, err := c.ExpiringSnapshots(ctx, before, client.Page{Limit: size, Cursor: cursor})
			for _, s := range p.Snapshots {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.Source, s.Name, fmtTime(s.TakenAt),
					fmtTime(s.RetainUntil), s.ChunkCount, humanBytes(s.TotalBytes), yesNo(s.Held))
			}
			rows += len(p.Snapshots)
			tw.Flush()
			return len(p.Snapshots), p.Next, err
		})
		if err != nil {
			return cliErr("retention expiring", err)
		}
		if rows == 0 {
			fmt.Fprintln(stdout, "(none)")
		}
		noteMore(stderr, more, "snapshots", *limit)
	}
	if showChunks {
		if showSnaps {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "Chunks retained until before %s\n", fmtTime(before))
		tw := newTable(stdout)
		fmt.Fprintln(tw, "HASH\tSIZE\tSTORED\tRETAIN UNTIL\tUPLOADER\tHELD")
		rows := 0
		more, err := pager(*limit, func(size int, cursor string) (int, string, error) {
			p, err := c.ExpiringChunks(ctx, before, client.Page{Limit: size, Cursor: cursor})
			for _, ch := range p.Chunks {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", ch.Hash, ch.Size, fmtTime(ch.StoredAt),
					fmtTime(ch.RetainUntil), ch.UploadedBy, yesNo(ch.Held))
			}
			rows += len(p.Chunks)
			tw.Flush()
			return len(p.Chunks), p.Next, err
		})
		if err != nil {
			return cliErr("retention expiring", err)
		}
		if rows == 0 {
			fmt.Fprintln(stdout, "(none)")
		}
		noteMore(stderr, more, "chunks", *limit)
	}
	return nil
}

// noteMore tells (on stderr, so that stdout stays a clean table or JSON)
// that a list was cut at --limit.
func noteMore(stderr io.Writer, more bool, what string, limit int) {
	if more {
		fmt.Fprintf(stderr, "more %s than --limit %d; --limit 0 lists them all\n", what, limit)
	}
}
