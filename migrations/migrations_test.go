package migrations_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/migrations"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// A production database, migrated by the owner: the triggers' clock is
// the database's own, and no function reads a session setting.
func TestMigrateAsOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmpty(t)
	owner := connect(t, db.OwnerURL)
	if ok, err := migrations.CanMigrate(ctx, owner); err != nil || !ok {
		t.Fatalf("CanMigrate as the owner = %v, %v", ok, err)
	}
	if err := migrations.Migrate(ctx, owner, discard); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	cur, latest, err := migrations.Status(ctx, owner)
	if err != nil || cur != latest || latest < 9 {
		t.Fatalf("Status = %d, %d, %v", cur, latest, err)
	}
	var src string
	var skew time.Duration
	if err := owner.QueryRow(ctx, `SELECT prosrc, wv_now() - clock_timestamp() FROM pg_proc WHERE proname = 'wv_now'`).Scan(&src, &skew); err != nil {
		t.Fatal(err)
	}
	if src != " SELECT pg_catalog.clock_timestamp() " || skew > time.Second || skew < -time.Second {
		t.Errorf("wv_now() is %q, %s from clock_timestamp(); want the database's clock", src, skew)
	}
	var trusting []string
	rows, _ := owner.Query(ctx, `SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		AND (prosrc ILIKE '%current_setting%' OR prosrc ILIKE '%wormvault.%') ORDER BY 1`)
	if trusting, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || len(trusting) != 0 {
		t.Errorf("functions reading session settings: %v, %v; want none", trusting, err)
	}
}

// The runtime login never migrates: on a current schema it only checks;
// with migrations pending it says to run vault migrate --owner-url.
func TestRuntimeRoleCannotMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	empty := pgtest.NewEmpty(t)
	runtime := connect(t, empty.URL)
	if ok, err := migrations.CanMigrate(ctx, runtime); err != nil || ok {
		t.Fatalf("CanMigrate as the runtime role = %v, %v; want false", ok, err)
	}
	err := migrations.Ensure(ctx, runtime, discard)
	if !errors.Is(err, migrations.ErrNeedsOwner) {
		t.Fatalf("Ensure on an empty database as the runtime role = %v, want ErrNeedsOwner", err)
	}
	if cur, _, _ := migrations.Status(ctx, runtime); cur != 0 {
		t.Errorf("schema version %d after a refused Ensure, want 0", cur)
	}
	if err := migrations.Migrate(ctx, runtime, discard); err == nil {
		t.Error("Migrate as the runtime role succeeded")
	}

	current := connect(t, pgtest.NewDatabase(t))
	if err := migrations.Ensure(ctx, current, discard); err != nil {
		t.Errorf("Ensure on a current schema as the runtime role: %v", err)
	}
}
