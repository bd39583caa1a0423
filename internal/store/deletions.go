package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
)

// Deletion kinds: what a request targets.
const (
	DeleteChunks      = "chunks"       // a list of chunks
	DeleteSnapshots   = "snapshots"    // a list of snapshots, and their chunks no longer needed
	DeleteExpired     = "expired"      // everything whose retention ended before a time, for a source or the vault
	DeleteHoldRelease = "hold_release" // releasing a legal hold
	// DeleteExpiryAuthorisation is a standing authorisation of routine
	// expiry (expiry.go): governed, and in force once executed.
	DeleteExpiryAuthorisation = "expiry_authorisation"
)

// Deletion states, in lifecycle order.
const (
	StateRequested = "requested"
	StateScheduled = "scheduled"
	StateCancelled = "cancelled"
	StateExpired   = "expired"
	StateExecuting = "executing"
	StateExecuted  = "executed"
)

// Defaults of the deletion policy.
const (
	DefaultApprovalsRequired = 2
	DefaultDeletionDelay     = 72 * time.Hour
	DefaultRequestExpiry     = 7 * 24 * time.Hour
	DefaultMaxClockSkew      = time.Minute
)

// DeletionPolicy is how hard destruction is. It is frozen into each
// request when it is made.
type DeletionPolicy struct {
	// ApprovalsRequired is how many admins other than the requester must
	// approve.
	ApprovalsRequired int
	// Delay runs from the quorum to execution; any admin can cancel in it.
	Delay time.Duration
	// Expiry is how long a request may wait for its quorum.
	Expiry time.Duration
}

// DeletionTargets says what a request would delete.
type DeletionTargets struct {
	Kind      string
	Chunks    []chunk.Hash // DeleteChunks
	Snapshots []int64      // DeleteSnapshots
	Before    time.Time    // DeleteExpired: retention ended before this time
	Source    string       // DeleteExpired: only this source; "" the whole vault
	Hold      int64        // DeleteHoldRelease
	Change    *AdminChange // DeleteAdminSet

	Policy *RetentionPolicy // DeletePolicy
	Expiry *ExpiryTerms     // DeleteExpiryAuthorisation
}

// canonical returns the frozen text that approvers approve: a header line,
// the kind, then the targets one per line in a fixed order. Two requests
// with the same text delete the same things. The input is checked here,
// field by field, for the caller's errors; the text is the shared rules'
// (audit.Targets.Canonical), the one the executor and the auditor parse.
func (t DeletionTargets) canonical(maxList int) (string, error) {
	if err := t.check(maxList); err != nil {
		return "", err
	}
	text, err := t.audit().Canonical()
	if err != nil {
		return "", invalid("targets", "%v", err)
	}
	return text, nil
}

// check refuses targets the canonical text cannot hold, naming the field.
func (t DeletionTargets) check(maxList int) error {
	switch t.Kind {
	case DeleteChunks:
		if len(t.Chunks) == 0 || len(t.Chunks) > maxList {
			return invalid("chunks", "between 1 and %d chunks", maxList)
		}
	case DeleteSnapshots:
		if len(t.Snapshots) == 0 || len(t.Snapshots) > maxList {
			return invalid("snapshots", "between 1 and %d snapshots", maxList)
		}
		if slices.Min(t.Snapshots) <= 0 {
			return invalid("snapshots", "snapshot ids are positive")
		}
	case DeleteExpired:
		if t.Before.IsZero() {
			return invalid("before", "is required")
		}
		if strings.ContainsAny(t.Source, "\n*") {
			return invalid("source", "must not contain newlines or *")
		}
	case DeleteHoldRelease:
		if t.Hold <= 0 {
			return invalid("hold", "is required")
		}
	case DeleteAdminSet:
		return t.Change.check()
	case DeletePolicy:
		if t.Policy == nil {
			return invalid("policy", "is required")
		}
		return policyErr(t.Policy.audit().Check())
	case DeleteExpiryAuthorisation:
		if t.Expiry == nil {
			return invalid("expiry", "is required")
		}
		return policyErr(t.Expiry.audit().Check())
	default:
		return invalid("kind", "must be chunks, snapshots, expired, hold_release, admin_set, policy or expiry_authorisation")
	}
	return nil
}

// audit returns the targets as the shared rules spell them.
func (t DeletionTargets) audit() audit.Targets {
	at := audit.Targets{Kind: t.Kind, Chunks: t.Chunks, Snapshots: t.Snapshots, Before: t.Before, Source: t.Source, Hold: t.Hold}
	if t.Change != nil {
		c := t.Change.audit()
		at.Change = &c
	}
	if t.Policy != nil {
		p := t.Policy.audit()
		at.Policy = &p
	}
	if t.Expiry != nil {
		e := t.Expiry.audit()
		at.Expiry = &e
	}
	return at
}

// parseTargets reads back a canonical target text, with the shared rules
// (audit.ParseTargets) that the executor's and the auditor's replay use.
func parseTargets(text string) (DeletionTargets, error) {
	at, err := audit.ParseTargets(text)
	if err != nil {
		return DeletionTargets{}, fmt.Errorf("store: deletion targets: %w", err)
	}
	t := DeletionTargets{Kind: at.Kind, Chunks: at.Chunks, Snapshots: at.Snapshots, Before: at.Before,
		Source: at.Source, Hold: at.Hold}
	if c := at.Change; c != nil {
		t.Change = &AdminChange{Op: c.Op, Name: c.Name, Key: c.Key, Policy: policyOf(c.Policy)}
	}
	if p := at.Policy; p != nil {
		rp := retentionPolicyOf(*p)
		t.Policy = &rp
	}
	if e := at.Expiry; e != nil {
		t.Expiry = expiryTermsOf(*e)
	}
	return t, nil
}

// Deletion is a deletion request and where it stands.
type Deletion struct {
	ID                int64       `json:"id" db:"id"`
	Kind              string      `json:"kind" db:"kind"`
	Targets           string      `json:"targets" db:"targets"`
	Digest            hexBytes    `json:"digest" db:"digest"`
	Reason            string      `json:"reason" db:"reason"`
	RequestedBy       string      `json:"requested_by" db:"requested_by"`
	RequestedAt       time.Time   `json:"requested_at" db:"requested_at"`
	ApprovalsRequired int         `json:"approvals_required" db:"approvals_required"`
	Delay             Duration    `json:"delay" db:"delay"`
	ExpiresAt         time.Time   `json:"expires_at" db:"expires_at"`
	State             string      `json:"state" db:"state"`
	ScheduledAt       *time.Time  `json:"scheduled_at,omitempty" db:"scheduled_at"`
	ExecutesAt        *time.Time  `json:"executes_at,omitempty" db:"executes_at"`
	CancelledAt       *time.Time  `json:"cancelled_at,omitempty" db:"cancelled_at"`
	CancelledBy       *string     `json:"cancelled_by,omitempty" db:"cancelled_by"`
	CancelReason      *string     `json:"cancel_reason,omitempty" db:"cancel_reason"`
	ExecutedAt        *time.Time  `json:"executed_at,omitempty" db:"executed_at"`
	Report            *ExecReport `json:"report,omitempty" db:"report"`
	// AdminSetVersion is the admin set the request was made under: its
	// members sign, and the statements name it.
	AdminSetVersion *int64 `json:"admin_set_version,omitempty" db:"admin_set_version"`
	// RequestedByAdmin is the admin who signed the request statement (nil
	// until then: an unsigned request takes no approvals).
	RequestedByAdmin *string    `json:"requested_by_admin,omitempty" db:"requested_by_admin"`
	RequestFormat    *string    `json:"request_format,omitempty" db:"request_format"`
	RequestSignature []byte     `json:"request_signature,omitempty" db:"request_signature"`
	CancelledByAdmin *string    `json:"cancelled_by_admin,omitempty" db:"cancelled_by_admin"`
	CancelFormat     *string    `json:"cancel_format,omitempty" db:"cancel_format"`
	CancelSignature  []byte     `json:"cancel_signature,omitempty" db:"cancel_signature"`
	RefusedAt        *time.Time `json:"refused_at,omitempty" db:"refused_at"`
	Refusal          *string    `json:"refusal,omitempty" db:"refusal"`
	// AuthorisationID is, for a routine expiry run, the expiry
	// authorisation it ran under.
	AuthorisationID *int64     `json:"authorisation_id,omitempty" db:"authorisation_id"`
	Approvals       []Approval `json:"approvals" db:"-"`
	// Affected is an estimate made at request time: how many objects and
	// bytes the targets named then.
	Affected *Affected `json:"affected,omitempty" db:"-"`
}

// Approval is one admin's signed approval of a request.
type Approval struct {
	Approver   string    `json:"approver" db:"approver"`
	ApprovedAt time.Time `json:"approved_at" db:"approved_at"`
	Format     *string   `json:"format,omitempty" db:"format"`
	Signature  []byte    `json:"signature,omitempty" db:"signature"`
}

// Affected counts what a request's targets cover.
type Affected struct {
	Chunks    int64 `json:"chunks"`
	Snapshots int64 `json:"snapshots"`
	Bytes     int64 `json:"bytes"`
}

// ExecReport is what an execution did, stored with the request.
type ExecReport struct {
	Deleted      int64            `json:"deleted"`
	Skipped      map[string]int64 `json:"skipped"` // by reason
	BytesFreed   int64            `json:"bytes_freed"`
	Snapshots    int64            `json:"snapshots_deleted"`
	HoldReleased bool             `json:"hold_released,omitempty"`
	// AdminSetVersion is the admin-set version an admin_set request made.
	AdminSetVersion int64 `json:"admin_set_version,omitempty"`
	// Ceiling is, for an expiry run, what it measured against its
	// authorisation's ceilings before it started.
	Ceiling *RunCeiling `json:"ceiling,omitempty"`
	// Stopped says why an expiry run stopped before the end
	// ("suspended": its authorisation was suspended while it ran).
	Stopped string `json:"stopped,omitempty"`
}

// hexBytes is a byte string shown as hex in JSON.
type hexBytes []byte

func (h hexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

func (h *hexBytes) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	*h = v
	return err
}

// Duration is a time.Duration shown as text ("72h0m0s") in JSON and read
// from a PostgreSQL interval.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// ScanInterval reads a PostgreSQL interval without months (the vault
// never writes any).
func (d *Duration) ScanInterval(v pgtype.Interval) error {
	if !v.Valid || v.Months != 0 {
		return fmt.Errorf("store: interval %+v is not a plain duration", v)
	}
	*d = Duration(time.Duration(v.Days)*24*time.Hour + time.Duration(v.Microseconds)*time.Microsecond)
	return nil
}

const deletionColumns = `id, kind, targets, digest, reason, requested_by, requested_at, approvals_required,
	delay, expires_at, state, scheduled_at, executes_at, cancelled_at, cancelled_by, cancel_reason, executed_at, report,
	admin_set_version, requested_by_admin, request_format, request_signature, cancelled_by_admin, cancel_format,
	cancel_signature, refused_at, refusal, authorisation_id`

// RequestDeletion records a request to delete targets (or, of kind
// admin_set, to change the admin set), frozen and digested, under the
// current admin set and the stronger of its policy and the server's.
// Nothing happens until an admin signs the request statement (SignRequest),
// other admins sign approvals, and the delay has passed.
func (s *Store) RequestDeletion(ctx context.Context, actor string, t DeletionTargets, reason string) (Deletion, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > 2000 {
		return Deletion{}, invalid("reason", "is required (at most 2000 characters)")
	}
	text, err := t.canonical(s.opts.MaxBatch)
	if err != nil {
		return Deletion{}, err
	}
	digest := sha256.Sum256([]byte(text))
	now := s.clk.Now()
	var d Deletion
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		quorum, delay := s.opts.Deletion.ApprovalsRequired, s.opts.Deletion.Delay
		var version *int64
		set, err := adminSetVersion(ctx, tx, 0)
		switch {
		case err == nil:
			version = &set.Version
			p := set.Policy
			if governed(t.Kind) {
				quorum, delay = p.GovernanceApprovals, max(time.Duration(p.GovernanceDelay), delay)
			} else {
				quorum, delay = max(quorum, p.ApprovalsRequired), max(delay, time.Duration(p.Delay))
			}
			if t.Kind == DeleteAdminSet {
				if _, _, err := t.Change.apply(set); err != nil {
					return err
				}
			}
		case errors.Is(err, ErrNotFound):
			// No admins enrolled: the request is recorded but can never be
			// signed, so it can never execute.
			if governed(t.Kind) {
				return fmt.Errorf("the vault has no admin set to approve a %s request: %w", t.Kind, ErrConflict)
			}
		default:
			return err
		}
		if t.Kind == DeleteHoldRelease {
			var released *time.Time
			err := tx.QueryRow(ctx, "SELECT released_at FROM holds WHERE id = $1", t.Hold).Scan(&released)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("hold %d: %w", t.Hold, ErrNotFound)
			}
			if err != nil {
				return err
			}
			if released != nil {
				return fmt.Errorf("hold %d is already released: %w", t.Hold, ErrConflict)
			}
		}
		rows, _ := tx.Query(ctx, `INSERT INTO deletion_requests
			(kind, targets, digest, reason, requested_by, requested_at, approvals_required, delay, expires_at, admin_set_version)
			VALUES (@kind, @targets, @digest, @reason, @by, @now, @quorum, @delay, @expires, @version)
			RETURNING `+deletionColumns, pgx.NamedArgs{
			"kind": t.Kind, "targets": text, "digest": digest[:], "reason": reason, "by": actor, "now": now,
			"quorum": quorum, "delay": delay, "expires": now.Add(s.opts.Deletion.Expiry), "version": version,
		})
		d, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Deletion])
		if err != nil {
			return err
		}
		// The targets text and the expiry are in the entry too: the
		// executor and the auditor read what was signed from the log, not
		// from the index.
		return s.appendAudit(ctx, tx, now, actor, "deletion.request", map[string]any{
			"deletion_id": d.ID, "kind": t.Kind, "digest": hex.EncodeToString(digest[:]), "reason": reason,
			"approvals_required": quorum, "delay": delay.String(), "admin_set_version": version,
			"targets": text, "expires_at": now.Add(s.opts.Deletion.Expiry).UTC(),
		})
	})
	if err != nil {
		return Deletion{}, dbErr("request deletion", err)
	}
	d.Approvals = []Approval{}
	if aff, err := s.affected(ctx, t); err == nil {
		d.Affected = &aff
	}
	s.notify(ctx, "deletion.requested", actor, d)
	s.log.InfoContext(ctx, "deletion requested", "deletion_id", d.ID, "kind", d.Kind, "subject", actor)
	return d, nil
}

// ApproveDeletion records an admin's signed approval. Only the signature
// counts, not the caller's token: the signer must be a member of the
// request's admin set, sign the statement the server builds for this
// request, and not be the requester (ErrSelfApproval) nor have approved
// before (ErrConflict). With the quorum reached the request is scheduled to
// execute after the delay. A bad signature returns ErrBadSignature and is
// audited; so is a signer other than the caller (ErrSignerNotCaller).
func (s *Store) ApproveDeletion(ctx context.Context, actor string, id int64, sig Signature) (Deletion, error) {
	if err := s.checkSigner(ctx, actor, "approve", id, sig); err != nil {
		return Deletion{}, err
	}
	now := s.clk.Now()
	var d Deletion
	scheduled := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if d, err = lockDeletion(ctx, tx, id); err != nil {
			return err
		}
		if err := d.open(now); err != nil {
			return err
		}
		if d.RequestedByAdmin == nil || d.AdminSetVersion == nil {
			return fmt.Errorf("deletion %d is not signed by its requester yet: %w", id, ErrConflict)
		}
		if sig.Signer == *d.RequestedByAdmin {
			return fmt.Errorf("deletion %d: %s requested it: %w", id, sig.Signer, ErrSelfApproval)
		}
		if err := d.checkChangeTarget(sig.Signer); err != nil {
			return err
		}
		set, err := adminSetVersion(ctx, tx, *d.AdminSetVersion)
		if err != nil {
			return err
		}
		if err := s.verifySignature(set, d, approval.ActionApprove, sig); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO deletion_approvals (deletion_id, approver, approved_at, format, signature)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, id, sig.Signer, now, sig.Format, sig.Value)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("deletion %d: %s has already approved it: %w", id, sig.Signer, ErrConflict)
		}
		msg, _ := s.statementFor(d, approval.ActionApprove, sig.Signer)
		details := signatureDetails(sig, msg)
		details["deletion_id"], details["digest"] = id, hex.EncodeToString(d.Digest)
		if err := s.appendAudit(ctx, tx, now, actor, "deletion.approve", details); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM deletion_approvals
			WHERE deletion_id = $1 AND approver <> $2 AND signature IS NOT NULL`,
			id, *d.RequestedByAdmin).Scan(&n); err != nil {
			return err
		}
		if n < d.ApprovalsRequired {
			return nil
		}
		executesAt := now.Add(time.Duration(d.Delay))
		if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'scheduled', scheduled_at = $2, executes_at = $3
			WHERE id = $1`, id, now, executesAt); err != nil {
			return err
		}
		scheduled = true
		return s.appendAudit(ctx, tx, now, actor, "deletion.schedule", map[string]any{
			"deletion_id": id, "executes_at": executesAt.UTC(), "approvals": n,
		})
	})
	if err != nil {
		if errors.Is(err, ErrBadSignature) || errors.Is(err, ErrSelfApproval) {
			s.auditRefused(ctx, actor, "approve", id, sig, err)
		}
		return Deletion{}, dbErr(fmt.Sprintf("approve deletion %d", id), err)
	}
	d, err = s.GetDeletion(ctx, id)
	if err != nil {
		return Deletion{}, err
	}
	s.notify(ctx, "deletion.approved", actor, d)
	if scheduled {
		s.log.WarnContext(ctx, "deletion scheduled: any admin can still cancel it", "deletion_id", id, "executes_at", d.ExecutesAt)
		s.notify(ctx, "deletion.scheduled", actor, d)
	}
	return d, nil
}

// checkChangeTarget refuses signer's approval or cancel of a change to
// their own membership.
func (d Deletion) checkChangeTarget(signer string) error {
	if d.Kind != DeleteAdminSet {
		return nil
	}
	t, err := parseTargets(d.Targets)
	if err != nil {
		return err
	}
	if t.Change.targetsAdmin(signer) {
		return fmt.Errorf("deletion %d changes %s's own membership; %s can neither approve nor cancel it: %w",
			d.ID, signer, signer, ErrSelfApproval)
	}
	return nil
}

// open reports whether d still takes approvals at now.
func (d Deletion) open(now time.Time) error {
	if d.State != StateRequested {
		return fmt.Errorf("deletion %d is %s, not open for approval: %w", d.ID, d.State, ErrConflict)
	}
	if !now.Before(d.ExpiresAt) {
		return fmt.Errorf("deletion %d expired at %s: %w", d.ID, d.ExpiresAt.UTC().Format(time.RFC3339), ErrConflict)
	}
	return nil
}

// CancelDeletion vetoes a request: any one admin of the request's admin
// set may, with a signed cancel statement, until execution starts (except
// the subject of a removal or key rotation, for that request). It is final.
// The signer must be the caller (ErrSignerNotCaller).
func (s *Store) CancelDeletion(ctx context.Context, actor string, id int64, reason string, sig Signature) (Deletion, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > 2000 {
		return Deletion{}, invalid("reason", "is required (at most 2000 characters)")
	}
	if err := s.checkSigner(ctx, actor, "cancel", id, sig); err != nil {
		return Deletion{}, err
	}
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		d, err := lockDeletion(ctx, tx, id)
		if err != nil {
			return err
		}
		// An expiry authorisation in force (executing) is cancelled like a
		// request in flight: that is its suspension.
		if d.State != StateRequested && d.State != StateScheduled && !d.inForce() {
			return fmt.Errorf("deletion %d is %s and can no longer be cancelled: %w", id, d.State, ErrConflict)
		}
		if d.AdminSetVersion == nil {
			return fmt.Errorf("deletion %d was made with no admin set; it can never execute and will expire: %w", id, ErrConflict)
		}
		if err := d.checkChangeTarget(sig.Signer); err != nil {
			return err
		}
		set, err := adminSetVersion(ctx, tx, *d.AdminSetVersion)
		if err != nil {
			return err
		}
		if err := s.verifySignature(set, d, approval.ActionCancel, sig); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'cancelled', cancelled_at = $2,
			cancelled_by = $3, cancel_reason = $4, cancelled_by_admin = $5, cancel_format = $6, cancel_signature = $7
			WHERE id = $1`, id, now, actor, reason, sig.Signer, sig.Format, sig.Value); err != nil {
			return err
		}
		msg, _ := s.statementFor(d, approval.ActionCancel, sig.Signer)
		details := signatureDetails(sig, msg)
		details["deletion_id"], details["reason"] = id, reason
		return s.appendAudit(ctx, tx, now, actor, "deletion.cancel", details)
	})
	if err != nil {
		if errors.Is(err, ErrBadSignature) || errors.Is(err, ErrSelfApproval) {
			s.auditRefused(ctx, actor, "cancel", id, sig, err)
		}
		return Deletion{}, dbErr(fmt.Sprintf("cancel deletion %d", id), err)
	}
	d, err := s.GetDeletion(ctx, id)
	if err != nil {
		return Deletion{}, err
	}
	s.log.InfoContext(ctx, "deletion cancelled", "deletion_id", id, "subject", actor, "signer", sig.Signer)
	s.notify(ctx, "deletion.cancelled", actor, d)
	return d, nil
}

func lockDeletion(ctx context.Context, tx pgx.Tx, id int64) (Deletion, error) {
	rows, _ := tx.Query(ctx, "SELECT "+deletionColumns+" FROM deletion_requests WHERE id = $1 FOR UPDATE", id)
	d, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Deletion])
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("deletion %d: %w", id, ErrNotFound)
	}
	return d, err
}

// GetDeletion returns a request with its approvals.
func (s *Store) GetDeletion(ctx context.Context, id int64) (Deletion, error) {
	rows, _ := s.pool.Query(ctx, "SELECT "+deletionColumns+" FROM deletion_requests WHERE id = $1", id)
	d, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Deletion])
	if err != nil {
		return Deletion{}, dbErr(fmt.Sprintf("get deletion %d", id), err)
	}
	rows, _ = s.pool.Query(ctx, `SELECT approver, approved_at, format, signature FROM deletion_approvals
		WHERE deletion_id = $1 ORDER BY approved_at, approver`, id)
	if d.Approvals, err = pgx.CollectRows(rows, pgx.RowToStructByName[Approval]); err != nil {
		return Deletion{}, dbErr("list approvals", err)
	}
	return d, nil
}

// ListDeletions returns requests, newest first, optionally in one state,
// with ids below before (0: from the newest).
func (s *Store) ListDeletions(ctx context.Context, state string, before int64, limit int) ([]Deletion, error) {
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, _ := s.pool.Query(ctx, "SELECT "+deletionColumns+` FROM deletion_requests
		WHERE id < $1 AND ($2 = '' OR state = $2) ORDER BY id DESC LIMIT $3`, before, state, limit)
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[Deletion])
	if err != nil {
		return nil, dbErr("list deletions", err)
	}
	for i := range ds {
		rows, _ := s.pool.Query(ctx, `SELECT approver, approved_at, format, signature FROM deletion_approvals
			WHERE deletion_id = $1 ORDER BY approved_at, approver`, ds[i].ID)
		if ds[i].Approvals, err = pgx.CollectRows(rows, pgx.RowToStructByName[Approval]); err != nil {
			return nil, dbErr("list approvals", err)
		}
	}
	return ds, nil
}

// Outcome is what execution did with one object.
type Outcome struct {
	ObjectKind string    `json:"object_kind" db:"object_kind"`
	Object     string    `json:"object" db:"object"`
	Outcome    string    `json:"outcome" db:"outcome"`
	Reason     string    `json:"reason,omitempty" db:"reason"`
	At         time.Time `json:"at" db:"at"`
}

// DeletionOutcomes lists per-object outcomes of an executed request, after
// the given object (keyset), in object order.
func (s *Store) DeletionOutcomes(ctx context.Context, id int64, after string, limit int) ([]Outcome, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	rows, _ := s.pool.Query(ctx, `SELECT object_kind, object, outcome, reason, at FROM deletion_outcomes
		WHERE deletion_id = $1 AND object > $2 ORDER BY object LIMIT $3`, id, after, limit)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Outcome])
	if err != nil {
		return nil, dbErr("list outcomes", err)
	}
	return out, nil
}

// affected estimates what targets cover now.
func (s *Store) affected(ctx context.Context, t DeletionTargets) (Affected, error) {
	var a Affected
	var err error
	switch t.Kind {
	case DeleteChunks:
		keys := hashKeys(t.Chunks)
		err = s.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(size), 0) FROM chunks WHERE hash = ANY($1)", keys).Scan(&a.Chunks, &a.Bytes)
	case DeleteSnapshots:
		err = s.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(chunk_count), 0), coalesce(sum(total_bytes), 0)
			FROM snapshots WHERE id = ANY($1) AND deleted_at IS NULL`, t.Snapshots).Scan(&a.Snapshots, &a.Chunks, &a.Bytes)
	case DeleteExpired:
		if t.Source == "" {
			err = s.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(size), 0) FROM chunks WHERE retain_until < $1", t.Before).Scan(&a.Chunks, &a.Bytes)
			if err == nil {
				err = s.pool.QueryRow(ctx, "SELECT count(*) FROM snapshots WHERE retain_until < $1 AND deleted_at IS NULL", t.Before).Scan(&a.Snapshots)
			}
		} else {
			err = s.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(chunk_count), 0), coalesce(sum(total_bytes), 0)
				FROM snapshots WHERE source = $1 AND retain_until < $2 AND deleted_at IS NULL`, t.Source, t.Before).Scan(&a.Snapshots, &a.Chunks, &a.Bytes)
		}
	}
	return a, err
}

func hashKeys(hs []chunk.Hash) [][]byte {
	keys := make([][]byte, len(hs))
	for i := range hs {
		keys[i] = hs[i][:]
	}
	return keys
}
