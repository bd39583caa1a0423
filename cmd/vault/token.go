package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/store"
)

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// runTokenIssue signs a token with the data directory's key and registers
// it, through the database the server uses, before printing it: a token
// that is not in the register is never handed out, so `vault token list`
// shows every token and `vault token revoke` can refuse unknown ids.
func runTokenIssue(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token issue", stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "vault data directory (VAULT_DATA_DIR)")
	url := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "PostgreSQL URL, where the token is registered (VAULT_DATABASE_URL)")
	roleName := fs.String("role", "", "agent, reader, auditor, admin, metrics or replicator")
	subject := fs.String("subject", "", "who the token is for (one person or agent; approvals count per subject)")
	ttlText := fs.String("ttl", "24h", "lifetime, e.g. 15m, 24h, 30d (at most 366d)")
	var sources, repos listFlag
	fs.Var(&sources, "source", "agent/reader/replicator: a source the token may write (agent), read (reader) or copy (replicator); glob patterns (web-*) allowed; repeatable or comma-separated")
	fs.Var(&repos, "restic-repo", "agent/reader/replicator: a restic repository the token may create, write and read; glob patterns allowed; repeatable or comma-separated")
	allSources := fs.Bool("all-sources", false, "agent/reader/replicator: every source and restic repository (NOT recommended: one stolen token then reaches every backup)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("token issue: unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return errors.New("token issue: --data-dir is required")
	}
	role, err := auth.ParseRole(*roleName)
	if err != nil {
		return fmt.Errorf("token issue: %w", err)
	}
	var scope *auth.Scope
	switch {
	case !auth.Scoped(role) && (len(sources) > 0 || len(repos) > 0 || *allSources):
		return fmt.Errorf("token issue: %s tokens have no scope: --source, --restic-repo and --all-sources are for agent, reader and replicator tokens", role)
	case !auth.Scoped(role):
	case *allSources && (len(sources) > 0 || len(repos) > 0):
		return errors.New("token issue: --all-sources cannot be combined with --source or --restic-repo")
	case *allSources:
		s := auth.AllSources()
		scope = &s
	case len(sources) == 0 && len(repos) == 0:
		return fmt.Errorf("token issue: %s tokens need a scope: --source NAME and/or --restic-repo NAME (glob patterns such as web-* allowed), "+
			"or --all-sources for every source (not recommended)", role)
	default:
		scope = &auth.Scope{Sources: sources, Restic: repos}
	}
	if scope != nil {
		if err := scope.Validate(); err != nil {
			return fmt.Errorf("token issue: %w", err)
		}
	}
	ttl, err := config.ParseDuration(*ttlText)
	if err != nil {
		return fmt.Errorf("token issue: ttl: %w", err)
	}
	if *url == "" {
		return errors.New("token issue: --database-url or VAULT_DATABASE_URL is required: every token is registered where the server can list and revoke it")
	}
	v, err := config.ReadVault(*dir)
	if err != nil {
		return err
	}
	key, err := auth.ReadKeyFile(v.SigningKeyPath(*dir))
	if err != nil {
		return err
	}
	issuer := auth.NewIssuer(key, v.ID, clock.Real{})
	var tok string
	var claims auth.Claims
	if scope != nil {
		tok, claims, err = issuer.IssueScoped(role, *subject, ttl, *scope)
	} else {
		tok, claims, err = issuer.Issue(role, *subject, ttl)
	}
	if err != nil {
		return fmt.Errorf("token issue: %w", err)
	}
	var scopeJSON json.RawMessage
	if claims.Scope != nil {
		if scopeJSON, err = json.Marshal(claims.Scope); err != nil {
			return fmt.Errorf("token issue: %w", err)
		}
	}
	log := newLogger(stderr, "text", "warn")
	pool, err := openDB(ctx, *url, 2, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	s := store.New(pool, nil, clock.Real{}, log, nil, store.Options{})
	err = s.RegisterToken(ctx, store.IssuedToken{
		JTI: claims.ID, Role: string(role), Subject: claims.Subject, Scope: scopeJSON, KeyID: issuer.KeyID(),
		IssuedAt: claims.IssuedAt.Time, ExpiresAt: claims.ExpiresAt.Time, IssuedBy: cliActor(),
	})
	if err != nil {
		return fmt.Errorf("token issue: register the token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	scopeText := ""
	if claims.Scope != nil {
		scopeText = ", scope: " + claims.Scope.String()
	}
	fmt.Fprintf(stderr, "issued %s token for %q%s, id %s, expires %s\n",
		role, *subject, scopeText, claims.ID, claims.ExpiresAt.Time.UTC().Format(time.RFC3339))
	if claims.Scope != nil && claims.Scope.All {
		fmt.Fprintln(stderr, "warning: this token reaches every source and restic repository; prefer --source/--restic-repo")
	}
	return nil
}

// runTokenList prints the register: every issued token, or only the
// active ones.
func runTokenList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token list", stderr)
	url := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "PostgreSQL URL (VAULT_DATABASE_URL)")
	active := fs.Bool("active", false, "only tokens neither revoked nor expired")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("token list: --database-url or VAULT_DATABASE_URL is required")
	}
	log := newLogger(stderr, "text", "warn")
	pool, err := openDB(ctx, *url, 2, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	s := store.New(pool, nil, clock.Real{}, log, nil, store.Options{})
	now := time.Now()
	list, err := s.ListTokens(ctx, store.TokenQuery{Active: *active, Now: now})
	if err != nil {
		return fmt.Errorf("token list: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tSUBJECT\tSCOPE\tEXPIRES\tREVOKED\tKEY")
	for _, t := range list {
		scope := "-"
		if len(t.Scope) > 0 {
			var sc auth.Scope
			if err := json.Unmarshal(t.Scope, &sc); err != nil {
				scope = string(t.Scope)
			} else {
				scope = sc.String()
			}
		}
		expires := t.ExpiresAt.UTC().Format(time.RFC3339)
		if !t.ExpiresAt.After(now) {
			expires += " (expired)"
		}
		revoked := "no"
		if t.RevokedAt != nil {
			revoked = t.RevokedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.JTI, t.Role, t.Subject, scope, expires, revoked, t.KeyID)
	}
	return tw.Flush()
}

func runTokenRevoke(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token revoke", stderr)
	url := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "PostgreSQL URL (VAULT_DATABASE_URL)")
	reason := fs.String("reason", "", "why (recorded in the audit log)")
	unregistered := fs.Bool("unregistered", false, "revoke an id that is not in the register (only for tokens issued before the register existed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("token revoke: want exactly one token id (jti), as printed by 'token issue' and 'token list'")
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
	if err := s.RevokeToken(ctx, cliActor(), fs.Arg(0), *reason, store.RevokeOptions{Unregistered: *unregistered}); err != nil {
		return fmt.Errorf("token revoke: %w", err)
	}
	fmt.Fprintf(stdout, "revoked token %s\n", fs.Arg(0))
	return nil
}

// runTokenRotateKey replaces the token-signing key. The old key's public
// half is kept in vault.json and still verifies the tokens it issued until
// the longest of them can have expired; its private half is destroyed, so
// no new token can be made with it. The server picks the new key up at its
// next start.
//
// With --compromised the old key is distrusted instead: it is recorded in
// the database first, so that every running server refuses every token it
// signed at once (whoever stole it can mint any id and any issue time),
// and in vault.json, so that it is never trusted again. Every token must
// then be reissued with the new key.
func runTokenRotateKey(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token rotate-key", stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "vault data directory (VAULT_DATA_DIR)")
	compromised := fs.Bool("compromised", false, "the old key may have been stolen: refuse every token it signed, at once (every token must be reissued)")
	url := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "PostgreSQL URL, with --compromised: where running servers learn of it (VAULT_DATABASE_URL)")
	reason := fs.String("reason", "", "with --compromised: why (recorded in the audit log)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("token rotate-key: --data-dir is required")
	}
	if *compromised && *url == "" {
		return errors.New("token rotate-key --compromised: --database-url or VAULT_DATABASE_URL is required, so that running servers refuse the old key at once")
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
	oldPub := old.Public().(ed25519.PublicKey)
	now := time.Now().UTC()
	if *compromised {
		// First, before any file changes: from this commit on, no server
		// accepts a token of the old key.
		log := newLogger(stderr, "text", "warn")
		pool, err := openDB(ctx, *url, 2, log)
		if err != nil {
			return err
		}
		err = store.New(pool, nil, clock.Real{}, log, nil, store.Options{}).
			DistrustKey(ctx, cliActor(), auth.KeyID(oldPub), oldPub, *reason)
		pool.Close()
		if err != nil {
			return fmt.Errorf("token rotate-key: %w", err)
		}
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	// 1. The new key under a temporary name. 2. The old public key listed
	// as retired, or distrusted (a crash here leaves it both current and
	// listed: harmless, a distrusted key is refused even as the current
	// one). 3. The new key renamed over the old one.
	tmp := path + ".new"
	os.Remove(tmp)
	if err := auth.WriteKeyFile(tmp, key); err != nil {
		return fmt.Errorf("token rotate-key: %w", err)
	}
	if *compromised {
		v.DistrustedKeys = append(v.DistrustedKeys, config.DistrustedKey{
			KID: auth.KeyID(oldPub), PublicKey: oldPub, DistrustedAt: now, Reason: *reason,
		})
	} else {
		v.RetiredKeys = append(v.RetiredKeys, config.RetiredKey{
			KID: auth.KeyID(oldPub), PublicKey: oldPub, RetiredAt: now, NotAfter: now.Add(auth.MaxTTL + time.Hour),
		})
	}
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
	if *compromised {
		fmt.Fprintf(stdout, "rotated the token-signing key: new key id %s; key %s is distrusted: every token it signed is refused from now on\n",
			auth.KeyID(newPub), auth.KeyID(oldPub))
		fmt.Fprintln(stdout, "restart the server to use the new key (until then it refuses every token), then reissue every token with 'vault token issue'")
		return nil
	}
	fmt.Fprintf(stdout, "rotated the token-signing key: new key id %s; tokens of key %s stay valid until they expire (at the latest %s)\n",
		auth.KeyID(newPub), auth.KeyID(oldPub), now.Add(auth.MaxTTL).Format(time.RFC3339))
	fmt.Fprintln(stdout, "restart the server to use the new key; if the old key may have been stolen, rotate with --compromised instead")
	return nil
}
