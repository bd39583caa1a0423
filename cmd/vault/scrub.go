package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

const scrubUsage = `usage: vault scrub [--data-dir DIR] [--database-url URL] [--bandwidth RATE] [--resume] [--json]
       vault scrub status [--database-url URL] [--damaged] [--all] [--json]

vault scrub runs one full scrub pass now: every chunk file and pack record
is read and re-hashed against its address and its index row, and chunk
files without a row are counted (docs/operations.md, "Scrub and damage").
A damaged chunk is recorded (audit entry chunk.damage), its bad file
quarantined, and agents are told it is missing, so that the next backup
that holds it uploads it again, which repairs it. Progress goes to stderr.
It exits non-zero when any chunk is damaged.

vault serve scrubs in the background (--scrub-bandwidth); vault scrub is
for a pass now, with the server stopped: both write the data directory's
journal, which one process at a time may do.

vault scrub status prints the scrub's position, its last full pass and the
damage records; --damaged lists the damaged chunks awaiting repair (--all:
repaired ones too) with the snapshots that reference them. It only reads
the database, and may run beside vault serve.
`

func runScrub(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "status" {
		return runScrubStatus(ctx, args[1:], getenv, stdout, stderr)
	}
	fs := newFlagSet("scrub", stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "the vault's data directory (VAULT_DATA_DIR)")
	var url string
	fs.StringVar(&url, "database-url", "", "PostgreSQL URL (default: VAULT_DATABASE_URL)")
	bw := fs.String("bandwidth", "0", "most bytes read per second, e.g. 100MiB; 0: no limit")
	resume := fs.Bool("resume", false, "continue the pass in progress (the background scrub's, or an interrupted one) instead of starting a new one")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if url == "" {
		url = getenv("VAULT_DATABASE_URL")
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("scrub: unexpected arguments %q", fs.Args())
	case *dir == "":
		return errors.New("scrub: --data-dir is required")
	case url == "":
		return errors.New("scrub: --database-url or VAULT_DATABASE_URL is required")
	}
	rate, err := config.ParseSize(*bw)
	if err != nil || rate < 0 {
		return fmt.Errorf("scrub: --bandwidth %q: want a size per second such as 100MiB, or 0", *bw)
	}
	if _, err := config.ReadVault(*dir); err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	unlock, err := lockDataDir(*dir)
	if err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	defer unlock()
	log := newLogger(stderr, "text", "warn")
	pool, err := openDB(ctx, url, 4, log)
	if err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	defer pool.Close()
	blobs, err := disk.Open(*dir, disk.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	o := store.Options{}
	// Read-only: the scrub reads pack records and never appends.
	packs, err := pack.OpenReadOnly(filepath.Join(*dir, "packs"))
	switch {
	case err == nil:
		o.Packs = packs
	case !errors.Is(err, iofs.ErrNotExist):
		return fmt.Errorf("scrub: %w", err)
	}
	jnl, err := journal.Open(filepath.Join(*dir, config.JournalDir))
	if err != nil {
		return fmt.Errorf("scrub: %w", err)
	}
	defer jnl.Close()
	o.Journal = jnl
	st := store.New(pool, blobs, clock.Real{}, log, nil, o)
	defer st.Close()

	start := time.Now()
	lastPrint := time.Time{}
	rep, err := st.Scrub(ctx, store.ScrubOptions{BytesPerSecond: rate, Fresh: !*resume, Progress: func(s store.ScrubStatus) {
		if time.Since(lastPrint) < time.Second {
			return
		}
		lastPrint = time.Now()
		fmt.Fprintf(stderr, "scrub: %s, %s verified, %d damaged (seq %d of %d)\n",
			plural(s.PassChunks, "chunk"), humanBytes(s.PassBytes), s.PassDamaged, s.CursorSeq, s.PassLastSeq)
	}})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return errors.New("scrub: interrupted; `vault scrub --resume` or the background scrub continues the pass")
		}
		return fmt.Errorf("scrub: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		s := rep.Status
		fmt.Fprintf(stdout, "scrub pass: %s, %s verified in %s; %d damaged, %s without a row\n",
			plural(s.LastPassChunks, "chunk"), humanBytes(s.LastPassBytes), time.Since(start).Round(time.Millisecond), s.LastPassDamaged, plural(rep.Unindexed, "chunk file"))
		for _, h := range rep.Damaged {
			fmt.Fprintf(stdout, "DAMAGED %s\n", h)
		}
		fmt.Fprintf(stdout, "damaged chunks awaiting a re-upload: %d\n", s.Damage.Open)
	}
	if !rep.Finished {
		return errors.New("scrub: another scrub moved the pass on before this one finished")
	}
	if rep.Status.Damage.Open > 0 {
		return fmt.Errorf("scrub: damaged, awaiting a re-upload: %s (vault scrub status --damaged lists them)", plural(rep.Status.Damage.Open, "chunk"))
	}
	return nil
}

func runScrubStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("scrub status", stderr)
	var url string
	fs.StringVar(&url, "database-url", "", "PostgreSQL URL (default: VAULT_DATABASE_URL)")
	damaged := fs.Bool("damaged", false, "list the damaged chunks and the snapshots that reference them")
	all := fs.Bool("all", false, "with --damaged: repaired chunks too")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if url == "" {
		url = getenv("VAULT_DATABASE_URL")
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("scrub status: unexpected arguments %q", fs.Args())
	case url == "":
		return errors.New("scrub status: --database-url or VAULT_DATABASE_URL is required")
	case *all && !*damaged:
		return errors.New("scrub status: --all goes with --damaged")
	}
	log := newLogger(stderr, "text", "warn")
	pool, err := openDB(ctx, url, 2, log)
	if err != nil {
		return fmt.Errorf("scrub status: %w", err)
	}
	defer pool.Close()
	st := store.New(pool, nil, clock.Real{}, log, nil, store.Options{})
	status, err := st.ScrubStatus(ctx)
	if err != nil {
		return fmt.Errorf("scrub status: %w", err)
	}
	var list []store.Damage
	if *damaged {
		for after := int64(0); ; {
			page, err := st.ListDamage(ctx, *all, after, 1000)
			if err != nil {
				return fmt.Errorf("scrub status: %w", err)
			}
			list = append(list, page...)
			if len(page) < 1000 {
				break
			}
			after = page[len(page)-1].ID
		}
	}
	if *asJSON {
		out := map[string]any{"scrub": status}
		if *damaged {
			out["damaged"] = list
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	printScrubStatus(stdout, status, time.Now())
	if *damaged {
		printDamage(stdout, list)
	}
	return nil
}

func printScrubStatus(w io.Writer, s store.ScrubStatus, now time.Time) {
	if s.InPass {
		fmt.Fprintf(w, "pass in progress: started %s, at seq %d of %d; %s, %s verified, %d damaged so far\n",
			fmtTime(*s.PassStartedAt), s.CursorSeq, s.PassLastSeq, plural(s.PassChunks, "chunk"), humanBytes(s.PassBytes), s.PassDamaged)
	} else {
		fmt.Fprintln(w, "pass in progress: none")
	}
	if s.LastPassFinishedAt != nil {
		fmt.Fprintf(w, "last full pass: finished %s (%s ago), took %s; %s, %s; %d damaged, %s without a row\n",
			fmtTime(*s.LastPassFinishedAt), now.Sub(*s.LastPassFinishedAt).Round(time.Second),
			s.LastPassFinishedAt.Sub(*s.LastPassStartedAt).Round(time.Second),
			plural(s.LastPassChunks, "chunk"), humanBytes(s.LastPassBytes), s.LastPassDamaged, plural(s.LastPassUnindexed, "chunk file"))
	} else {
		fmt.Fprintln(w, "last full pass: never")
	}
	fmt.Fprintf(w, "full passes: %d\n", s.Passes)
	fmt.Fprintf(w, "damaged chunks: %d awaiting a re-upload, %d repaired, %d found in all\n", s.Damage.Open, s.Damage.Repaired, s.Damage.Detected)
}

func printDamage(w io.Writer, list []store.Damage) {
	if len(list) == 0 {
		fmt.Fprintln(w, "\nno damaged chunks")
		return
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tHASH\tSIZE\tFOUND\tBY\tWHERE\tREPAIRED\tSNAPSHOTS\tDETAIL")
	for _, d := range list {
		repaired := "-"
		if d.RepairedAt != nil {
			repaired = fmtTime(*d.RepairedAt) + " by " + d.RepairedBy
		}
		snaps := "-"
		if len(d.Snapshots) > 0 {
			snaps = ""
			for i, s := range d.Snapshots {
				if i > 0 {
					snaps += ","
				}
				snaps += fmt.Sprintf("%d:%s/%s", s.ID, s.Source, s.Name)
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Hash, d.Size, fmtTime(d.DetectedAt), d.DetectedBy,
			d.Location, repaired, snaps, oneLine(d.Detail, 80))
	}
	tw.Flush()
}

// lockDataDir takes an exclusive lock on the data directory for the
// process's lifetime (or until unlock): the journal accepts one writer at
// a time, so vault serve and vault scrub exclude each other. The lock is
// on the directory itself, so that taking it creates nothing, even on a
// full filesystem; the kernel drops it when the process dies.
func lockDataDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("the data directory %s is in use by another vault process (vault serve, or vault scrub): "+
				"stop it first; a running vault serve scrubs in the background (see vault scrub status)", dir)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return func() { f.Close() }, nil
}

// runScrubLoop is vault serve's background scrub: it continues the pass in
// progress, or starts one once every interval, reading at most
// bytesPerSecond, until ctx is done.
func runScrubLoop(ctx context.Context, st *store.Store, bytesPerSecond int64, every time.Duration, log *slog.Logger) {
	log = log.With("component", "scrub")
	if bytesPerSecond <= 0 {
		log.Warn("background scrub disabled (--scrub-bandwidth 0): damage is found only by reads and by `vault scrub`")
		return
	}
	log.Info("background scrub", "bandwidth_bytes_per_second", bytesPerSecond, "interval", every)
	for {
		wait := time.Duration(0)
		status, err := st.ScrubStatus(ctx)
		if err == nil && !status.InPass && status.LastPassStartedAt != nil {
			wait = time.Until(status.LastPassStartedAt.Add(every))
		}
		if err != nil {
			wait = time.Minute
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if err != nil {
				continue
			}
		}
		if _, err := st.Scrub(ctx, store.ScrubOptions{BytesPerSecond: bytesPerSecond}); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("scrub failed; retrying in a minute", "err", err)
			t := time.NewTimer(time.Minute)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}
