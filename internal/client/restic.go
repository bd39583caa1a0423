package client

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ResticRepository is a restic repository on the vault (docs/restic.md).
type ResticRepository struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	// MinRetention is the repository's own minimum retention ("0s": none);
	// EffectiveRetention the longer of it and the vault's.
	MinRetention       string     `json:"min_retention"`
	EffectiveRetention string     `json:"effective_retention"`
	Files              int64      `json:"files"`
	Bytes              int64      `json:"bytes"`
	LastSnapshotAt     *time.Time `json:"last_snapshot_at,omitempty"`
	// ExtendedChunks, in the answer to SetResticRetention, counts the
	// chunks whose retention the change extended.
	ExtendedChunks int64 `json:"extended_chunks,omitempty"`
}

// ResticRepositories lists the restic repositories (auditor, admin).
func (c *Client) ResticRepositories(ctx context.Context) ([]ResticRepository, error) {
	var out struct {
		Repositories []ResticRepository `json:"repositories"`
	}
	err := c.getJSON(ctx, "/v1/restic/repositories", nil, &out)
	return out.Repositories, err
}

// SetResticRetention raises a repository's minimum retention to d, a
// duration such as "400d" (admin; extend-only).
func (c *Client) SetResticRetention(ctx context.Context, repo, d string) (ResticRepository, error) {
	var out ResticRepository
	if repo == "" || strings.ContainsAny(repo, "/?#%") {
		return out, fmt.Errorf("client: %q is not a restic repository name", repo)
	}
	err := c.do(ctx, http.MethodPut, "/v1/restic/repositories/"+repo+"/retention", nil,
		map[string]string{"min_retention": d}, nil, &out)
	return out, err
}
