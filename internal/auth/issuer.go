package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wormvault/wormvault/internal/clock"
)

const (
	// tokenIssuer is the iss of every vault token.
	tokenIssuer = "wormvault"
	// tokenType is the JOSE typ header (RFC 8725 explicit typing): it keeps
	// other JWTs signed with the same key from passing as access tokens.
	tokenType = "vault-access+jwt"
	// MaxSubjectLen is the longest subject, in characters, that Issue accepts
	// and Verify tolerates.
	MaxSubjectLen = 128
	// MaxTTL is the longest token lifetime that Issue accepts.
	MaxTTL = 366 * 24 * time.Hour
)

// Claims are the JWT claims of a vault access token.
type Claims struct {
	jwt.RegisteredClaims
	Role Role `json:"role"`
	// Scope is required for agent, reader and replicator tokens and absent from the
	// others (see Scoped).
	Scope *Scope `json:"scope,omitempty"`
}

var _ jwt.ClaimsValidator = Claims{}

// Validate checks the claims that the registered-claims validator does not:
// a known role, a well-formed subject and a token id. The parser calls it
// after the signature has been verified.
func (c Claims) Validate() error {
	if _, err := ParseRole(string(c.Role)); err != nil {
		return err
	}
	if err := checkSubject(c.Subject); err != nil {
		return err
	}
	if c.ID == "" {
		return errors.New("auth: missing jti")
	}
	return checkScope(c.Role, c.Scope)
}

// checkScope requires a valid scope on agent, reader and replicator tokens and none on
// the others. An agent or reader token without one was issued before
// scopes existed: it is refused, never taken as all sources, so that an
// upgrade cannot leave unscoped tokens working unnoticed.
func checkScope(role Role, s *Scope) error {
	switch {
	case Scoped(role) && s == nil:
		return fmt.Errorf("auth: %s tokens need a scope (tokens issued before scopes must be reissued: vault token issue --source/--restic-repo, or --all-sources)", role)
	case Scoped(role):
		return s.Validate()
	case s != nil:
		return fmt.Errorf("auth: %s tokens carry no scope", role)
	}
	return nil
}

// checkSubject accepts 1 to MaxSubjectLen printable characters of valid
// UTF-8. Control and format characters are refused because subjects end up
// in logs and audit entries, where they could forge lines or hide text.
func checkSubject(s string) error {
	switch {
	case s == "":
		return errors.New("auth: missing subject")
	case !utf8.ValidString(s):
		return errors.New("auth: subject is not valid UTF-8")
	case utf8.RuneCountInString(s) > MaxSubjectLen:
		return fmt.Errorf("auth: subject longer than %d characters", MaxSubjectLen)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("auth: subject contains non-printable character %U", r)
		}
	}
	return nil
}

// Issuer signs access tokens for one vault. It is safe for concurrent use.
type Issuer struct {
	key     ed25519.PrivateKey
	kid     string
	vaultID string
	clk     clock.Clock
}

// NewIssuer returns an Issuer signing with key for the vault vaultID (the
// aud of its tokens). It panics if key is not an Ed25519 private key, vaultID
// is empty or clk is nil: those are wiring bugs, not runtime conditions.
func NewIssuer(key ed25519.PrivateKey, vaultID string, clk clock.Clock) *Issuer {
	if len(key) != ed25519.PrivateKeySize {
		panic("auth: NewIssuer: key is not an Ed25519 private key")
	}
	if vaultID == "" {
		panic("auth: NewIssuer: empty vault id")
	}
	if clk == nil {
		panic("auth: NewIssuer: nil clock")
	}
	k := make(ed25519.PrivateKey, len(key))
	copy(k, key)
	return &Issuer{key: k, kid: keyID(k.Public().(ed25519.PublicKey)), vaultID: vaultID, clk: clk}
}

// Issue returns a signed token for subject with role, valid for ttl from now,
// and the claims it carries, for the roles that carry no scope (auditor,
// admin, metrics); agent, reader and replicator tokens need IssueScoped. It returns an
// error for an invalid role, an empty, overlong (over MaxSubjectLen) or
// non-printable subject, or a ttl that is not positive or exceeds MaxTTL.
func (i *Issuer) Issue(role Role, subject string, ttl time.Duration) (token string, claims Claims, err error) {
	return i.issue(role, subject, ttl, nil)
}

// IssueScoped is Issue for an agent or reader token limited to scope. A
// scope that does not validate, or a role that carries none, is an error.
func (i *Issuer) IssueScoped(role Role, subject string, ttl time.Duration, scope Scope) (token string, claims Claims, err error) {
	return i.issue(role, subject, ttl, &scope)
}

// KeyID returns the kid of the issuer's key.
func (i *Issuer) KeyID() string { return i.kid }

func (i *Issuer) issue(role Role, subject string, ttl time.Duration, scope *Scope) (token string, claims Claims, err error) {
	if _, err := ParseRole(string(role)); err != nil {
		return "", Claims{}, fmt.Errorf("auth: issue token: %w", err)
	}
	if err := checkScope(role, scope); err != nil {
		return "", Claims{}, fmt.Errorf("auth: issue token: %w", err)
	}
	if err := checkSubject(subject); err != nil {
		return "", Claims{}, fmt.Errorf("auth: issue token: %w", err)
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", Claims{}, fmt.Errorf("auth: issue token: ttl %v outside (0, %v]", ttl, MaxTTL)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Claims{}, fmt.Errorf("auth: issue token: %w", err)
	}

	now := i.clk.Now()
	claims = Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{i.vaultID},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        hex.EncodeToString(id[:]),
		},
		Role:  role,
		Scope: scope,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["typ"] = tokenType
	t.Header["kid"] = i.kid
	token, err = t.SignedString(i.key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("auth: issue token: %w", err)
	}
	return token, claims, nil
}
