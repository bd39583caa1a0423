package client

import (
	"context"
	"encoding/json"
	"net/url"
	"time"
)

// Replication, on a replica.

// ReplicaSource is a primary the vault replicates from, with its alarm
// and what disappeared from it.
type ReplicaSource struct {
	Name             string          `json:"name"`
	URL              string          `json:"url"`
	CheckpointKey    string          `json:"checkpoint_key"`
	CreatedAt        time.Time       `json:"created_at"`
	KeptSize         int64           `json:"kept_size"`
	Alarm            string          `json:"alarm,omitempty"`
	AlarmAt          *time.Time      `json:"alarm_at,omitempty"`
	LastPassAt       *time.Time      `json:"last_pass_at,omitempty"`
	LastPass         json.RawMessage `json:"last_pass,omitempty"`
	Disappeared      []Disappeared   `json:"disappeared"`
	DisappearedTotal int64           `json:"disappeared_total"`
}

// Disappeared is something the replica holds that its primary no longer has.
type Disappeared struct {
	Kind      string    `json:"kind"`
	Item      string    `json:"item"`
	NoticedAt time.Time `json:"noticed_at"`
}

// ReplicaSources lists the primaries the vault replicates from (auditor, admin).
func (c *Client) ReplicaSources(ctx context.Context) ([]ReplicaSource, error) {
	var out struct {
		Sources []ReplicaSource `json:"sources"`
	}
	err := c.getJSON(ctx, "/v1/replication", nil, &out)
	return out.Sources, err
}

// AcknowledgeReplication clears the alarm of primary source (admin):
// replication resumes from the primary's current checkpoint.
func (c *Client) AcknowledgeReplication(ctx context.Context, source, reason string) (ReplicaSource, error) {
	var out ReplicaSource
	err := c.postJSON(ctx, "/v1/replication/"+url.PathEscape(source)+"/acknowledge", map[string]string{"reason": reason}, &out)
	return out, err
}
