package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	pemTypePrivateKey = "PRIVATE KEY"
	// maxKeyFileSize bounds what ReadKeyFile reads; an Ed25519 PKCS#8 PEM is
	// about 120 bytes.
	maxKeyFileSize = 16 << 10
)

// GenerateKey returns a new Ed25519 signing key from crypto/rand.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("auth: generate key: %w", err)
	}
	return priv, nil
}

// WriteKeyFile writes key to a new file at path as a PKCS#8 "PRIVATE KEY" PEM
// block with mode 0600. It refuses to overwrite an existing file (the error
// wraps fs.ErrExist): replacing a signing key must be a deliberate act.
func WriteKeyFile(path string, key ed25519.PrivateKey) (err error) {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("auth: write key file %s: not an Ed25519 private key", path)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("auth: write key file %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemTypePrivateKey, Bytes: der})

	// O_EXCL: never truncate or follow into an existing key, and never widen
	// the mode of a file someone else created.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("auth: write key file: %w", err)
	}
	defer func() {
		if err != nil {
			// A partial key file would be refused later anyway; remove it so
			// that a retry is not blocked by O_EXCL.
			_ = os.Remove(path)
		}
	}()
	if _, err = f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("auth: write key file %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("auth: write key file %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("auth: write key file %s: %w", path, err)
	}
	return nil
}

// ReadKeyFile reads an Ed25519 private key written by WriteKeyFile. Like ssh,
// it refuses a file whose mode lets group or others access it (mode&0077 != 0),
// and it refuses anything but a regular file holding a PKCS#8 Ed25519 key.
func ReadKeyFile(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read key file: %w", err)
	}
	defer f.Close()

	// Stat the open descriptor, not the path, so the checked file is the read
	// file.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth: read key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("auth: read key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("auth: read key file %s: permissions %#o are too open; the key must not be accessible by group or others (chmod 600)", path, perm)
	}

	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("auth: read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("auth: read key file %s: file too large for a key", path)
	}
	key, err := parseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("auth: read key file %s: %w", path, err)
	}
	return key, nil
}

func parseKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != pemTypePrivateKey {
		return nil, fmt.Errorf("PEM block type %q, want %q", block.Type, pemTypePrivateKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want an Ed25519 key", parsed)
	}
	return key, nil
}

// keyID is the kid of pub: the first 16 hex characters of SHA-256 of the raw
// public key. It names the key so that rotation can accept old and new keys.
func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])[:16]
}
