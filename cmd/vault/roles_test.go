package main

import (
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/pgtest"
)

// The production commands of the two roles: the owner migrates with
// --owner-url; the runtime login cannot migrate, and serve as the runtime
// login refuses to start on a schema that needs migrations and says what
// to run.
func TestMigrateOwnerURLAndRuntimeServe(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmpty(t)
	dir := mustInitVault(t)

	r := runCLI(t, nil, nil, "migrate", "--database-url", db.URL)
	if r.err == nil || !strings.Contains(r.err.Error(), "--owner-url") {
		t.Fatalf("migrate as the runtime login: %v, want a refusal naming --owner-url\n%s", r.err, r.stderr)
	}
	r = runCLI(t, nil, nil, "serve", "--data-dir", dir, "--database-url", db.URL)
	if r.err == nil || !strings.Contains(r.err.Error(), "vault migrate --owner-url") {
		t.Fatalf("serve as the runtime login on an empty database: %v, want it to say to run vault migrate --owner-url\n%s", r.err, r.stderr)
	}

	// The owner's URL wins over the server's, from flags or environment.
	r = runCLI(t, map[string]string{"VAULT_DATABASE_URL": db.URL, "VAULT_OWNER_DATABASE_URL": db.OwnerURL}, nil, "migrate")
	if r.err != nil || !strings.Contains(r.stderr, "applying migration") || !strings.Contains(r.stderr, "up to date") {
		t.Fatalf("migrate with VAULT_OWNER_DATABASE_URL: %v\n%s", r.err, r.stderr)
	}
	r = runCLI(t, nil, nil, "migrate", "--owner-url", db.OwnerURL, "--database-url", db.URL)
	if r.err != nil || strings.Contains(r.stderr, "applying migration") {
		t.Fatalf("second migrate --owner-url: %v\n%s", r.err, r.stderr)
	}
	// Now the runtime login finds nothing to do and needs no rights.
	r = runCLI(t, nil, nil, "token", "revoke", "--database-url", db.URL, "--reason", "test", "--unregistered", "some-jti")
	if r.err != nil {
		t.Fatalf("token revoke as the runtime login on a current schema: %v\n%s", r.err, r.stderr)
	}
}
