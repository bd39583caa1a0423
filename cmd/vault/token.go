package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/store"
)

func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("token: want 'token issue' or 'token revoke'")
	}
	switch args[0] {
	case "issue":
		return runTokenIssue(args[1:], getenv, stdout, stderr)
	case "revoke":
		return runTokenRevoke(ctx, args[1:], getenv, stdout, stderr)
	case "rotate-key":
		return runTokenRotateKey(args[1:], getenv, stdout, stderr)
	}
	return fmt.Errorf("token: unknown subcommand %q", args[0])
}

func runTokenIssue(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "vault data directory (VAULT_DATA_DIR)")
	roleName := fs.String("role", "", "agent, reader, auditor or admin")
	subject := fs.String("subject", "", "who the token is for (one person or agent; approvals count per subject)")
	ttlText := fs.String("ttl", "24h", "lifetime, e.g. 15m, 24h, 30d (at most 366d)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("token issue: --data-dir is required")
	}
	role, err := auth.ParseRole(*roleName)
	if err != nil {
		return fmt.Errorf("token issue: %w", err)
	}
	ttl, err := config.ParseDuration(*ttlText)
	if err != nil {
		return fmt.Errorf("token issue: ttl: %w", err)
	}
	v, err := config.ReadVault(*dir)
	if err != nil {
		return err
	}
	key, err := auth.ReadKeyFile(v.SigningKeyPath(*dir))
	if err != nil {
		return err
	}
	tok, claims, err := auth.NewIssuer(key, v.ID, clock.Real{}).Issue(role, *subject, ttl)
	if err != nil {
		return fmt.Errorf("token issue: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "issued %s token for %q, id %s, expires %s\n",
		role, *subject, claims.ID, claims.ExpiresAt.Time.UTC().Format(time.RFC3339))
	return nil
}

func runTokenRevoke(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "PostgreSQL URL (VAULT_DATABASE_URL)")
	reason := fs.String("reason", "", "why (recorded in the audit log)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("token revoke: want exactly one token id (jti), as printed by 'token issue'")
	}
	if *url == "" {
		return errors.New("token revoke: --database-url or VAULT_DATABASE_URL is required")
	}
	log := newLogger(stderr, "text", "warn")
	pool, err := openDB(ctx, *url, 2, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	s := store.New(pool, nil, clock.Real{}, log, nil, store.Options{})
	if err := s.RevokeToken(ctx, cliActor(), fs.Arg(0), *reason); err != nil {
		return fmt.Errorf("token revoke: %w", err)
	}
	fmt.Fprintf(stdout, "revoked token %s\n", fs.Arg(0))
	return nil
}

// runTokenRotateKey replaces the token-signing key. The old key's public
// half is kept in vault.json and still verifies the tokens it issued until
// the longest of them can have expired; its private half is destroyed, so
// no new token can be made with it. The server picks the change up at its
// next start.
func runTokenRotateKey(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token rotate-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "vault data directory (VAULT_DATA_DIR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("token rotate-key: --data-dir is required")
	}
	v, err := config.ReadVault(*dir)
	if err != nil {
		return err
	}
	path := v.SigningKeyPath(*dir)
	old, err := auth.ReadKeyFile(path)
	if err != nil {
		return err
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	// 1. The new key under a temporary name. 2. The old public key listed
	// as retired (a crash here leaves it both current and retired:
	// harmless). 3. The new key renamed over the old one.
	tmp := path + ".new"
	os.Remove(tmp)
	if err := auth.WriteKeyFile(tmp, key); err != nil {
		return fmt.Errorf("token rotate-key: %w", err)
	}
	now := time.Now().UTC()
	oldPub := old.Public().(ed25519.PublicKey)
	v.RetiredKeys = append(v.RetiredKeys, config.RetiredKey{
		KID: auth.KeyID(oldPub), PublicKey: oldPub, RetiredAt: now, NotAfter: now.Add(auth.MaxTTL + time.Hour),
	})
	if err := config.UpdateVault(*dir, v); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("token rotate-key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("token rotate-key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	newPub := key.Public().(ed25519.PublicKey)
	fmt.Fprintf(stdout, "rotated the token-signing key: new key id %s; tokens of key %s stay valid until they expire (at the latest %s)\n",
		auth.KeyID(newPub), auth.KeyID(oldPub), now.Add(auth.MaxTTL).Format(time.RFC3339))
	fmt.Fprintln(stdout, "restart the server to use the new key; revoke old tokens with 'vault token revoke' if the old key was compromised")
	return nil
}
