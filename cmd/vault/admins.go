package main

// admins.json: the genesis admin set, written once by `vault init` in the
// data directory and seeded into the database by `vault serve`. It anchors
// the admin set outside the database: serve refuses to start if the two
// disagree.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/store"
)

// adminsFile is the genesis admin set's file in the data directory.
const adminsFile = "admins.json"

type adminsJSON struct {
	ApprovalsRequired   int    `json:"approvals_required"`
	Delay               string `json:"delay"`
	GovernanceApprovals int    `json:"governance_approvals"`
	GovernanceDelay     string `json:"governance_delay"`
	Admins              []struct {
		Name      string `json:"name"`
		PublicKey string `json:"public_key"`
	} `json:"admins"`
}

func (a adminsJSON) genesis() (store.Genesis, error) {
	var g store.Genesis
	d, err1 := time.ParseDuration(a.Delay)
	gd, err2 := time.ParseDuration(a.GovernanceDelay)
	if err1 != nil || err2 != nil {
		return g, fmt.Errorf("%s: bad delay", adminsFile)
	}
	g.Policy = store.Policy{ApprovalsRequired: a.ApprovalsRequired, Delay: store.Duration(d),
		GovernanceApprovals: a.GovernanceApprovals, GovernanceDelay: store.Duration(gd)}
	for _, m := range a.Admins {
		k, err := approval.ParsePublicKey(m.PublicKey)
		if err != nil {
			return g, fmt.Errorf("%s: admin %s: %w", adminsFile, m.Name, err)
		}
		g.Admins = append(g.Admins, store.Admin{Name: m.Name, Key: k})
	}
	return g, g.Check()
}

func writeAdmins(dir string, g store.Genesis) error {
	a := adminsJSON{ApprovalsRequired: g.Policy.ApprovalsRequired, Delay: time.Duration(g.Policy.Delay).String(),
		GovernanceApprovals: g.Policy.GovernanceApprovals, GovernanceDelay: time.Duration(g.Policy.GovernanceDelay).String()}
	for _, m := range g.Admins {
		a.Admins = append(a.Admins, struct {
			Name      string `json:"name"`
			PublicKey string `json:"public_key"`
		}{m.Name, m.Key.String()})
	}
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, adminsFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readAdmins reads dir's genesis admin set; ok is false if there is none.
func readAdmins(dir string) (g store.Genesis, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, adminsFile))
	if errors.Is(err, iofs.ErrNotExist) {
		return g, false, nil
	}
	if err != nil {
		return g, false, err
	}
	var a adminsJSON
	if err := json.Unmarshal(b, &a); err != nil {
		return g, false, fmt.Errorf("%s: %w", adminsFile, err)
	}
	g, err = a.genesis()
	return g, true, err
}

// readAdminKey reads a public key file: a `vault admin keygen` .pub file or
// an OpenSSH ssh-ed25519 .pub file.
func readAdminKey(file string) (approval.Key, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return approval.Key{}, err
	}
	return approval.ParsePublicKey(strings.TrimSpace(string(b)))
}

// seedAdmins makes the database's admin set agree with the data
// directory's admins.json, or refuses.
func seedAdmins(ctx context.Context, st *store.Store, dir string, log *slog.Logger) error {
	g, ok, err := readAdmins(dir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if !ok {
		if _, err := st.AdminSet(ctx, 1); err == nil {
			return fmt.Errorf("serve: the database has an admin set but %s has no %s: wrong data directory or database?", dir, adminsFile)
		} else if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("serve: %w", err)
		}
		log.Warn("no admins enrolled: nothing can ever be deleted from this vault (init with --admin to enrol admins)")
		return nil
	}
	if err := st.SeedAdminSet(ctx, g); err != nil {
		return fmt.Errorf("serve: %w (refusing to start: %s and the database must hold the same genesis admin set)", err, adminsFile)
	}
	return nil
}
