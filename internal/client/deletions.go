package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Deletion is a deletion request as the vault shows it.
type Deletion struct {
	ID                int64      `json:"id"`
	Kind              string     `json:"kind"`
	Targets           string     `json:"targets"`
	Digest            string     `json:"digest"`
	Reason            string     `json:"reason"`
	RequestedBy       string     `json:"requested_by"`
	RequestedAt       time.Time  `json:"requested_at"`
	ApprovalsRequired int        `json:"approvals_required"`
	Delay             string     `json:"delay"`
	ExpiresAt         time.Time  `json:"expires_at"`
	State             string     `json:"state"`
	ScheduledAt       *time.Time `json:"scheduled_at,omitempty"`
	ExecutesAt        *time.Time `json:"executes_at,omitempty"`
	CancelledAt       *time.Time `json:"cancelled_at,omitempty"`
	CancelledBy       *string    `json:"cancelled_by,omitempty"`
	CancelReason      *string    `json:"cancel_reason,omitempty"`
	ExecutedAt        *time.Time `json:"executed_at,omitempty"`
	AdminSetVersion   *int64     `json:"admin_set_version,omitempty"`
	RequestedByAdmin  *string    `json:"requested_by_admin,omitempty"`
	CancelledByAdmin  *string    `json:"cancelled_by_admin,omitempty"`
	Refusal           *string    `json:"refusal,omitempty"`
	AuthorisationID   *int64     `json:"authorisation_id,omitempty"`
	Report            *struct {
		Deleted      int64            `json:"deleted"`
		Skipped      map[string]int64 `json:"skipped"`
		BytesFreed   int64            `json:"bytes_freed"`
		Snapshots    int64            `json:"snapshots_deleted"`
		HoldReleased bool             `json:"hold_released"`
		Stopped      string           `json:"stopped,omitempty"`
		Ceiling      *struct {
			Candidates     int64 `json:"candidates"`
			CandidateBytes int64 `json:"candidate_bytes"`
			StoredBytes    int64 `json:"stored_bytes"`
			MaxChunks      int64 `json:"max_chunks"`
			MaxBytes       int64 `json:"max_bytes"`
		} `json:"ceiling,omitempty"`
	} `json:"report,omitempty"`
	Approvals []struct {
		Approver   string    `json:"approver"`
		ApprovedAt time.Time `json:"approved_at"`
	} `json:"approvals"`
	Affected *struct {
		Chunks    int64 `json:"chunks"`
		Snapshots int64 `json:"snapshots"`
		Bytes     int64 `json:"bytes"`
	} `json:"affected,omitempty"`
}

// DeletionRequest says what to delete and why: Kind is chunks, snapshots,
// expired or hold_release, with the matching field set.
type DeletionRequest struct {
	Kind      string       `json:"kind"`
	Chunks    []string     `json:"chunks,omitempty"`
	Snapshots []int64      `json:"snapshots,omitempty"`
	Before    time.Time    `json:"before,omitzero"`
	Source    string       `json:"source,omitempty"`
	Hold      int64        `json:"hold,omitempty"`
	Change    *AdminChange `json:"change,omitempty"`
	Expiry    *ExpiryTerms `json:"expiry,omitempty"`
	Reason    string       `json:"reason"`

	Policy *RetentionPolicy `json:"policy,omitempty"` // kind policy
}

// ExpiryTerms are an expiry authorisation's terms (kind
// expiry_authorisation): a run at most every Interval (a duration such as
// "24h"), each removing at most MaxPercent of the stored bytes and at most
// MaxChunks chunks (0: not set; at least one is).
type ExpiryTerms struct {
	Interval   string `json:"interval"`
	MaxPercent int    `json:"max_percent,omitempty"`
	MaxChunks  int64  `json:"max_chunks,omitempty"`
}

// Expiry is an expiry authorisation with its latest runs.
type Expiry struct {
	Authorisation Deletion     `json:"authorisation"`
	Terms         *ExpiryTerms `json:"terms"`
	InForce       bool         `json:"in_force"`
	Runs          []Deletion   `json:"runs"`
}

// Expiry lists the expiry authorisations, newest first, each with at most
// runs of its latest runs (0: the server's default).
func (c *Client) Expiry(ctx context.Context, runs int) ([]Expiry, error) {
	q := url.Values{}
	if runs > 0 {
		q.Set("runs", strconv.Itoa(runs))
	}
	var out struct {
		Authorisations []Expiry `json:"authorisations"`
	}
	err := c.getJSON(ctx, "/v1/expiry", q, &out)
	return out.Authorisations, err
}

// AdminChange is an admin-set change (kind admin_set).
type AdminChange struct {
	Op                  string `json:"op"`
	Admin               string `json:"admin,omitempty"`
	Key                 string `json:"key,omitempty"`
	ApprovalsRequired   int    `json:"approvals_required,omitempty"`
	Delay               string `json:"delay,omitempty"`
	GovernanceApprovals int    `json:"governance_approvals,omitempty"`
	GovernanceDelay     string `json:"governance_delay,omitempty"`
}

// RequestDeletion asks for a deletion (admin token).
func (c *Client) RequestDeletion(ctx context.Context, r DeletionRequest) (Deletion, error) {
	var out Deletion
	err := c.postJSON(ctx, "/v1/deletions", r, &out)
	return out, err
}

// Signature is an admin's signature over a statement from Statement.
type Signature struct {
	Signer    string `json:"signer"`
	Signature string `json:"signature"` // base64
	Format    string `json:"format"`    // raw or sshsig
	Reason    string `json:"reason,omitempty"`
}

// Statement returns the exact bytes signer signs for action (request,
// approve, cancel) on request id.
func (c *Client) Statement(ctx context.Context, id int64, action, signer string) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v1/deletions/"+strconv.FormatInt(id, 10)+"/statement",
		url.Values{"action": {action}, "signer": {signer}}, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}

// SignDeletion sends the requester's signature of the request statement.
func (c *Client) SignDeletion(ctx context.Context, id int64, sig Signature) (Deletion, error) {
	var out Deletion
	err := c.postJSON(ctx, "/v1/deletions/"+strconv.FormatInt(id, 10)+"/sign", sig, &out)
	return out, err
}

// ApproveDeletion sends a signed approval of request id (not the
// requester's).
func (c *Client) ApproveDeletion(ctx context.Context, id int64, sig Signature) (Deletion, error) {
	var out Deletion
	err := c.postJSON(ctx, "/v1/deletions/"+strconv.FormatInt(id, 10)+"/approve", sig, &out)
	return out, err
}

// CancelDeletion sends a signed veto of request id (any admin; sig.Reason
// is required).
func (c *Client) CancelDeletion(ctx context.Context, id int64, sig Signature) (Deletion, error) {
	var out Deletion
	err := c.postJSON(ctx, "/v1/deletions/"+strconv.FormatInt(id, 10)+"/cancel", sig, &out)
	return out, err
}

// AdminSet is the vault's admin set.
type AdminSet struct {
	Version int64 `json:"version"`
	Policy  struct {
		ApprovalsRequired   int    `json:"approvals_required"`
		Delay               string `json:"delay"`
		GovernanceApprovals int    `json:"governance_approvals"`
		GovernanceDelay     string `json:"governance_delay"`
	} `json:"policy"`
	Admins []struct {
		Name        string    `json:"name"`
		Kind        string    `json:"kind"`
		PublicKey   string    `json:"public_key"`
		Fingerprint string    `json:"fingerprint"`
		AddedAt     time.Time `json:"added_at"`
	} `json:"admins"`
}

// AdminSet returns the current admin set.
func (c *Client) AdminSet(ctx context.Context) (AdminSet, error) {
	var out AdminSet
	err := c.getJSON(ctx, "/v1/admins", nil, &out)
	return out, err
}

// GetDeletion returns request id (auditor or admin token).
func (c *Client) GetDeletion(ctx context.Context, id int64) (Deletion, error) {
	var out Deletion
	err := c.getJSON(ctx, "/v1/deletions/"+strconv.FormatInt(id, 10), nil, &out)
	return out, err
}

// Deletions lists requests, newest first, optionally in one state; before
// is the id to continue below (0 for the newest). next is 0 at the end.
func (c *Client) Deletions(ctx context.Context, state string, before int64, limit int) (list []Deletion, next int64, err error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Deletions []Deletion `json:"deletions"`
		Next      string     `json:"next"`
	}
	if err := c.getJSON(ctx, "/v1/deletions", q, &out); err != nil {
		return nil, 0, err
	}
	if out.Next != "" {
		next, _ = strconv.ParseInt(out.Next, 10, 64)
	}
	return out.Deletions, next, nil
}

// ExecuteDue runs the vault's executor now (admin token): it executes only
// approved requests whose delay has passed.
func (c *Client) ExecuteDue(ctx context.Context) (executed, expired []int64, err error) {
	var out struct {
		Executed []int64 `json:"executed"`
		Expired  []int64 `json:"expired"`
	}
	err = c.do(ctx, http.MethodPost, "/v1/deletions/execute-due", nil, nil, nil, &out)
	return out.Executed, out.Expired, err
}
