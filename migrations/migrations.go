// Package migrations holds the vault's SQL schema as tern migrations,
// embedded in the binary, and applies them.
//
// A released migration is never edited; a change is a new numbered file.
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed *.sql
var files embed.FS

// versionTable records the applied version; tern takes an advisory lock, so
// several vault processes starting at once migrate safely.
const versionTable = "public.schema_version"

// Migrate applies every pending migration on conn.
func Migrate(ctx context.Context, conn *pgx.Conn, log *slog.Logger) error {
	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return fmt.Errorf("migrations: new migrator: %w", err)
	}
	m.OnStart = func(seq int32, name, direction, _ string) {
		log.InfoContext(ctx, "applying migration", "seq", seq, "name", name, "direction", direction)
	}
	if err := m.LoadMigrations(files); err != nil {
		return fmt.Errorf("migrations: load: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrations: migrate: %w", err)
	}
	return nil
}

// Fingerprint identifies the set of migrations compiled in, so that test
// template databases built from one set are never reused by another.
func Fingerprint() (string, error) {
	names, err := migrate.FindMigrations(files)
	if err != nil {
		return "", fmt.Errorf("migrations: find: %w", err)
	}
	h := sha256.New()
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return "", fmt.Errorf("migrations: read %s: %w", n, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
