package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
)

// maxNote bounds a checkpoint or key answer.
const maxNote = 64 << 10

func (c *Client) getText(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxNote))
	if err != nil {
		return nil, fmt.Errorf("client: GET %s: %w", path, err)
	}
	return b, nil
}

// AuditCheckpoint returns the vault's latest signed checkpoint note.
func (c *Client) AuditCheckpoint(ctx context.Context) ([]byte, error) {
	return c.getText(ctx, "/v1/audit/checkpoint")
}

// AuditKey returns the vault's checkpoint verifier key, as the vault says
// it is: pin it only after checking it out of band.
func (c *Client) AuditKey(ctx context.Context) (string, error) {
	b, err := c.getText(ctx, "/v1/audit/key")
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return string(b), err
}

func int64s(kv ...any) url.Values {
	q := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		q.Set(kv[i].(string), fmt.Sprint(kv[i+1]))
	}
	return q
}

// AuditEntries returns entries with leaf indexes in [from, to), at most a
// page of them.
func (c *Client) AuditEntries(ctx context.Context, from, to int64) ([]audit.RawEntry, error) {
	var out struct {
		Entries []audit.RawEntry `json:"entries"`
	}
	err := c.getJSON(ctx, "/v1/audit/entries", int64s("from", from, "to", to), &out)
	return out.Entries, err
}

// AuditConsistency returns a proof that the tree of size from is a
// prefix of the tree of size to.
func (c *Client) AuditConsistency(ctx context.Context, from, to int64) (tlog.TreeProof, error) {
	var out struct {
		Proof tlog.TreeProof `json:"proof"`
	}
	err := c.getJSON(ctx, "/v1/audit/proof/consistency", int64s("from", from, "to", to), &out)
	return out.Proof, err
}

// Inclusion is an inclusion proof of one entry.
type Inclusion struct {
	Index   int64            `json:"index"`
	Size    int64            `json:"size"`
	Proof   tlog.RecordProof `json:"proof"`
	Payload string           `json:"payload"`
}

// AuditChunkInclusion proves that the latest chunk.commit entry of h is in
// the tree of size.
func (c *Client) AuditChunkInclusion(ctx context.Context, h chunk.Hash, size int64) (Inclusion, error) {
	var out Inclusion
	q := url.Values{"chunk": {h.String()}, "size": {strconv.FormatInt(size, 10)}}
	err := c.getJSON(ctx, "/v1/audit/proof/inclusion", q, &out)
	return out, err
}

// HasChunk reports whether the vault stores h (HEAD).
func (c *Client) HasChunk(ctx context.Context, h chunk.Hash) (bool, error) {
	resp, err := c.send(ctx, http.MethodHead, "/v1/chunks/"+h.String(), nil, nil, nil)
	var e *Error
	if errors.As(err, &e) && e.StatusCode == http.StatusNotFound {
		if e.Damaged {
			return false, fmt.Errorf("client: chunk %s: %w", h, audit.ErrChunkDamaged)
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return true, nil
}

// AuditSource is the vault over HTTP as audit.Verify reads it.
type AuditSource struct{ C *Client }

var _ audit.Source = AuditSource{}

func (s AuditSource) Checkpoint(ctx context.Context) ([]byte, error) { return s.C.AuditCheckpoint(ctx) }
func (s AuditSource) Entries(ctx context.Context, from, to int64) ([]audit.RawEntry, error) {
	return s.C.AuditEntries(ctx, from, to)
}
func (s AuditSource) ConsistencyProof(ctx context.Context, from, to int64) (tlog.TreeProof, error) {
	return s.C.AuditConsistency(ctx, from, to)
}
func (s AuditSource) ChunkExists(ctx context.Context, h chunk.Hash) (bool, error) {
	return s.C.HasChunk(ctx, h)
}

// ContentSource is the vault's chunk content over HTTP, read with a
// reader token, for audit.Verify's content sample.
type ContentSource struct{ C *Client }

var _ audit.ContentSource = ContentSource{}

// VerifyContent downloads h and re-hashes it while reading.
func (s ContentSource) VerifyContent(ctx context.Context, h chunk.Hash) error {
	rc, err := s.C.GetChunk(ctx, h)
	var e *Error
	if errors.As(err, &e) {
		switch {
		case e.StatusCode == http.StatusNotFound:
			return fmt.Errorf("client: chunk %s: %w", h, audit.ErrChunkAbsent)
		case e.Code == "corrupt" || e.Code == "content_missing":
			return fmt.Errorf("client: chunk %s: %w (%s)", h, audit.ErrChunkDamaged, e.Code)
		}
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc) // the reader fails on bytes that do not hash to h
	return err
}
