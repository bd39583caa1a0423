// Package migrations holds the vault's SQL schema as tern migrations,
// embedded in the binary, and applies them.
//
// A released migration is never edited; a change is a new numbered file.
//
// Migrations run as the schema owner (`vault migrate --owner-url URL`);
// the server runs as a login role that is a member of RuntimeRole, owns
// nothing and cannot change the schema (009_least_privilege.sql). Every
// migration that adds a table or a function the server uses grants
// RuntimeRole what it needs, explicitly.
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
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

// RuntimeRole is the NOLOGIN group role the migrations grant the server's
// privileges to. An administrator creates it once per cluster (creating
// roles needs CREATEROLE, which the owner should not have); the server's
// login role is a member of it.
const RuntimeRole = "wormvault_runtime"

// ErrNeedsOwner is returned by Ensure when migrations are pending and the
// connected role may not apply them.
var ErrNeedsOwner = errors.New("migrations: pending migrations need the schema owner")

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

// Status returns the schema version of the database on conn (0 for an
// empty database) and the version the embedded migrations reach. It only
// reads, so the runtime role may call it.
func Status(ctx context.Context, conn *pgx.Conn) (current, latest int32, err error) {
	names, err := migrate.FindMigrations(files)
	if err != nil {
		return 0, 0, fmt.Errorf("migrations: find: %w", err)
	}
	latest = int32(len(names))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", versionTable).Scan(&exists); err != nil {
		return 0, latest, fmt.Errorf("migrations: read schema version: %w", err)
	}
	if !exists {
		return 0, latest, nil
	}
	if err := conn.QueryRow(ctx, "SELECT version FROM "+versionTable).Scan(&current); err != nil {
		return 0, latest, fmt.Errorf("migrations: read schema version: %w", err)
	}
	return current, latest, nil
}

// CanMigrate reports whether the role on conn may apply migrations: it may
// create objects in the public schema and is not a runtime login (a
// member of RuntimeRole). A superuser always may.
func CanMigrate(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, `SELECT r.rolsuper OR (has_schema_privilege('public', 'CREATE')
		AND NOT coalesce((SELECT pg_has_role(current_user, g.oid, 'MEMBER') FROM pg_roles g WHERE g.rolname = $1), false))
		FROM pg_roles r WHERE r.rolname = current_user`, RuntimeRole).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("migrations: check privileges: %w", err)
	}
	return ok, nil
}

// Ensure makes the schema current for a server about to start: nothing
// if it is (the runtime role's case), the pending migrations if the
// connected role may apply them (a single-role development setup), and
// otherwise ErrNeedsOwner, saying what to run. A schema newer than this
// binary is an error too.
func Ensure(ctx context.Context, conn *pgx.Conn, log *slog.Logger) error {
	current, latest, err := Status(ctx, conn)
	if err != nil {
		return err
	}
	if current == latest {
		return nil
	}
	if current > latest {
		return fmt.Errorf("migrations: the database's schema is at version %d, newer than this vault's %d: upgrade the vault", current, latest)
	}
	ok, err := CanMigrate(ctx, conn)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: the database's schema is at version %d and this vault needs %d, but role %q may not change it; "+
			"run `vault migrate --owner-url URL` with the schema owner's URL (VAULT_OWNER_DATABASE_URL) first",
			ErrNeedsOwner, current, latest, conn.Config().User)
	}
	return Migrate(ctx, conn, log)
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
