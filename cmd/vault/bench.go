package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/bench"
)

// runBench measures ingest against the physical limits of the machine. By
// default it starts its own server on loopback, on a fresh data directory
// and a fresh database that it removes afterwards; with --url it measures a
// running vault instead.
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	sizesText := fs.String("sizes", "4KiB,64KiB,1MiB,8MiB", "chunk sizes, comma-separated")
	agentsText := fs.String("agents", "1,8", "numbers of concurrent agents, comma-separated")
	dedupText := fs.String("dedup", "0,0.9", "fractions of PUTs that re-send a stored chunk, comma-separated")
	batchSizesText := fs.String("batch-sizes", "4KiB,64KiB", "chunk sizes of the batch-endpoint cells (POST /v1/chunks/batch, fresh chunks, every --agents), comma-separated; empty: none")
	batchFrames := fs.Int("batch-frames", 256, "chunks per batch request (fewer if they do not fit the endpoint's 16 MiB body limit)")
	baselineSizesText := fs.String("baseline-sizes", "256KiB", "extra chunk sizes measured by the raw-disk and pack-append baselines only, comma-separated; empty: none")
	duration := fs.Duration("duration", 4*time.Second, "time cap of each cell and baseline")
	maxBytesText := fs.String("max-bytes", "1GiB", "byte cap of each cell and raw-disk baseline")
	out := fs.String("out", "", "markdown file to write; only the part between the bench markers is replaced (default: stdout only)")
	dbURL := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "PostgreSQL server whose role may CREATE DATABASE; a fresh database is made on it and dropped after (VAULT_DATABASE_URL)")
	workDir := fs.String("work-dir", os.TempDir(), "directory on the disk to measure; a fresh subdirectory is made in it and removed after")
	keep := fs.Bool("keep", false, "keep the work subdirectory (data dir, server log)")
	target := fs.String("url", "", "measure the running vault at this URL instead of starting one (needs --token)")
	token := fs.String("token", getenv("VAULT_TOKEN"), "agent token for --url (VAULT_TOKEN)")
	serverPID := fs.Int("server-pid", 0, "with --url: the server's process id, to measure its RSS and CPU")
	pprofOut := fs.String("pprof", "", "save a CPU profile of the server under one cell to this file")
	pprofCell := fs.String("pprof-cell", "", "the cell to profile, SIZE/AGENTS/DEDUP (default: largest size, most agents, 0 dedup)")
	pprofSeconds := fs.Int("pprof-seconds", 5, "length of the CPU profile")
	pprofURL := fs.String("pprof-url", "", "with --url and --pprof: the server's pprof address, e.g. http://127.0.0.1:6060")
	logLevel := fs.String("server-log-level", "info", "log level of the server started by bench")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	cfg := bench.Config{Duration: *duration, Progress: stderr}
	var err error
	if cfg.Sizes, err = bench.ParseSizes(*sizesText); err != nil {
		return fmt.Errorf("bench: --sizes: %w", err)
	}
	if cfg.Agents, err = bench.ParseCounts(*agentsText); err != nil {
		return fmt.Errorf("bench: --agents: %w", err)
	}
	if cfg.Dedup, err = bench.ParseFractions(*dedupText); err != nil {
		return fmt.Errorf("bench: --dedup: %w", err)
	}
	if cfg.BatchSizes, err = optionalSizes(*batchSizesText); err != nil {
		return fmt.Errorf("bench: --batch-sizes: %w", err)
	}
	if cfg.BaselineSizes, err = optionalSizes(*baselineSizesText); err != nil {
		return fmt.Errorf("bench: --baseline-sizes: %w", err)
	}
	if *batchFrames < 1 {
		return errors.New("bench: --batch-frames must be at least 1")
	}
	cfg.BatchFrames = *batchFrames
	if cfg.MaxBytes, err = bench.ParseSize(*maxBytesText); err != nil {
		return fmt.Errorf("bench: --max-bytes: %w", err)
	}
	switch {
	case *target == "" && *dbURL == "":
		return errors.New("bench: --database-url or VAULT_DATABASE_URL is required to start a server (or give --url)")
	case *target != "" && *token == "":
		return errors.New("bench: --url needs --token (an agent token)")
	case *target != "" && *pprofOut != "" && *pprofURL == "":
		return errors.New("bench: --pprof with --url needs --pprof-url")
	}
	if *pprofOut != "" {
		cell := bench.CellSpec{Size: slices.Max(cfg.Sizes), Agents: slices.Max(cfg.Agents)}
		if *pprofCell != "" {
			if cell, err = bench.ParseCell(*pprofCell); err != nil {
				return fmt.Errorf("bench: --pprof-cell: %w", err)
			}
		}
		cfg.Profile = &bench.Profile{Cell: cell, Seconds: *pprofSeconds, Path: *pprofOut, URL: *pprofURL}
	}

	dir, err := os.MkdirTemp(*workDir, "vault-bench-*")
	if err != nil {
		return fmt.Errorf("bench: work dir: %w", err)
	}
	cfg.WorkDir = dir
	// Clean-up must run even when ctx was cancelled by a signal.
	cleanup := context.WithoutCancel(ctx)
	if *keep {
		defer fmt.Fprintf(stderr, "bench: kept %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if *dbURL != "" {
		url, drop, err := bench.CreateDatabase(ctx, *dbURL)
		if err != nil {
			return err
		}
		defer func() {
			if err := drop(cleanup); err != nil {
				fmt.Fprintf(stderr, "bench: %v\n", err)
			}
		}()
		cfg.DatabaseURL = url
	}

	desc := ""
	if *target != "" {
		cfg.Target = bench.Target{URL: *target, Token: *token, PID: *serverPID}
		desc = "the running vault at " + *target
	} else {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		fmt.Fprintf(stderr, "bench: starting vault serve in %s\n", dir)
		srv, err := bench.StartServer(ctx, bench.ServerOptions{
			Exe: exe, Dir: dir, DatabaseURL: cfg.DatabaseURL, LogLevel: *logLevel, Pprof: cfg.Profile != nil,
		})
		if err != nil {
			return err
		}
		defer func() {
			if err := srv.Stop(cleanup); err != nil {
				fmt.Fprintf(stderr, "bench: %v\n", err)
			}
		}()
		cfg.Target = srv.Target
		if cfg.Profile != nil {
			cfg.Profile.URL = srv.PprofURL
		}
		desc = fmt.Sprintf("`vault serve` started by `vault bench` on %s (plain HTTP on loopback, log level %s, default settings otherwise), fresh data dir and database",
			srv.Target.URL, *logLevel)
	}

	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Machine.VaultVersion = version()
	rep.Settings.Target = desc
	md := bench.Markdown(rep)
	fmt.Fprint(stdout, md)
	fmt.Fprintf(stderr, "bench: done in %s\n", rep.Elapsed.Round(100*time.Millisecond))
	if *out != "" {
		if err := writeReport(*out, md); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: wrote %s\n", *out)
	}
	return nil
}

// optionalSizes parses a list of sizes that may be empty.
func optionalSizes(list string) ([]int64, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	return bench.ParseSizes(list)
}

// writeReport puts md between the bench markers of the file at path,
// keeping everything else in it, and replaces the file atomically.
func writeReport(path, md string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bench: %w", err)
	}
	doc, err := bench.Splice(string(old), md)
	if err != nil {
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bench-*.md")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(doc); err != nil {
		tmp.Close()
		return fmt.Errorf("bench: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("bench: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
