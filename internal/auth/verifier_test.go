package auth

import (
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerifyAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		issuerAhead   time.Duration // issuer clock ahead of the verifier's
		verifierLater time.Duration // verifier clock moved on after issue
		token         func(t *testing.T, e *testEnv) string
	}{
		{name: "fresh token"},
		{name: "just before expiry", verifierLater: time.Hour - time.Second},
		{name: "expired within leeway", verifierLater: time.Hour + 29*time.Second},
		{name: "issuer clock ahead within leeway", issuerAhead: 29 * time.Second},
		{
			name: "aud array also naming another vault",
			token: func(t *testing.T, e *testEnv) string {
				return signToken(t, jwt.SigningMethodEdDSA, e.key, e.validHeader(),
					with(validClaims(), "aud", []string{"vault-2", testVault}))
			},
		},
		{
			// jku/x5u/jwk are ignored, never fetched or trusted; our key
			// still decides.
			name: "jku and jwk headers are ignored",
			token: func(t *testing.T, e *testEnv) string {
				h := with(with(e.validHeader(), "jku", "https://127.0.0.1:1/keys"), "jwk", map[string]any{"kty": "OKP"})
				return signToken(t, jwt.SigningMethodEdDSA, e.key, h, validClaims())
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			e.issClk.Advance(tt.issuerAhead)
			var (
				tok  string
				want Principal
			)
			if tt.token != nil {
				tok = tt.token(t, e)
				want = Principal{Subject: "alice", Role: RoleReader, JTI: "00112233445566778899aabbccddeeff", ExpiresAt: t0.Add(time.Hour)}
			} else {
				var c Claims
				tok, c = e.mustIssue(t, RoleReader, "alice", time.Hour)
				want = Principal{Subject: "alice", Role: RoleReader, JTI: c.ID, ExpiresAt: c.ExpiresAt.Time}
			}
			e.verClk.Advance(tt.verifierLater)
			got, err := e.verifier.Verify(t.Context(), tok)
			if err != nil {
				t.Fatalf("Verify = %v, want nil", err)
			}
			if got.Subject != want.Subject || got.Role != want.Role || got.JTI != want.JTI || !got.ExpiresAt.Equal(want.ExpiresAt) {
				t.Errorf("Verify = %+v, want %+v", got, want)
			}
			if n := e.revs.calls.Load(); n != 1 {
				t.Errorf("revocation lookups = %d, want 1", n)
			}
			if jti, _ := e.revs.lastJTI.Load().(string); jti != want.JTI {
				t.Errorf("revocation looked up jti %q, want %q", jti, want.JTI)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	// hand signs validClaims changed by edit with our real key and header.
	hand := func(k string, v any) func(*testing.T, *testEnv) string {
		return func(t *testing.T, e *testEnv) string {
			return signToken(t, jwt.SigningMethodEdDSA, e.key, e.validHeader(), with(validClaims(), k, v))
		}
	}
	// handHeader signs validClaims with our key and header changed.
	handHeader := func(k string, v any) func(*testing.T, *testEnv) string {
		return func(t *testing.T, e *testEnv) string {
			return signToken(t, jwt.SigningMethodEdDSA, e.key, with(e.validHeader(), k, v), validClaims())
		}
	}
	issued := func(t *testing.T, e *testEnv) string {
		tok, _ := e.mustIssue(t, RoleReader, "alice", time.Hour)
		return tok
	}
	literal := func(s string) func(*testing.T, *testEnv) string {
		return func(*testing.T, *testEnv) string { return s }
	}

	tests := []struct {
		name          string
		token         func(t *testing.T, e *testEnv) string
		issuerAhead   time.Duration // issuer clock ahead of the verifier's
		verifierLater time.Duration // verifier clock moved on after issue
	}{
		// Time.
		{name: "expired beyond leeway", token: issued, verifierLater: time.Hour + 31*time.Second},
		{name: "expired long ago", token: issued, verifierLater: 400 * 24 * time.Hour},
		{name: "nbf and iat in the future beyond leeway", token: issued, issuerAhead: 31 * time.Second},
		{name: "nbf in the future", token: hand("nbf", t0.Add(time.Minute).Unix())},
		{name: "iat in the future", token: hand("iat", t0.Add(time.Minute).Unix())},
		{name: "missing exp", token: hand("exp", nil)},
		{name: "exp not a number", token: hand("exp", "tomorrow")},

		// Issuer and audience.
		{name: "wrong issuer", token: hand("iss", "evil")},
		{name: "missing issuer", token: hand("iss", nil)},
		{name: "wrong audience", token: hand("aud", "vault-2")},
		{name: "aud array without ours", token: hand("aud", []string{"vault-2", "vault-3"})},
		{name: "missing audience", token: hand("aud", nil)},
		{name: "empty audience", token: hand("aud", "")},
		{
			name: "token issued for another vault with the same key",
			token: func(t *testing.T, e *testEnv) string {
				tok, _, err := NewIssuer(e.key, "vault-2", e.issClk).Issue(RoleAdmin, "alice", time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				return tok
			},
		},

		// Claims checked by Claims.Validate.
		{name: "missing jti", token: hand("jti", nil)},
		{name: "empty jti", token: hand("jti", "")},
		{name: "missing subject", token: hand("sub", nil)},
		{name: "subject with newline", token: hand("sub", "alice\nadmin")},
		{name: "subject with NUL", token: hand("sub", "alice\x00")},
		{name: "subject with bidi override", token: hand("sub", "alice\u202e")},
		{name: "overlong subject", token: hand("sub", strings.Repeat("a", 129))},
		{name: "unknown role", token: hand("role", "root")},
		{name: "missing role", token: hand("role", nil)},

		// Header.
		{name: "typ JWT", token: handHeader("typ", "JWT")},
		{name: "missing typ", token: handHeader("typ", nil)},
		{name: "typ not a string", token: handHeader("typ", 1)},
		{name: "unknown kid", token: handHeader("kid", "0123456789abcdef")},
		{name: "kid path traversal", token: handHeader("kid", "../../etc/passwd")},
		{name: "kid SQL", token: handHeader("kid", "' OR 1=1--")},
		{name: "missing kid", token: handHeader("kid", nil)},
		{name: "crit header", token: handHeader("crit", []string{"exp"})},

		// Keys and algorithms.
		{
			name: "other Ed25519 key claiming our kid",
			token: func(t *testing.T, e *testEnv) string {
				return signToken(t, jwt.SigningMethodEdDSA, mustGenerateKey(t), e.validHeader(), validClaims())
			},
		},
		{
			name: "other Ed25519 key with its own kid",
			token: func(t *testing.T, e *testEnv) string {
				other := mustGenerateKey(t)
				return signToken(t, jwt.SigningMethodEdDSA, other, with(e.validHeader(), "kid", keyID(other.Public().(ed25519.PublicKey))), validClaims())
			},
		},
		{
			name: "other key announced by jku, x5u and jwk",
			token: func(t *testing.T, e *testEnv) string {
				other := mustGenerateKey(t)
				h := e.validHeader()
				h["jku"] = "https://attacker.invalid/jwks.json"
				h["x5u"] = "https://attacker.invalid/cert.pem"
				h["jwk"] = map[string]any{"kty": "OKP", "crv": "Ed25519", "x": other.Public().(ed25519.PublicKey)}
				return signToken(t, jwt.SigningMethodEdDSA, other, h, validClaims())
			},
		},
		{
			name: "alg none",
			token: func(t *testing.T, e *testEnv) string {
				return signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, e.validHeader(), validClaims())
			},
		},
		{
			name: "HS256 keyed with our public key",
			token: func(t *testing.T, e *testEnv) string {
				return signToken(t, jwt.SigningMethodHS256, []byte(e.pub), e.validHeader(), validClaims())
			},
		},
		{
			name: "role edited to admin",
			token: func(t *testing.T, e *testEnv) string {
				return editPayload(t, issued(t, e), func(m map[string]any) { m["role"] = "admin" })
			},
		},
		{
			name: "exp extended",
			token: func(t *testing.T, e *testEnv) string {
				return editPayload(t, issued(t, e), func(m map[string]any) { m["exp"] = t0.Add(48 * time.Hour).Unix() })
			},
		},
		{
			name: "signature stripped",
			token: func(t *testing.T, e *testEnv) string {
				tok := issued(t, e)
				return tok[:strings.LastIndexByte(tok, '.')+1]
			},
		},
		{
			name: "non-canonical base64 signature",
			token: func(t *testing.T, e *testEnv) string {
				return malleateSignature(t, issued(t, e))
			},
		},
		{name: "padded segments", token: func(t *testing.T, e *testEnv) string { return issued(t, e) + "==" }},
		{name: "extra segment", token: func(t *testing.T, e *testEnv) string { return issued(t, e) + ".e30" }},
		{name: "leading space", token: func(t *testing.T, e *testEnv) string { return " " + issued(t, e) }},
		{name: "bearer prefix included", token: func(t *testing.T, e *testEnv) string { return "Bearer " + issued(t, e) }},

		// Garbage.
		{name: "empty", token: literal("")},
		{name: "word", token: literal("garbage")},
		{name: "dots", token: literal("..")},
		{name: "many dots", token: literal(strings.Repeat(".", 5000))},
		{name: "three junk segments", token: literal("a.b.c")},
		{name: "empty json", token: literal("e30.e30.")},
		{name: "json array header", token: literal("W10.e30.AAAA")},
		{name: "non-ASCII", token: literal("ä.ö.ü")},
		{name: "huge", token: literal(strings.Repeat("A", 1<<20))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			e.issClk.Advance(tt.issuerAhead)
			tok := tt.token(t, e)
			e.verClk.Advance(tt.verifierLater)
			p, err := e.verifier.Verify(t.Context(), tok)
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Verify = %#v, %v; want ErrUnauthenticated", p, err)
			}
			if !reflect.DeepEqual(p, Principal{}) {
				t.Errorf("Verify returned principal %+v with its error", p)
			}
			if len(tok) > 16 && strings.Contains(err.Error(), tok) {
				t.Errorf("error %q contains the token", err)
			}
			// Revocation is consulted only for otherwise valid tokens.
			if n := e.revs.calls.Load(); n != 0 {
				t.Errorf("revocation lookups = %d for a rejected token, want 0", n)
			}
		})
	}
}

func TestVerifyRevocation(t *testing.T) {
	t.Parallel()

	t.Run("revoked jti", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		tok, c := e.mustIssue(t, RoleAdmin, "alice", time.Hour)
		e.revs.revoked[c.ID] = true
		if _, err := e.verifier.Verify(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Verify(revoked) = %v, want ErrUnauthenticated", err)
		}
	})

	t.Run("other jti revoked", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		tok, _ := e.mustIssue(t, RoleAdmin, "alice", time.Hour)
		e.revs.revoked["00112233445566778899aabbccddeeff"] = true
		if _, err := e.verifier.Verify(t.Context(), tok); err != nil {
			t.Errorf("Verify = %v, want nil", err)
		}
	})

	t.Run("lookup error is not unauthenticated", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		dbDown := errors.New("db: connection refused")
		e.revs.err = dbDown
		tok, _ := e.mustIssue(t, RoleReader, "alice", time.Hour)
		p, err := e.verifier.Verify(t.Context(), tok)
		if !errors.Is(err, dbDown) {
			t.Errorf("Verify = %v, want the lookup error wrapped", err)
		}
		if errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Verify = %v, must not wrap ErrUnauthenticated (caller answers 503)", err)
		}
		if !reflect.DeepEqual(p, Principal{}) {
			t.Errorf("Verify returned principal %+v with its error", p)
		}
	})

	t.Run("lookup error does not mask a forged token", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		e.revs.err = errors.New("db: connection refused")
		tok := signToken(t, jwt.SigningMethodEdDSA, mustGenerateKey(t), e.validHeader(), validClaims())
		if _, err := e.verifier.Verify(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Verify(forged, db down) = %v, want ErrUnauthenticated", err)
		}
	})
}

func TestFromRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		headers func(tok string) []string // Authorization values; nil: none
		wantErr bool
	}{
		{name: "Bearer", headers: func(tok string) []string { return []string{"Bearer " + tok} }},
		{name: "lowercase scheme", headers: func(tok string) []string { return []string{"bearer " + tok} }},
		{name: "uppercase scheme", headers: func(tok string) []string { return []string{"BEARER " + tok} }},
		{name: "missing header", headers: func(string) []string { return nil }, wantErr: true},
		{name: "empty header", headers: func(string) []string { return []string{""} }, wantErr: true},
		{name: "Bearer missing", headers: func(tok string) []string { return []string{tok} }, wantErr: true},
		{name: "Bearer without space", headers: func(tok string) []string { return []string{"Bearer" + tok} }, wantErr: true},
		{name: "Bearer without token", headers: func(string) []string { return []string{"Bearer "} }, wantErr: true},
		{name: "Basic scheme", headers: func(string) []string { return []string{"Basic YWxpY2U6cGFzc3dvcmQ="} }, wantErr: true},
		{name: "token scheme", headers: func(tok string) []string { return []string{"Token " + tok} }, wantErr: true},
		{name: "two tokens", headers: func(tok string) []string { return []string{"Bearer " + tok + " " + tok} }, wantErr: true},
		{name: "two headers", headers: func(tok string) []string { return []string{"Bearer " + tok, "Bearer " + tok} }, wantErr: true},
		{name: "garbage token", headers: func(string) []string { return []string{"Bearer garbage"} }, wantErr: true},
		{
			// Valid token padded past the limit: only a length check made
			// before any parsing rejects it.
			name:    "header too long",
			headers: func(tok string) []string { return []string{"Bearer " + tok + strings.Repeat(" ", MaxAuthorizationLen)} },
			wantErr: true,
		},
		{
			name:    "many dots",
			headers: func(string) []string { return []string{"Bearer " + strings.Repeat(".", 1<<16)} },
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			tok, c := e.mustIssue(t, RoleAuditor, "carol", time.Hour)
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/audit", nil)
			for _, h := range tt.headers(tok) {
				r.Header.Add("Authorization", h)
			}
			p, err := e.verifier.FromRequest(r)
			if tt.wantErr {
				if !errors.Is(err, ErrUnauthenticated) {
					t.Errorf("FromRequest(%.40q…) = %+v, %v; want ErrUnauthenticated", r.Header.Values("Authorization"), p, err)
				}
				if n := e.revs.calls.Load(); n != 0 {
					t.Errorf("revocation lookups = %d for a rejected header, want 0", n)
				}
				return
			}
			if err != nil || p.Subject != "carol" || p.Role != RoleAuditor || p.JTI != c.ID {
				t.Errorf("FromRequest = %+v, %v; want carol/auditor/%s", p, err, c.ID)
			}
		})
	}
}

func TestConstructorsPanicOnWiringBugs(t *testing.T) {
	t.Parallel()
	key := mustGenerateKey(t)
	pub := key.Public().(ed25519.PublicKey)
	e := newTestEnv(t)
	tests := []struct {
		name string
		fn   func()
	}{
		{name: "issuer short key", fn: func() { NewIssuer(key[:10], testVault, e.issClk) }},
		{name: "issuer empty vault", fn: func() { NewIssuer(key, "", e.issClk) }},
		{name: "issuer nil clock", fn: func() { NewIssuer(key, testVault, nil) }},
		{name: "verifier short key", fn: func() { NewVerifier(pub[:10], testVault, e.revs, e.verClk) }},
		{name: "verifier empty vault", fn: func() { NewVerifier(pub, "", e.revs, e.verClk) }},
		{name: "verifier nil revocations", fn: func() { NewVerifier(pub, testVault, nil, e.verClk) }},
		{name: "verifier nil clock", fn: func() { NewVerifier(pub, testVault, e.revs, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", tt.name)
				}
			}()
			tt.fn()
		})
	}
}
