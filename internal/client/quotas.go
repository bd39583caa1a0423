package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Quota is a subject's quota setting; a nil limit is no limit.
type Quota struct {
	Subject    string    `json:"subject"`
	DailyBytes *int64    `json:"daily_bytes"`
	TotalBytes *int64    `json:"total_bytes"`
	SetAt      time.Time `json:"set_at"`
	SetBy      string    `json:"set_by"`
	Reason     string    `json:"reason,omitempty"`
}

// QuotaUsage is a subject's quota (nil if none was set) and usage.
type QuotaUsage struct {
	Subject   string    `json:"subject"`
	Quota     *Quota    `json:"quota"`
	Day       time.Time `json:"day"`
	UsedToday int64     `json:"used_today"`
	UsedTotal int64     `json:"used_total"`
}

// Quotas lists every subject with a quota or stored content (auditor,
// admin).
func (c *Client) Quotas(ctx context.Context) ([]QuotaUsage, error) {
	var out struct {
		Quotas []QuotaUsage `json:"quotas"`
	}
	err := c.getJSON(ctx, "/v1/quotas", nil, &out)
	return out.Quotas, err
}

// Quota returns one subject's quota and usage (auditor, admin).
func (c *Client) Quota(ctx context.Context, subject string) (QuotaUsage, error) {
	var out struct {
		Quotas []QuotaUsage `json:"quotas"`
	}
	if err := c.getJSON(ctx, "/v1/quotas", url.Values{"subject": {subject}}, &out); err != nil {
		return QuotaUsage{}, err
	}
	if len(out.Quotas) != 1 {
		return QuotaUsage{}, &Error{StatusCode: http.StatusOK, Code: "internal", Message: "the vault answered no quota"}
	}
	return out.Quotas[0], nil
}

// SetQuota replaces a subject's quota (admin): a nil limit is no limit.
func (c *Client) SetQuota(ctx context.Context, subject string, daily, total *int64, reason string) (QuotaUsage, error) {
	var out QuotaUsage
	err := c.do(ctx, http.MethodPut, "/v1/quotas", nil, map[string]any{
		"subject": subject, "daily_bytes": daily, "total_bytes": total, "reason": reason,
	}, nil, &out)
	return out, err
}
