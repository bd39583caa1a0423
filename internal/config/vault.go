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
	// RetiredKeys are former signing keys (public halves only), which still
	// verify the tokens they issued until NotAfter.
	RetiredKeys []RetiredKey `json:"retired_keys,omitempty"`
	// DistrustedKeys are former signing keys replaced by `vault token
	// rotate-key --compromised`: no token they signed is ever accepted.
	DistrustedKeys []DistrustedKey `json:"distrusted_keys,omitempty"`
}

// DistrustedKey is a signing key that may have been stolen.
type DistrustedKey struct {
	KID          string    `json:"kid"`
	PublicKey    []byte    `json:"public_key"` // Ed25519, base64 in JSON
	DistrustedAt time.Time `json:"distrusted_at"`
	Reason       string    `json:"reason,omitempty"`
}

// RetiredKey is a signing key replaced by `vault token rotate-key`.
type RetiredKey struct {
	KID       string    `json:"kid"`
	PublicKey []byte    `json:"public_key"` // Ed25519, base64 in JSON
	RetiredAt time.Time `json:"retired_at"`
	NotAfter  time.Time `json:"not_after"`
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

// UpdateVault replaces dir's identity file atomically (temp file, fsync,
// rename, directory fsync): a crash leaves the old file or the new one.
func UpdateVault(dir string, v Vault) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, VaultFile+".tmp")
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("config: update %s: %w", VaultFile, err)
	}
	if _, err := f.Write(append(b, '\n')); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, VaultFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("config: update %s: %w", VaultFile, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Files of the audit log's checkpoints in a data directory (issue 9). The
// checkpoint key is separate from the token-signing key: it signs the
// audit log's checkpoints and nothing else.
const (
	CheckpointKeyFile      = "checkpoint.key"  // note signer key, 0600
	CheckpointVerifierFile = "checkpoint.vkey" // its public verifier key, for auditors
	LatestCheckpointFile   = "latest-checkpoint"
	// JournalDir holds the journal of audit entries (internal/journal):
	// the authoritative record the index can be rebuilt from.
	JournalDir = "journal"
)
