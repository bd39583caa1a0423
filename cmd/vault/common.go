package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/user"
	"runtime/debug"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/config"
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

// newLogger returns the process's logger. level is one config.Validate
// accepted (serve) or a constant (the other commands).
func newLogger(w io.Writer, format, level string) *slog.Logger {
	lv, err := config.ParseLogLevel(level)
	if err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: durationsAsText}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// durationsAsText renders a time.Duration as "1.5s" in both handlers:
// JSON would otherwise print nanoseconds, which nobody reads right.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
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
