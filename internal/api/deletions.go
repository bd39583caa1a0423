package api

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/store"
)

type deletionRequestJSON struct {
	Kind      string      `json:"kind"`
	Chunks    []string    `json:"chunks,omitempty"`
	Snapshots []int64     `json:"snapshots,omitempty"`
	Before    time.Time   `json:"before,omitzero"`
	Source    string      `json:"source,omitempty"`
	Hold      int64       `json:"hold,omitempty"`
	Change    *changeJSON `json:"change,omitempty"`
	Expiry    *expiryJSON `json:"expiry,omitempty"`
	Reason    string      `json:"reason"`

	Policy *policyJSON `json:"policy,omitempty"` // kind policy
}

// expiryJSON is the terms of an expiry authorisation (kind
// expiry_authorisation).
type expiryJSON struct {
	Interval   string `json:"interval"`
	MaxPercent int    `json:"max_percent,omitempty"`
	MaxChunks  int64  `json:"max_chunks,omitempty"`
}

func (e *expiryJSON) terms() (*store.ExpiryTerms, error) {
	d, err := time.ParseDuration(e.Interval)
	if err != nil {
		return nil, &store.InvalidError{Field: "expiry.interval", Reason: "must be a duration such as 24h"}
	}
	return &store.ExpiryTerms{Interval: store.Duration(d), MaxPercent: e.MaxPercent, MaxChunks: e.MaxChunks}, nil
}

// changeJSON is an admin-set change (kind admin_set).
type changeJSON struct {
	Op                  string `json:"op"`
	Admin               string `json:"admin,omitempty"`
	Key                 string `json:"key,omitempty"`
	ApprovalsRequired   int    `json:"approvals_required,omitempty"`
	Delay               string `json:"delay,omitempty"`
	GovernanceApprovals int    `json:"governance_approvals,omitempty"`
	GovernanceDelay     string `json:"governance_delay,omitempty"`
}

func (c *changeJSON) change() (*store.AdminChange, error) {
	ch := &store.AdminChange{Op: c.Op, Name: c.Admin, Policy: store.Policy{
		ApprovalsRequired: c.ApprovalsRequired, GovernanceApprovals: c.GovernanceApprovals}}
	if c.Key != "" {
		k, err := approval.ParsePublicKey(c.Key)
		if err != nil {
			return nil, &store.InvalidError{Field: "change.key", Reason: err.Error()}
		}
		ch.Key = k
	}
	for _, f := range []struct {
		name string
		in   string
		out  *store.Duration
	}{{"change.delay", c.Delay, &ch.Policy.Delay}, {"change.governance_delay", c.GovernanceDelay, &ch.Policy.GovernanceDelay}} {
		if f.in == "" {
			continue
		}
		d, err := time.ParseDuration(f.in)
		if err != nil {
			return nil, &store.InvalidError{Field: f.name, Reason: "must be a duration such as 72h"}
		}
		*f.out = store.Duration(d)
	}
	return ch, nil
}

func (h *handler) requestDeletion(w http.ResponseWriter, r *http.Request) {
	var req deletionRequestJSON
	if err := readJSON(w, r, batchBodyLimit(h.maxBatch), &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	t := store.DeletionTargets{Kind: req.Kind, Snapshots: req.Snapshots, Before: req.Before, Source: req.Source, Hold: req.Hold}
	if len(req.Chunks) > 0 {
		hashes, err := parseHashes(req.Chunks, h.maxBatch)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		t.Chunks = hashes
	}
	if req.Change != nil {
		c, err := req.Change.change()
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		t.Change = c
	}
	if req.Expiry != nil {
		terms, err := req.Expiry.terms()
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		t.Expiry = terms
	}
	var d store.Deletion
	var err error
	if req.Kind == store.DeletePolicy {
		if req.Policy == nil {
			h.writeError(w, r, &store.InvalidError{Field: "policy", Reason: "is required for kind policy"})
			return
		}
		d, err = h.store.RequestPolicyChange(r.Context(), principal(r).Subject, req.Policy.policy(req.Policy.Name), req.Reason)
	} else {
		d, err = h.store.RequestDeletion(r.Context(), principal(r).Subject, t, req.Reason)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

func deletionID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, &store.InvalidError{Field: "id", Reason: "must be a positive integer"}
	}
	return id, nil
}

func (h *handler) getDeletion(w http.ResponseWriter, r *http.Request) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := h.store.GetDeletion(r.Context(), id)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *handler) listDeletions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	switch state {
	case "", store.StateRequested, store.StateScheduled, store.StateCancelled, store.StateExpired, store.StateExecuting, store.StateExecuted, store.StateRefused:
	default:
		h.writeError(w, r, &store.InvalidError{Field: "state", Reason: "unknown state"})
		return
	}
	var before int64
	if v := q.Get("before"); v != "" {
		var err error
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before <= 0 {
			h.writeError(w, r, &store.InvalidError{Field: "before", Reason: "must be a positive integer"})
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			h.writeError(w, r, &store.InvalidError{Field: "limit", Reason: "must be 1 to 500"})
			return
		}
		limit = n
	}
	ds, err := h.store.ListDeletions(r.Context(), state, before, limit)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	resp := map[string]any{"deletions": ds}
	if ds == nil {
		resp["deletions"] = []store.Deletion{}
	}
	if len(ds) == limit {
		resp["next"] = strconv.FormatInt(ds[len(ds)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) deletionOutcomes(w http.ResponseWriter, r *http.Request) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if _, err := h.store.GetDeletion(r.Context(), id); err != nil {
		h.writeError(w, r, err)
		return
	}
	after := r.URL.Query().Get("after")
	if len(after) > 64 {
		h.writeError(w, r, &store.InvalidError{Field: "after", Reason: "too long"})
		return
	}
	out, err := h.store.DeletionOutcomes(r.Context(), id, after, 1000)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if out == nil {
		out = []store.Outcome{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"outcomes": out})
}

// signatureJSON is an admin's signature over the statement that GET
// /v1/deletions/{id}/statement returned: raw Ed25519 bytes, or an armored
// SSHSIG, base64-encoded.
type signatureJSON struct {
	Signer    string `json:"signer"`
	Signature string `json:"signature"`
	Format    string `json:"format"`
	Reason    string `json:"reason,omitempty"` // cancel only
}

func (s signatureJSON) signature() (store.Signature, error) {
	if s.Format != approval.FormatRaw && s.Format != approval.FormatSSHSIG {
		return store.Signature{}, &store.InvalidError{Field: "format", Reason: "must be raw or sshsig"}
	}
	b, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return store.Signature{}, &store.InvalidError{Field: "signature", Reason: "must be base64"}
	}
	return store.Signature{Signer: s.Signer, Format: s.Format, Value: b}, nil
}

// readSignature reads the signed body of request, approve and cancel.
func (h *handler) readSignature(w http.ResponseWriter, r *http.Request) (int64, signatureJSON, store.Signature, bool) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return 0, signatureJSON{}, store.Signature{}, false
	}
	var req signatureJSON
	if err := readJSON(w, r, 16<<10, &req); err != nil {
		h.writeError(w, r, err)
		return 0, req, store.Signature{}, false
	}
	sig, err := req.signature()
	if err != nil {
		h.writeError(w, r, err)
		return 0, req, sig, false
	}
	return id, req, sig, true
}

// deletionStatement returns the exact bytes an admin signs for an action
// on a request: ?action=request|approve|cancel&signer=NAME.
func (h *handler) deletionStatement(w http.ResponseWriter, r *http.Request) {
	id, err := deletionID(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	action, signer := q.Get("action"), q.Get("signer")
	switch action {
	case approval.ActionRequest, approval.ActionApprove, approval.ActionCancel:
	default:
		h.writeError(w, r, &store.InvalidError{Field: "action", Reason: "must be request, approve or cancel"})
		return
	}
	if !approval.ValidName(signer) {
		h.writeError(w, r, &store.InvalidError{Field: "signer", Reason: "must be an admin name"})
		return
	}
	b, err := h.store.Statement(r.Context(), id, action, signer)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// signDeletion records the requester's signature over the request
// statement; until then the request takes no approvals.
func (h *handler) signDeletion(w http.ResponseWriter, r *http.Request) {
	id, _, sig, ok := h.readSignature(w, r)
	if !ok {
		return
	}
	d, err := h.store.SignRequest(r.Context(), principal(r).Subject, id, sig)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// approveDeletion counts an approval only for a valid signature by an
// admin key; the caller's token only authenticates the call.
func (h *handler) approveDeletion(w http.ResponseWriter, r *http.Request) {
	id, _, sig, ok := h.readSignature(w, r)
	if !ok {
		return
	}
	d, err := h.store.ApproveDeletion(r.Context(), principal(r).Subject, id, sig)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *handler) cancelDeletion(w http.ResponseWriter, r *http.Request) {
	id, req, sig, ok := h.readSignature(w, r)
	if !ok {
		return
	}
	d, err := h.store.CancelDeletion(r.Context(), principal(r).Subject, id, req.Reason, sig)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// adminSet shows the current admin set, or ?version=N.
func (h *handler) adminSet(w http.ResponseWriter, r *http.Request) {
	var version int64
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			h.writeError(w, r, &store.InvalidError{Field: "version", Reason: "must be a positive integer"})
			return
		}
		version = n
	}
	set, err := h.store.AdminSet(r.Context(), version)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, set)
}

// executeDue runs the executor now (as its loop would): for cron-style use
// by `vault admin execute-due`. It only ever executes approved requests
// whose delay has passed.
func (h *handler) executeDue(w http.ResponseWriter, r *http.Request) {
	rep, err := h.store.RunDue(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if rep.Expired == nil {
		rep.Expired = []int64{}
	}
	if rep.Executed == nil {
		rep.Executed = []int64{}
	}
	runs, refused := []int64{}, []int64{}
	for _, e := range rep.Expiry {
		if e.Refused {
			refused = append(refused, e.Run)
		} else {
			runs = append(runs, e.Run)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"expired": rep.Expired, "executed": rep.Executed,
		"expiry_runs": runs, "expiry_refused": refused})
}

// listExpiry shows the expiry authorisations, newest first, each with its
// terms, whether it is in force, and its latest runs (?runs=N, 1 to 100,
// default 10).
func (h *handler) listExpiry(w http.ResponseWriter, r *http.Request) {
	runs := 10
	if v := r.URL.Query().Get("runs"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			h.writeError(w, r, &store.InvalidError{Field: "runs", Reason: "must be 1 to 100"})
			return
		}
		runs = n
	}
	list, err := h.store.ListExpiry(r.Context(), runs)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"authorisations": list})
}
