package approval

import (
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Namespace is the SSHSIG namespace of every wormvault signature: a
// signature made for another purpose with the same SSH key never verifies.
const Namespace = "wormvault-approval@v1"

// header is the first line of every statement.
const header = "wormvault-statement v1"

// Statement types.
const (
	TypeDeletionRequest  = "deletion-request"
	TypeDeletionApproval = "deletion-approval"
	TypeDeletionCancel   = "deletion-cancel"
	TypeAdminSetRequest  = "admin-set-change-request"
	TypeAdminSetApproval = "admin-set-change-approval"
	TypeAdminSetCancel   = "admin-set-change-cancel"
)

// Actions a statement can record; with the request's kind they give its
// type.
const (
	ActionRequest = "request"
	ActionApprove = "approve"
	ActionCancel  = "cancel"
)

// ErrBadStatement: statement bytes that are not canonical.
var ErrBadStatement = errors.New("approval: not a canonical statement")

// namePattern is what an admin name may be: it appears in statements and
// must not be able to smuggle a line.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidName reports whether name can name an admin.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// TypeFor returns the statement type of action on a request of kind
// (admin_set requests have their own types, so that an approval of a
// deletion can never count towards a change of the admin set).
func TypeFor(kind, action string) (string, error) {
	gov := kind == "admin_set"
	switch action {
	case ActionRequest:
		if gov {
			return TypeAdminSetRequest, nil
		}
		return TypeDeletionRequest, nil
	case ActionApprove:
		if gov {
			return TypeAdminSetApproval, nil
		}
		return TypeDeletionApproval, nil
	case ActionCancel:
		if gov {
			return TypeAdminSetCancel, nil
		}
		return TypeDeletionCancel, nil
	}
	return "", fmt.Errorf("approval: unknown action %q", action)
}

// Statement is what one admin signs for one action on one request.
type Statement struct {
	Type          string
	Vault         string
	Request       int64
	Kind          string // the request's kind: chunks, snapshots, expired, hold_release, admin_set
	TargetsDigest []byte // SHA-256 of the frozen canonical targets
	Approvals     int    // the request's frozen quorum
	Delay         time.Duration
	AdminSet      int64 // the admin-set version the request was made under
	Signer        string
}

// Bytes returns the canonical encoding: UTF-8, "\n" line ends, fixed key
// order, each key once, a final newline.
func (s Statement) Bytes() ([]byte, error) {
	switch {
	case s.Type == "" || strings.ContainsAny(s.Type, "\n\r "):
		return nil, fmt.Errorf("%w: type", ErrBadStatement)
	case !validToken(s.Vault):
		return nil, fmt.Errorf("%w: vault", ErrBadStatement)
	case s.Request <= 0:
		return nil, fmt.Errorf("%w: request", ErrBadStatement)
	case !validToken(s.Kind):
		return nil, fmt.Errorf("%w: kind", ErrBadStatement)
	case len(s.TargetsDigest) != 32:
		return nil, fmt.Errorf("%w: targets digest", ErrBadStatement)
	case s.Approvals < 1 || s.Delay <= 0:
		return nil, fmt.Errorf("%w: policy", ErrBadStatement)
	case s.AdminSet < 1:
		return nil, fmt.Errorf("%w: admin set", ErrBadStatement)
	case !ValidName(s.Signer):
		return nil, fmt.Errorf("%w: signer", ErrBadStatement)
	}
	var b strings.Builder
	b.WriteString(header + "\n")
	b.WriteString("type: " + s.Type + "\n")
	b.WriteString("vault: " + s.Vault + "\n")
	b.WriteString("request: " + strconv.FormatInt(s.Request, 10) + "\n")
	b.WriteString("kind: " + s.Kind + "\n")
	b.WriteString("targets-digest: " + hex.EncodeToString(s.TargetsDigest) + "\n")
	b.WriteString("policy: approvals=" + strconv.Itoa(s.Approvals) + " delay=" + s.Delay.String() + "\n")
	b.WriteString("admin-set: " + strconv.FormatInt(s.AdminSet, 10) + "\n")
	b.WriteString("signer: " + s.Signer + "\n")
	return []byte(b.String()), nil
}

// validToken: printable ASCII without spaces, 1 to 128 bytes.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Parse reads a statement strictly: it must re-encode to exactly b (no CR,
// no trailing data, no reordering, no duplicate or missing keys).
func Parse(b []byte) (Statement, error) {
	var s Statement
	text := string(b)
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 9 || lines[0] != header {
		return s, ErrBadStatement
	}
	keys := []string{"type", "vault", "request", "kind", "targets-digest", "policy", "admin-set", "signer"}
	vals := make([]string, len(keys))
	for i, k := range keys {
		v, ok := strings.CutPrefix(lines[i+1], k+": ")
		if !ok {
			return s, fmt.Errorf("%w: want %q on line %d", ErrBadStatement, k, i+2)
		}
		vals[i] = v
	}
	var err error
	s.Type, s.Vault, s.Kind, s.Signer = vals[0], vals[1], vals[3], vals[7]
	if s.Request, err = strconv.ParseInt(vals[2], 10, 64); err != nil {
		return s, fmt.Errorf("%w: request", ErrBadStatement)
	}
	if s.TargetsDigest, err = hex.DecodeString(vals[4]); err != nil {
		return s, fmt.Errorf("%w: targets digest", ErrBadStatement)
	}
	var approvals, delay string
	if _, err := fmt.Sscanf(vals[5], "approvals=%s delay=%s", &approvals, &delay); err != nil {
		return s, fmt.Errorf("%w: policy", ErrBadStatement)
	}
	if s.Approvals, err = strconv.Atoi(approvals); err != nil {
		return s, fmt.Errorf("%w: policy", ErrBadStatement)
	}
	if s.Delay, err = time.ParseDuration(delay); err != nil {
		return s, fmt.Errorf("%w: policy", ErrBadStatement)
	}
	if s.AdminSet, err = strconv.ParseInt(vals[6], 10, 64); err != nil {
		return s, fmt.Errorf("%w: admin set", ErrBadStatement)
	}
	again, err := s.Bytes()
	if err != nil {
		return s, err
	}
	if string(again) != text {
		return s, fmt.Errorf("%w: not in canonical form", ErrBadStatement)
	}
	return s, nil
}
