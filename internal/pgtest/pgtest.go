// Package pgtest gives each test its own freshly migrated PostgreSQL
// database, cloned from a template that is built once per migration set.
//
// Tests connect as the vault's runtime role, as the server does in
// production: a login that is a member of wormvault_runtime, owns nothing
// and cannot change the schema (migrations/009_least_privilege.sql). The
// schema owner, which creates, migrates and drops the databases, is there
// for the few tests that need it (fixtures that bypass the triggers, the
// owner's own attacks): OwnerURL and OwnerPool.
//
// The servers come from VAULT_TEST_DATABASE_URL (the owner: a role that may
// CREATE DATABASE) and VAULT_TEST_RUNTIME_URL (the runtime login on the
// same server), both set by `make test`; tests fail, never skip, when
// either is missing.
//
// Test databases differ from production ones in one way: wv_now(), the
// database's clock every trigger uses, can be set by the owner, so that a
// test's fake clock and the database agree without sleeping (FollowClock).
// The runtime role cannot set it, in tests as in production.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/migrations"
)

// EnvURL names the variable holding the owner's connection URL of the test
// server. Its role needs CREATEDB, and must not be a member of the runtime
// role.
const EnvURL = "VAULT_TEST_DATABASE_URL"

// EnvRuntimeURL names the variable holding the runtime login's connection
// URL of the same server (its database part is ignored). Its role must be
// a member of wormvault_runtime.
const EnvRuntimeURL = "VAULT_TEST_RUNTIME_URL"

// templateLock is the advisory lock key under which template databases are
// built, so parallel test binaries never build the same one twice.
const templateLock = 0x776f726d // "worm"

// templateRevision names what pgtest adds to the migrated template (the
// settable clock); change it when that changes, so old templates are not
// reused.
const templateRevision = "c1"

// testClockSQL makes the database's clock settable by the owner: wv_now()
// answers the time in wv_test.clock when a test set one. The schema is not
// granted to the runtime role, so only the owner can set it.
const testClockSQL = `
CREATE SCHEMA wv_test;
CREATE TABLE wv_test.clock (
    id boolean     PRIMARY KEY DEFAULT true CHECK (id),
    at timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION public.wv_now() RETURNS timestamptz
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT at FROM wv_test.clock), pg_catalog.clock_timestamp())
$$;`

var (
	templateOnce sync.Once
	templateName string
	templateErr  error

	runtimeOnce sync.Once
	runtimeErr  error
)

// ServerURL returns the owner's test server URL or fails the test with a
// message saying how to get one.
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		t.Fatalf("%s is not set: run the tests with `make test`, which starts a local PostgreSQL, "+
			"or point %s at a server whose role may CREATE DATABASE", EnvURL, EnvURL)
	}
	return u
}

// RuntimeServerURL returns the runtime login's test server URL or fails the
// test with a message saying how to get one.
func RuntimeServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvRuntimeURL)
	if u == "" {
		t.Fatalf("%s is not set: run the tests with `make test` (scripts/devdb.sh creates the runtime login vault_app "+
			"and prints its URL), or point %s at a login that is a member of %s on the server of %s",
			EnvRuntimeURL, EnvRuntimeURL, migrations.RuntimeRole, EnvURL)
	}
	return u
}

// DB is a test database.
type DB struct {
	Name     string
	URL      string // as the runtime role, as the server connects
	OwnerURL string // as the schema owner
}

// New creates a fresh, migrated database for this test, dropped at
// cleanup.
func New(t testing.TB) DB {
	t.Helper()
	ctx := context.Background()
	base := ServerURL(t)
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx, base) })
	if templateErr != nil {
		t.Fatalf("pgtest: template database: %v", templateErr)
	}
	return create(t, "wv_test_"+randomHex(8), "TEMPLATE "+templateName)
}

// NewEmpty creates an empty database for this test, owned by the owner and
// without any schema, dropped at cleanup.
func NewEmpty(t testing.TB) DB {
	t.Helper()
	return create(t, "wv_test_empty_"+randomHex(8), "")
}

func create(t testing.TB, name, options string) DB {
	t.Helper()
	ctx := context.Background()
	base := ServerURL(t)
	runtime := RuntimeServerURL(t)
	runtimeOnce.Do(func() { runtimeErr = checkRuntime(ctx, runtime) })
	if runtimeErr != nil {
		t.Fatalf("pgtest: %s: %v", EnvRuntimeURL, runtimeErr)
	}
	admin := mustConnect(t, ctx, base)
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s %s", name, options)); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		// DROP ... WITH (FORCE) ends the owner's leftover connections but
		// may not end another role's, not even those still exiting: refuse
		// new connections, let the runtime login end its own (waiting for
		// them to exit), then drop, which waits a few seconds for backends
		// that are exiting anyway; FORCE only for the owner's leftovers.
		if _, err := c.Exec(ctx, "ALTER DATABASE "+name+" WITH ALLOW_CONNECTIONS false"); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
		if r, err := pgx.Connect(ctx, withDatabase(t, runtime, "postgres")); err == nil {
			r.Exec(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
				WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()`, name)
			r.Close(ctx)
		}
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err == nil {
			return
		}
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return DB{Name: name, URL: withDatabase(t, runtime, name), OwnerURL: withDatabase(t, base, name)}
}

// NewDatabase creates a fresh, migrated database for this test, dropped at
// cleanup, and returns its URL as the runtime role.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return New(t).URL
}

// NewPool returns a pool on a fresh, migrated database, as the runtime
// role, closed at cleanup.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return newPool(t, NewDatabase(t))
}

// OwnerURL returns the schema owner's URL of the database dbURL names.
func OwnerURL(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("pgtest: parse database url: %v", err)
	}
	return withDatabase(t, ServerURL(t), strings.TrimPrefix(u.Path, "/"))
}

// OwnerPool returns a pool on pool's database as the schema owner, closed
// at cleanup: for fixtures the runtime role may not write, and for the
// owner's own attacks.
func OwnerPool(t testing.TB, pool *pgxpool.Pool) *pgxpool.Pool {
	t.Helper()
	return newPool(t, withDatabase(t, ServerURL(t), pool.Config().ConnConfig.Database))
}

// FollowClock sets the clock of pool's database (wv_now(), which every
// trigger reads) to clk's time, and keeps it there as the test moves clk.
// Use it when the store runs on a fake clock and the database must agree:
// requests, schedules and executions are checked against the database's
// clock.
func FollowClock(t testing.TB, pool *pgxpool.Pool, clk *clock.Fake) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(withDatabase(t, ServerURL(t), pool.Config().ConnConfig.Database))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.MaxConns = 1
	owner, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: owner pool: %v", err)
	}
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		done = true
		owner.Close()
	})
	clk.OnMove(func(now time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		if _, err := owner.Exec(context.Background(), `INSERT INTO wv_test.clock (id, at) VALUES (true, $1)
			ON CONFLICT (id) DO UPDATE SET at = excluded.at`, now); err != nil {
			t.Errorf("pgtest: set the database's clock to %s: %v", now, err)
		}
	})
}

func newPool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func ensureTemplate(ctx context.Context, base string) (string, error) {
	fp, err := migrations.Fingerprint()
	if err != nil {
		return "", err
	}
	name := "wv_tmpl_" + fp + "_" + templateRevision
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", EnvURL, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock($1)", templateLock); err != nil {
		return "", err
	}
	defer admin.Exec(ctx, "SELECT pg_advisory_unlock($1)", templateLock)

	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	// Build under a temporary name and rename when complete, so a crash
	// mid-migration never leaves a half-built template that looks finished.
	building := name + "_building"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		return "", err
	}
	cfg.Database = building
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	err = migrations.Migrate(ctx, conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		_, err = conn.Exec(ctx, testClockSQL)
	}
	conn.Close(ctx)
	if err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", building, name)); err != nil {
		return "", err
	}
	return name, nil
}

// checkRuntime refuses a runtime URL whose role is not what the server
// runs as in production: tests run as the owner would pass where the
// server fails, and prove nothing about the runtime role's limits.
func checkRuntime(ctx context.Context, runtime string) error {
	conn, err := pgx.Connect(ctx, runtime)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	var user string
	var member, super bool
	err = conn.QueryRow(ctx, `SELECT current_user, coalesce((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1), false),
		(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)`, migrations.RuntimeRole).Scan(&user, &member, &super)
	if err != nil {
		return err
	}
	if super || !member {
		return fmt.Errorf("role %q must be a member of %s and not a superuser", user, migrations.RuntimeRole)
	}
	return nil
}

func mustConnect(t testing.TB, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", EnvURL, err)
	}
	return c
}

// withDatabase returns base with its database replaced by name.
func withDatabase(t testing.TB, base, name string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: parse database url: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
