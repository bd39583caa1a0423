package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

func runInit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "data directory to create (VAULT_DATA_DIR)")
	id := fs.String("vault-id", "", "vault id (default: random); tokens are bound to it")
	var admins []string
	fs.Func("admin", "enrol an admin: `NAME=PUBKEYFILE` (from vault admin keygen, or an ssh-ed25519 .pub); repeat, at least approvals-required+1 times", func(v string) error {
		admins = append(admins, v)
		return nil
	})
	approvals := fs.Int("approvals-required", config.DefaultApprovalsRequired, "admins other than the requester who must approve a deletion")
	delay := fs.String("deletion-delay", "72h", "wait between a deletion's quorum and its execution")
	govApprovals := fs.Int("governance-approvals", 0, "approvals for an admin-set change (default: max(2, approvals-required))")
	govDelay := fs.String("governance-delay", "7d", "wait before an admin-set change takes effect (at least the deletion delay)")
	dev := fs.Bool("dev", false, "allow a deletion delay below the safe minimum (dev vaults only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("init: --data-dir is required")
	}
	var genesis *store.Genesis
	if len(admins) > 0 {
		d, err1 := config.ParseDuration(*delay)
		gd, err2 := config.ParseDuration(*govDelay)
		if err1 != nil || err2 != nil {
			return errors.New("init: bad --deletion-delay or --governance-delay")
		}
		if d < config.SafeMinDeletionDelay && !*dev {
			return fmt.Errorf("init: deletion delay %s is below %s; only --dev allows that", d, config.SafeMinDeletionDelay)
		}
		if *govApprovals == 0 {
			*govApprovals = max(2, *approvals)
		}
		g := store.Genesis{Policy: store.Policy{ApprovalsRequired: *approvals, Delay: store.Duration(d),
			GovernanceApprovals: *govApprovals, GovernanceDelay: store.Duration(gd)}}
		for _, a := range admins {
			name, file, ok := strings.Cut(a, "=")
			if !ok {
				return fmt.Errorf("init: --admin %q: want NAME=PUBKEYFILE", a)
			}
			k, err := readAdminKey(file)
			if err != nil {
				return fmt.Errorf("init: --admin %s: %w", name, err)
			}
			g.Admins = append(g.Admins, store.Admin{Name: name, Key: k})
		}
		if err := g.Check(); err != nil {
			return fmt.Errorf("init: admins: %w", err)
		}
		genesis = &g
	}
	if _, err := os.Stat(filepath.Join(*dir, config.VaultFile)); err == nil {
		return fmt.Errorf("init: %s already holds a vault; refusing to overwrite it", *dir)
	}
	if *id == "" {
		b := make([]byte, 8)
		rand.Read(b)
		*id = "wv-" + hex.EncodeToString(b)
	}
	if err := os.MkdirAll(*dir, 0o750); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	// Opening the blob store writes its format marker and probes that the
	// directory takes durable writes.
	if _, err := disk.Open(*dir, disk.Options{}); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := auth.WriteKeyFile(filepath.Join(*dir, config.SigningKeyFile), key); err != nil {
		if errors.Is(err, iofs.ErrExist) {
			return fmt.Errorf("init: %s holds a token-signing key but no %s (an interrupted init?): "+
				"restore %s, or remove the key deliberately and run init again", *dir, config.VaultFile, config.VaultFile)
		}
		return fmt.Errorf("init: %w", err)
	}
	// The audit log's checkpoint key: separate from the token-signing key.
	ckptKey, err := createCheckpointKey(*dir, *id)
	if err != nil {
		return fmt.Errorf("init: checkpoint key: %w", err)
	}
	v := config.Vault{ID: *id, CreatedAt: time.Now().UTC(), SigningKey: config.SigningKeyFile}
	if genesis != nil {
		if err := writeAdmins(*dir, *genesis); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	if err := config.WriteVault(*dir, v); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(stdout, "initialised vault %s in %s\n", v.ID, *dir)
	fmt.Fprintf(stdout, "token-signing key: %s (keep it secret; anyone holding it can mint tokens)\n",
		v.SigningKeyPath(*dir))
	fmt.Fprintf(stdout, "audit checkpoint key: %s; auditors pin its verifier key (also in %s):\n  %s\n",
		filepath.Join(*dir, config.CheckpointKeyFile), config.CheckpointVerifierFile, ckptKey)
	if genesis != nil {
		fmt.Fprintf(stdout, "admins: %d enrolled in %s (seeded into the database by `vault serve`); "+
			"deletions need %s and wait %s\n", len(genesis.Admins), adminsFile,
			plural(genesis.Policy.ApprovalsRequired, "approval"), time.Duration(genesis.Policy.Delay))
	} else {
		fmt.Fprintln(stdout, "admins: none enrolled (--admin): nothing can ever be deleted from this vault")
	}
	return nil
}
