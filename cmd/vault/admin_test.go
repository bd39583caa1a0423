package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// The admin CLI walks a deletion from request to execution against a real
// vault, with an injected clock.
func TestAdminDeletionCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	dataDir := t.TempDir()
	blobs, err := disk.Open(dataDir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	jnl, err := journal.Open(filepath.Join(dataDir, config.JournalDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jnl.Close() })
	clk := clock.NewFake(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	pgtest.FollowClock(t, pool, clk)
	log := slog.New(slog.DiscardHandler)
	// Three admins with personal keys: alice and carol raw keys from
	// `vault admin keygen`, bob an SSH key signing through ssh-keygen.
	dir := t.TempDir()
	for _, name := range []string{"alice", "carol"} {
		if r := runCLI(t, nil, nil, "admin", "keygen", "--out", filepath.Join(dir, name+".key")); r.err != nil ||
			!strings.HasPrefix(r.stdout, "wormvault-ed25519 ") {
			t.Fatalf("keygen: %v %s", r.err, r.stdout)
		}
	}
	bobKey := mustSSHKey(t, dir, "bob", "ed25519")
	g := store.Genesis{Policy: store.Policy{ApprovalsRequired: 2, Delay: store.Duration(store.DefaultDeletionDelay),
		GovernanceApprovals: 2, GovernanceDelay: store.Duration(7 * 24 * time.Hour)}}
	for name, pub := range map[string]string{"alice": filepath.Join(dir, "alice.key.pub"), "bob": bobKey + ".pub", "carol": filepath.Join(dir, "carol.key.pub")} {
		k, err := readAdminKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		g.Admins = append(g.Admins, store.Admin{Name: name, Key: k})
	}
	st := store.New(pool, blobs, clk, log, nil, store.Options{
		DatabaseTime: func(context.Context) (time.Time, error) { return clk.Now(), nil },
		VaultID:      "cli-test",
		Journal:      jnl,
		Genesis:      &g,
	})
	if err := st.SeedAdminSet(ctx, g); err != nil {
		t.Fatal(err)
	}
	rawKey := func(name string) []string { return []string{"--key", filepath.Join(dir, name+".key"), "--yes"} }
	sshKey := []string{"--ssh-key", bobKey, "--yes"}
	key, _ := auth.GenerateKey()
	srv := httptest.NewServer(api.NewHandler(api.Options{Store: st,
		Verifier: auth.NewVerifier(key.Public().(ed25519.PublicKey), "cli-test", st, clk), Log: log}))
	t.Cleanup(srv.Close)
	issuer := auth.NewIssuer(key, "cli-test", clk)
	token := func(role auth.Role, subject string) string {
		tok, _, err := issueAll(issuer, role, subject, 30*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	run := func(tok string, args ...string) cliResult {
		t.Helper()
		return runCLI(t, map[string]string{"VAULT_URL": srv.URL, "VAULT_TOKEN": tok}, nil, args...)
	}
	body := []byte("to be deleted")
	h := chunk.Sum(body)
	if _, err := st.PutChunk(ctx, "agent", h, bytes.NewReader(body), time.Time{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(store.DefaultMinRetention + time.Hour)
	alice, bob, carol := token(auth.RoleAdmin, "alice"), token(auth.RoleAdmin, "bob"), token(auth.RoleAdmin, "carol")

	// Bad invocations change nothing.
	for _, args := range [][]string{
		{"admin", "deletions", "request", "--chunks", h.String()},                                 // no reason
		{"admin", "deletions", "request", "--reason", "x"},                                        // no target
		{"admin", "deletions", "request", "--chunks", h.String(), "--hold", "1", "--reason", "x"}, // two targets
		{"admin", "deletions", "approve", "x"},
		{"admin", "deletions", "cancel", "1", "--key", "x"}, // no reason
		{"admin", "bogus"},
	} {
		if r := run(alice, args...); r.err == nil {
			t.Errorf("vault %s succeeded", strings.Join(args, " "))
		}
	}
	if r := run(token(auth.RoleAuditor, "audrey"), "admin", "deletions", "request", "--chunks", h.String(), "--reason", "x", "--key", filepath.Join(dir, "alice.key"), "--yes"); r.err == nil ||
		!strings.Contains(r.err.Error(), "admin token") {
		t.Errorf("auditor request: %v, want a forbidden error naming the admin token", r.err)
	}

	if r := run(alice, "admin", "deletions", "approve", "1"); r.err == nil || !strings.Contains(r.err.Error(), "--key or --ssh-key") {
		t.Errorf("approve without a key: %v", r.err)
	}
	r := run(alice, append([]string{"admin", "deletions", "request", "--chunks", h.String(), "--reason", "clean-up"}, rawKey("alice")...)...)
	if r.err != nil || !strings.Contains(r.stdout, "State      requested") || !strings.Contains(r.stdout, "chunk: "+h.String()) ||
		!strings.Contains(r.stdout, "type: deletion-request") || !strings.Contains(r.stdout, "signed by alice") {
		t.Fatalf("request: %v\n%s", r.err, r.stdout)
	}
	if r := run(alice, append([]string{"admin", "deletions", "approve", "1"}, rawKey("alice")...)...); r.err == nil || !strings.Contains(r.err.Error(), "another admin must approve") {
		t.Errorf("self-approval: %v", r.err)
	}
	// Without --yes and not on a terminal, nothing is signed.
	if r := run(bob, "admin", "deletions", "approve", "1", "--ssh-key", bobKey); r.err == nil || !strings.Contains(r.err.Error(), "--yes") {
		t.Errorf("unconfirmed approval: %v", r.err)
	}
	if r := run(bob, append([]string{"admin", "deletions", "approve", "1"}, sshKey...)...); r.err != nil ||
		!strings.Contains(r.stdout, "type: deletion-approval") || !strings.Contains(r.stdout, "signer: bob") {
		t.Fatalf("approve with ssh-keygen: %v\n%s", r.err, r.stdout)
	}
	// carol's token with alice's key: the key decides who approves, and
	// alice requested it.
	if r := run(carol, append([]string{"admin", "deletions", "approve", "1"}, rawKey("alice")...)...); r.err == nil {
		t.Error("approval with the requester's key accepted")
	}
	r = run(carol, append([]string{"admin", "deletions", "approve", "1"}, rawKey("carol")...)...)
	if r.err != nil || !strings.Contains(r.stdout, "State      scheduled") {
		t.Fatalf("quorum: %v\n%s", r.err, r.stdout)
	}
	if r := run(bob, "admin", "admins", "show"); r.err != nil || !strings.Contains(r.stdout, "bob") || !strings.Contains(r.stdout, "SHA256:") {
		t.Errorf("admins show: %v\n%s", r.err, r.stdout)
	}
	r = run(bob, "admin", "deletions", "list", "--state", "scheduled")
	if r.err != nil || len(table(t, r.stdout, "ID")) != 1 {
		t.Errorf("list: %v\n%s", r.err, r.stdout)
	}
	clk.Advance(store.DefaultDeletionDelay)
	if r := run(bob, "admin", "execute-due"); r.err != nil || !strings.Contains(r.stdout, "executed: 1\n") {
		t.Fatalf("execute-due: %v\n%s", r.err, r.stdout)
	}
	r = run(alice, "admin", "deletions", "show", "1", "--json")
	if r.err != nil || !strings.Contains(r.stdout, `"state": "executed"`) && !strings.Contains(r.stdout, `"state":"executed"`) {
		t.Errorf("show: %v\n%s", r.err, r.stdout)
	}
	if _, err := st.Stat(ctx, h); err == nil {
		t.Error("chunk still stored after execution")
	}
	if r := run(carol, append([]string{"admin", "deletions", "cancel", "1", "--reason", "late"}, rawKey("carol")...)...); r.err == nil {
		t.Error("cancel after execution succeeded")
	}

	// The admin set changes through the same signed machinery, with the
	// governance quorum and delay: add dave.
	if r := runCLI(t, nil, nil, "admin", "keygen", "--out", filepath.Join(dir, "dave.key")); r.err != nil {
		t.Fatal(r.err)
	}
	if r := run(alice, append([]string{"admin", "admins", "change", "--add", "dave=" + filepath.Join(dir, "dave.key.pub")}, rawKey("alice")...)...); r.err == nil {
		t.Error("admins change without --reason succeeded")
	}
	r = run(alice, append([]string{"admin", "admins", "change", "--add", "dave=" + filepath.Join(dir, "dave.key.pub"),
		"--reason", "new on-call admin"}, rawKey("alice")...)...)
	if r.err != nil || !strings.Contains(r.stdout, "admin-set-change-request") {
		t.Fatalf("admins change: %v\n%s", r.err, r.stdout)
	}
	// Each admin approves through their own token: a signature counts only
	// for the admin the token names.
	if r := run(bob, append([]string{"admin", "deletions", "approve", "2"}, rawKey("carol")...)...); r.err == nil || !strings.Contains(r.err.Error(), "403") {
		t.Fatalf("carol's approval through bob's token: %v, want 403", r.err)
	}
	for tok, signer := range map[string][]string{bob: sshKey, carol: rawKey("carol")} {
		if r := run(tok, append([]string{"admin", "deletions", "approve", "2"}, signer...)...); r.err != nil {
			t.Fatalf("approve admin-set change: %v\n%s", r.err, r.stderr)
		}
	}
	clk.Advance(store.DefaultDeletionDelay) // short of the governance delay
	if r := run(bob, "admin", "execute-due"); r.err != nil || strings.Contains(r.stdout, "executed: 2\n") {
		t.Fatalf("admin-set change executed before the governance delay: %v\n%s", r.err, r.stdout)
	}
	clk.Advance(7 * 24 * time.Hour)
	if r := run(bob, "admin", "execute-due"); r.err != nil || !strings.Contains(r.stdout, "executed: 2\n") {
		t.Fatalf("execute admin-set change: %v\n%s", r.err, r.stdout)
	}
	if r := run(bob, "admin", "admins", "show"); r.err != nil || !strings.Contains(r.stdout, "dave") {
		t.Errorf("admins show after adding dave: %v\n%s", r.err, r.stdout)
	}

	// Retention policies: set and lengthen at once; shortening directly is
	// refused naming the request command, and goes through the governed
	// request.
	if r := run(alice, "admin", "policies", "set", "standard", "--pattern", "*", "--daily", "0"); r.err == nil {
		t.Error("a policy without terms was set")
	}
	r = run(alice, "admin", "policies", "set", "standard", "--pattern", "*", "--daily", "14", "--weekly", "8",
		"--monthly", "13", "--yearly", "7", "--minimum", "30")
	if r.err != nil || !strings.Contains(r.stdout, "version 1") {
		t.Fatalf("policies set: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if r := run(alice, "admin", "policies", "set", "standard", "--yearly", "10"); r.err != nil || !strings.Contains(r.stdout, "version 2") {
		t.Fatalf("policies set --yearly 10: %v\n%s", r.err, r.stdout)
	}
	if r := run(alice, "admin", "policies", "set", "standard", "--daily", "7"); r.err == nil ||
		!strings.Contains(r.err.Error(), "vault admin policies request") {
		t.Fatalf("shortening with set: %v, want a refusal naming the request command", r.err)
	}
	if r := run(alice, "admin", "policies", "request", "standard", "--daily", "7"); r.err == nil {
		t.Error("policies request without --reason succeeded")
	}
	r = run(alice, append([]string{"admin", "policies", "request", "standard", "--daily", "7", "--reason", "a week of dailies"},
		rawKey("alice")...)...)
	if r.err != nil || !strings.Contains(r.stdout, "kind: policy") {
		t.Fatalf("policies request: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	for tok, signer := range map[string][]string{bob: sshKey, carol: rawKey("carol")} {
		if r := run(tok, append([]string{"admin", "deletions", "approve", "3"}, signer...)...); r.err != nil {
			t.Fatalf("approve policy change: %v\n%s", r.err, r.stderr)
		}
	}
	clk.Advance(store.DefaultDeletionDelay) // short of the governance delay
	if r := run(bob, "admin", "execute-due"); r.err != nil || strings.Contains(r.stdout, "executed: 3\n") {
		t.Fatalf("policy change executed before the governance delay: %v\n%s", r.err, r.stdout)
	}
	clk.Advance(7 * 24 * time.Hour)
	if r := run(bob, "admin", "execute-due"); r.err != nil || !strings.Contains(r.stdout, "executed: 3\n") {
		t.Fatalf("execute policy change: %v\n%s", r.err, r.stdout)
	}
	if r := run(token(auth.RoleAuditor, "eve"), "admin", "policies", "show", "standard"); r.err != nil ||
		!strings.Contains(r.stdout, "version 3") || !strings.Contains(r.stdout, "(request 3)") {
		t.Errorf("policies show after the request: %v\n%s", r.err, r.stdout)
	}
	if r := run(bob, "admin", "policies", "list"); r.err != nil || !strings.Contains(r.stdout, "standard") {
		t.Errorf("policies list: %v\n%s", r.err, r.stdout)
	}
	// Routine expiry: authorised once (governance quorum and delay), then
	// the executor removes what expires; any one admin suspends it.
	for _, args := range [][]string{
		{"admin", "expiry", "authorise", "--reason", "x"},                                           // no ceiling
		{"admin", "expiry", "authorise", "--max-percent", "5"},                                      // no reason
		{"admin", "expiry", "authorise", "--max-percent", "5", "--interval", "1m", "--reason", "x"}, // too often
		{"admin", "expiry", "suspend", "1", "--reason", "x"},                                        // not an authorisation
		{"admin", "expiry", "show", "--runs", "0"},
	} {
		if r := run(alice, append(args, rawKey("alice")...)...); r.err == nil {
			t.Errorf("vault %s succeeded", strings.Join(args, " "))
		}
	}
	if r := run(alice, "admin", "expiry", "show"); r.err != nil || !strings.Contains(r.stdout, "nothing expires by itself") {
		t.Errorf("expiry show without authorisations: %v\n%s", r.err, r.stdout)
	}
	r = run(alice, append([]string{"admin", "expiry", "authorise", "--interval", "24h", "--max-percent", "100", "--max-chunks", "10",
		"--reason", "routine expiry"}, rawKey("alice")...)...)
	if r.err != nil || !strings.Contains(r.stdout, "kind: expiry_authorisation") || !strings.Contains(r.stdout, "max-percent: 100") {
		t.Fatalf("expiry authorise: %v\n%s", r.err, r.stdout)
	}
	for tok, signer := range map[string][]string{bob: sshKey, carol: rawKey("carol")} {
		if r := run(tok, append([]string{"admin", "deletions", "approve", "4"}, signer...)...); r.err != nil {
			t.Fatalf("approve expiry authorisation: %v\n%s", r.err, r.stderr)
		}
	}
	body = []byte("to expire")
	if _, err := st.PutChunk(ctx, "agent", chunk.Sum(body), bytes.NewReader(body), time.Time{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(7 * 24 * time.Hour)
	if r := run(bob, "admin", "execute-due"); r.err != nil || !strings.Contains(r.stdout, "executed: 4\n") {
		t.Fatalf("execute expiry authorisation: %v\n%s", r.err, r.stdout)
	}
	clk.Advance(store.DefaultMinRetention)
	alice, bob, carol = token(auth.RoleAdmin, "alice"), token(auth.RoleAdmin, "bob"), token(auth.RoleAdmin, "carol")
	if r := run(bob, "admin", "execute-due"); r.err != nil {
		t.Fatalf("execute-due with an expiry authorisation in force: %v", r.err)
	}
	if _, err := st.Stat(ctx, chunk.Sum(body)); err == nil {
		t.Error("expired chunk still stored under an expiry authorisation in force")
	}
	r = run(carol, "admin", "expiry", "show")
	if r.err != nil || !strings.Contains(r.stdout, "Authorisation 4: in force; every 24h0m0s, at most 100% of the stored bytes and 10 chunks") ||
		len(table(t, r.stdout, "RUN")) != 1 {
		t.Errorf("expiry show: %v\n%s", r.err, r.stdout)
	}
	if r := run(carol, append([]string{"admin", "expiry", "suspend", "4"}, rawKey("carol")...)...); r.err == nil {
		t.Error("suspend without --reason succeeded")
	}
	r = run(carol, append([]string{"admin", "expiry", "suspend", "4", "--reason", "audit first"}, rawKey("carol")...)...)
	if r.err != nil || !strings.Contains(r.stdout, "suspended by carol") {
		t.Fatalf("expiry suspend: %v\n%s", r.err, r.stdout)
	}
	if r := run(alice, "admin", "expiry", "show", "--json"); r.err != nil || !strings.Contains(r.stdout, `"in_force": false`) {
		t.Errorf("expiry show after suspension: %v\n%s", r.err, r.stdout)
	}
}

// mustSSHKey makes an OpenSSH key pair with ssh-keygen and returns the
// private key's path.
func mustSSHKey(t testing.TB, dir, name, typ string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	args := []string{"-q", "-t", typ, "-N", "", "-C", name, "-f", path}
	if typ == "rsa" {
		args = append(args, "-b", "2048")
	}
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	return path
}
