package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wormvault/wormvault/internal/clock"
)

const (
	// MaxAuthorizationLen bounds the Authorization header and a raw token,
	// checked before any parsing (CVE-2025-30204 class of amplification).
	MaxAuthorizationLen = 4096
	// leeway tolerates clock skew between issuer and verifier.
	leeway = 30 * time.Second
)

// Revocations reports whether a token id was revoked, or its signing key
// distrusted.
type Revocations interface {
	// IsRevoked reports whether jti was revoked. A non-nil error means the
	// answer is unknown (for example, the database is down).
	IsRevoked(ctx context.Context, jti string) (bool, error)
	// IsKeyDistrusted reports whether the signing key kid was distrusted
	// (`vault token rotate-key --compromised`): every token it signed is
	// refused, whenever it was made. A non-nil error means the answer is
	// unknown.
	IsKeyDistrusted(ctx context.Context, kid string) (bool, error)
}

// Verifier checks access tokens for one vault. It is safe for concurrent use.
type Verifier struct {
	pub     ed25519.PublicKey
	kid     string
	revoked Revocations
	parser  *jwt.Parser
	clk     clock.Clock

	// cache remembers tokens whose signature and claims were checked, so
	// that an agent pushing thousands of chunks with one token pays the
	// Ed25519 verification once, not per request. The key is the whole
	// token, signature included: any change to it is a miss. Lifetime is
	// re-checked on every hit, and revocation is never cached here.
	mu      sync.Mutex
	cache   map[string]verified
	retired map[string]retiredKey // by kid
}

type verified struct {
	p         Principal
	notBefore time.Time
}

// maxCached bounds the cache; when full it starts over.
const maxCached = 10_000

// NewVerifier returns a Verifier accepting tokens signed by pub for the vault
// vaultID and not revoked according to revoked. It panics if pub is not an
// Ed25519 public key, vaultID is empty, or revoked or clk is nil: those are
// wiring bugs, and failing open on them is not an option.
func NewVerifier(pub ed25519.PublicKey, vaultID string, revoked Revocations, clk clock.Clock) *Verifier {
	if len(pub) != ed25519.PublicKeySize {
		panic("auth: NewVerifier: key is not an Ed25519 public key")
	}
	if vaultID == "" {
		panic("auth: NewVerifier: empty vault id")
	}
	if revoked == nil {
		panic("auth: NewVerifier: nil Revocations")
	}
	if clk == nil {
		panic("auth: NewVerifier: nil clock")
	}
	k := make(ed25519.PublicKey, len(pub))
	copy(k, pub)
	return &Verifier{
		pub:     k,
		kid:     keyID(k),
		revoked: revoked,
		clk:     clk,
		cache:   make(map[string]verified),
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
			jwt.WithIssuer(tokenIssuer),
			jwt.WithAudience(vaultID),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
			jwt.WithTimeFunc(clk.Now),
			jwt.WithStrictDecoding(),
		),
	}
}

// Verify parses and checks raw, a compact JWT without the "Bearer " prefix,
// and returns its Principal. Every failure returns an error wrapping
// ErrUnauthenticated, except a failing revocation lookup: that error is
// returned wrapped as itself (not ErrUnauthenticated) so the caller can
// answer 503. Errors never contain the token.
func (v *Verifier) Verify(ctx context.Context, raw string) (Principal, error) {
	if raw == "" {
		return Principal{}, fmt.Errorf("%w: empty token", ErrUnauthenticated)
	}
	if len(raw) > MaxAuthorizationLen {
		return Principal{}, fmt.Errorf("%w: token too long", ErrUnauthenticated)
	}
	p, err := v.check(raw)
	if err != nil {
		return Principal{}, err
	}
	// Only now, with a genuine token, ask about revocation: forged tokens
	// must not be able to generate load on the database. A distrusted key
	// may have been used by a thief to mint any token id and any issue
	// time, so nothing it signed is accepted.
	distrusted, err := v.revoked.IsKeyDistrusted(ctx, p.KeyID)
	if err != nil {
		return Principal{}, fmt.Errorf("auth: check signing key: %w", err)
	}
	if distrusted {
		return Principal{}, fmt.Errorf("%w: the token's signing key %s was distrusted (compromised); a new token is needed", ErrUnauthenticated, p.KeyID)
	}
	revoked, err := v.revoked.IsRevoked(ctx, p.JTI)
	if err != nil {
		return Principal{}, fmt.Errorf("auth: check revocation: %w", err)
	}
	if revoked {
		return Principal{}, fmt.Errorf("%w: token revoked", ErrUnauthenticated)
	}
	return p, nil
}

// check verifies raw's signature and claims, or finds it already verified
// and still within its lifetime.
func (v *Verifier) check(raw string) (Principal, error) {
	now := v.clk.Now()
	v.mu.Lock()
	hit, ok := v.cache[raw]
	v.mu.Unlock()
	if ok {
		if !now.Before(hit.p.ExpiresAt.Add(leeway)) {
			return Principal{}, fmt.Errorf("%w: token is expired", ErrUnauthenticated)
		}
		if now.Before(hit.notBefore.Add(-leeway)) {
			return Principal{}, fmt.Errorf("%w: token is not valid yet", ErrUnauthenticated)
		}
		return hit.p, nil
	}
	var c Claims
	// Any error at all is a rejection; never branch on the kind of jwt error
	// (CVE-2024-51744).
	t, err := v.parser.ParseWithClaims(raw, &c, v.keyFunc)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if !t.Valid || c.ExpiresAt == nil {
		return Principal{}, fmt.Errorf("%w: invalid token", ErrUnauthenticated)
	}
	kid, _ := t.Header["kid"].(string) // keyFunc accepted it
	p := Principal{Subject: c.Subject, Role: c.Role, JTI: c.ID, ExpiresAt: c.ExpiresAt.Time, KeyID: kid, Scope: AllSources()}
	if c.Scope != nil {
		p.Scope = *c.Scope
	}
	nbf := now
	if c.NotBefore != nil {
		nbf = c.NotBefore.Time
	}
	v.mu.Lock()
	if len(v.cache) >= maxCached {
		clear(v.cache)
	}
	v.cache[raw] = verified{p: p, notBefore: nbf}
	v.mu.Unlock()
	return p, nil
}

// keyFunc returns our public key for tokens that name it. It receives the
// unverified token, so it trusts nothing in it: jku, x5u and jwk headers are
// never read.
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	// Second pin of the algorithm, independent of WithValidMethods.
	if _, ok := t.Method.(*jwt.SigningMethodEd25519); !ok {
		return nil, errors.New("auth: unexpected signing method")
	}
	if typ, ok := t.Header["typ"].(string); !ok || typ != tokenType {
		return nil, errors.New("auth: wrong token type")
	}
	kid, ok := t.Header["kid"].(string)
	if !ok {
		return nil, errors.New("auth: unknown key id")
	}
	pub := v.pub
	if kid != v.kid {
		// A retired signing key still verifies the tokens it issued, until
		// the last of them has expired; never a key we do not hold.
		v.mu.Lock()
		old, known := v.retired[kid]
		v.mu.Unlock()
		if !known || !v.clk.Now().Before(old.notAfter) {
			return nil, errors.New("auth: unknown key id")
		}
		pub = old.pub
	}
	// RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New("auth: unsupported critical header")
	}
	return pub, nil
}

type retiredKey struct {
	pub      ed25519.PublicKey
	notAfter time.Time
}

// AddRetiredKey makes v also accept tokens signed by pub (a signing key
// replaced by `vault token rotate-key`) until notAfter, when every token it
// can have issued has expired.
func (v *Verifier) AddRetiredKey(pub ed25519.PublicKey, notAfter time.Time) error {
	if len(pub) != ed25519.PublicKeySize {
		return errors.New("auth: retired key is not an Ed25519 public key")
	}
	k := make(ed25519.PublicKey, len(pub))
	copy(k, pub)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.retired == nil {
		v.retired = make(map[string]retiredKey)
	}
	v.retired[keyID(k)] = retiredKey{pub: k, notAfter: notAfter}
	return nil
}

// KeyID returns the key id (kid) of a public key, as tokens name it.
func KeyID(pub ed25519.PublicKey) string { return keyID(pub) }

// FromRequest verifies the token in r's "Authorization: Bearer <jwt>" header
// (scheme case-insensitive), with Verify's error contract. A missing or
// repeated header, another scheme, or a header longer than
// MaxAuthorizationLen bytes returns ErrUnauthenticated before any parsing.
func (v *Verifier) FromRequest(r *http.Request) (Principal, error) {
	values := r.Header.Values("Authorization")
	switch {
	case len(values) == 0:
		return Principal{}, fmt.Errorf("%w: missing authorization header", ErrUnauthenticated)
	case len(values) > 1:
		return Principal{}, fmt.Errorf("%w: repeated authorization header", ErrUnauthenticated)
	case len(values[0]) > MaxAuthorizationLen:
		return Principal{}, fmt.Errorf("%w: authorization header too long", ErrUnauthenticated)
	}
	scheme, raw, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, fmt.Errorf("%w: authorization scheme is not Bearer", ErrUnauthenticated)
	}
	raw = strings.Trim(raw, " ")
	if raw == "" || strings.ContainsAny(raw, " \t") {
		return Principal{}, fmt.Errorf("%w: malformed bearer token", ErrUnauthenticated)
	}
	return v.Verify(r.Context(), raw)
}
