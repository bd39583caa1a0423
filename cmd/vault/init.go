package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/store/disk"
)

func runInit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", getenv("VAULT_DATA_DIR"), "data directory to create (VAULT_DATA_DIR)")
	id := fs.String("vault-id", "", "vault id (default: random); tokens are bound to it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("init: --data-dir is required")
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
	v := config.Vault{ID: *id, CreatedAt: time.Now().UTC(), SigningKey: config.SigningKeyFile}
	if err := config.WriteVault(*dir, v); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(stdout, "initialised vault %s in %s\n", v.ID, *dir)
	fmt.Fprintf(stdout, "token-signing key: %s (keep it secret; anyone holding it can mint tokens)\n",
		v.SigningKeyPath(*dir))
	return nil
}
