package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Files in a vault's data directory.
const (
	VaultFile      = "vault.json"
	SigningKeyFile = "token-signing.key"
)

// Vault is the identity a data directory carries, written once by
// `vault init`.
type Vault struct {
	ID        string    `json:"vault_id"`
	CreatedAt time.Time `json:"created_at"`
	// SigningKey is the token-signing key's file, relative to the data dir.
	SigningKey string `json:"signing_key"`
}

// ReadVault reads dir's identity file.
func ReadVault(dir string) (Vault, error) {
	var v Vault
	b, err := os.ReadFile(filepath.Join(dir, VaultFile))
	if err != nil {
		return v, fmt.Errorf("config: %s is not an initialised vault (run `vault init --data-dir %s`): %w", dir, dir, err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("config: %s: %w", VaultFile, err)
	}
	if v.ID == "" || v.SigningKey == "" {
		return v, fmt.Errorf("config: %s: vault_id and signing_key are required", VaultFile)
	}
	return v, nil
}

// SigningKeyPath returns the absolute path of the token-signing key.
func (v Vault) SigningKeyPath(dir string) string {
	if filepath.IsAbs(v.SigningKey) {
		return v.SigningKey
	}
	return filepath.Join(dir, v.SigningKey)
}

// WriteVault creates dir's identity file; it refuses to overwrite one.
func WriteVault(dir string, v Vault) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, VaultFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("config: write %s: %w", VaultFile, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("config: write %s: %w", VaultFile, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("config: sync %s: %w", VaultFile, err)
	}
	return f.Close()
}
