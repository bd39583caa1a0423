package main

// vault audit: the auditor's commands over the verifiable audit log. They
// run on the auditor's machine with an auditor token and trust nothing
// the vault says that its pinned checkpoint key did not sign.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
)

// auditText is the part of the audit commands' help that they share.
const auditText = `Both need VAULT_URL and an auditor token in VAULT_TOKEN, and a state
directory (--state) that holds the pinned checkpoint key and the last
verified checkpoint. Keep it on the auditor's machine, not the vault's.

Content proofs: an auditor token never reads content. Given a reader token
as well (VAULT_READER_TOKEN, or a file named by VAULT_READER_TOKEN_FILE),
verify downloads a random sample of live chunks and re-hashes them
(--sample-content, default 100), and prove-retained downloads and re-hashes
the chunk it proves.
`

// State directory files.
const (
	stateKeyFile        = "vault.vkey"
	stateCheckpointFile = "checkpoint"
)

// auditState is the auditor's state directory.
type auditState struct {
	dir string
}

// verifier returns the pinned checkpoint key. On the first run it pins
// keyText (--key), or, with neither a pinned key nor --key, the key the
// vault serves (trust on first use), saying so loudly.
func (s auditState) verifier(ctx context.Context, c *client.Client, keyText string, stderr io.Writer) (note.Verifier, error) {
	path := filepath.Join(s.dir, stateKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		pinned := strings.TrimSpace(string(b))
		if keyText != "" && strings.TrimSpace(keyText) != pinned {
			return nil, fmt.Errorf("audit: --key differs from the key pinned in %s; if the vault's key really changed, "+
				"check the new key out of band and remove %s deliberately", path, path)
		}
		return note.NewVerifier(pinned)
	case !errors.Is(err, iofs.ErrNotExist):
		return nil, fmt.Errorf("audit: %w", err)
	}
	if keyText == "" {
		if c == nil {
			return nil, fmt.Errorf("audit: no checkpoint key pinned in %s: run `vault audit verify --key ...` first", s.dir)
		}
		if keyText, err = c.AuditKey(ctx); err != nil {
			return nil, fmt.Errorf("audit: fetch the vault's checkpoint key: %w", err)
		}
		fmt.Fprintf(stderr, "WARNING: no checkpoint key pinned in %s and no --key given: trusting the key the vault serves now\n"+
			"  %s\n"+
			"Compare it with the vault's %s out of band (from its operator). Everything this auditor verifies\n"+
			"from now on rests on this key.\n", s.dir, keyText, "checkpoint.vkey")
	}
	keyText = strings.TrimSpace(keyText)
	v, err := note.NewVerifier(keyText)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := writeFileAtomic(path, []byte(keyText+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("audit: pin key: %w", err)
	}
	return v, nil
}

// kept returns the last verified checkpoint, if any.
func (s auditState) kept(v note.Verifier) (*audit.Checkpoint, error) {
	path := filepath.Join(s.dir, stateCheckpointFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	cp, err := audit.OpenCheckpoint(b, v)
	if err != nil {
		return nil, fmt.Errorf("audit: the kept checkpoint %s: %w", path, err)
	}
	return &cp, nil
}

func (s auditState) keep(msg []byte) error {
	return writeFileAtomic(filepath.Join(s.dir, stateCheckpointFile), msg, 0o600)
}

func runAuditVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit verify", stderr)
	af := addAPIFlags(fs, getenv)
	stateDir := fs.String("state", getenv("VAULT_AUDIT_STATE"), "auditor state directory: pinned key and last checkpoint (VAULT_AUDIT_STATE)")
	keyText := fs.String("key", "", "the vault's checkpoint verifier key (first run; from its checkpoint.vkey, out of band)")
	chunks := fs.String("check-chunks", "1000", "live chunks to look up in the vault (HEAD, existence only): a number (random sample), all, or 0")
	sample := fs.String("sample-content", "", "live chunks to download and re-hash with the reader token in VAULT_READER_TOKEN: a number (random sample), all, or 0 (default: 100 with a reader token, else 0)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	readerTok := strings.TrimSpace(getenv("VAULT_READER_TOKEN"))
	sampleN := 0
	switch {
	case *sample == "" && readerTok != "":
		sampleN = 100
	case *sample == "":
	case *sample == "all":
		sampleN = -1
	default:
		n, err := strconv.Atoi(*sample)
		if err != nil || n < 0 {
			return fmt.Errorf("audit verify: --sample-content %q: want a number or all", *sample)
		}
		sampleN = n
	}
	if sampleN != 0 && readerTok == "" {
		return errors.New("audit verify: --sample-content needs a reader token in VAULT_READER_TOKEN (or VAULT_READER_TOKEN_FILE): " +
			"an auditor token never reads content; pass --sample-content 0 to skip the content sample")
	}
	if *stateDir == "" {
		return errors.New("audit verify: --state is required")
	}
	check := -1
	if *chunks != "all" {
		n, err := strconv.Atoi(*chunks)
		if err != nil || n < 0 {
			return fmt.Errorf("audit verify: --check-chunks %q: want a number or all", *chunks)
		}
		check = n
	}
	c, err := af.client(getenv)
	if err != nil {
		return err
	}
	st := auditState{dir: *stateDir}
	v, err := st.verifier(ctx, c, *keyText, stderr)
	if err != nil {
		return err
	}
	kept, err := st.kept(v)
	if err != nil {
		return err
	}
	opts := audit.Options{Verifier: v, Kept: kept, CheckChunks: check, SampleContent: sampleN}
	if sampleN != 0 {
		rc, err := client.New(af.url, readerTok, nil)
		if err != nil {
			return err
		}
		opts.Content = client.ContentSource{C: rc}
	}
	start := time.Now()
	rep, err := audit.Verify(ctx, client.AuditSource{C: c}, opts)
	if err != nil && !errors.Is(err, audit.ErrFailed) {
		return err
	}
	if af.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		fmt.Fprintf(stdout, "checkpoint: %s, size %d, root %s\n", v.Name(), rep.Size, rep.Root)
		if kept != nil {
			fmt.Fprintf(stdout, "kept checkpoint: size %d\n", kept.Size)
		} else {
			fmt.Fprintln(stdout, "kept checkpoint: none (first run)")
		}
		fmt.Fprintf(stdout, "entries recomputed: %d; live chunks: %d, looked up: %d, downloaded and re-hashed: %d; %s\n",
			rep.Entries, rep.LiveChunks, rep.ChunksChecked, rep.ContentChecked, time.Since(start).Round(time.Millisecond))
		if opts.Content == nil {
			fmt.Fprintln(stdout, "content: not sampled (no reader token given): existence is not proof that the bytes are intact")
		}
		for _, f := range rep.Findings {
			fmt.Fprintln(stdout, "FAIL", f)
		}
	}
	if err != nil {
		return fmt.Errorf("audit verify: %s found; the kept checkpoint was not updated", plural(len(rep.Findings), "problem"))
	}
	if err := st.keep(rep.Note); err != nil {
		return fmt.Errorf("audit verify: keep checkpoint: %w", err)
	}
	if !af.json {
		fmt.Fprintln(stdout, "OK: the log extends the kept checkpoint and every rule holds")
	}
	return nil
}

func runAuditProve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit prove-retained", stderr)
	af := addAPIFlags(fs, getenv)
	stateDir := fs.String("state", getenv("VAULT_AUDIT_STATE"), "auditor state directory with the pinned key (VAULT_AUDIT_STATE)")
	keyText := fs.String("key", "", "the vault's checkpoint verifier key, if none is pinned")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *stateDir == "" {
		return errors.New("usage: vault audit prove-retained --state DIR HASH")
	}
	h, err := chunk.ParseHash(pos[0])
	if err != nil {
		return fmt.Errorf("audit prove-retained: %w", err)
	}
	c, err := af.client(getenv)
	if err != nil {
		return err
	}
	st := auditState{dir: *stateDir}
	v, err := st.verifier(ctx, c, *keyText, stderr)
	if err != nil {
		return err
	}
	msg, err := c.AuditCheckpoint(ctx)
	if err != nil {
		return err
	}
	cp, err := audit.OpenCheckpoint(msg, v)
	if err != nil {
		return err
	}
	if kept, err := st.kept(v); err != nil {
		return err
	} else if kept != nil && kept.Size > cp.Size {
		return fmt.Errorf("audit prove-retained: the vault's checkpoint (size %d) is older than the kept one (%d): rolled back", cp.Size, kept.Size)
	}
	inc, err := c.AuditChunkInclusion(ctx, h, cp.Size)
	if err != nil {
		return err
	}
	e, err := audit.ParseEntry(inc.Index, []byte(inc.Payload))
	if err != nil {
		return fmt.Errorf("audit prove-retained: %w", err)
	}
	var d audit.ChunkCommit
	if e.Action != audit.ActionChunkCommit || json.Unmarshal(e.Details, &d) != nil || d.Hash != h.String() {
		return fmt.Errorf("audit prove-retained: entry %d is not the commit of %s", e.Seq, h)
	}
	if err := tlog.CheckRecord(inc.Proof, cp.Size, cp.Root, inc.Index, tlog.RecordHash([]byte(inc.Payload))); err != nil {
		return fmt.Errorf("audit prove-retained: the inclusion proof does not verify against the signed checkpoint: %w", err)
	}
	stored, err := c.HasChunk(ctx, h)
	damaged := errors.Is(err, audit.ErrChunkDamaged)
	if err != nil && !damaged {
		return err
	}
	// With a reader token, the proof covers the bytes: download and
	// re-hash them.
	content := "not checked (no reader token given)"
	var contentErr error
	switch {
	case damaged:
		content = "DAMAGED in the vault, awaiting a re-upload"
		contentErr = err
	case !stored:
		content = "not stored"
	}
	if tok := strings.TrimSpace(getenv("VAULT_READER_TOKEN")); tok != "" && stored {
		rc, err := client.New(af.url, tok, nil)
		if err != nil {
			return err
		}
		if contentErr = (client.ContentSource{C: rc}).VerifyContent(ctx, h); contentErr == nil {
			content = "downloaded and re-hashed: OK"
		} else {
			content = "FAILED: " + contentErr.Error()
		}
	}
	if af.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"checkpoint": string(msg), "index": inc.Index, "size": cp.Size,
			"proof": inc.Proof, "entry": json.RawMessage(inc.Payload), "verified": true, "stored": stored,
			"damaged": damaged, "content": content}); err != nil {
			return err
		}
		if contentErr != nil {
			return fmt.Errorf("audit prove-retained: the vault did not serve bytes that hash to %s: %w", h, contentErr)
		}
		return nil
	}
	fmt.Fprintf(stdout, "chunk %s\n", h)
	fmt.Fprintf(stdout, "committed: entry %d (leaf %d), %s, %s by %s, retain until %s\n",
		e.Seq, inc.Index, fmtTime(d.StoredAt), plural(d.Size, "byte"), d.UploadedBy, fmtTime(d.RetainUntil))
	fmt.Fprintf(stdout, "checkpoint: size %d, root %s\n", cp.Size, cp.Root)
	fmt.Fprintf(stdout, "inclusion proof (%s):\n", plural(len(inc.Proof), "hash"))
	for _, p := range inc.Proof {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	fmt.Fprintf(stdout, "still stored: %s (run `vault audit verify` to check that any removal was an approved deletion)\n", yesNo(stored))
	if damaged {
		fmt.Fprintln(stdout, "DAMAGED: the vault holds this chunk damaged; it awaits a re-upload")
	}
	fmt.Fprintf(stdout, "content: %s\n", content)
	if contentErr != nil {
		return fmt.Errorf("audit prove-retained: the vault did not serve bytes that hash to %s: %w", h, contentErr)
	}
	fmt.Fprintln(stdout, "OK: the proof verifies against the vault's signed checkpoint")
	return nil
}
