package main

// The server side of the verifiable audit log (issue 9): the checkpoint
// key in the data directory, the rollback guard at start, and the loop
// that integrates chunk commits and signs checkpoints.

import (
	"bytes"
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
	"golang.org/x/mod/sumdb/tlog"

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

// guardRollback is the rollback guard at start. The checkpoint kept in
// the data directory, and the database's own latest checkpoint, must both
// be signed by this vault's key and extended by the database's log: it
// refuses to start on a restored older database, a log with entries
// removed from its end (shorter) or rewritten (forked), and a checkpoint
// row the vault did not sign. It then pins the larger of the two in the
// store, the floor of every checkpoint signed from now on (see
// store.PinCheckpoint): removing checkpoint rows from the database cannot
// lower it.
func guardRollback(ctx context.Context, st *store.Store, dir string, k checkpointKeys, log *slog.Logger) error {
	path := filepath.Join(dir, config.LatestCheckpointFile)
	refuse := func(what string, size int64, err error) error {
		return fmt.Errorf("serve: refusing to start: %s (size %d) is not extended by the database's audit log; "+
			"signing on top of it would fork the log that auditors hold. If the database is older than the data directory "+
			"(restored from a backup) or its log was cut, `vault reindex` rebuilds it from the data directory's journal "+
			"(docs/operations.md, \"Backing up the vault\"); if it is another vault's database, point serve at this vault's own. Cause: %w", what, size, err)
	}
	var kept *store.SignedCheckpoint
	msg, err := os.ReadFile(path)
	switch {
	case err == nil:
		cp, err := audit.OpenCheckpoint(msg, k.verifier)
		if err != nil {
			return fmt.Errorf("serve: refusing to start: the data directory's last signed checkpoint %s: %w", path, err)
		}
		kept = &store.SignedCheckpoint{Checkpoint: cp, Note: msg}
	case !errors.Is(err, iofs.ErrNotExist):
		return fmt.Errorf("serve: %w", err)
	}

	db, err := st.StoredCheckpoint(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("serve: %w", err)
	default:
		cp, err := audit.OpenCheckpoint(db.Note, k.verifier)
		if err == nil && (cp.Size != db.Size || cp.Root != db.Root) {
			err = fmt.Errorf("its note says size %d, root %s; its columns size %d, root %s", cp.Size, cp.Root, db.Size, db.Root)
		}
		if err != nil {
			return fmt.Errorf("serve: refusing to start: the database's latest audit checkpoint (size %d) is not one this vault signed "+
				"with its checkpoint key: the audit_checkpoints table was written by someone else: %w", db.Size, err)
		}
		if err := st.PinCheckpoint(ctx, store.SignedCheckpoint{Checkpoint: cp, Note: db.Note}); err != nil {
			if errors.Is(err, store.ErrRollback) {
				return refuse("the database's own latest signed checkpoint", cp.Size, err)
			}
			return fmt.Errorf("serve: %w", err)
		}
		if kept != nil && cp.Size < kept.Size {
			log.Error("ALERT: the database's audit_checkpoints table lacks checkpoints this vault signed; rows were removed",
				"database_latest_size", cp.Size, "data_directory_size", kept.Size)
		}
	}
	if kept == nil {
		return nil
	}
	if err := st.PinCheckpoint(ctx, *kept); err != nil {
		if errors.Is(err, store.ErrRollback) {
			return refuse("the data directory's last signed checkpoint "+path, kept.Size, err)
		}
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// signCheckpoint signs the log if it grew and keeps the checkpoint in the
// data directory too (written atomically). The store signs only a tree
// that extends the checkpoint it holds; this checks again, against the
// file, before replacing it: latest-checkpoint is never replaced by an
// older or forked checkpoint.
func signCheckpoint(ctx context.Context, st *store.Store, dir string, k checkpointKeys) (bool, error) {
	cp, signed, err := st.SignCheckpoint(ctx, k.signer)
	if err != nil || cp.Size == 0 {
		return false, err
	}
	path := filepath.Join(dir, config.LatestCheckpointFile)
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if bytes.Equal(old, cp.Note) {
			return signed, nil
		}
		if err := checkExtends(ctx, st, old, cp, k); err != nil {
			return signed, fmt.Errorf("not replacing %s: %w", path, err)
		}
	case !errors.Is(err, iofs.ErrNotExist):
		return signed, err
	}
	return signed, writeFileAtomic(path, cp.Note, 0o644)
}

// checkExtends returns nil if cp extends the checkpoint note old: same
// size and root, or a consistency proof from the database that checks
// against both roots. Otherwise an error wrapping store.ErrRollback.
func checkExtends(ctx context.Context, st *store.Store, old []byte, cp store.SignedCheckpoint, k checkpointKeys) error {
	prev, err := audit.OpenCheckpoint(old, k.verifier)
	if err != nil {
		return fmt.Errorf("%w: the kept checkpoint does not verify: %w", store.ErrRollback, err)
	}
	switch {
	case prev.Size > cp.Size:
		return fmt.Errorf("%w: the kept checkpoint has size %d, the new one only %d", store.ErrRollback, prev.Size, cp.Size)
	case prev.Size == cp.Size:
		if prev.Root != cp.Root {
			return fmt.Errorf("%w: the kept checkpoint and the new one have the same size %d and different roots", store.ErrRollback, cp.Size)
		}
		return nil
	}
	proof, err := st.AuditConsistencyProof(ctx, prev.Size, cp.Size)
	if err != nil {
		return err
	}
	if err := tlog.CheckTree(proof, cp.Size, cp.Root, prev.Size, prev.Root); err != nil {
		return fmt.Errorf("%w: the new checkpoint of size %d does not extend the kept one of size %d: %w", store.ErrRollback, cp.Size, prev.Size, err)
	}
	return nil
}

// runAuditLog signs checkpoints every interval (at most once per
// interval) until ctx is done. Chunk commits are logged by the group
// commit itself.
func runAuditLog(ctx context.Context, st *store.Store, dir string, k checkpointKeys, every time.Duration, log *slog.Logger) {
	log = log.With("component", "audit-log")
	t := time.NewTicker(every)
	defer t.Stop()
	var failing string // the last signing failure logged: a stuck one is logged once
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The journal learns what the database has committed, so that a
		// later truncation below it is refused at the next append.
		err := st.ConfirmJournal(ctx)
		if err == nil {
			_, err = signCheckpoint(ctx, st, dir, k)
		}
		switch {
		case err == nil:
			failing = ""
		case ctx.Err() != nil:
		case store.NoSpace(err):
			// The checkpoint is signed and in the index; the data
			// directory's copy waits for space. Said once per episode
			// (each attempt's temp file has a new name, so the text
			// differs every time).
			if failing != "no space" {
				failing = "no space"
				log.Warn("cannot keep the audit checkpoint in the data directory until space is freed", "err", err)
			}
		case err.Error() != failing:
			failing = err.Error()
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
