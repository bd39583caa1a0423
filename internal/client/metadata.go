package client

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// Snapshots.

// Snapshot is a committed snapshot.
type Snapshot struct {
	ID            int64      `json:"id"`
	Source        string     `json:"source"`
	Name          string     `json:"name"`
	TakenAt       time.Time  `json:"taken_at"`
	CommittedAt   time.Time  `json:"committed_at"`
	CommittedBy   string     `json:"committed_by"`
	RetainUntil   time.Time  `json:"retain_until"`
	Tags          []string   `json:"tags"`
	ManifestRoot  chunk.Hash `json:"manifest_root"`
	ManifestCount int        `json:"manifest_count"`
	ChunkCount    int64      `json:"chunk_count"`
	TotalBytes    int64      `json:"total_bytes"`
	Held          bool       `json:"held"`
}

// SnapshotDetail is a snapshot with the figures computed on request.
type SnapshotDetail struct {
	Snapshot
	UniqueChunks int64     `json:"unique_chunks"`
	UniqueBytes  int64     `json:"unique_bytes"`
	Holds        []HoldRef `json:"holds"`
}

// SnapshotPage is one page of snapshots.
type SnapshotPage struct {
	Snapshots []Snapshot `json:"snapshots"`
	Next      string     `json:"next"`
}

// NewSnapshot is a snapshot to commit.
type NewSnapshot struct {
	Source       string     `json:"source"`
	Name         string     `json:"name"`
	TakenAt      time.Time  `json:"taken_at"`
	RetainUntil  time.Time  `json:"retain_until"`
	Tags         []string   `json:"tags,omitempty"`
	ManifestRoot chunk.Hash `json:"manifest_root"`
}

// Committed is the answer to a commit or an extension.
type Committed struct {
	Snapshot
	// ExtendedChunks counts the chunks whose retention was raised.
	ExtendedChunks int64 `json:"extended_chunks"`
	// Changed is false when an extension asked for the retention the
	// snapshot already had.
	Changed bool `json:"changed"`
}

// CommitSnapshot commits a snapshot (agent). A refusal because chunks are
// not stored is an *Error with code "missing_chunks" listing them.
func (c *Client) CommitSnapshot(ctx context.Context, s NewSnapshot) (Committed, error) {
	var out Committed
	err := c.postJSON(ctx, "/v1/snapshots", s, &out)
	return out, err
}

// ExtendSnapshot extends a snapshot's retention, and its chunks', to until
// (agent). An earlier time is refused with code "retention_locked".
func (c *Client) ExtendSnapshot(ctx context.Context, id int64, until time.Time) (Committed, error) {
	var out Committed
	err := c.postJSON(ctx, "/v1/snapshots/"+strconv.FormatInt(id, 10)+"/retain", map[string]any{"retain_until": until.UTC()}, &out)
	return out, err
}

// SnapshotFilter selects snapshots; zero fields do not filter.
type SnapshotFilter struct {
	Source string
	// Tags: snapshots carrying all of them.
	Tags []string
	// TakenFrom (inclusive) and TakenBefore (exclusive) bound taken_at.
	TakenFrom   time.Time
	TakenBefore time.Time
}

// Snapshots returns one page of snapshots, newest first.
func (c *Client) Snapshots(ctx context.Context, f SnapshotFilter, p Page) (SnapshotPage, error) {
	q := p.query()
	if f.Source != "" {
		q.Set("source", f.Source)
	}
	for _, t := range f.Tags {
		q.Add("tag", t)
	}
	if !f.TakenFrom.IsZero() {
		q.Set("taken_from", formatTime(f.TakenFrom))
	}
	if !f.TakenBefore.IsZero() {
		q.Set("taken_before", formatTime(f.TakenBefore))
	}
	var out SnapshotPage
	err := c.getJSON(ctx, "/v1/snapshots", q, &out)
	return out, err
}

// Snapshot returns one snapshot with its unique figures and holds.
func (c *Client) Snapshot(ctx context.Context, id int64) (SnapshotDetail, error) {
	var out SnapshotDetail
	err := c.getJSON(ctx, "/v1/snapshots/"+strconv.FormatInt(id, 10), nil, &out)
	return out, err
}

// Holds.

// Hold is a legal hold.
type Hold struct {
	ID          int64      `json:"id"`
	Name        string     `json:"name"`
	Reason      string     `json:"reason"`
	Kind        string     `json:"kind"` // "chunks", "snapshots" or "source"
	Source      string     `json:"source,omitempty"`
	TargetCount int        `json:"target_count"`
	PlacedBy    string     `json:"placed_by"`
	PlacedAt    time.Time  `json:"placed_at"`
	Active      bool       `json:"active"`
	ReleasedAt  *time.Time `json:"released_at"`
	ReleasedBy  string     `json:"released_by,omitempty"`
}

// HoldDetail is a hold with its targets.
type HoldDetail struct {
	Hold
	Chunks    []chunk.Hash `json:"chunks,omitempty"`
	Snapshots []int64      `json:"snapshots,omitempty"`
}

// HoldPage is one page of holds.
type HoldPage struct {
	Holds []Hold `json:"holds"`
	Next  string `json:"next"`
}

// HoldRef is a hold as it applies to a chunk or snapshot: Via is "chunk",
// "snapshot" (SnapshotID) or "source" (Source).
type HoldRef struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	Reason     string `json:"reason"`
	Via        string `json:"via"`
	SnapshotID int64  `json:"snapshot_id,omitempty"`
	Source     string `json:"source,omitempty"`
}

// NewHold is a hold to place: exactly one of Chunks, Snapshots, Source.
type NewHold struct {
	Name      string       `json:"name"`
	Reason    string       `json:"reason"`
	Chunks    []chunk.Hash `json:"chunks,omitempty"`
	Snapshots []int64      `json:"snapshots,omitempty"`
	Source    string       `json:"source,omitempty"`
}

// PlaceHold places a legal hold (admin).
func (c *Client) PlaceHold(ctx context.Context, h NewHold) (HoldDetail, error) {
	var out HoldDetail
	err := c.postJSON(ctx, "/v1/holds", h, &out)
	return out, err
}

// Holds returns one page of holds, oldest first.
func (c *Client) Holds(ctx context.Context, p Page) (HoldPage, error) {
	var out HoldPage
	err := c.getJSON(ctx, "/v1/holds", p.query(), &out)
	return out, err
}

// Hold returns one hold with its targets.
func (c *Client) Hold(ctx context.Context, id int64) (HoldDetail, error) {
	var out HoldDetail
	err := c.getJSON(ctx, "/v1/holds/"+strconv.FormatInt(id, 10), nil, &out)
	return out, err
}

// Retention.

// Count is a number of chunks and their bytes.
type Count struct {
	Chunks int64 `json:"chunks"`
	Bytes  int64 `json:"bytes"`
}

// Month counts the chunks whose retention ends in a UTC month (YYYY-MM).
type Month struct {
	Month  string `json:"month"`
	Chunks int64  `json:"chunks"`
	Bytes  int64  `json:"bytes"`
}

// RetentionSummary is the auditor's overview.
type RetentionSummary struct {
	At              time.Time `json:"at"`
	Total           Count     `json:"total"`
	Months          []Month   `json:"months"`
	Expired         Count     `json:"expired"`
	Held            Count     `json:"held"`
	PendingDeletion Count     `json:"pending_deletion"`
	Snapshots       struct {
		Total   int64 `json:"total"`
		Expired int64 `json:"expired"`
		Held    int64 `json:"held"`
	} `json:"snapshots"`
	ActiveHolds int64 `json:"active_holds"`
}

// RetentionSummary returns counts and bytes by retention month, expired,
// held and pending deletion.
func (c *Client) RetentionSummary(ctx context.Context) (RetentionSummary, error) {
	var out RetentionSummary
	err := c.getJSON(ctx, "/v1/retention/summary", nil, &out)
	return out, err
}

// ExpiringChunk is a chunk in an expiry list.
type ExpiringChunk struct {
	Hash        chunk.Hash `json:"hash"`
	Size        int64      `json:"size"`
	StoredAt    time.Time  `json:"stored_at"`
	RetainUntil time.Time  `json:"retain_until"`
	UploadedBy  string     `json:"uploaded_by"`
	Held        bool       `json:"held"`
}

// ChunkPage is one page of chunks.
type ChunkPage struct {
	Chunks []ExpiringChunk `json:"chunks"`
	Next   string          `json:"next"`
}

func beforeQuery(before time.Time, p Page) url.Values {
	q := p.query()
	q.Set("before", formatTime(before))
	return q
}

// ExpiringChunks returns one page of the chunks retained until before a
// time, soonest first.
func (c *Client) ExpiringChunks(ctx context.Context, before time.Time, p Page) (ChunkPage, error) {
	var out ChunkPage
	err := c.getJSON(ctx, "/v1/retention/chunks", beforeQuery(before, p), &out)
	return out, err
}

// ExpiringSnapshots returns one page of the snapshots retained until
// before a time, soonest first.
func (c *Client) ExpiringSnapshots(ctx context.Context, before time.Time, p Page) (SnapshotPage, error) {
	var out SnapshotPage
	err := c.getJSON(ctx, "/v1/retention/snapshots", beforeQuery(before, p), &out)
	return out, err
}
