package main

// Shared plumbing of the auditor commands (retention, snapshots, holds):
// they talk to a running vault over HTTP with a token, and print aligned
// tables or, with --json, JSON.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wormvault/wormvault/internal/client"
)

// apiFlags are the flags every auditor command has.
type apiFlags struct {
	url  string
	json bool
}

func addAPIFlags(fs *flag.FlagSet, getenv func(string) string) *apiFlags {
	f := &apiFlags{}
	fs.StringVar(&f.url, "url", getenv("VAULT_URL"), "vault URL, e.g. https://vault.example:8443 (VAULT_URL)")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of a table")
	return f
}

// client returns an API client. The token comes only from the environment
// (VAULT_TOKEN, or a file named by VAULT_TOKEN_FILE), never from a flag
// that other users could read in the process list.
func (f *apiFlags) client(getenv func(string) string) (*client.Client, error) {
	if f.url == "" {
		return nil, errors.New("the vault URL is required: set VAULT_URL or --url")
	}
	tok := strings.TrimSpace(getenv("VAULT_TOKEN"))
	if tok == "" {
		return nil, errors.New("a token is required: set VAULT_TOKEN (or VAULT_TOKEN_FILE) to an auditor token from 'vault token issue --role auditor'")
	}
	return client.New(f.url, tok, nil)
}

// parseArgs parses flags that may come before or after positional
// arguments ("show 12 --json" as well as "show --json 12").
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseDate reads a command-line time: YYYY-MM-DD (midnight UTC) or RFC
// 3339.
func parseDate(flagName, s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--%s %q: want YYYY-MM-DD or an RFC 3339 time", flagName, s)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// humanBytes formats n in IEC units with one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// oneLine makes free text safe for one table cell.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}

func writeJSONValue(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// jsonArray streams a JSON array, one element at a time, so that listing
// every chunk never holds the list in memory.
type jsonArray struct {
	w io.Writer
	n int
}

func (a *jsonArray) add(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	sep := ",\n  "
	if a.n == 0 {
		sep = "\n  "
	}
	a.n++
	_, err = fmt.Fprintf(a.w, "%s%s", sep, b)
	return err
}

func (a *jsonArray) close() error {
	end := "]"
	if a.n > 0 {
		end = "\n]"
	}
	_, err := io.WriteString(a.w, end)
	return err
}

// pager fetches pages of a list until limit rows (0: all) have been
// produced. fetch gets the page size and the cursor, and returns the
// number of rows it handled and the next cursor.
func pager(limit int, fetch func(size int, cursor string) (n int, next string, err error)) (more bool, err error) {
	cursor, done := "", 0
	for {
		size := 1000
		if limit > 0 {
			size = min(size, limit-done)
		}
		n, next, err := fetch(size, cursor)
		if err != nil {
			return false, err
		}
		done += n
		if next == "" {
			return false, nil
		}
		if limit > 0 && done >= limit {
			return true, nil
		}
		cursor = next
	}
}

// cliErr prefixes an error with the command, and explains the common API
// refusals.
func cliErr(cmd string, err error) error {
	switch {
	case client.IsCode(err, "unauthenticated"):
		return fmt.Errorf("%s: %w (is VAULT_TOKEN a valid, unexpired token for this vault?)", cmd, err)
	case client.IsCode(err, "forbidden"):
		return fmt.Errorf("%s: %w (this needs an auditor or admin token)", cmd, err)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

// idCommand parses the flags of a "<group> show ID" command and returns a
// client, the flags and the id (what names the kind of id in errors).
func idCommand(cmd, what string, args []string, getenv func(string) string, stderr io.Writer) (*client.Client, *apiFlags, int64, error) {
	fs := newFlagSet(cmd, stderr)
	af := addAPIFlags(fs, getenv)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, nil, 0, err
	}
	if len(pos) != 1 {
		return nil, nil, 0, fmt.Errorf("%s: want exactly one %s id", cmd, what)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return nil, nil, 0, fmt.Errorf("%s: %q is not a %s id", cmd, pos[0], what)
	}
	c, err := af.client(getenv)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%s: %w", cmd, err)
	}
	return c, af, id, nil
}

// parseNoArgs parses the flags of a command that takes no positional
// arguments.
func parseNoArgs(cmd string, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%s: unexpected argument %q", cmd, pos[0])
	}
	return nil
}
