package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/audit"
)

// DeleteAdminSet is the kind of a request that changes the admin set: it
// takes the governance quorum and delay.
const DeleteAdminSet = "admin_set"

// DeletionKind is what a request targets (DeleteChunks, ...): the kinds
// are untyped string constants, and this names them where it helps.
type DeletionKind = string

// governed reports whether requests of kind k take the admin set's
// governance quorum and delay rather than its deletion quorum and delay:
// changes to who governs and to the rules, and standing authorisations,
// are as dangerous as the deletions they enable. The database's list is
// kind IN ('admin_set','policy','expiry_authorisation'); the journal's
// replay applies the same (audit.Governed).
func governed(k DeletionKind) bool {
	return audit.Governed(k)
}

// StateRefused: the executor found a scheduled request whose signatures do
// not verify (rows edited in the database, a signer no longer an admin) and
// refused it. Terminal.
const StateRefused = "refused"

// Admin-set change operations.
const (
	AdminAdd    = "add"
	AdminRemove = "remove"
	AdminRotate = "rotate"
	AdminPolicy = "policy"
)

// ErrBadSignature: an admin signature is missing, does not verify, or is by
// a key that is not in the admin set. Refused attempts are audited.
var ErrBadSignature = errors.New("store: no valid admin signature")

// Policy is the quorum and delay of deletions and of admin-set changes.
type Policy struct {
	ApprovalsRequired   int      `json:"approvals_required"`
	Delay               Duration `json:"delay"`
	GovernanceApprovals int      `json:"governance_approvals"`
	GovernanceDelay     Duration `json:"governance_delay"`
}

// Check refuses a policy below the floors for an admin set of n members
// (audit.Policy.Check, the rules the executor and the auditor apply too).
func (p Policy) Check(n int) error {
	return policyErr(p.audit().Check(n))
}

// audit returns p as the shared policy rules spell it.
func (p Policy) audit() audit.Policy {
	return audit.Policy{Approvals: p.ApprovalsRequired, Delay: time.Duration(p.Delay),
		GovernanceApprovals: p.GovernanceApprovals, GovernanceDelay: time.Duration(p.GovernanceDelay)}
}

func policyOf(p audit.Policy) Policy {
	return Policy{ApprovalsRequired: p.Approvals, Delay: Duration(p.Delay),
		GovernanceApprovals: p.GovernanceApprovals, GovernanceDelay: Duration(p.GovernanceDelay)}
}

// policyErr maps the shared rules' errors to the store's.
func policyErr(err error) error {
	var pe *audit.PolicyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return invalid(pe.Field, "%s", pe.Reason)
	case errors.Is(err, audit.ErrChangeConflict):
		return fmt.Errorf("%w: %w", err, ErrConflict)
	case errors.Is(err, audit.ErrChangeNotFound):
		return fmt.Errorf("%w: %w", err, ErrNotFound)
	}
	return err
}

// Admin is one member of an admin set.
type Admin struct {
	Name    string       `json:"name"`
	Key     approval.Key `json:"-"`
	AddedAt time.Time    `json:"added_at"`
}

// MarshalJSON shows the key as its public key line and fingerprint.
func (a Admin) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"name": a.Name, "kind": a.Key.Kind, "public_key": a.Key.String(),
		"fingerprint": a.Key.Fingerprint(), "added_at": a.AddedAt,
	})
}

// AdminSet is one version of the admin set.
type AdminSet struct {
	Version   int64     `json:"version"`
	Policy    Policy    `json:"policy"`
	CreatedAt time.Time `json:"created_at"`
	RequestID *int64    `json:"request_id,omitempty"`
	Admins    []Admin   `json:"admins"`
}

// Member returns the admin called name.
func (a AdminSet) Member(name string) (Admin, bool) {
	for _, m := range a.Admins {
		if m.Name == name {
			return m, true
		}
	}
	return Admin{}, false
}

// Genesis is the first admin set, from `vault init`.
type Genesis struct {
	Policy Policy
	Admins []Admin
}

// Check validates the genesis set: names, distinct keys, the policy floors.
func (g Genesis) Check() error {
	names := map[string]bool{}
	keys := map[string]bool{}
	for _, a := range g.Admins {
		if !approval.ValidName(a.Name) {
			return invalid("admins", "%q is not an admin name (lowercase letters, digits, . _ -)", a.Name)
		}
		if names[a.Name] || keys[string(a.Key.Public)] {
			return invalid("admins", "admin %s or its key is given twice", a.Name)
		}
		if a.Key.Kind != approval.KindRaw && a.Key.Kind != approval.KindSSH {
			return invalid("admins", "admin %s has no key", a.Name)
		}
		names[a.Name], keys[string(a.Key.Public)] = true, true
	}
	return g.Policy.Check(len(g.Admins))
}

// Pinned returns the genesis set as the journal's replay pins it.
func (g Genesis) Pinned() audit.AdminSet {
	set := AdminSet{Version: 1, Policy: g.Policy, Admins: g.Admins}
	return set.audit()
}

// audit returns the set as the shared rules spell it.
func (a AdminSet) audit() audit.AdminSet {
	set := audit.AdminSet{Version: a.Version, Policy: a.Policy.audit(), Keys: make(map[string]approval.Key, len(a.Admins))}
	for _, m := range a.Admins {
		set.Keys[m.Name] = m.Key
	}
	return set
}

// SeedAdminSet records the genesis admin set if the database has none; if
// it has one, it returns ErrConflict unless it is the same set. `vault
// serve` calls it with the admins.json that `vault init` wrote.
func (s *Store) SeedAdminSet(ctx context.Context, g Genesis) error {
	if err := g.Check(); err != nil {
		return err
	}
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE admin_set_versions IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		cur, err := adminSetVersion(ctx, tx, 1)
		if err == nil {
			if !sameGenesis(cur, g) {
				return fmt.Errorf("the database's genesis admin set differs from the data directory's admins.json: %w", ErrConflict)
			}
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := insertAdminSet(ctx, tx, 1, g.Policy, now, nil, g.Admins); err != nil {
			return err
		}
		var names []string
		for _, a := range g.Admins {
			names = append(names, a.Name+" "+a.Key.Fingerprint())
		}
		return s.appendAudit(ctx, tx, now, "vault", "admin_set.genesis", map[string]any{
			"version": 1, "admins": names, "keys": adminKeys(g.Admins), "approvals_required": g.Policy.ApprovalsRequired,
			"delay": time.Duration(g.Policy.Delay).String(), "governance_approvals": g.Policy.GovernanceApprovals,
			"governance_delay": time.Duration(g.Policy.GovernanceDelay).String(),
		})
	})
	return dbErr("seed admin set", err)
}

// adminKeys maps each admin to its public key line, as the audit log
// records an admin set.
func adminKeys(admins []Admin) map[string]string {
	m := make(map[string]string, len(admins))
	for _, a := range admins {
		m[a.Name] = a.Key.String()
	}
	return m
}

func sameGenesis(cur AdminSet, g Genesis) bool {
	if cur.Policy != g.Policy || len(cur.Admins) != len(g.Admins) {
		return false
	}
	for _, a := range g.Admins {
		m, ok := cur.Member(a.Name)
		if !ok || !m.Key.Equal(a.Key) {
			return false
		}
	}
	return true
}

func insertAdminSet(ctx context.Context, tx pgx.Tx, version int64, p Policy, now time.Time, requestID *int64, admins []Admin) error {
	if _, err := tx.Exec(ctx, `INSERT INTO admin_set_versions
		(version, approvals_required, delay, governance_approvals, governance_delay, created_at, request_id)
		VALUES (@v, @a, @d, @ga, @gd, @now, @req)`, pgx.NamedArgs{
		"v": version, "a": p.ApprovalsRequired, "d": time.Duration(p.Delay), "ga": p.GovernanceApprovals,
		"gd": time.Duration(p.GovernanceDelay), "now": now, "req": requestID,
	}); err != nil {
		return err
	}
	for _, a := range admins {
		added := a.AddedAt
		if added.IsZero() {
			added = now
		}
		if _, err := tx.Exec(ctx, `INSERT INTO admin_keys (version, name, key_kind, public_key, added_at)
			VALUES ($1, $2, $3, $4, $5)`, version, a.Name, a.Key.Kind, []byte(a.Key.Public), added); err != nil {
			return err
		}
	}
	return nil
}

type adminSetRow struct {
	Version             int64     `db:"version"`
	ApprovalsRequired   int       `db:"approvals_required"`
	Delay               Duration  `db:"delay"`
	GovernanceApprovals int       `db:"governance_approvals"`
	GovernanceDelay     Duration  `db:"governance_delay"`
	CreatedAt           time.Time `db:"created_at"`
	RequestID           *int64    `db:"request_id"`
}

type adminKeyRow struct {
	Name      string    `db:"name"`
	KeyKind   string    `db:"key_kind"`
	PublicKey []byte    `db:"public_key"`
	AddedAt   time.Time `db:"added_at"`
}

// adminSetVersion reads one version; version 0 means the newest. It
// returns ErrNotFound if there is none.
func adminSetVersion(ctx context.Context, q querier, version int64) (AdminSet, error) {
	rows, _ := q.Query(ctx, `SELECT version, approvals_required, delay, governance_approvals, governance_delay,
		created_at, request_id FROM admin_set_versions
		WHERE version = CASE WHEN $1 = 0 THEN (SELECT max(version) FROM admin_set_versions) ELSE $1 END`, version)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[adminSetRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return AdminSet{}, fmt.Errorf("admin set version %d: %w", version, ErrNotFound)
	}
	if err != nil {
		return AdminSet{}, err
	}
	set := AdminSet{Version: r.Version, CreatedAt: r.CreatedAt, RequestID: r.RequestID, Policy: Policy{
		ApprovalsRequired: r.ApprovalsRequired, Delay: r.Delay,
		GovernanceApprovals: r.GovernanceApprovals, GovernanceDelay: r.GovernanceDelay,
	}}
	rows, _ = q.Query(ctx, `SELECT name, key_kind, public_key, added_at FROM admin_keys WHERE version = $1 ORDER BY name`, r.Version)
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByName[adminKeyRow])
	if err != nil {
		return AdminSet{}, err
	}
	for _, k := range keys {
		set.Admins = append(set.Admins, Admin{Name: k.Name, Key: approval.Key{Kind: k.KeyKind, Public: k.PublicKey}, AddedAt: k.AddedAt})
	}
	return set, nil
}

// AdminSet returns the admin set at version (0: the current one). It
// returns ErrNotFound if the vault has no admins (nothing can be deleted).
func (s *Store) AdminSet(ctx context.Context, version int64) (AdminSet, error) {
	set, err := adminSetVersion(ctx, s.pool, version)
	if err != nil {
		return AdminSet{}, dbErr("admin set", err)
	}
	return set, nil
}

// AdminChange is what an admin_set request changes.
type AdminChange struct {
	Op     string       // AdminAdd, AdminRemove, AdminRotate, AdminPolicy
	Name   string       // add, remove, rotate
	Key    approval.Key // add, rotate
	Policy Policy       // policy
}

// check refuses a change the canonical text cannot hold, naming the field.
func (c *AdminChange) check() error {
	if c == nil {
		return invalid("change", "is required")
	}
	switch c.Op {
	case AdminAdd, AdminRotate, AdminRemove:
		if !approval.ValidName(c.Name) {
			return invalid("admin", "is not an admin name (lowercase letters, digits, . _ -)")
		}
		if c.Op != AdminRemove && c.Key.Kind != approval.KindRaw && c.Key.Kind != approval.KindSSH {
			return invalid("key", "is required")
		}
	case AdminPolicy:
	default:
		return invalid("op", "must be add, remove, rotate or policy")
	}
	return nil
}

// audit returns the change as the shared rules spell it.
func (c AdminChange) audit() audit.AdminChange {
	return audit.AdminChange{Op: c.Op, Name: c.Name, Key: c.Key, Policy: c.Policy.audit()}
}

// apply returns the admin set after the change, or why it cannot be made
// (audit.AdminChange.Apply: the rules the executor and the auditor apply).
// Members keep the time they were added.
func (c AdminChange) apply(cur AdminSet) (Policy, []Admin, error) {
	next, err := c.audit().Apply(cur.audit())
	if err != nil {
		return cur.Policy, nil, policyErr(err)
	}
	return policyOf(next.Policy), membersOf(next, cur), nil
}

// membersOf lists set's members in name order, keeping the time each
// unchanged member of prev was added.
func membersOf(set audit.AdminSet, prev AdminSet) []Admin {
	admins := make([]Admin, 0, len(set.Keys))
	for name, k := range set.Keys {
		a := Admin{Name: name, Key: k}
		if m, ok := prev.Member(name); ok && m.Key.Equal(k) {
			a.AddedAt = m.AddedAt
		}
		admins = append(admins, a)
	}
	slices.SortFunc(admins, func(a, b Admin) int { return strings.Compare(a.Name, b.Name) })
	return admins
}

// targetsAdmin reports whether the change is about signer's own membership
// (removal or key rotation): that admin can neither approve nor cancel it,
// so a compromised admin cannot veto their own eviction.
func (c *AdminChange) targetsAdmin(signer string) bool {
	return c != nil && (c.Op == AdminRemove || c.Op == AdminRotate) && c.Name == signer
}

// Signature is an admin's signature over the statement the server built
// for one action.
type Signature struct {
	Signer string
	Format string // approval.FormatRaw or approval.FormatSSHSIG
	Value  []byte
}

// statementFor builds the exact bytes that signer signs for action on d.
func (s *Store) statementFor(d Deletion, action, signer string) ([]byte, error) {
	if d.AdminSetVersion == nil {
		return nil, fmt.Errorf("deletion %d was made with no admin set and can never be signed: %w", d.ID, ErrConflict)
	}
	typ, err := approval.TypeFor(d.Kind, action)
	if err != nil {
		return nil, invalid("action", "must be request, approve or cancel")
	}
	b, err := approval.Statement{
		Type: typ, Vault: s.opts.VaultID, Request: d.ID, Kind: d.Kind, TargetsDigest: d.Digest,
		Approvals: d.ApprovalsRequired, Delay: time.Duration(d.Delay), AdminSet: *d.AdminSetVersion, Signer: signer,
	}.Bytes()
	if err != nil {
		return nil, invalid("signer", "%s", err.Error())
	}
	return b, nil
}

// Statement returns the statement signer signs for action ("request",
// "approve", "cancel") on request id: the exact bytes the server verifies.
func (s *Store) Statement(ctx context.Context, id int64, action, signer string) ([]byte, error) {
	d, err := s.GetDeletion(ctx, id)
	if err != nil {
		return nil, err
	}
	if d.AdminSetVersion != nil {
		set, err := s.AdminSet(ctx, *d.AdminSetVersion)
		if err != nil {
			return nil, err
		}
		if _, ok := set.Member(signer); !ok {
			return nil, fmt.Errorf("%q is not an admin in admin set %d: %w", signer, set.Version, ErrNotFound)
		}
	}
	return s.statementFor(d, action, signer)
}

// verifySignature checks sig for action on d against the admin set the
// request was made under. It returns ErrBadSignature, wrapped with why.
func (s *Store) verifySignature(set AdminSet, d Deletion, action string, sig Signature) error {
	m, ok := set.Member(sig.Signer)
	if !ok {
		return fmt.Errorf("deletion %d: %q is not an admin in admin set %d: %w", d.ID, sig.Signer, set.Version, ErrBadSignature)
	}
	if len(sig.Value) == 0 {
		return fmt.Errorf("deletion %d: no signature by %s: %w", d.ID, sig.Signer, ErrBadSignature)
	}
	msg, err := s.statementFor(d, action, sig.Signer)
	if err != nil {
		return err
	}
	if err := m.Key.Verify(msg, sig.Format, sig.Value); err != nil {
		return fmt.Errorf("deletion %d: %s's %s: %w: %w", d.ID, sig.Signer, action, ErrBadSignature, err)
	}
	return nil
}

// signatureDetails is what the audit log keeps of a signed action: enough
// for an auditor to verify it with nothing else.
func signatureDetails(sig Signature, statement []byte) map[string]any {
	return map[string]any{
		"signer": sig.Signer, "format": sig.Format, "signature": base64.StdEncoding.EncodeToString(sig.Value),
		"statement": string(statement),
	}
}

// auditRefused records a refused signed action in its own transaction, so
// that forged attempts leave a trace even though they change nothing.
func (s *Store) auditRefused(ctx context.Context, actor, action string, id int64, sig Signature, cause error) {
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return s.appendAudit(ctx, tx, now, actor, "deletion."+action+".refused", map[string]any{
			"deletion_id": id, "signer": sig.Signer, "format": sig.Format, "reason": cause.Error(),
		})
	})
	if err != nil {
		s.log.ErrorContext(ctx, "cannot audit a refused signature", "deletion_id", id, "err", err)
	}
	s.log.WarnContext(ctx, "refused an admin signature", "deletion_id", id, "action", action,
		"subject", actor, "signer", sig.Signer, "err", cause)
}

// checkSigner refuses, and audits, a signed action whose signer is not the
// calling token's subject: a signature counts for the admin who made the
// call, never for another admin whose key the caller holds.
func (s *Store) checkSigner(ctx context.Context, actor, action string, id int64, sig Signature) error {
	if sig.Signer == actor {
		return nil
	}
	err := fmt.Errorf("store: %s deletion %d: signed by %q through the token of %q: %w", action, id, sig.Signer, actor, ErrSignerNotCaller)
	s.auditRefused(ctx, actor, action, id, sig, err)
	return err
}

// SignRequest records the requester's signature over the request
// statement: until then the request takes no approvals. The signer becomes
// the requester, who cannot approve. The signer must be the caller
// (ErrSignerNotCaller).
func (s *Store) SignRequest(ctx context.Context, actor string, id int64, sig Signature) (Deletion, error) {
	if err := s.checkSigner(ctx, actor, "sign", id, sig); err != nil {
		return Deletion{}, err
	}
	now := s.clk.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		d, err := lockDeletion(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := d.open(now); err != nil {
			return err
		}
		if d.RequestedByAdmin != nil {
			return fmt.Errorf("deletion %d is already signed by %s: %w", id, *d.RequestedByAdmin, ErrConflict)
		}
		if d.AdminSetVersion == nil {
			return fmt.Errorf("deletion %d was made with no admin set: %w", id, ErrConflict)
		}
		set, err := adminSetVersion(ctx, tx, *d.AdminSetVersion)
		if err != nil {
			return err
		}
		if err := s.verifySignature(set, d, approval.ActionRequest, sig); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE deletion_requests SET requested_by_admin = $2, request_format = $3,
			request_signature = $4 WHERE id = $1`, id, sig.Signer, sig.Format, sig.Value); err != nil {
			return err
		}
		msg, _ := s.statementFor(d, approval.ActionRequest, sig.Signer)
		details := signatureDetails(sig, msg)
		details["deletion_id"] = id
		return s.appendAudit(ctx, tx, now, actor, "deletion.sign", details)
	})
	if err != nil {
		if errors.Is(err, ErrBadSignature) {
			s.auditRefused(ctx, actor, "sign", id, sig, err)
		}
		return Deletion{}, dbErr(fmt.Sprintf("sign deletion %d", id), err)
	}
	s.log.InfoContext(ctx, "deletion request signed", "deletion_id", id, "signer", sig.Signer, "subject", actor)
	return s.GetDeletion(ctx, id)
}

// verifyForExecution re-verifies, from the stored rows, everything that
// made d executable: the targets digest, the requester's signature, every
// approval's signature against the admin set the request was made under,
// that every counted signer is still an admin with the same key, and the
// quorum. It trusts no status column. Any failure means the rows were
// edited or the admin set changed under the request; the executor refuses.
// It is the index's half of the check: passing it is never enough, the
// journal must agree (verifyFromJournal), since rows and admin sets can be
// forged in the database together.
func (s *Store) verifyForExecution(ctx context.Context, tx pgx.Tx, d Deletion) error {
	if sum := sha256.Sum256([]byte(d.Targets)); string(sum[:]) != string(d.Digest) {
		return errors.New("the targets do not match their digest")
	}
	if d.AdminSetVersion == nil || d.RequestedByAdmin == nil {
		return errors.New("the request is not signed by an admin")
	}
	set, err := adminSetVersion(ctx, tx, *d.AdminSetVersion)
	if err != nil {
		return fmt.Errorf("admin set %d: %w", *d.AdminSetVersion, err)
	}
	cur, err := adminSetVersion(ctx, tx, 0)
	if err != nil {
		return fmt.Errorf("current admin set: %w", err)
	}
	quorum, delay := set.Policy.ApprovalsRequired, set.Policy.Delay
	if governed(d.Kind) {
		quorum, delay = set.Policy.GovernanceApprovals, set.Policy.GovernanceDelay
	}
	if d.ApprovalsRequired < quorum || d.Delay < delay {
		return fmt.Errorf("the request's policy (%d approvals, %s) is below its admin set's (%d, %s)",
			d.ApprovalsRequired, time.Duration(d.Delay), quorum, time.Duration(delay))
	}
	stillAdmin := func(name string) error {
		m, _ := set.Member(name)
		c, ok := cur.Member(name)
		if !ok || !c.Key.Equal(m.Key) {
			return fmt.Errorf("%s is no longer an admin with the key that signed", name)
		}
		return nil
	}
	req := Signature{Signer: *d.RequestedByAdmin, Format: deref(d.RequestFormat), Value: d.RequestSignature}
	if err := s.verifySignature(set, d, approval.ActionRequest, req); err != nil {
		return err
	}
	if err := stillAdmin(req.Signer); err != nil {
		return err
	}
	var change *AdminChange
	if d.Kind == DeleteAdminSet {
		t, err := parseTargets(d.Targets)
		if err != nil {
			return err
		}
		change = t.Change
	}
	rows, _ := tx.Query(ctx, `SELECT approver, approved_at, format, signature FROM deletion_approvals
		WHERE deletion_id = $1 ORDER BY approver`, d.ID)
	approvals, err := pgx.CollectRows(rows, pgx.RowToStructByName[Approval])
	if err != nil {
		return err
	}
	valid := 0
	for _, a := range approvals {
		if a.Approver == req.Signer {
			return fmt.Errorf("an approval by the requester %s", a.Approver)
		}
		if change.targetsAdmin(a.Approver) {
			return fmt.Errorf("an approval by %s of a change to their own membership", a.Approver)
		}
		sig := Signature{Signer: a.Approver, Format: deref(a.Format), Value: a.Signature}
		if err := s.verifySignature(set, d, approval.ActionApprove, sig); err != nil {
			return err
		}
		if err := stillAdmin(a.Approver); err != nil {
			return err
		}
		valid++
	}
	if valid < d.ApprovalsRequired {
		return fmt.Errorf("%d valid approvals of %d required", valid, d.ApprovalsRequired)
	}
	return nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// applyAdminChange makes the next admin-set version from an executing
// admin_set request: the change the journal's request entry names,
// applied to the newest admin set the journal shows made by the rules
// (the index's newest version must be the same set, or nothing is
// written). Rerun after a crash, it finds the version it made.
func (s *Store) applyAdminChange(ctx context.Context, id int64, now time.Time, c *AdminChange, rep *ExecReport, v *journalView) error {
	if c == nil {
		return fmt.Errorf("store: deletion %d: %w: no admin-set change in the journal", id, ErrIntegrity)
	}
	latest, ok := v.r.LatestAdminSet()
	if !ok {
		return fmt.Errorf("store: deletion %d: %w: no admin set in the journal", id, ErrIntegrity)
	}
	var diverged bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := setExecutor(ctx, tx, id, now); err != nil {
			return err
		}
		var done int64
		err := tx.QueryRow(ctx, "SELECT version FROM admin_set_versions WHERE request_id = $1", id).Scan(&done)
		if err == nil {
			rep.AdminSetVersion = done
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE admin_set_versions IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		cur, err := adminSetVersion(ctx, tx, 0)
		if err != nil {
			return err
		}
		if !cur.audit().Equal(latest) {
			diverged = true
			return fmt.Errorf("%w: the index's admin set version %d is not the journal's version %d", ErrIntegrity, cur.Version, latest.Version)
		}
		next, err := c.audit().Apply(latest)
		if err != nil {
			// The set changed since the request (another change executed
			// first): nothing to do, and the report says why.
			rep.Skipped["admin_set:not_applicable"]++
			s.log.WarnContext(ctx, "admin-set change no longer applies; nothing changed", "deletion_id", id, "err", err)
			return s.appendAudit(ctx, tx, now, "executor", "admin_set.skipped", map[string]any{"deletion_id": id, "reason": err.Error()})
		}
		p, admins := policyOf(next.Policy), membersOf(next, cur)
		reqID := id
		if err := insertAdminSet(ctx, tx, next.Version, p, now, &reqID, admins); err != nil {
			return err
		}
		rep.AdminSetVersion = next.Version
		// The whole new set with its keys and policy: an auditor verifies
		// later signatures from the log alone.
		return s.appendAudit(ctx, tx, now, "executor", "admin_set.change", map[string]any{
			"deletion_id": id, "version": next.Version, "op": c.Op, "admin": c.Name,
			"keys": adminKeys(admins), "approvals_required": p.ApprovalsRequired, "delay": time.Duration(p.Delay).String(),
			"governance_approvals": p.GovernanceApprovals, "governance_delay": time.Duration(p.GovernanceDelay).String(),
		})
	})
	if diverged {
		s.alarm(ctx, "the index's admin set is not the journal's; the admin-set change is not made", "deletion_id", id, "err", err)
	}
	return dbErr("change admin set", err)
}
