package main

// The server side of the verifiable audit log (issue 9): the checkpoint
// key in the data directory, the rollback guard at start, and the loop
// that integrates chunk commits and signs checkpoints.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/store"
)

// checkpointKeys is the vault's checkpoint signer and verifier.
type checkpointKeys struct {
	signer   note.Signer
	verifier note.Verifier
	vkey     string // the verifier key text auditors pin
}

// createCheckpointKey generates dir's checkpoint key (0600, never
// overwritten) and its verifier key file, and returns the verifier key.
func createCheckpointKey(dir, vaultID string) (string, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, audit.Origin(vaultID))
	if err != nil {
		return "", err
	}
	if err := writeNewFile(filepath.Join(dir, config.CheckpointKeyFile), []byte(skey+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := writeFileAtomic(filepath.Join(dir, config.CheckpointVerifierFile), []byte(vkey+"\n"), 0o644); err != nil {
		return "", err
	}
	return vkey, nil
}

// loadCheckpointKey reads dir's checkpoint key; if there is none (a data
// directory from before the Merkle log), it creates one and says so.
func loadCheckpointKey(dir, vaultID string, log *slog.Logger) (checkpointKeys, error) {
	var k checkpointKeys
	b, err := os.ReadFile(filepath.Join(dir, config.CheckpointKeyFile))
	if errors.Is(err, iofs.ErrNotExist) {
		vkey, err := createCheckpointKey(dir, vaultID)
		if err != nil {
			return k, fmt.Errorf("serve: create checkpoint key: %w", err)
		}
		log.Warn("created the audit log's checkpoint key; give auditors its verifier key (out of band) to pin",
			"file", filepath.Join(dir, config.CheckpointKeyFile), "verifier_key", vkey)
		b, err = os.ReadFile(filepath.Join(dir, config.CheckpointKeyFile))
		if err != nil {
			return k, err
		}
	} else if err != nil {
		return k, fmt.Errorf("serve: checkpoint key: %w", err)
	}
	if k.signer, err = note.NewSigner(strings.TrimSpace(string(b))); err != nil {
		return k, fmt.Errorf("serve: checkpoint key %s: %w", config.CheckpointKeyFile, err)
	}
	if k.signer.Name() != audit.Origin(vaultID) {
		return k, fmt.Errorf("serve: checkpoint key %s is for %q, not this vault (%q)", config.CheckpointKeyFile, k.signer.Name(), audit.Origin(vaultID))
	}
	vb, err := os.ReadFile(filepath.Join(dir, config.CheckpointVerifierFile))
	if err != nil {
		return k, fmt.Errorf("serve: checkpoint verifier key: %w", err)
	}
	k.vkey = strings.TrimSpace(string(vb))
	if k.verifier, err = note.NewVerifier(k.vkey); err != nil || k.verifier.KeyHash() != k.signer.KeyHash() || k.verifier.Name() != k.signer.Name() {
		return k, fmt.Errorf("serve: %s does not match %s", config.CheckpointVerifierFile, config.CheckpointKeyFile)
	}
	return k, nil
}

// guardRollback is the rollback guard: the checkpoint kept in the data
// directory must be extended by the database's log. It refuses to start
// on a restored older database or a log with entries removed.
func guardRollback(ctx context.Context, st *store.Store, dir string, k checkpointKeys) error {
	path := filepath.Join(dir, config.LatestCheckpointFile)
	msg, err := os.ReadFile(path)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	cp, err := audit.OpenCheckpoint(msg, k.verifier)
	if err != nil {
		return fmt.Errorf("serve: %s: %w", path, err)
	}
	if err := st.CheckRollback(ctx, cp); err != nil {
		return fmt.Errorf("serve: refusing to start: the data directory's last signed checkpoint (%s, size %d) "+
			"is not extended by the database's audit log; signing on top of it would fork the log that auditors hold. "+
			"Restore the newest database (or point-in-time recovery past that checkpoint). Cause: %w", path, cp.Size, err)
	}
	return nil
}

// signCheckpoint signs the log if it grew and keeps the checkpoint in the
// data directory too (written atomically).
func signCheckpoint(ctx context.Context, st *store.Store, dir string, k checkpointKeys) (bool, error) {
	cp, signed, err := st.SignCheckpoint(ctx, k.signer)
	if err != nil || cp.Size == 0 {
		return false, err
	}
	path := filepath.Join(dir, config.LatestCheckpointFile)
	if !signed {
		if old, err := os.ReadFile(path); err == nil && string(old) == string(cp.Note) {
			return false, nil
		}
	}
	return signed, writeFileAtomic(path, cp.Note, 0o644)
}

// runAuditLog signs checkpoints every interval (at most once per
// interval) until ctx is done. Chunk commits are logged by the group
// commit itself.
func runAuditLog(ctx context.Context, st *store.Store, dir string, k checkpointKeys, every time.Duration, log *slog.Logger) {
	log = log.With("component", "audit-log")
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := signCheckpoint(ctx, st, dir, k); err != nil && ctx.Err() == nil {
			log.Error("ALERT: cannot sign an audit checkpoint", "err", err)
		}
	}
}

// writeNewFile creates path with data, refusing to overwrite.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// writeFileAtomic replaces path with data: temp file, fsync, rename,
// directory fsync.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
