package auth

import (
	"errors"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestScopeValidate(t *testing.T) {
	t.Parallel()
	many := make([]string, MaxScopePatterns+1)
	for i := range many {
		many[i] = "s" + strings.Repeat("x", i%5)
	}
	tests := []struct {
		name    string
		scope   Scope
		wantErr string
	}{
		{name: "one source", scope: Scope{Sources: []string{"db01"}}},
		{name: "glob and repository", scope: Scope{Sources: []string{"web-*", "db0[1-3]"}, Restic: []string{"db01"}}},
		{name: "only a repository", scope: Scope{Restic: []string{"laptop-?"}}},
		{name: "all", scope: AllSources()},
		{name: "empty", scope: Scope{}, wantErr: "empty scope"},
		{name: "all and a list", scope: Scope{All: true, Sources: []string{"db01"}}, wantErr: "not both"},
		{name: "empty pattern", scope: Scope{Sources: []string{""}}, wantErr: "empty"},
		{name: "unclosed class", scope: Scope{Sources: []string{"db[0-"}}, wantErr: "syntax error"},
		{name: "empty class", scope: Scope{Restic: []string{"db[]"}}, wantErr: "syntax error"},
		{name: "reversed range", scope: Scope{Sources: []string{"db[9-0]"}}, wantErr: "syntax error"},
		{name: "trailing escape", scope: Scope{Sources: []string{`db\`}}, wantErr: "syntax error"},
		{name: "space", scope: Scope{Sources: []string{"db 01"}}, wantErr: "may use"},
		{name: "quote", scope: Scope{Sources: []string{"db'01"}}, wantErr: "may use"},
		{name: "too long", scope: Scope{Sources: []string{strings.Repeat("a", 129)}}, wantErr: "longer"},
		{name: "too many", scope: Scope{Sources: many}, wantErr: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.scope.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate(%+v) = %v, want nil", tt.scope, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate(%+v) = %v, want an error containing %q", tt.scope, err, tt.wantErr)
			}
		})
	}
}

func TestScopeAllows(t *testing.T) {
	t.Parallel()
	s := Scope{Sources: []string{"web-*", "db01"}, Restic: []string{"db01"}}
	for _, tt := range []struct {
		source string
		want   bool
	}{{"web-01", true}, {"web-", true}, {"db01", true}, {"db02", false}, {"web-01/x", false}, {"xweb-01", false}, {"DB01", false}} {
		if got := s.AllowsSource(tt.source); got != tt.want {
			t.Errorf("AllowsSource(%q) = %v, want %v", tt.source, got, tt.want)
		}
	}
	if !s.AllowsRestic("db01") || s.AllowsRestic("web-01") || s.AllowsRestic("db011") {
		t.Errorf("AllowsRestic: want db01 only of db01, web-01, db011")
	}
	if a := AllSources(); !a.AllowsSource("anything") || !a.AllowsRestic("anything") {
		t.Errorf("AllSources allows less than everything")
	}
}

// The database filters a scoped reader's snapshots with the regular
// expressions; they must mean exactly what path.Match means.
func TestSourceRegexpsAgreeWithPathMatch(t *testing.T) {
	t.Parallel()
	patterns := []string{"web-*", "db0[1-3]", "db0[^1-3]", "*", "?", "a?c", `a\*b`, "x[a-c.]y", "h*/d*", "[\\]]", "a.b", "db+01", "*-prod"}
	names := []string{"web-01", "web-", "db01", "db04", "db0x", "a", "abc", "a*b", "axb", "x.y", "xby", "xdy", "h1/d2", "h1/x", "]", "a.b", "axb", "db+01", "dbb01", "eu-prod", "eu/prod-prod", "/", "", "a/b"}
	for _, p := range patterns {
		if err := (Scope{Sources: []string{p}}).Validate(); err != nil {
			t.Fatalf("pattern %q: %v", p, err)
		}
		re := regexp.MustCompile(Scope{Sources: []string{p}}.SourceRegexps()[0])
		for _, n := range names {
			want, _ := path.Match(p, n)
			if got := re.MatchString(n); got != want {
				t.Errorf("pattern %q (regexp %s) on %q: %v, path.Match says %v", p, re, n, got, want)
			}
		}
	}
	if got := AllSources().SourceRegexps(); got != nil {
		t.Errorf("AllSources().SourceRegexps() = %q, want nil (no filter)", got)
	}
}

func TestIssueAgentWithoutScopeIsRefused(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	for _, role := range []Role{RoleAgent, RoleReader} {
		if tok, _, err := e.issuer.Issue(role, "web09", time.Hour); err == nil || tok != "" {
			t.Errorf("Issue(%s) without a scope = %q, %v; want an error", role, tok, err)
		}
		if _, _, err := e.issuer.IssueScoped(role, "web09", time.Hour, Scope{}); err == nil {
			t.Errorf("IssueScoped(%s, empty scope) succeeded", role)
		}
	}
	if _, _, err := e.issuer.IssueScoped(RoleAdmin, "alice", time.Hour, AllSources()); err == nil {
		t.Errorf("IssueScoped(admin) succeeded; admins carry no scope")
	}
	tok, c, err := e.issuer.IssueScoped(RoleAgent, "web09", time.Hour, Scope{Sources: []string{"web09"}, Restic: []string{"web09"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.verifier.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Scope.AllowsSource("web09") || p.Scope.AllowsSource("db01") || !p.Scope.AllowsRestic("web09") || p.Scope.All {
		t.Errorf("verified scope %+v, want the issued %+v", p.Scope, *c.Scope)
	}
	if RequireSource(p, "db01") == nil || !errors.Is(RequireSource(p, "db01"), ErrForbidden) || RequireSource(p, "web09") != nil {
		t.Errorf("RequireSource: want db01 forbidden and web09 allowed")
	}
	if !errors.Is(RequireRestic(p, "db01"), ErrForbidden) || RequireRestic(p, "web09") != nil {
		t.Errorf("RequireRestic: want db01 forbidden and web09 allowed")
	}
}

// A token from before scopes (no scope claim) is refused, never taken as
// all sources; so is a scope on a role that has none, or a scope that
// does not validate.
func TestVerifierRefusesUnscopedAgentToken(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	for _, tt := range []struct {
		name   string
		claims jwt.MapClaims
	}{
		{name: "legacy agent", claims: with(with(validClaims(), "role", "agent"), "scope", nil)},
		{name: "legacy reader", claims: with(validClaims(), "scope", nil)},
		{name: "empty scope", claims: with(validClaims(), "scope", map[string]any{})},
		{name: "bad pattern", claims: with(validClaims(), "scope", map[string]any{"sources": []string{"db[0-"}})},
		{name: "scoped admin", claims: with(with(validClaims(), "role", "admin"), "scope", map[string]any{"sources": []string{"db01"}})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok := signToken(t, jwt.SigningMethodEdDSA, e.key, e.validHeader(), jwt.MapClaims(tt.claims))
			if p, err := e.verifier.Verify(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("Verify = %+v, %v; want ErrUnauthenticated", p, err)
			}
		})
	}
}

// rotate-key --compromised: every token of the distrusted key is refused,
// including one the thief mints after the rotation with any id and time.
func TestVerifierRefusesTokenOfDistrustedKey(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	before, _ := e.mustIssue(t, RoleAgent, "web09", time.Hour)
	if _, err := e.verifier.Verify(t.Context(), before); err != nil {
		t.Fatal(err)
	}
	e.revs.distrusted[e.kid] = true
	minted, _ := e.mustIssue(t, RoleAgent, "thief", time.Hour)
	for name, tok := range map[string]string{"issued before (cached)": before, "minted after": minted} {
		if _, err := e.verifier.Verify(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "distrusted") {
			t.Errorf("%s: Verify error = %v, want ErrUnauthenticated naming the distrusted key", name, err)
		}
	}
}
