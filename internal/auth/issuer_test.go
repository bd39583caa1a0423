package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"
)

var hex128 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestIssue(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	tok, c := e.mustIssue(t, RoleAgent, "backup@host-1", 15*time.Minute)

	var header map[string]any
	decodeSegment(t, tok, 0, &header)
	sum := sha256.Sum256(e.pub)
	wantHeader := map[string]any{"alg": "EdDSA", "typ": "vault-access+jwt", "kid": hex.EncodeToString(sum[:8])}
	if len(header) != len(wantHeader) {
		t.Errorf("header = %v, want %v", header, wantHeader)
	}
	for k, want := range wantHeader {
		if header[k] != want {
			t.Errorf("header[%q] = %v, want %v", k, header[k], want)
		}
	}

	var payload map[string]any
	decodeSegment(t, tok, 1, &payload)
	wantPayload := map[string]any{
		"iss":  "wormvault",
		"sub":  "backup@host-1",
		"role": "agent",
		"iat":  float64(t0.Unix()),
		"nbf":  float64(t0.Unix()),
		"exp":  float64(t0.Add(15 * time.Minute).Unix()),
		"jti":  c.ID,
	}
	for k, want := range wantPayload {
		if payload[k] != want {
			t.Errorf("payload[%q] = %v, want %v", k, payload[k], want)
		}
	}
	if aud, ok := payload["aud"].([]any); !ok || len(aud) != 1 || aud[0] != testVault {
		t.Errorf("payload aud = %#v, want [%q]", payload["aud"], testVault)
	}
	if !hex128.MatchString(c.ID) {
		t.Errorf("jti = %q, want 32 lowercase hex characters", c.ID)
	}
	if c.Role != RoleAgent || c.Subject != "backup@host-1" || !c.ExpiresAt.Equal(t0.Add(15*time.Minute)) {
		t.Errorf("returned claims = %+v, do not match the request", c)
	}

	_, c2 := e.mustIssue(t, RoleAgent, "backup@host-1", 15*time.Minute)
	if c2.ID == c.ID {
		t.Errorf("two tokens share jti %q", c.ID)
	}
}

func TestIssueRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		role    Role
		subject string
		ttl     time.Duration
	}{
		{name: "empty subject", role: RoleReader, subject: "", ttl: time.Hour},
		{name: "overlong subject", role: RoleReader, subject: strings.Repeat("a", 129), ttl: time.Hour},
		{name: "overlong multibyte subject", role: RoleReader, subject: strings.Repeat("é", 129), ttl: time.Hour},
		{name: "newline in subject", role: RoleReader, subject: "alice\nrole=admin", ttl: time.Hour},
		{name: "NUL in subject", role: RoleReader, subject: "alice\x00", ttl: time.Hour},
		{name: "escape in subject", role: RoleReader, subject: "\x1b[31malice", ttl: time.Hour},
		{name: "DEL in subject", role: RoleReader, subject: "alice\x7f", ttl: time.Hour},
		{name: "bidi override in subject", role: RoleReader, subject: "alice\u202egpj.exe", ttl: time.Hour},
		{name: "invalid UTF-8 subject", role: RoleReader, subject: "alice\xff", ttl: time.Hour},
		{name: "zero ttl", role: RoleReader, subject: "alice", ttl: 0},
		{name: "negative ttl", role: RoleReader, subject: "alice", ttl: -time.Second},
		{name: "ttl over 366 days", role: RoleReader, subject: "alice", ttl: 366*24*time.Hour + time.Second},
		{name: "empty role", role: "", subject: "alice", ttl: time.Hour},
		{name: "unknown role", role: "root", subject: "alice", ttl: time.Hour},
		{name: "role wrong case", role: "Admin", subject: "alice", ttl: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			tok, _, err := e.issuer.Issue(tt.role, tt.subject, tt.ttl)
			if err == nil || tok != "" {
				t.Errorf("Issue(%q, %q, %v) = %q, %v; want error", tt.role, tt.subject, tt.ttl, tok, err)
			}
		})
	}
}

func TestIssueAcceptsLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		subject string
		ttl     time.Duration
	}{
		{name: "128 character subject", subject: strings.Repeat("a", 128), ttl: time.Hour},
		{name: "128 multibyte characters", subject: strings.Repeat("é", 128), ttl: time.Hour},
		{name: "space and punctuation", subject: "Alice Example <alice@example.org>", ttl: time.Hour},
		{name: "366 days", subject: "alice", ttl: 366 * 24 * time.Hour},
		{name: "one second", subject: "alice", ttl: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			tok, _ := e.mustIssue(t, RoleReader, tt.subject, tt.ttl)
			p, err := e.verifier.Verify(t.Context(), tok)
			if err != nil || p.Subject != tt.subject {
				t.Errorf("Verify(Issue(%q, %v)) = %+v, %v; want subject back", tt.subject, tt.ttl, p, err)
			}
		})
	}
}
