package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// `vault init --admin` pins the genesis admin set in admins.json; serve
// seeds the database from it once, and refuses to start when the two
// disagree (a swapped data directory or database).
func TestInitAdminsAndSeeding(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	var adminFlags []string
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		if r := runCLI(t, nil, nil, "admin", "keygen", "--out", filepath.Join(keys, name+".key")); r.err != nil {
			t.Fatalf("keygen %s: %v", name, r.err)
		}
		adminFlags = append(adminFlags, "--admin", name+"="+filepath.Join(keys, name+".key.pub"))
	}

	// Too few admins for the quorum: nothing is created.
	few := filepath.Join(t.TempDir(), "few")
	if r := runCLI(t, nil, nil, append([]string{"init", "--data-dir", few}, adminFlags[:4]...)...); r.err == nil {
		t.Error("init with 2 admins for a quorum of 2 (+ requester) succeeded")
	}
	if _, err := os.Stat(filepath.Join(few, adminsFile)); err == nil {
		t.Error("admins.json written by a refused init")
	}
	// A bad key file and a bad name are refused too.
	bad := filepath.Join(t.TempDir(), "bad")
	if r := runCLI(t, nil, nil, "init", "--data-dir", bad, "--admin", "alice="+filepath.Join(keys, "nope.pub"),
		"--admin", "b=x", "--admin", "c=y"); r.err == nil {
		t.Error("init with unreadable admin keys succeeded")
	}

	dir := filepath.Join(t.TempDir(), "data")
	if r := runCLI(t, nil, nil, append([]string{"init", "--data-dir", dir}, adminFlags[:6]...)...); r.err != nil {
		t.Fatalf("init: %v\n%s", r.err, r.stderr)
	}
	g, ok, err := readAdmins(dir)
	if err != nil || !ok || len(g.Admins) != 3 {
		t.Fatalf("admins.json = %+v, %v, %v; want 3 admins", g, ok, err)
	}

	newStore := func() *store.Store {
		pool := pgtest.NewPool(t)
		blobs, err := disk.Open(t.TempDir(), disk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return store.New(pool, blobs, clock.Real{}, slog.New(slog.DiscardHandler), nil, store.Options{VaultID: "v"})
	}
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	st := newStore()
	if err := seedAdmins(ctx, st, dir, log); err != nil {
		t.Fatalf("first seeding: %v", err)
	}
	if err := seedAdmins(ctx, st, dir, log); err != nil {
		t.Fatalf("second start with the same admins.json: %v", err)
	}
	set, err := st.AdminSet(ctx, 0)
	if err != nil || len(set.Admins) != 3 {
		t.Fatalf("admin set = %+v, %v", set, err)
	}

	// Another vault's admins.json against this database: refused.
	other := filepath.Join(t.TempDir(), "other")
	if r := runCLI(t, nil, nil, "init", "--data-dir", other, "--admin", adminFlags[1], "--admin", adminFlags[3],
		"--admin", adminFlags[7]); r.err != nil {
		t.Fatalf("init other: %v", r.err)
	}
	if err := seedAdmins(ctx, st, other, log); err == nil || !strings.Contains(err.Error(), "refusing to start") {
		t.Errorf("seeding a different admin set: %v, want a refusal", err)
	}
	// A data directory without admins.json against a database with admins:
	// refused as well.
	plain := filepath.Join(t.TempDir(), "plain")
	if r := runCLI(t, nil, nil, "init", "--data-dir", plain); r.err != nil {
		t.Fatal(r.err)
	}
	if err := seedAdmins(ctx, st, plain, log); err == nil {
		t.Error("a data dir without admins.json accepted a database with an admin set")
	}
}
