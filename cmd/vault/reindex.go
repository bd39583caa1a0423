package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

const reindexUsage = `usage: vault reindex --data-dir DIR [--database-url URL] [--dry-run] [--force] [--min-retention D] [--json]

Rebuild the database index from the data directory: the journal of every
audit entry, the chunk files and the packs (docs/operations.md, "Rebuilding
the index"). Run it when vault serve refuses to start because the index
disagrees with the journal, or to restore the index into a new, empty
database. Stop every vault serving the data directory first.

The URL must be the database owner's (the role that runs the migrations):
the rebuild disables the tables' triggers while it rewrites them. It
defaults to VAULT_OWNER_DATABASE_URL, then VAULT_DATABASE_URL. An empty
database is migrated first.

Content is only read, never changed or removed. Journaled chunks whose
content is missing or damaged are reported as data loss and keep their
rows; content no entry names is indexed as reconcile does (uploader
"reconcile", the minimum retention).
`

func runReindex(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("reindex", stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "the vault's data directory (VAULT_DATA_DIR)")
	// No default shown: a URL may hold a password.
	var url string
	fs.StringVar(&url, "database-url", "", "the database owner's PostgreSQL URL (default: VAULT_OWNER_DATABASE_URL, else VAULT_DATABASE_URL)")
	dryRun := fs.Bool("dry-run", false, "rebuild in a transaction that is rolled back: report what would change, change nothing")
	force := fs.Bool("force", false, "rebuild even while other sessions use the database, or when its audit log has nothing in common with the journal")
	minRet := getenv("VAULT_MIN_RETENTION")
	if minRet == "" {
		minRet = "30d"
	}
	fs.StringVar(&minRet, "min-retention", minRet, "retention of content indexed without a journal entry: the server's --min-retention (VAULT_MIN_RETENTION)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, name := range []string{"VAULT_OWNER_DATABASE_URL", "VAULT_DATABASE_URL"} {
		if url == "" {
			url = getenv(name)
		}
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("reindex: unexpected arguments %q", fs.Args())
	case *dir == "":
		return errors.New("reindex: --data-dir is required")
	case url == "":
		return errors.New("reindex: --database-url, VAULT_OWNER_DATABASE_URL or VAULT_DATABASE_URL is required (the database owner's)")
	}
	ret, err := config.ParseDuration(minRet)
	if err != nil || ret <= 0 {
		return fmt.Errorf("reindex: --min-retention %q: want a positive duration such as 30d", minRet)
	}
	v, err := config.ReadVault(*dir)
	if err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	jdir := filepath.Join(*dir, config.JournalDir)
	if _, err := os.Stat(jdir); errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("reindex: %s has no journal (a vault from before the journal): start vault serve once on its "+
			"database, which copies the audit log into the journal; the index can be rebuilt from it afterwards", *dir)
	}
	log := newLogger(stderr, "text", "info")
	pool, err := openDB(ctx, url, 2, log)
	if err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	defer pool.Close()
	blobs, err := disk.Open(*dir, disk.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	packs, err := pack.OpenReadOnly(filepath.Join(*dir, "packs"))
	if errors.Is(err, iofs.ErrNotExist) {
		packs, err = nil, nil // a vault that never packed
	}
	if err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	jnl, err := journal.Open(jdir)
	if err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	defer jnl.Close()
	o := store.Options{MinRetention: ret, VaultID: v.ID, Journal: jnl}
	if packs != nil {
		o.Packs = packs
	}
	st := store.New(pool, blobs, clock.Real{}, log, nil, o)
	defer st.Close()
	rep, err := st.Reindex(ctx, store.ReindexOptions{DryRun: *dryRun, Force: *force, Actor: cliActor()})
	if err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printReindexReport(stdout, *dir, rep)
	return nil
}

func printReindexReport(w io.Writer, dir string, rep store.ReindexReport) {
	what := "rebuilt the index"
	if rep.DryRun {
		what = "dry run: would rebuild the index"
	}
	fmt.Fprintf(w, "%s of %s from its journal: %s (the database had %d)\n\n", what, dir, plural(rep.JournalEntries, "entry"), rep.DatabaseEntries)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tBEFORE\tAFTER\tADDED\tREMOVED\tCHANGED\t")
	for _, t := range rep.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", t.Table, t.Before, t.After, t.Added, t.Removed, t.Changed)
	}
	tw.Flush()
	for _, t := range rep.Tables {
		if len(t.Examples) > 0 && t.Before > 0 {
			fmt.Fprintf(w, "  %s: %s\n", t.Table, strings.Join(t.Examples, " "))
		}
	}
	fmt.Fprintf(w, "\ncontent: %s verified, %d lost, %d adopted, %d removed but still on disk (left for the executor), "+
		"%d unindexed and damaged (left for reconcile); %s indexed", plural(rep.Verified, "chunk"), rep.DataLoss, rep.Adopted,
		rep.Tombstoned, rep.UnindexedCorrupt, plural(rep.PacksIndexed, "pack"))
	if len(rep.PacksLeft) > 0 {
		fmt.Fprintf(w, ", packs %s left for reconcile (torn tails)", idList(rep.PacksLeft))
	}
	fmt.Fprintln(w)
	if rep.CheckpointsKept > 0 {
		fmt.Fprintf(w, "signed checkpoints kept: %d\n", rep.CheckpointsKept)
	}
	list := func(title string, n int, items []string) {
		if n == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s (%d):\n", title, n)
		for _, s := range items {
			fmt.Fprintf(w, "  %s\n", s)
		}
		if n > len(items) {
			fmt.Fprintf(w, "  ... and %d more (see the log)\n", n-len(items))
		}
	}
	var lost []string
	for _, p := range rep.DataLossList {
		lost = append(lost, p.Hash+"  "+p.Problem)
	}
	list("DATA LOSS: journaled chunks without good content (their rows are kept; a backup that has them uploads them again)",
		int(rep.DataLoss), lost)
	list("adopted: content no journal entry names, indexed with uploader reconcile and the minimum retention",
		int(rep.Adopted), rep.AdoptedList)
	list("DIVERGENCES: what the index held that the journal does not explain (replaced by the journal's)",
		rep.DivergenceCount, rep.Divergences)
	list("notes: what the journal cannot rebuild", rep.NoteCount, rep.Notes)
	switch {
	case rep.DryRun:
		fmt.Fprintln(w, "\ndry run: nothing was changed")
	case rep.Changed():
		fmt.Fprintln(w, "\nthe index is rebuilt; vault serve signs a new checkpoint at its next start")
	default:
		fmt.Fprintln(w, "\nthe index already matched the data directory")
	}
}
