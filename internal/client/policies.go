package client

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"time"
)

// RetentionPolicy is one version of a retention policy (GET and PUT
// /v1/policies). Pattern "" means detached.
type RetentionPolicy struct {
	Name          string    `json:"name"`
	Pattern       string    `json:"pattern"`
	DailyDays     int       `json:"daily_days"`
	WeeklyWeeks   int       `json:"weekly_weeks"`
	MonthlyMonths int       `json:"monthly_months"`
	YearlyYears   int       `json:"yearly_years"`
	MinimumDays   int       `json:"minimum_days"`
	Version       int64     `json:"version,omitempty"`
	CreatedAt     time.Time `json:"created_at,omitzero"`
	CreatedBy     string    `json:"created_by,omitempty"`
	RequestID     *int64    `json:"request_id,omitempty"`
}

// PolicyVersions is a policy's current version and its history, newest
// first.
type PolicyVersions struct {
	RetentionPolicy
	Versions []RetentionPolicy `json:"versions"`
}

// SetPolicyResult is what PUT /v1/policies/{name} did.
type SetPolicyResult struct {
	RetentionPolicy
	Changed bool `json:"changed"`
}

var policyName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func checkPolicyName(name string) error {
	if !policyName.MatchString(name) {
		return fmt.Errorf("client: %q is not a policy name (a-z 0-9 . _ -)", name)
	}
	return nil
}

// Policies returns the current version of every retention policy (auditor
// or admin token).
func (c *Client) Policies(ctx context.Context) ([]RetentionPolicy, error) {
	var out struct {
		Policies []RetentionPolicy `json:"policies"`
	}
	err := c.getJSON(ctx, "/v1/policies", nil, &out)
	return out.Policies, err
}

// Policy returns policy name with its versions (auditor or admin token).
func (c *Client) Policy(ctx context.Context, name string) (PolicyVersions, error) {
	var out PolicyVersions
	if err := checkPolicyName(name); err != nil {
		return out, err
	}
	err := c.getJSON(ctx, "/v1/policies/"+name, nil, &out)
	return out, err
}

// SetPolicy creates or lengthens policy p (admin token); a change that could
// shorten retention is refused with code "governed".
func (c *Client) SetPolicy(ctx context.Context, p RetentionPolicy) (SetPolicyResult, error) {
	var out SetPolicyResult
	if err := checkPolicyName(p.Name); err != nil {
		return out, err
	}
	err := c.do(ctx, http.MethodPut, "/v1/policies/"+p.Name, nil, p, nil, &out)
	return out, err
}
