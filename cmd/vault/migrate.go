package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wormvault/wormvault/migrations"
)

const migrateUsage = `usage: vault migrate --owner-url URL

Applies the database migrations as the schema owner, then exits.

The vault uses two PostgreSQL roles. The owner owns the schema and runs this
command; it needs neither SUPERUSER nor CREATEROLE. The server (vault serve)
connects as a login that is a member of the NOLOGIN group role
wormvault_runtime, which owns nothing: it cannot alter, truncate or disable
the triggers of any table. An administrator creates the group and the login
once per cluster, before the first migration:

  CREATE ROLE wormvault_runtime NOLOGIN;
  CREATE ROLE vault_owner LOGIN PASSWORD '...';
  CREATE DATABASE vault OWNER vault_owner;
  CREATE ROLE vault_app LOGIN PASSWORD '...' IN ROLE wormvault_runtime;

then:

  vault migrate --owner-url postgres://vault_owner:...@host/vault
  vault serve --database-url postgres://vault_app:...@host/vault ...

vault serve applies nothing itself when it runs as the runtime login: it
refuses to start while migrations are pending.
`

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	ownerURL := fs.String("owner-url", "", "the schema owner's PostgreSQL URL (VAULT_OWNER_DATABASE_URL, or VAULT_OWNER_DATABASE_URL_FILE)")
	dbURL := fs.String("database-url", "", "PostgreSQL URL, for a single-role setup where the server's role owns the schema (VAULT_DATABASE_URL); --owner-url wins")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// An explicit flag wins over the environment; the owner's URL over the
	// server's.
	url := *ownerURL
	for _, u := range []string{*dbURL, getenv("VAULT_OWNER_DATABASE_URL"), getenv("VAULT_DATABASE_URL")} {
		if url == "" {
			url = u
		}
	}
	if url == "" {
		return errors.New("migrate: --owner-url (VAULT_OWNER_DATABASE_URL) or --database-url (VAULT_DATABASE_URL) is required")
	}
	log := newLogger(stderr, "text", "info")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("migrate: database: %w", err)
	}
	defer conn.Close(context.Background())
	ok, err := migrations.CanMigrate(ctx, conn)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("migrate: role %q may not change the schema (it is the server's runtime login, or lacks CREATE on schema public): "+
			"give the schema owner's URL with --owner-url or VAULT_OWNER_DATABASE_URL", conn.Config().User)
	}
	if err := migrations.Migrate(ctx, conn, log); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Hint != "" {
			fmt.Fprintf(stderr, "hint: %s\n", pgErr.Hint)
		}
		return err
	}
	var members int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
		JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = $1 AND u.rolcanlogin`, migrations.RuntimeRole).Scan(&members); err != nil {
		return fmt.Errorf("migrate: list members of %s: %w", migrations.RuntimeRole, err)
	}
	if members == 0 {
		log.Warn("no login role is a member of "+migrations.RuntimeRole+": create one for vault serve",
			"sql", "CREATE ROLE vault_app LOGIN PASSWORD '...' IN ROLE "+migrations.RuntimeRole)
	}
	log.Info("database is up to date")
	return nil
}
