package audit

import (
	"encoding/json"
	"fmt"
	"time"
)

// Entry is one audit log entry as it is hashed: the canonical JSON
// payload, whose record hash is the Merkle leaf. Seq is the leaf index
// plus one.
type Entry struct {
	Seq     int64           `json:"seq"`
	At      time.Time       `json:"at"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`
	Details json.RawMessage `json:"details"`
}

// RawEntry is an entry as served: its leaf index and exact payload bytes.
type RawEntry struct {
	Index   int64  `json:"index"`
	Payload string `json:"payload"`
}

// ParseEntry decodes a payload and checks it is the entry at leaf index.
func ParseEntry(index int64, payload []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(payload, &e); err != nil {
		return e, fmt.Errorf("entry %d: %w", index, err)
	}
	if e.Seq != index+1 {
		return e, fmt.Errorf("entry at leaf %d says it is entry %d", index, e.Seq)
	}
	return e, nil
}

// Actions of entries that the replay interprets. Others (tokens, restic
// repositories) are hashed and kept but carry no rule here.
const (
	ActionChunkCommit      = "chunk.commit"
	ActionChunkRemove      = "chunk.remove"
	ActionChunkRetain      = "chunk.retain"
	ActionSnapshotCommit   = "snapshot.commit"
	ActionSnapshotRetain   = "snapshot.retain"
	ActionHoldPlace        = "hold.place"
	ActionResticRetention  = "restic.repository.retention"
	ActionGenesis          = "admin_set.genesis"
	ActionAdminSetChange   = "admin_set.change"
	ActionDeletionRequest  = "deletion.request"
	ActionDeletionSign     = "deletion.sign"
	ActionDeletionApprove  = "deletion.approve"
	ActionDeletionSchedule = "deletion.schedule"
	ActionDeletionCancel   = "deletion.cancel"
	ActionDeletionExecute  = "deletion.execute"
	ActionDeletionExecuted = "deletion.executed"
	ActionDeletionRefused  = "deletion.refused"
	ActionDeletionExpire   = "deletion.expire"
)

// ChunkCommit is the details of a chunk.commit entry, written in the
// transaction that indexes the chunk (the group commit), so that no
// acknowledged chunk is missing from the log. A packed chunk's entry says
// where its record is.
type ChunkCommit struct {
	Hash        string    `json:"hash"`
	Size        int64     `json:"size"`
	UploadedBy  string    `json:"uploaded_by"`
	StoredAt    time.Time `json:"stored_at"`
	RetainUntil time.Time `json:"retain_until"`
	ChunkSeq    int64     `json:"chunk_seq"`
	PackID      int64     `json:"pack_id,omitempty"`
	PackOffset  int64     `json:"pack_offset,omitempty"`
}

// ChunkRemove is the details of a chunk.remove entry, written by the
// deletion executor in the transaction that removes the chunk's row.
type ChunkRemove struct {
	Hash       string `json:"hash"`
	DeletionID int64  `json:"deletion_id"`
}
