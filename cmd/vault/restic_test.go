package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/client"
)

func TestResticCommands(t *testing.T) {
	t.Parallel()
	f := newAuditorFixture(t)
	if _, err := f.store.CreateResticRepository(context.Background(), "cli-agent", "db01"); err != nil {
		t.Fatal(err)
	}

	res := f.run(t, auth.RoleAdmin, "restic", "retention", "db01", "400d")
	if res.err != nil || !strings.Contains(res.stdout, "9600h0m0s") {
		t.Fatalf("restic retention as admin: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
	if res := f.run(t, auth.RoleAuditor, "restic", "retention", "db01", "500d"); res.err == nil || !strings.Contains(res.err.Error(), "admin token") {
		t.Errorf("restic retention as auditor: %v, want refused, naming the admin token", res.err)
	}
	if res := f.run(t, auth.RoleAdmin, "restic", "retention", "db01", "30d"); res.err == nil || !strings.Contains(res.err.Error(), "only be extended") {
		t.Errorf("shorter retention: %v, want refused", res.err)
	}

	res = f.run(t, auth.RoleAuditor, "restic", "repos")
	if res.err != nil || !strings.Contains(res.stdout, "db01") || !strings.Contains(res.stdout, "cli-agent") {
		t.Fatalf("restic repos: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
	res = f.run(t, auth.RoleAuditor, "restic", "repos", "--json")
	var repos []client.ResticRepository
	if err := json.Unmarshal([]byte(res.stdout), &repos); err != nil || len(repos) != 1 || repos[0].MinRetention != "9600h0m0s" {
		t.Errorf("restic repos --json = %s (%v)", res.stdout, err)
	}
}
