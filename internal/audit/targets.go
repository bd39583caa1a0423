package audit

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/chunk"
)

// Deletion kinds, as the targets text and the log name them.
const (
	KindChunks      = "chunks"
	KindSnapshots   = "snapshots"
	KindExpired     = "expired"
	KindHoldRelease = "hold_release"
	KindAdminSet    = "admin_set"
	// KindExpiryAuthorisation is a standing authorisation of routine
	// expiry: executed, it stays in force until an admin suspends it, and
	// each of its runs is a request of kind expired.
	KindExpiryAuthorisation = "expiry_authorisation"
)

// Bounds of expiry terms.
const (
	// MinExpiryInterval keeps runs from being so frequent that the per-run
	// ceiling stops meaning anything.
	MinExpiryInterval = time.Hour
	MaxExpiryInterval = 366 * 24 * time.Hour
)

// ExpiryTerms are what an expiry authorisation allows: a run at most every
// Interval, each removing at most MaxPercent of the stored bytes and at
// most MaxChunks chunks (0: that ceiling is not set; at least one is). A
// run whose candidates exceed a ceiling removes nothing.
type ExpiryTerms struct {
	Interval   time.Duration
	MaxPercent int
	MaxChunks  int64
}

// Check refuses terms the canonical text cannot hold.
func (e ExpiryTerms) Check() error {
	switch {
	case e.Interval < MinExpiryInterval || e.Interval > MaxExpiryInterval:
		return &PolicyError{Field: "interval", Reason: fmt.Sprintf("must be between %s and %s", MinExpiryInterval, MaxExpiryInterval)}
	case e.MaxPercent < 0 || e.MaxPercent > 100:
		return &PolicyError{Field: "max_percent", Reason: "must be between 0 and 100"}
	case e.MaxChunks < 0:
		return &PolicyError{Field: "max_chunks", Reason: "must not be negative"}
	case e.MaxPercent == 0 && e.MaxChunks == 0:
		return &PolicyError{Field: "max_percent", Reason: "a ceiling is required: max_percent, max_chunks or both"}
	}
	return nil
}

// targetsHeader is the first line of every targets text.
const targetsHeader = "wormvault-deletion-targets v1"

// Targets is what a deletion request names, parsed from the canonical text
// whose SHA-256 the admins sign.
type Targets struct {
	Kind      string
	Chunks    []chunk.Hash // chunks
	Snapshots []int64      // snapshots
	Before    time.Time    // expired: retention ended before this time
	Source    string       // expired: only this source; "" the whole vault
	Hold      int64        // hold_release
	Change    *AdminChange // admin_set

	Policy *RetentionPolicy // policy
	Expiry *ExpiryTerms     // expiry_authorisation
}

// Canonical returns the frozen text of t: a header line, the kind, then
// the targets one per line in a fixed order (chunks and snapshots sorted,
// each once). The store builds request texts the same way; ParseTargets
// accepts only this form.
func (t Targets) Canonical() (string, error) {
	var b strings.Builder
	b.WriteString(targetsHeader + "\n")
	b.WriteString("kind: " + t.Kind + "\n")
	switch t.Kind {
	case KindChunks:
		if len(t.Chunks) == 0 {
			return "", errors.New("no chunks")
		}
		hs := make([]string, len(t.Chunks))
		for i, h := range t.Chunks {
			hs[i] = h.String()
		}
		slices.Sort(hs)
		for _, h := range slices.Compact(hs) {
			b.WriteString("chunk: " + h + "\n")
		}
	case KindSnapshots:
		if len(t.Snapshots) == 0 {
			return "", errors.New("no snapshots")
		}
		ids := slices.Clone(t.Snapshots)
		slices.Sort(ids)
		for _, id := range slices.Compact(ids) {
			if id <= 0 {
				return "", errors.New("snapshot ids are positive")
			}
			b.WriteString("snapshot: " + strconv.FormatInt(id, 10) + "\n")
		}
	case KindExpired:
		if t.Before.IsZero() {
			return "", errors.New("no before time")
		}
		b.WriteString("before: " + t.Before.UTC().Format(time.RFC3339Nano) + "\n")
		src := t.Source
		if src == "" {
			src = "*"
		} else if strings.ContainsAny(src, "\n*") {
			return "", errors.New("source must not contain newlines or *")
		}
		b.WriteString("source: " + src + "\n")
	case KindHoldRelease:
		if t.Hold <= 0 {
			return "", errors.New("no hold")
		}
		b.WriteString("hold: " + strconv.FormatInt(t.Hold, 10) + "\n")
	case KindAdminSet:
		if t.Change == nil {
			return "", errors.New("no change")
		}
		if err := t.Change.canonical(&b); err != nil {
			return "", err
		}
	case KindPolicy:
		if t.Policy == nil {
			return "", errors.New("no retention policy")
		}
		if err := t.Policy.canonical(&b); err != nil {
			return "", err
		}
	case KindExpiryAuthorisation:
		if t.Expiry == nil {
			return "", errors.New("no expiry terms")
		}
		if err := t.Expiry.Check(); err != nil {
			return "", err
		}
		b.WriteString("interval: " + t.Expiry.Interval.String() + "\n")
		b.WriteString("max-percent: " + strconv.Itoa(t.Expiry.MaxPercent) + "\n")
		b.WriteString("max-chunks: " + strconv.FormatInt(t.Expiry.MaxChunks, 10) + "\n")
	default:
		return "", fmt.Errorf("unknown kind %q", t.Kind)
	}
	return b.String(), nil
}

// ParseTargets reads a canonical targets text. It fails unless the text
// is exactly the canonical form of what it names (no reordering,
// duplicates, unknown or missing lines), so that one signed digest means
// one set of targets.
func ParseTargets(text string) (Targets, error) {
	var t Targets
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 2 || lines[0] != targetsHeader {
		return t, errors.New("audit: targets: bad header")
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			return t, fmt.Errorf("audit: targets: bad line %q", l)
		}
		var err error
		switch k {
		case "kind":
			t.Kind = v
		case "chunk":
			var h chunk.Hash
			h, err = chunk.ParseHash(v)
			t.Chunks = append(t.Chunks, h)
		case "snapshot":
			var id int64
			id, err = strconv.ParseInt(v, 10, 64)
			t.Snapshots = append(t.Snapshots, id)
		case "before":
			t.Before, err = time.Parse(time.RFC3339Nano, v)
		case "source":
			if v != "*" {
				t.Source = v
			}
		case "hold":
			t.Hold, err = strconv.ParseInt(v, 10, 64)
		case "interval", "max-percent", "max-chunks":
			if t.Expiry == nil {
				t.Expiry = &ExpiryTerms{}
			}
			switch k {
			case "interval":
				t.Expiry.Interval, err = time.ParseDuration(v)
			case "max-percent":
				t.Expiry.MaxPercent, err = strconv.Atoi(v)
			default:
				t.Expiry.MaxChunks, err = strconv.ParseInt(v, 10, 64)
			}
		default:
			if t.Kind == KindPolicy {
				if t.Policy == nil {
					t.Policy = &RetentionPolicy{}
				}
				var ok bool
				if ok, err = t.Policy.parseLine(k, v); ok || err != nil {
					break
				}
			}
			if t.Change == nil {
				t.Change = &AdminChange{}
			}
			err = t.Change.parseLine(k, v)
		}
		if err != nil {
			return t, fmt.Errorf("audit: targets: %s: %w", k, err)
		}
	}
	canon, err := t.Canonical()
	if err != nil {
		return t, fmt.Errorf("audit: targets: %w", err)
	}
	if canon != text {
		return t, errors.New("audit: targets: not in canonical form")
	}
	return t, nil
}

// Policy is the quorum and delay of deletions and of admin-set changes.
type Policy struct {
	Approvals           int
	Delay               time.Duration
	GovernanceApprovals int
	GovernanceDelay     time.Duration
}

// PolicyError says which field of a policy or admin set is below the
// floors, and why.
type PolicyError struct {
	Field, Reason string
}

func (e *PolicyError) Error() string { return e.Field + ": " + e.Reason }

// Check refuses a policy below the floors for an admin set of n members:
// at least one approval other than the requester's for deletions, at least
// two for admin-set changes and never fewer than for deletions, a
// governance delay at least the deletion delay, and enough admins that
// every quorum can be reached without the requester and with one admin
// lost (n ≥ governance approvals + 1 ≥ approvals + 1).
func (p Policy) Check(n int) error {
	bad := func(field, format string, args ...any) error {
		return &PolicyError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case p.Approvals < 1:
		return bad("approvals_required", "must be at least 1")
	case p.Delay <= 0:
		return bad("delay", "must be positive")
	case p.GovernanceApprovals < 2:
		return bad("governance_approvals", "must be at least 2")
	case p.GovernanceApprovals < p.Approvals:
		return bad("governance_approvals", "must be at least approvals_required (%d)", p.Approvals)
	case p.GovernanceDelay < p.Delay:
		return bad("governance_delay", "must be at least the deletion delay (%s)", p.Delay)
	case n < p.Approvals+1:
		return bad("admins", "%d admins cannot reach %d approvals besides the requester's", n, p.Approvals)
	case n < p.GovernanceApprovals+1:
		return bad("admins", "%d admins cannot reach %d governance approvals besides the requester's", n, p.GovernanceApprovals)
	}
	return nil
}

// AdminSet is one version of the admin set: its members' keys by name and
// its policy.
type AdminSet struct {
	Version int64
	Policy  Policy
	Keys    map[string]approval.Key
}

// Equal reports whether two sets have the same version, policy and keys.
func (a AdminSet) Equal(b AdminSet) bool {
	if a.Version != b.Version || a.Policy != b.Policy || len(a.Keys) != len(b.Keys) {
		return false
	}
	for name, k := range a.Keys {
		if o, ok := b.Keys[name]; !ok || !o.Equal(k) {
			return false
		}
	}
	return true
}

// Admin-set change operations.
const (
	OpAdd    = "add"
	OpRemove = "remove"
	OpRotate = "rotate"
	OpPolicy = "policy"
)

// Errors of AdminChange.Apply.
var (
	ErrChangeConflict = errors.New("audit: the change conflicts with the admin set")
	ErrChangeNotFound = errors.New("audit: the change names no member of the admin set")
)

// AdminChange is what an admin_set request changes.
type AdminChange struct {
	Op     string
	Name   string       // add, remove, rotate
	Key    approval.Key // add, rotate
	Policy Policy       // policy
}

func (c *AdminChange) canonical(b *strings.Builder) error {
	b.WriteString("op: " + c.Op + "\n")
	switch c.Op {
	case OpAdd, OpRotate, OpRemove:
		if !approval.ValidName(c.Name) {
			return &PolicyError{Field: "admin", Reason: "is not an admin name (lowercase letters, digits, . _ -)"}
		}
		b.WriteString("admin: " + c.Name + "\n")
		if c.Op == OpRemove {
			return nil
		}
		if c.Key.Kind != approval.KindRaw && c.Key.Kind != approval.KindSSH {
			return &PolicyError{Field: "key", Reason: "is required"}
		}
		b.WriteString("key: " + c.Key.String() + "\n")
	case OpPolicy:
		p := c.Policy
		b.WriteString("approvals: " + strconv.Itoa(p.Approvals) + "\n")
		b.WriteString("delay: " + p.Delay.String() + "\n")
		b.WriteString("governance-approvals: " + strconv.Itoa(p.GovernanceApprovals) + "\n")
		b.WriteString("governance-delay: " + p.GovernanceDelay.String() + "\n")
	default:
		return &PolicyError{Field: "op", Reason: "must be add, remove, rotate or policy"}
	}
	return nil
}

func (c *AdminChange) parseLine(k, v string) error {
	var err error
	switch k {
	case "op":
		c.Op = v
	case "admin":
		c.Name = v
	case "key":
		c.Key, err = approval.ParsePublicKey(v)
	case "approvals":
		c.Policy.Approvals, err = strconv.Atoi(v)
	case "governance-approvals":
		c.Policy.GovernanceApprovals, err = strconv.Atoi(v)
	case "delay":
		c.Policy.Delay, err = time.ParseDuration(v)
	case "governance-delay":
		c.Policy.GovernanceDelay, err = time.ParseDuration(v)
	default:
		err = errors.New("unknown key")
	}
	return err
}

// TargetsAdmin reports whether the change is about signer's own membership
// (removal or key rotation): that admin can neither approve nor cancel it,
// so a compromised admin cannot veto their own eviction.
func (c *AdminChange) TargetsAdmin(signer string) bool {
	return c != nil && (c.Op == OpRemove || c.Op == OpRotate) && c.Name == signer
}

// Apply returns the admin set after the change (the next version), or why
// it cannot be made: ErrChangeConflict, ErrChangeNotFound, or a
// *PolicyError for a set below the floors.
func (c AdminChange) Apply(cur AdminSet) (AdminSet, error) {
	next := AdminSet{Version: cur.Version + 1, Policy: cur.Policy, Keys: make(map[string]approval.Key, len(cur.Keys)+1)}
	enrolled := false
	for name, k := range cur.Keys {
		next.Keys[name] = k
		// One key, one admin, whatever its kind: a key enrolled twice
		// would count twice.
		if len(c.Key.Public) > 0 && string(k.Public) == string(c.Key.Public) {
			enrolled = true
		}
	}
	_, member := cur.Keys[c.Name]
	switch c.Op {
	case OpAdd:
		if member {
			return AdminSet{}, fmt.Errorf("admin %s already exists: %w", c.Name, ErrChangeConflict)
		}
		if enrolled {
			return AdminSet{}, fmt.Errorf("that key is already enrolled: %w", ErrChangeConflict)
		}
		next.Keys[c.Name] = c.Key
	case OpRemove:
		if !member {
			return AdminSet{}, fmt.Errorf("admin %s: %w", c.Name, ErrChangeNotFound)
		}
		delete(next.Keys, c.Name)
	case OpRotate:
		if !member {
			return AdminSet{}, fmt.Errorf("admin %s: %w", c.Name, ErrChangeNotFound)
		}
		if enrolled {
			return AdminSet{}, fmt.Errorf("that key is already enrolled: %w", ErrChangeConflict)
		}
		next.Keys[c.Name] = c.Key
	case OpPolicy:
		next.Policy = c.Policy
	default:
		return AdminSet{}, &PolicyError{Field: "op", Reason: "must be add, remove, rotate or policy"}
	}
	if err := next.Policy.Check(len(next.Keys)); err != nil {
		return AdminSet{}, err
	}
	return next, nil
}
