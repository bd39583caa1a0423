package auth

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Limits on a scope, checked when a token is issued and again when it is
// verified.
const (
	// MaxScopePatterns bounds the patterns of each kind in one scope.
	MaxScopePatterns = 64
	// maxPatternLen is the longest pattern, as long as the longest name.
	maxPatternLen = 128
)

// patternChars are the characters a pattern may use: those of source and
// repository names (store's name rules) and path.Match's * ? [ ] ^ - \.
var patternChars = regexp.MustCompile(`^[A-Za-z0-9._:@+=/\-*?\[\]^\\]+$`)

// Scope is what an agent or reader token may reach: which sources it may
// commit snapshots for (and, for a reader, read), and which restic
// repositories it may create, write and read. Patterns use path.Match
// syntax ("web-*", "db0[1-3]"); '*' and '?' do not match '/'.
//
// All is the exception: every source and every repository. It is issued
// only on purpose (vault token issue --all-sources) and is not recommended,
// since one stolen token then reaches every backup.
type Scope struct {
	All     bool     `json:"all,omitempty"`
	Sources []string `json:"sources,omitempty"`
	Restic  []string `json:"restic,omitempty"`
}

// AllSources is the unrestricted scope.
func AllSources() Scope { return Scope{All: true} }

// Scoped reports whether tokens of role r carry a scope: agents, readers
// and replicators do (a replicator copies the sources its scope names);
// the other roles never write backups and read only metadata.
func Scoped(r Role) bool { return r == RoleAgent || r == RoleReader || r == RoleReplicator }

// Validate checks that s is either All alone, or names at least one source
// or repository pattern, each valid for path.Match, at most
// MaxScopePatterns of each kind.
func (s Scope) Validate() error {
	if s.All {
		if len(s.Sources) > 0 || len(s.Restic) > 0 {
			return errors.New("auth: a scope is either all sources or a list of sources and repositories, not both")
		}
		return nil
	}
	if len(s.Sources) == 0 && len(s.Restic) == 0 {
		return errors.New("auth: empty scope: name at least one source or restic repository, or all sources")
	}
	for _, kind := range []struct {
		name     string
		patterns []string
	}{{"source", s.Sources}, {"restic repository", s.Restic}} {
		if len(kind.patterns) > MaxScopePatterns {
			return fmt.Errorf("auth: %d %s patterns, at most %d", len(kind.patterns), kind.name, MaxScopePatterns)
		}
		for _, p := range kind.patterns {
			if err := checkPattern(p); err != nil {
				return fmt.Errorf("auth: %s pattern %q: %w", kind.name, p, err)
			}
		}
	}
	return nil
}

func checkPattern(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case len(p) > maxPatternLen:
		return fmt.Errorf("longer than %d characters", maxPatternLen)
	case !patternChars.MatchString(p):
		return errors.New("may use letters, digits, . _ : @ + = / - and the glob characters * ? [ ] ^ \\")
	}
	// The translation for the database checks the whole syntax; path.Match
	// must agree that the pattern is well formed.
	if _, err := patternRegexp(p); err != nil {
		return err
	}
	if _, err := path.Match(p, ""); err != nil {
		return err
	}
	return nil
}

// AllowsSource reports whether s covers the source name.
func (s Scope) AllowsSource(name string) bool { return s.All || matchAny(s.Sources, name) }

// AllowsRestic reports whether s covers the restic repository name.
func (s Scope) AllowsRestic(name string) bool { return s.All || matchAny(s.Restic, name) }

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, err := path.Match(p, name); err == nil && ok {
			return true
		}
	}
	return false
}

// String is the scope as `vault token list` shows it.
func (s Scope) String() string {
	if s.All {
		return "all sources"
	}
	var parts []string
	if len(s.Sources) > 0 {
		parts = append(parts, "sources "+strings.Join(s.Sources, ","))
	}
	if len(s.Restic) > 0 {
		parts = append(parts, "restic "+strings.Join(s.Restic, ","))
	}
	return strings.Join(parts, "; ")
}

// SourceRegexps returns the source patterns as anchored POSIX regular
// expressions with path.Match's meaning, for a database to filter by (a
// PostgreSQL `~` match). It returns nil for All: no filter.
func (s Scope) SourceRegexps() []string {
	if s.All {
		return nil
	}
	out := make([]string, 0, len(s.Sources))
	for _, p := range s.Sources {
		re, err := patternRegexp(p)
		if err != nil {
			// Validate refused it already; a pattern that cannot be
			// translated matches nothing rather than everything.
			continue
		}
		out = append(out, re)
	}
	return out
}

// patternRegexp translates a path.Match pattern into an anchored regular
// expression that both RE2 and PostgreSQL's ARE read the same way: '*' is
// [^/]*, '?' is [^/], a class keeps its ranges and its '^' negation (a
// class may match '/', in path.Match as here), '\' escapes the next
// character, and everything else is literal.
func patternRegexp(p string) (string, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			b.WriteString("[^/]*")
		case '?':
			b.WriteString("[^/]")
		case '\\':
			i++
			if i >= len(p) {
				return "", path.ErrBadPattern
			}
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		case '[':
			j, class, err := translateClass(p, i+1)
			if err != nil {
				return "", err
			}
			b.WriteString(class)
			i = j
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString("$")
	return b.String(), nil
}

// translateClass reads a path.Match character class starting after its
// '[' at p[i], and returns the index of its ']' and the class as a
// regular expression. Ranges must be lo-hi with lo <= hi; a class must
// not be empty.
func translateClass(p string, i int) (int, string, error) {
	var b strings.Builder
	b.WriteString("[")
	if i < len(p) && p[i] == '^' {
		b.WriteString("^")
		i++
	}
	n := 0
	for {
		if i >= len(p) {
			return 0, "", path.ErrBadPattern
		}
		if p[i] == ']' && n > 0 {
			b.WriteString("]")
			return i, b.String(), nil
		}
		lo, next, err := classChar(p, i)
		if err != nil {
			return 0, "", err
		}
		i = next
		hi := lo
		if i < len(p) && p[i] == '-' {
			if hi, next, err = classChar(p, i+1); err != nil {
				return 0, "", err
			}
			i = next
			if hi < lo {
				return 0, "", path.ErrBadPattern
			}
		}
		b.WriteString(classLiteral(lo))
		if hi != lo {
			b.WriteString("-")
			b.WriteString(classLiteral(hi))
		}
		n++
	}
}

// classChar reads one character of a class (escaped or not) at p[i].
func classChar(p string, i int) (byte, int, error) {
	if i >= len(p) {
		return 0, 0, path.ErrBadPattern
	}
	switch c := p[i]; c {
	case '-', ']':
		return 0, 0, path.ErrBadPattern
	case '\\':
		if i+1 >= len(p) {
			return 0, 0, path.ErrBadPattern
		}
		return p[i+1], i + 2, nil
	default:
		return c, i + 1, nil
	}
}

// classLiteral writes c so that it is literal inside a bracket expression:
// both RE2 and PostgreSQL's AREs read a backslash there as an escape.
func classLiteral(c byte) string {
	switch c {
	case '\\', ']', '[', '^', '-':
		return `\` + string(c)
	}
	return string(c)
}
