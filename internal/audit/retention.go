package audit

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// KindPolicy is the kind of a request that shortens, re-points or detaches
// a retention policy: a governance kind.
const KindPolicy = "policy"

// Governed reports whether requests of kind govern the vault itself (the
// admin set, retention policies, standing expiry): they take the
// governance quorum and delay, not the deletion ones. The store's
// governed and the SQL list kind IN ('admin_set','policy',
// 'expiry_authorisation') say the same.
func Governed(kind string) bool {
	return kind == KindAdminSet || kind == KindPolicy || kind == KindExpiryAuthorisation
}

// RetentionPolicy is a retention policy as a policy request names it: the
// version the request's execution makes.
type RetentionPolicy struct {
	Name string
	// Pattern is the glob of the sources it covers; "" detaches it.
	Pattern       string
	DailyDays     int
	WeeklyWeeks   int
	MonthlyMonths int
	YearlyYears   int
	MinimumDays   int
}

var (
	policyNamePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	policySourcePattern = regexp.MustCompile(`^[A-Za-z0-9._:@+=/*?-]{1,128}$`)
)

// Check refuses a policy the canonical text (and the database) cannot
// hold, naming the field.
func (p RetentionPolicy) Check() error {
	bad := func(field, format string, args ...any) error {
		return &PolicyError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case !policyNamePattern.MatchString(p.Name):
		return bad("name", "%q must be 1 to 64 characters of a-z 0-9 . _ -, starting with a letter or digit", p.Name)
	case p.Pattern != "" && !policySourcePattern.MatchString(p.Pattern):
		return bad("pattern", "%q must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ + = / - and the wildcards * ?", p.Pattern)
	case p.DailyDays < 0 || p.DailyDays > 36600:
		return bad("daily_days", "must be between 0 and 36600")
	case p.WeeklyWeeks < 0 || p.WeeklyWeeks > 5300:
		return bad("weekly_weeks", "must be between 0 and 5300")
	case p.MonthlyMonths < 0 || p.MonthlyMonths > 1200:
		return bad("monthly_months", "must be between 0 and 1200")
	case p.YearlyYears < 0 || p.YearlyYears > 100:
		return bad("yearly_years", "must be between 0 and 100")
	case p.MinimumDays < 0 || p.MinimumDays > 36600:
		return bad("minimum_days", "must be between 0 and 36600")
	case p.DailyDays+p.WeeklyWeeks+p.MonthlyMonths+p.YearlyYears+p.MinimumDays == 0:
		return bad("terms", "at least one term must be positive")
	}
	return nil
}

func (p *RetentionPolicy) canonical(b *strings.Builder) error {
	if err := p.Check(); err != nil {
		return err
	}
	pattern := p.Pattern
	if pattern == "" {
		pattern = "-" // detached; "-" alone is no source pattern
	}
	b.WriteString("policy: " + p.Name + "\n")
	b.WriteString("pattern: " + pattern + "\n")
	b.WriteString("daily-days: " + strconv.Itoa(p.DailyDays) + "\n")
	b.WriteString("weekly-weeks: " + strconv.Itoa(p.WeeklyWeeks) + "\n")
	b.WriteString("monthly-months: " + strconv.Itoa(p.MonthlyMonths) + "\n")
	b.WriteString("yearly-years: " + strconv.Itoa(p.YearlyYears) + "\n")
	b.WriteString("minimum-days: " + strconv.Itoa(p.MinimumDays) + "\n")
	return nil
}

// parseLine reports whether k is a line of a retention policy, and reads
// it into p.
func (p *RetentionPolicy) parseLine(k, v string) (bool, error) {
	var err error
	switch k {
	case "policy":
		p.Name = v
	case "pattern":
		if v != "-" {
			p.Pattern = v
		}
	case "daily-days":
		p.DailyDays, err = strconv.Atoi(v)
	case "weekly-weeks":
		p.WeeklyWeeks, err = strconv.Atoi(v)
	case "monthly-months":
		p.MonthlyMonths, err = strconv.Atoi(v)
	case "yearly-years":
		p.YearlyYears, err = strconv.Atoi(v)
	case "minimum-days":
		p.MinimumDays, err = strconv.Atoi(v)
	default:
		return false, nil
	}
	return true, err
}
