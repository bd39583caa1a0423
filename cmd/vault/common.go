package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/user"
	"runtime/debug"

	"github.com/jackc/pgx/v5/pgxpool"
)

// stampedVersion is set at build time by the Makefile and the Dockerfile
// (-ldflags "-X main.stampedVersion=..."); a plain `go build` falls back to
// the module's build information.
var stampedVersion string

func version() string {
	if stampedVersion != "" {
		return stampedVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
		return bi.Main.Version
	}
	return "unknown"
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// openDB connects to PostgreSQL and makes sure the schema is current: a
// runtime login (the normal case) only checks, and says to run `vault
// migrate --owner-url` when migrations are pending; a role that may
// change the schema (a single-role development setup) applies them.
func openDB(ctx context.Context, url string, maxConns int, log *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	return connectOnce(ctx, cfg, log)
}

// cliActor names the person running a CLI command in audit entries.
func cliActor() string {
	if u, err := user.Current(); err == nil {
		return "cli:" + u.Username
	}
	return "cli"
}
