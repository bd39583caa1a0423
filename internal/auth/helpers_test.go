package auth

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wormvault/wormvault/internal/clock"
)

const testVault = "vault-1"

// t0 is a whole second so that NumericDate truncation does not blur the
// leeway boundaries in the tests.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func mustGenerateKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return k
}

// fakeRevocations is a Revocations with a fixed answer that counts lookups.
type fakeRevocations struct {
	revoked    map[string]bool
	distrusted map[string]bool
	err        error
	calls      atomic.Int64
	lastJTI    atomic.Value
}

func (f *fakeRevocations) IsKeyDistrusted(_ context.Context, kid string) (bool, error) {
	if f.err != nil {
		return false, f.err
	}
	return f.distrusted[kid], nil
}

func (f *fakeRevocations) IsRevoked(_ context.Context, jti string) (bool, error) {
	f.calls.Add(1)
	f.lastJTI.Store(jti)
	if f.err != nil {
		return false, f.err
	}
	return f.revoked[jti], nil
}

// testEnv is one vault's key, issuer and verifier, with separate fake clocks
// so that tests can skew issuer and verifier.
type testEnv struct {
	key      ed25519.PrivateKey
	pub      ed25519.PublicKey
	kid      string
	issClk   *clock.Fake
	verClk   *clock.Fake
	issuer   *Issuer
	verifier *Verifier
	revs     *fakeRevocations
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	key := mustGenerateKey(t)
	pub := key.Public().(ed25519.PublicKey)
	e := &testEnv{
		key:    key,
		pub:    pub,
		kid:    keyID(pub),
		issClk: clock.NewFake(t0),
		verClk: clock.NewFake(t0),
		revs:   &fakeRevocations{revoked: map[string]bool{}, distrusted: map[string]bool{}},
	}
	e.issuer = NewIssuer(key, testVault, e.issClk)
	e.verifier = NewVerifier(pub, testVault, e.revs, e.verClk)
	return e
}

func (e *testEnv) mustIssue(t testing.TB, role Role, subject string, ttl time.Duration) (string, Claims) {
	t.Helper()
	issue := e.issuer.Issue
	if Scoped(role) {
		issue = func(role Role, subject string, ttl time.Duration) (string, Claims, error) {
			return e.issuer.IssueScoped(role, subject, ttl, AllSources())
		}
	}
	tok, c, err := issue(role, subject, ttl)
	if err != nil {
		t.Fatalf("Issue(%q, %q, %v): %v", role, subject, ttl, err)
	}
	return tok, c
}

// validHeader and validClaims describe a token that Verify accepts when
// signed with e.key; cases change one thing at a time.
func (e *testEnv) validHeader() map[string]any {
	return map[string]any{"typ": tokenType, "kid": e.kid}
}

func validClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss":   tokenIssuer,
		"aud":   []string{testVault},
		"sub":   "alice",
		"role":  "reader",
		"scope": map[string]any{"all": true},
		"iat":   t0.Unix(),
		"nbf":   t0.Unix(),
		"exp":   t0.Add(time.Hour).Unix(),
		"jti":   "00112233445566778899aabbccddeeff",
	}
}

// with returns a copy of m with k set to v, or removed if v is nil.
func with[M ~map[string]any](m M, k string, v any) M {
	out := make(M, len(m))
	for kk, vv := range m {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// signToken builds a token by hand; header entries override jwt's defaults.
func signToken(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	delete(tok.Header, "typ")
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s token: %v", method.Alg(), err)
	}
	return s
}

// editPayload rewrites the claims of tok and keeps its original signature.
func editPayload(t testing.TB, tok string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// decodeSegment decodes part i of tok into v.
func decodeSegment(t testing.TB, tok string, i int, v any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}

// malleateSignature sets an unused trailing bit of the base64 signature: a
// lenient decoder yields the same bytes, so only strict decoding rejects it.
func malleateSignature(t testing.TB, tok string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	if last < 0 || last&1 != 0 {
		t.Fatalf("signature does not end in a canonical character: %q", tok[len(tok)-1])
	}
	return tok[:len(tok)-1] + string(alphabet[last|1])
}
