package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/replica"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

const replicateUsage = `usage: vault replicate [flags] --from URL --token-file FILE
       vault replicate status [flags]
       vault replicate acknowledge [flags] --source NAME --reason TEXT

vault replicate runs one replication pass: this vault (--data-dir,
--database-url) pulls from the primary vault at --from with a replicator
token (vault token issue --role replicator on the primary). It verifies the
primary's signed audit checkpoint against the last one kept, copies every
new snapshot and each chunk it reaches (verified by BLAKE3 on arrival,
stored through the ordinary upload path), raises retention to the
primary's, mirrors the primary's holds as this vault's own, reports what
disappeared from the primary, and records the pass in this vault's audit
log. Nothing the primary deletes reaches this vault.

It takes the data directory's lock: stop this vault's serve first, or let
serve replicate by itself (vault serve --replicate-from, docs/replication.md).
An interrupted pass loses nothing; the next one continues. If the
primary's log was rolled back or forked, it fails with "ALARM" and copies
nothing newer, now and at every later pass, until an admin of this vault
runs vault replicate acknowledge.

vault replicate status lists the primaries this vault pulls from, their
last pass, alarm and disappearances (auditor or admin token, VAULT_URL and
VAULT_TOKEN). vault replicate acknowledge clears an alarm (admin token).
`

// replicaFlags are the flags a replication pass shares between the
// one-shot command and serve.
type replicaFlags struct {
	from, tokenFile, name, primaryKey string
	bandwidth                         string
	workers, checkChunks              int
}

func addReplicaFlags(fs *flag.FlagSet, getenv func(string) string, prefix string) *replicaFlags {
	f := &replicaFlags{}
	fs.StringVar(&f.from, prefix+"from", getenv("VAULT_REPLICATE_FROM"), "the primary vault's URL, e.g. https://primary.example:8443 (VAULT_REPLICATE_FROM)")
	fs.StringVar(&f.tokenFile, prefix+"token-file", getenv("VAULT_REPLICATE_TOKEN_FILE"), "file holding a replicator token issued by the primary (VAULT_REPLICATE_TOKEN_FILE)")
	fs.StringVar(&f.name, prefix+"name", getenv("VAULT_REPLICATE_NAME"), "the primary's name on this vault (default: its host name)")
	fs.StringVar(&f.primaryKey, prefix+"primary-key", getenv("VAULT_REPLICATE_PRIMARY_KEY"),
		"pin the primary's checkpoint key (vault audit key on the primary); default: the key it serves at the first pass")
	fs.StringVar(&f.bandwidth, prefix+"bandwidth", "0", "most chunk bytes fetched per second, e.g. 50MiB; 0: no limit")
	fs.IntVar(&f.workers, prefix+"workers", replica.DefaultWorkers, "chunks fetched at once")
	fs.IntVar(&f.checkChunks, prefix+"check-chunks", replica.DefaultCheckChunks, "copied chunks looked up on the primary per pass (disappearance check); -1: all")
	return f
}

var hostNameChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// options checks the flags and returns the replicator's options (without
// Store, Log, Metrics and Notify).
func (f *replicaFlags) options(prefix string) (replica.Options, error) {
	var o replica.Options
	u, err := url.Parse(f.from)
	if f.from == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return o, fmt.Errorf("--%s %q: want the primary's URL, http://host[:port] or https://host[:port]", prefix+"from", f.from)
	}
	if f.tokenFile == "" {
		return o, fmt.Errorf("--%stoken-file is required: a replicator token from the primary (vault token issue --role replicator)", prefix)
	}
	b, err := os.ReadFile(f.tokenFile)
	if err != nil {
		return o, fmt.Errorf("--%stoken-file: %w", prefix, err)
	}
	name := f.name
	if name == "" {
		name = strings.Trim(hostNameChars.ReplaceAllString(u.Hostname(), "-"), "-._")
	}
	if err := store.CheckReplicaName(name); err != nil {
		return o, fmt.Errorf("--%sname: %w", prefix, err)
	}
	rate, err := config.ParseSize(f.bandwidth)
	if err != nil || rate < 0 {
		return o, fmt.Errorf("--%sbandwidth %q: want a size per second such as 50MiB, or 0", prefix, f.bandwidth)
	}
	if f.workers < 1 || f.workers > 64 {
		return o, fmt.Errorf("--%sworkers %d: want 1 to 64", prefix, f.workers)
	}
	c, err := client.New(f.from, strings.TrimSpace(string(b)), nil)
	if err != nil {
		return o, err
	}
	return replica.Options{Source: name, URL: f.from, Primary: c, CheckpointKey: f.primaryKey, Workers: f.workers,
		CheckChunks: f.checkChunks, BytesPerSecond: rate}, nil
}

func runReplicate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replicate", stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "this (the replica) vault's data directory (VAULT_DATA_DIR)")
	dbURL := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "this vault's PostgreSQL URL (VAULT_DATABASE_URL)")
	minRet := fs.String("min-retention", envOr(getenv, "VAULT_MIN_RETENTION", "30d"), "this vault's minimum retention, as serve's (VAULT_MIN_RETENTION)")
	packThreshold := fs.String("pack-threshold", envOr(getenv, "VAULT_PACK_THRESHOLD", "256KiB"), "as serve's (VAULT_PACK_THRESHOLD)")
	dev := fs.Bool("dev", getenv("VAULT_DEV") == "1", "dev mode, as serve's: allows a minimum retention under a day (VAULT_DEV=1)")
	asJSON := fs.Bool("json", false, "print the pass's report as JSON")
	rf := addReplicaFlags(fs, getenv, "")
	if err := parseNoArgs("replicate", fs, args); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return errors.New("replicate: --data-dir is required")
	case *dbURL == "":
		return errors.New("replicate: --database-url or VAULT_DATABASE_URL is required")
	}
	cfg := config.Serve{DataDir: *dir, DatabaseURL: *dbURL, Dev: *dev}
	var err error
	if cfg.MinRetention, err = config.ParseDuration(*minRet); err != nil || cfg.MinRetention <= 0 ||
		(cfg.MinRetention < config.SafeMinRetention && !cfg.Dev) {
		return fmt.Errorf("replicate: --min-retention %q: want a duration of at least %s (less only with --dev)", *minRet, config.SafeMinRetention)
	}
	if cfg.PackThreshold, err = config.ParseSize(*packThreshold); err != nil || cfg.PackThreshold < 0 {
		return fmt.Errorf("replicate: --pack-threshold %q: want a size such as 256KiB, or 0", *packThreshold)
	}
	o, err := rf.options("")
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	log := newLogger(stderr, "text", "info")
	st, ckpt, closeStore, err := openReplicaStore(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	defer closeStore()
	o.Store, o.Log = st, log
	lastPrint := time.Time{}
	o.Progress = func(p replica.Progress) {
		if time.Since(lastPrint) < time.Second && p.SnapshotsDone < p.SnapshotsTotal {
			return
		}
		lastPrint = time.Now()
		fmt.Fprintf(stderr, "replicate: %d/%s, %s, %s fetched (%s)\n",
			p.SnapshotsDone, plural(p.SnapshotsTotal, "snapshot"), plural(p.Chunks, "chunk"), humanBytes(p.Bytes), p.Snapshot)
	}
	rp, err := replica.New(o)
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	start := time.Now()
	rep, passErr := rp.Pass(ctx)
	// Sign a checkpoint over what the pass logged, as serve's audit loop
	// would, so that auditors of this vault see it.
	if err := st.ConfirmJournal(ctx); err == nil {
		if _, err := signCheckpoint(ctx, st, cfg.DataDir, ckpt); err != nil {
			log.Error("cannot sign an audit checkpoint", "err", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "replicated from %s (checkpoint %d) in %s: snapshots: %d new of %d, %d extended; holds: %d; "+
			"chunks fetched: %d (%s); copied chunks checked: %d; disappeared: %d\n", o.Source, rep.CheckpointSize,
			time.Since(start).Round(time.Millisecond), rep.Snapshots, rep.PrimarySnapshots, rep.Extended, rep.Holds,
			rep.Chunks, humanBytes(rep.Bytes), rep.ChunksChecked, rep.Disappeared)
		for _, f := range rep.Failed {
			fmt.Fprintf(stdout, "FAILED %s\n", f)
		}
	}
	switch {
	case errors.Is(passErr, replica.ErrAlarm):
		return fmt.Errorf("replicate: ALARM: %w", passErr)
	case errors.Is(passErr, context.Canceled):
		return errors.New("replicate: interrupted; the next pass continues where this one stopped")
	case passErr != nil:
		return fmt.Errorf("replicate: %w", passErr)
	}
	return nil
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// openReplicaStore opens this vault's store for a one-shot pass the way
// serve does: the data directory's lock, the journal, packs, the pinned
// admin set, the audit log's rollback guard and a reconcile (a pass
// killed mid-chunk may have left a temp file).
func openReplicaStore(ctx context.Context, cfg config.Serve, log *slog.Logger) (*store.Store, checkpointKeys, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*store.Store, checkpointKeys, func(), error) {
		closeAll()
		return nil, checkpointKeys{}, nil, err
	}
	v, err := config.ReadVault(cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return fail(fmt.Errorf("%w (is this vault's serve running? it replicates by itself with --replicate-from)", err))
	}
	closers = append(closers, unlock)
	pool, err := openDB(ctx, cfg.DatabaseURL, 8, log)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, pool.Close)
	blobs, err := disk.Open(cfg.DataDir, disk.Options{Logger: log})
	if err != nil {
		return fail(err)
	}
	o := store.Options{MinRetention: cfg.MinRetention, PackThreshold: cfg.PackThreshold, VaultID: v.ID, FreeSpace: blobs.Space}
	if cfg.PackThreshold > 0 {
		packs, err := pack.Open(filepath.Join(cfg.DataDir, "packs"), pack.Options{})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func() { packs.Close() })
		o.Packs = packs
	}
	jdir := filepath.Join(cfg.DataDir, config.JournalDir)
	_, statErr := os.Stat(jdir)
	fresh := errors.Is(statErr, iofs.ErrNotExist)
	jnl, err := journal.Open(jdir)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { jnl.Close() })
	o.Journal = jnl
	genesis, hasAdmins, err := readAdmins(cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	if hasAdmins {
		o.Genesis = &genesis
	}
	st := store.New(pool, blobs, clock.Real{}, log, nil, o)
	closers = append(closers, st.Close)
	ckpt, err := loadCheckpointKey(cfg.DataDir, v.ID, log)
	if err != nil {
		return fail(err)
	}
	if err := st.EnsureAuditTree(ctx); err != nil {
		return fail(err)
	}
	if err := guardRollback(ctx, st, cfg.DataDir, ckpt, log); err != nil {
		return fail(err)
	}
	if _, err := st.CheckJournal(ctx, fresh); err != nil {
		return fail(fmt.Errorf("refusing to run: %w", err))
	}
	if err := st.CheckIndex(ctx); err != nil {
		return fail(fmt.Errorf("refusing to run: %w", err))
	}
	if err := reconcileOnce(ctx, st, log); err != nil {
		return fail(err)
	}
	return st, ckpt, closeAll, nil
}

// runReplication runs serve's replication loop, if configured.
func runReplication(ctx context.Context, st *store.Store, rf *replicaFlags, every time.Duration, reg prometheus.Registerer,
	notify func(context.Context, store.Event), log *slog.Logger) error {
	o, err := rf.options("replicate-")
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	o.Store, o.Log, o.Metrics, o.Notify = st, log, replica.NewMetrics(reg), notify
	rp, err := replica.New(o)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("replicating", "from", o.URL, "source", o.Source, "every", every)
	go rp.Run(ctx, every)
	return nil
}

func runReplicateStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replicate status", stderr)
	af := addAPIFlags(fs, getenv)
	if err := parseNoArgs("replicate status", fs, args); err != nil {
		return err
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("replicate status: %w", err)
	}
	list, err := c.ReplicaSources(ctx)
	if err != nil {
		return cliErr("replicate status", err)
	}
	if af.json {
		return json.NewEncoder(stdout).Encode(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "(this vault replicates from no primary)")
		return nil
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "SOURCE\tURL\tLAST PASS\tCHECKPOINT\tDISAPPEARED\tALARM")
	for _, s := range list {
		last := "never"
		if s.LastPassAt != nil {
			last = fmtTime(*s.LastPassAt)
		}
		alarm := "-"
		if s.Alarm != "" {
			alarm = "ALARM since " + fmtTime(*s.AlarmAt) + ": " + oneLine(s.Alarm, 120)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", s.Name, s.URL, last, s.KeptSize, s.DisappearedTotal, alarm)
	}
	tw.Flush()
	for _, s := range list {
		for _, d := range s.Disappeared {
			fmt.Fprintf(stdout, "DISAPPEARED from %s: %s %s (noticed %s)\n", s.Name, d.Kind, d.Item, fmtTime(d.NoticedAt))
		}
	}
	return nil
}

func runReplicateAcknowledge(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replicate acknowledge", stderr)
	af := addAPIFlags(fs, getenv)
	source := fs.String("source", "", "the primary's name on this vault (vault replicate status)")
	reason := fs.String("reason", "", "why replication may resume (recorded in this vault's audit log)")
	if err := parseNoArgs("replicate acknowledge", fs, args); err != nil {
		return err
	}
	if *source == "" || strings.TrimSpace(*reason) == "" {
		return errors.New("replicate acknowledge: --source and --reason are required")
	}
	c, err := af.client(getenv)
	if err != nil {
		return fmt.Errorf("replicate acknowledge: %w", err)
	}
	s, err := c.AcknowledgeReplication(ctx, *source, *reason)
	if err != nil {
		return cliErr("replicate acknowledge", err)
	}
	if af.json {
		return json.NewEncoder(stdout).Encode(s)
	}
	fmt.Fprintf(stdout, "alarm of %s acknowledged: the next pass pins the primary's current checkpoint\n", s.Name)
	return nil
}
