package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/wormvault/wormvault/internal/client"
)

// holdTarget describes what a hold covers, in a few words.
func holdTarget(h client.Hold) string {
	switch h.Kind {
	case "source":
		return "source " + h.Source
	case "snapshots":
		return plural(h.TargetCount, "snapshot")
	}
	return plural(h.TargetCount, "chunk")
}

func runHoldsList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("holds list", stderr)
	af := addAPIFlags(fs, getenv)
	limit := fs.Int("limit", 100, "at most this many holds (0: all)")
	if err := parseNoArgs("holds list", fs, args); err != nil {
		return err
	}
	if *limit < 0 {
		return errors.New("holds list: --limit must be 0 (all) or more")
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("holds list: %w", err)
	}
	var arr *jsonArray
	tw := newTable(stdout)
	if af.json {
		io.WriteString(stdout, "[")
		arr = &jsonArray{w: stdout}
	} else {
		fmt.Fprintln(tw, "ID\tNAME\tHOLDS\tPLACED BY\tPLACED AT\tACTIVE\tREASON")
	}
	rows := 0
	more, err := pager(*limit, func(size int, cursor string) (int, string, error) {
		p, err := c.Holds(ctx, client.Page{Limit: size, Cursor: cursor})
		for _, h := range p.Holds {
			if arr != nil {
				if err := arr.add(h); err != nil {
					return 0, "", err
				}
				continue
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, oneLine(h.Name, 40), holdTarget(h), h.PlacedBy,
				fmtTime(h.PlacedAt), yesNo(h.Active), oneLine(h.Reason, 60))
		}
		rows += len(p.Holds)
		tw.Flush()
		return len(p.Holds), p.Next, err
	})
	if err != nil {
		return cliErr("holds list", err)
	}
	if arr != nil {
		arr.close()
		io.WriteString(stdout, "\n")
	} else if rows == 0 {
		fmt.Fprintln(stdout, "(no holds)")
	}
	noteMore(stderr, more, "holds", *limit)
	return nil
}

func runHoldsShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, af, id, err := idCommand("holds show", "hold", args, getenv, stderr)
	if err != nil {
		return err
	}
	h, err := c.Hold(ctx, id)
	if err != nil {
		return cliErr("holds show", err)
	}
	if af.json {
		return writeJSONValue(stdout, h)
	}
	tw := newTable(stdout)
	released := "-"
	if h.ReleasedAt != nil {
		released = fmtTime(*h.ReleasedAt) + " by " + h.ReleasedBy
	}
	for _, kv := range [][2]string{
		{"id", strconv.FormatInt(h.ID, 10)},
		{"name", oneLine(h.Name, 200)},
		{"reason", oneLine(h.Reason, 2000)},
		{"holds", holdTarget(h.Hold)},
		{"placed by", h.PlacedBy},
		{"placed at", fmtTime(h.PlacedAt)},
		{"active", yesNo(h.Active)},
		{"released", released},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	for _, s := range h.Snapshots {
		fmt.Fprintf(tw, "snapshot:\t%d\n", s)
	}
	for _, ch := range h.Chunks {
		fmt.Fprintf(tw, "chunk:\t%s\n", ch)
	}
	return tw.Flush()
}

// holdsText says how holds come and go.
const holdsText = `Holds are placed by admins (POST /v1/holds) and released only through an
approved deletion request (vault admin deletions request --hold ID).
`
