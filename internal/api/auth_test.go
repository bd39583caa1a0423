package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/store"
)

// TestAuthentication tries every way a PUT could get in without a valid
// token: each gets 401 "unauthenticated" and stores nothing. The first case
// is the control: a hand-made token differing in nothing gets in, so each
// refusal below is due to the one thing its case changes.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 100)

	otherKey, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	with := func(claims jwt.MapClaims, k string, v any) jwt.MapClaims {
		claims[k] = v
		return claims
	}
	agentClaims := func() jwt.MapClaims { return ts.validClaims(auth.RoleAgent) }

	t.Run("control: hand-made valid token", func(t *testing.T) {
		tok := forgeToken(t, jwt.SigningMethodEdDSA, ts.key, ts.validHeader(), agentClaims())
		b, h := randomChunk(t, 10)
		resp := ts.do(t, http.MethodPut, chunkPath(h), tok, b, nil)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("status %d, want 201; body %s", resp.StatusCode, resp.body)
		}
	})

	tests := []struct {
		name   string
		header func(t *testing.T) []string // Authorization values; nil: none
	}{
		{"missing header", func(t *testing.T) []string { return nil }},
		{"empty header", func(t *testing.T) []string { return []string{""} }},
		{"Bearer without token", func(t *testing.T) []string { return []string{"Bearer "} }},
		{"garbled token", func(t *testing.T) []string { return []string{"Bearer not.a.jwt"} }},
		{"random base64", func(t *testing.T) []string {
			return []string{"Bearer " + base64.RawURLEncoding.EncodeToString(body)}
		}},
		{"Basic scheme", func(t *testing.T) []string {
			return []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("agent:secret"))}
		}},
		{"valid token under Basic scheme", func(t *testing.T) []string {
			return []string{"Basic " + ts.token(t, auth.RoleAgent)}
		}},
		{"valid token without scheme", func(t *testing.T) []string { return []string{ts.token(t, auth.RoleAgent)} }},
		{"two headers", func(t *testing.T) []string {
			return []string{"Bearer " + ts.token(t, auth.RoleAgent), "Bearer " + ts.token(t, auth.RoleAgent)}
		}},
		{"oversized header", func(t *testing.T) []string {
			return []string{"Bearer " + strings.Repeat("a", auth.MaxAuthorizationLen)}
		}},
		{"signed with another key", func(t *testing.T) []string {
			tok, _, err := auth.NewIssuer(otherKey, testVaultID, ts.clk).IssueScoped(auth.RoleAgent, "intruder", time.Hour, auth.AllSources())
			if err != nil {
				t.Fatal(err)
			}
			return []string{"Bearer " + tok}
		}},
		{"signed with another key, our kid", func(t *testing.T) []string {
			return []string{"Bearer " + forgeToken(t, jwt.SigningMethodEdDSA, otherKey, ts.validHeader(), agentClaims())}
		}},
		{"alg none", func(t *testing.T) []string {
			return []string{"Bearer " + forgeToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ts.validHeader(), agentClaims())}
		}},
		{"HS256 keyed with the public key", func(t *testing.T) []string {
			return []string{"Bearer " + forgeToken(t, jwt.SigningMethodHS256, []byte(ts.pub()), ts.validHeader(), agentClaims())}
		}},
		{"signature stripped", func(t *testing.T) []string {
			tok := ts.token(t, auth.RoleAgent)
			return []string{"Bearer " + tok[:strings.LastIndexByte(tok, '.')+1]}
		}},
		{"role upgraded after signing", func(t *testing.T) []string {
			return []string{"Bearer " + editPayload(t, ts.token(t, auth.RoleReader), "role", "agent")}
		}},
		{"other vault", func(t *testing.T) []string {
			tok, _, err := auth.NewIssuer(ts.key, "other-vault", ts.clk).IssueScoped(auth.RoleAgent, "test-agent", time.Hour, auth.AllSources())
			if err != nil {
				t.Fatal(err)
			}
			return []string{"Bearer " + tok}
		}},
		{"other issuer", func(t *testing.T) []string {
			return []string{"Bearer " + forgeToken(t, jwt.SigningMethodEdDSA, ts.key, ts.validHeader(), with(agentClaims(), "iss", "someone"))}
		}},
		{"unknown role", func(t *testing.T) []string {
			return []string{"Bearer " + forgeToken(t, jwt.SigningMethodEdDSA, ts.key, ts.validHeader(), with(agentClaims(), "role", "root"))}
		}},
		{"no expiry", func(t *testing.T) []string {
			c := agentClaims()
			delete(c, "exp")
			return []string{"Bearer " + forgeToken(t, jwt.SigningMethodEdDSA, ts.key, ts.validHeader(), c)}
		}},
		{"not yet valid", func(t *testing.T) []string {
			future := clock.NewFake(ts.clk.Now().Add(time.Hour))
			tok, _, err := auth.NewIssuer(ts.key, testVaultID, future).IssueScoped(auth.RoleAgent, "test-agent", 2*time.Hour, auth.AllSources())
			if err != nil {
				t.Fatal(err)
			}
			return []string{"Bearer " + tok}
		}},
		{"wrong typ", func(t *testing.T) []string {
			hdr := ts.validHeader()
			hdr["typ"] = "JWT"
			return []string{"Bearer " + forgeToken(t, jwt.SigningMethodEdDSA, ts.key, hdr, agentClaims())}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.state(t)
			resp := putWithAuthorization(t, ts, h, body, tt.header(t))
			wantError(t, resp, http.StatusUnauthorized, "unauthenticated")
			ts.assertUnchanged(t, before)
		})
	}
}

func putWithAuthorization(t *testing.T, ts *testServer, h chunk.Hash, body []byte, values []string) response {
	t.Helper()
	var hdr http.Header
	if values != nil {
		hdr = http.Header{"Authorization": values}
	}
	return ts.do(t, http.MethodPut, chunkPath(h), "", body, hdr)
}

// editPayload changes one claim of tok and keeps the original signature.
func editPayload(t *testing.T, tok, claim string, v any) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m[claim] = v
	if raw, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func TestExpiredToken(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	tok := ts.token(t, auth.RoleAgent) // valid for tokenTTL from t0
	b1, h1 := randomChunk(t, 100)
	ts.clk.Advance(tokenTTL - time.Second)
	if resp := ts.do(t, http.MethodPut, chunkPath(h1), tok, b1, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT just before expiry: status %d; body %s", resp.StatusCode, resp.body)
	}
	// Past the expiry and the verifier's clock-skew leeway (30s).
	ts.clk.Advance(time.Minute)
	b2, h2 := randomChunk(t, 100)
	before := ts.state(t)
	wantError(t, ts.do(t, http.MethodPut, chunkPath(h2), tok, b2, nil), http.StatusUnauthorized, "unauthenticated")
	wantError(t, ts.do(t, http.MethodHead, chunkPath(h1), tok, nil, nil), http.StatusUnauthorized, "unauthenticated")
	ts.assertUnchanged(t, before)
}

func TestRevokedToken(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	tok, claims := ts.tokenClaims(t, auth.RoleAgent)
	b1, h1 := randomChunk(t, 100)
	ts.put(t, h1, b1, http.StatusCreated)
	if resp := ts.do(t, http.MethodHead, chunkPath(h1), tok, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD before revocation: status %d", resp.StatusCode)
	}

	if err := ts.store.RevokeToken(context.Background(), "test-admin", claims.ID, "lost laptop", store.RevokeOptions{Unregistered: true}); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	// At once, with no time passing: revocation needs no cache expiry.
	b2, h2 := randomChunk(t, 100)
	before := ts.state(t)
	wantError(t, ts.do(t, http.MethodPut, chunkPath(h2), tok, b2, nil), http.StatusUnauthorized, "unauthenticated")
	wantError(t, ts.do(t, http.MethodPut, chunkPath(h1), tok, b1, nil), http.StatusUnauthorized, "unauthenticated")
	wantError(t, ts.do(t, http.MethodHead, chunkPath(h1), tok, nil, nil), http.StatusUnauthorized, "unauthenticated")
	wantError(t, ts.postJSON(t, "/v1/chunks/retain", tok, map[string]any{
		"hashes": []string{h1.String()}, "retain_until": t0.AddDate(1, 0, 0),
	}), http.StatusUnauthorized, "unauthenticated")
	ts.assertUnchanged(t, before)

	// Another token of the same subject still works: revocation is per token.
	if resp := ts.do(t, http.MethodPut, chunkPath(h2), ts.token(t, auth.RoleAgent), b2, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT with a fresh token: status %d; body %s", resp.StatusCode, resp.body)
	}
}

// TestRoles checks the role table: each request is refused with 403
// "forbidden" for every role not allowed, and nothing changes.
func TestRoles(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	stored, h := randomChunk(t, 100)
	ts.put(t, h, stored, http.StatusCreated)
	newBody, newHash := randomChunk(t, 100)
	retainBody := `{"hashes":["` + h.String() + `"],"retain_until":"` + t0.AddDate(1, 0, 0).Format(time.RFC3339) + `"}`
	missingBody := `{"hashes":["` + newHash.String() + `"]}`
	jsonHdr := http.Header{"Content-Type": {"application/json"}}
	const (
		agent   = auth.RoleAgent
		reader  = auth.RoleReader
		auditor = auth.RoleAuditor
		admin   = auth.RoleAdmin
	)
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		header http.Header
		denied []auth.Role
	}{
		{"PUT new chunk", http.MethodPut, chunkPath(newHash), newBody, nil, []auth.Role{reader, auditor, admin}},
		{"PUT stored chunk", http.MethodPut, chunkPath(h), stored, http.Header{HeaderRetainUntil: {t0.AddDate(2, 0, 0).Format(time.RFC3339)}}, []auth.Role{reader, auditor, admin}},
		{"GET chunk", http.MethodGet, chunkPath(h), nil, nil, []auth.Role{agent, auditor, admin}},
		{"POST missing", http.MethodPost, "/v1/chunks/missing", missingBody, jsonHdr, []auth.Role{reader, auditor, admin}},
		{"POST retain", http.MethodPost, "/v1/chunks/retain", retainBody, jsonHdr, []auth.Role{reader, auditor, admin}},
		{"GET retention", http.MethodGet, chunkPath(h) + "/retention", nil, nil, []auth.Role{agent, reader}},
		{"GET audit", http.MethodGet, "/v1/audit", nil, nil, []auth.Role{agent, reader, admin}},
	}
	for _, tt := range tests {
		for _, role := range tt.denied {
			t.Run(tt.name+"/"+string(role), func(t *testing.T) {
				before := ts.state(t)
				resp := ts.do(t, tt.method, tt.path, ts.token(t, role), tt.body, tt.header)
				wantError(t, resp, http.StatusForbidden, "forbidden")
				if tt.method == http.MethodGet && strings.Contains(string(resp.body), string(stored)) {
					t.Errorf("refused response carries chunk content")
				}
				ts.assertUnchanged(t, before)
			})
		}
	}

	// HEAD is open to every role.
	for _, role := range []auth.Role{agent, reader, auditor, admin} {
		if resp := ts.do(t, http.MethodHead, chunkPath(h), ts.token(t, role), nil, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD as %s: status %d, want 200", role, resp.StatusCode)
		}
	}
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 100)
	ts.put(t, h, body, http.StatusCreated)
	until := t0.AddDate(1, 0, 0)
	resp := ts.postJSON(t, "/v1/chunks/retain", ts.token(t, auth.RoleAgent), map[string]any{"hashes": []string{h.String()}, "retain_until": until})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("retain: status %d; body %s", resp.StatusCode, resp.body)
	}

	auditor := ts.token(t, auth.RoleAuditor)
	resp = ts.do(t, http.MethodGet, "/v1/audit", auditor, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/audit: status %d; body %s", resp.StatusCode, resp.body)
	}
	var got struct {
		Entries []struct {
			Seq     int64     `json:"seq"`
			At      time.Time `json:"at"`
			Actor   string    `json:"actor"`
			Action  string    `json:"action"`
			Payload string    `json:"payload"`
			Hash    []byte    `json:"hash"`
		} `json:"entries"`
	}
	decodeJSON(t, resp, &got)
	// The chunk's commit, logged with its row, then the extension.
	if len(got.Entries) != 2 || got.Entries[0].Action != "chunk.commit" {
		t.Fatalf("audit entries = %d, want the chunk's commit and its extension; body %s", len(got.Entries), resp.body)
	}
	e := got.Entries[1]
	if e.Seq != 2 || e.Actor != "test-agent" || e.Action != "chunk.retain" || !e.At.Equal(t0) || len(e.Hash) != 32 ||
		!strings.Contains(e.Payload, h.String()) || !strings.Contains(e.Payload, until.Format(time.RFC3339)) {
		t.Errorf("audit entry = %+v, want seq 2 by test-agent, chunk.retain of %s until %v at %v", e, h, until, t0)
	}

	resp = ts.do(t, http.MethodGet, "/v1/audit?after=2", auditor, nil, nil)
	decodeJSON(t, resp, &got)
	if resp.StatusCode != http.StatusOK || got.Entries == nil || len(got.Entries) != 0 {
		t.Errorf("GET /v1/audit?after=2: status %d, body %s; want 200 and no entries", resp.StatusCode, resp.body)
	}
	for _, q := range []string{"after=-1", "after=x", "limit=0", "limit=1001", "limit=x"} {
		wantError(t, ts.do(t, http.MethodGet, "/v1/audit?"+q, auditor, nil, nil), http.StatusBadRequest, "invalid")
	}
}
