package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Client talks to one vault. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// New returns a client for the vault at baseURL (scheme and host, e.g.
// https://vault.example:8443), authenticating with token. hc nil means
// http.DefaultClient; time limits come from each call's context.
func New(baseURL, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: vault URL %q: want http(s)://host[:port][/prefix]", baseURL)
	}
	if token == "" {
		return nil, errors.New("client: a token is required")
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &Client{base: u, token: token, hc: hc}, nil
}

// Error is a refusal or failure reported by the vault.
type Error struct {
	StatusCode int
	// Code is the API's error code ("not_found", "missing_chunks", ...);
	// empty if the answer was not the vault's JSON (a proxy's error page).
	Code    string
	Message string
	// Missing and MissingTotal are set for code "missing_chunks".
	Missing      []chunk.Hash
	MissingTotal int64
	// Damaged: a 404 to HEAD for a chunk the vault holds damaged (the
	// Vault-Damaged header; HEAD has no body to carry the code).
	Damaged bool
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("vault: HTTP %d: %s", e.StatusCode, e.Message)
	}
	return fmt.Sprintf("vault: %d %s: %s", e.StatusCode, e.Code, e.Message)
}

// IsCode reports whether err is (or wraps) an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// maxErrorBody bounds how much of a failed response is read.
const maxErrorBody = 64 << 10

// send sends one request and returns the response of a 2xx answer, whose
// body the caller must close; any other answer is decoded into an *Error.
// body is nil, an io.Reader (sent as is, as an octet stream) or a value
// sent as JSON.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body any, header http.Header) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var r io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		r, contentType = b, "application/octet-stream"
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("client: encode %s %s: %w", method, path, err)
		}
		r, contentType = bytes.NewReader(enc), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// do is send, then decodes a JSON answer into out (unless out is nil) and
// closes the body.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, header http.Header, out any) error {
	resp, err := c.send(ctx, method, path, query, body, header)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err := io.Copy(io.Discard, resp.Body) // let the connection be reused
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body struct {
		Error struct {
			Code         string       `json:"code"`
			Message      string       `json:"message"`
			Missing      []chunk.Hash `json:"missing"`
			MissingTotal int64        `json:"missing_total"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &body); err != nil || body.Error.Code == "" {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &Error{StatusCode: resp.StatusCode, Message: msg, Damaged: resp.Header.Get("Vault-Damaged") == "true"}
	}
	e := body.Error
	return &Error{StatusCode: resp.StatusCode, Code: e.Code, Message: e.Message, Missing: e.Missing, MissingTotal: e.MissingTotal,
		Damaged: e.Code == "damaged" || resp.Header.Get("Vault-Damaged") == "true"}
}

func (c *Client) getJSON(ctx context.Context, path string, query url.Values, out any) error {
	return c.do(ctx, http.MethodGet, path, query, nil, nil, out)
}

func (c *Client) postJSON(ctx context.Context, path string, body, out any) error {
	return c.do(ctx, http.MethodPost, path, nil, body, nil, out)
}

// Page selects one page of a list: at most Limit entries (0: the server's
// default) after Cursor (empty: the first page). Lists answer with the
// cursor of the next page, empty on the last.
type Page struct {
	Limit  int
	Cursor string
}

func (p Page) query() url.Values {
	q := url.Values{}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
	return q
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Chunks.

// HeaderRetainUntil asks, on upload, for a retention longer than the
// vault's minimum.
const HeaderRetainUntil = "Vault-Retain-Until"

// StoredChunk is the vault's answer to an upload.
type StoredChunk struct {
	Hash        chunk.Hash `json:"hash"`
	Size        int64      `json:"size"`
	Created     bool       `json:"created"`
	StoredAt    time.Time  `json:"stored_at"`
	RetainUntil time.Time  `json:"retain_until"`
}

// PutChunk uploads a chunk under its hash h, retained at least until
// retainUntil (zero: the vault's minimum). Created is false if the vault
// already had it.
func (c *Client) PutChunk(ctx context.Context, h chunk.Hash, content io.Reader, retainUntil time.Time) (StoredChunk, error) {
	var hdr http.Header
	if !retainUntil.IsZero() {
		hdr = http.Header{HeaderRetainUntil: {retainUntil.UTC().Format(time.RFC3339)}}
	}
	var out StoredChunk
	err := c.do(ctx, http.MethodPut, "/v1/chunks/"+h.String(), nil, content, hdr, &out)
	return out, err
}

// MissingChunks returns the hashes the vault does not store.
func (c *Client) MissingChunks(ctx context.Context, hashes []chunk.Hash) ([]chunk.Hash, error) {
	var out struct {
		Missing []chunk.Hash `json:"missing"`
	}
	err := c.postJSON(ctx, "/v1/chunks/missing", map[string]any{"hashes": hashes}, &out)
	return out.Missing, err
}

// GetChunk returns a chunk's content. The reader verifies it against h: a
// final Read fails with chunk.ErrHashMismatch if the bytes are not what h
// names. The caller closes it.
func (c *Client) GetChunk(ctx context.Context, h chunk.Hash) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v1/chunks/"+h.String(), nil, nil, nil)
	if err != nil {
		return nil, err
	}
	return verified{chunk.NewVerifyingReader(resp.Body, h), resp.Body}, nil
}

type verified struct {
	io.Reader
	io.Closer
}

// SnapshotRef names a snapshot that references a chunk.
type SnapshotRef struct {
	ID          int64     `json:"id"`
	Source      string    `json:"source"`
	Name        string    `json:"name"`
	RetainUntil time.Time `json:"retain_until"`
}

// ChunkRetention is everything that keeps one chunk stored.
type ChunkRetention struct {
	Hash          chunk.Hash    `json:"hash"`
	Size          int64         `json:"size"`
	StoredAt      time.Time     `json:"stored_at"`
	RetainUntil   time.Time     `json:"retain_until"`
	UploadedBy    string        `json:"uploaded_by"`
	Expired       bool          `json:"expired"`
	Held          bool          `json:"held"`
	Holds         []HoldRef     `json:"holds"`
	Snapshots     []SnapshotRef `json:"snapshots"`
	SnapshotCount int64         `json:"snapshot_count"`
	DeletionState string        `json:"deletion_state"`
}

// ChunkRetention returns what keeps chunk h stored (auditor, admin).
func (c *Client) ChunkRetention(ctx context.Context, h chunk.Hash) (ChunkRetention, error) {
	var out ChunkRetention
	err := c.getJSON(ctx, "/v1/chunks/"+h.String()+"/retention", nil, &out)
	return out, err
}
