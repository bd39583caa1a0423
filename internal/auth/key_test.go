package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFileRoundTrip(t *testing.T) {
	t.Parallel()
	key := mustGenerateKey(t)
	path := filepath.Join(t.TempDir(), "signing.pem")
	if err := WriteKeyFile(path, key); err != nil {
		t.Fatalf("WriteKeyFile: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %#o, want 0600", got)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PRIVATE KEY PEM block:\n%s", data)
	}
	got, err := ReadKeyFile(path)
	if err != nil {
		t.Fatalf("ReadKeyFile: %v", err)
	}
	if !got.Equal(key) {
		t.Error("ReadKeyFile returned a different key")
	}
}

func TestWriteKeyFileRefusesOverwrite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "signing.pem")
	if err := WriteKeyFile(path, mustGenerateKey(t)); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	err = WriteKeyFile(path, mustGenerateKey(t))
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteKeyFile = %v, want fs.ErrExist", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("refused WriteKeyFile still changed the existing key file")
	}
}

func TestWriteKeyFileRejectsBadKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "signing.pem")
	if err := WriteKeyFile(path, make([]byte, 10)); err == nil {
		t.Error("WriteKeyFile(short key) = nil, want error")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rejected key left a file behind: stat error %v", err)
	}
}

func TestReadKeyFileRejects(t *testing.T) {
	t.Parallel()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(mustGenerateKey(t))
	if err != nil {
		t.Fatal(err)
	}
	goodPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER})

	tests := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{name: "world readable 0644", data: goodPEM, mode: 0o644},
		{name: "group readable 0640", data: goodPEM, mode: 0o640},
		{name: "other executable 0601", data: goodPEM, mode: 0o601},
		{name: "ecdsa key", data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), mode: 0o600},
		{name: "wrong PEM type", data: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: edDER}), mode: 0o600},
		{name: "not PEM", data: []byte("hello"), mode: 0o600},
		{name: "empty", data: nil, mode: 0o600},
		{name: "trailing data", data: append(append([]byte{}, goodPEM...), "junk"...), mode: 0o600},
		{name: "huge", data: bytes.Repeat([]byte("A"), 1<<20), mode: 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			// Chmod explicitly: WriteFile's mode is filtered by the umask.
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			if key, err := ReadKeyFile(path); err == nil {
				t.Errorf("ReadKeyFile(%s, mode %#o) = %d-byte key, nil; want error", tt.name, tt.mode, len(key))
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		_, err := ReadKeyFile(filepath.Join(t.TempDir(), "absent.pem"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadKeyFile(absent) = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKeyFile(dir); err == nil {
			t.Error("ReadKeyFile(directory) = nil error, want error")
		}
	})
}
