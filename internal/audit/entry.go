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
	// ActionExpiryRun starts a run of an expiry authorisation in force:
	// a request of kind expired that takes its authority from the
	// authorisation (ExpiryRun). ActionExpiryRefused records a run refused
	// above its ceiling; it changes nothing.
	ActionExpiryRun     = "expiry.run"
	ActionExpiryRefused = "expiry.refused"
	// Damage found and healed (scrub and self-healing): they change no
	// rule of the replay, and are kept so that auditors see every
	// detection, repair and finished scrub pass.
	ActionChunkDamage = "chunk.damage"
	ActionChunkRepair = "chunk.repair"
	ActionScrubPass   = "scrub.pass"
)

// ChunkDamage is the details of a chunk.damage entry: a chunk's stored
// copy was found not to match its address, or gone. Its row, retention and
// holds are unchanged; agents are told it is missing until a verified
// re-upload repairs it.
type ChunkDamage struct {
	Hash       string `json:"hash"`
	DamageID   int64  `json:"damage_id"`
	DetectedBy string `json:"detected_by"` // scrub, read
	Location   string `json:"location"`    // file, pack
	Detail     string `json:"detail"`
}

// ChunkRepair is the details of a chunk.repair entry: an upload whose
// bytes hash to the address restored a damaged chunk.
type ChunkRepair struct {
	Hash     string `json:"hash"`
	DamageID int64  `json:"damage_id"`
	// How: "rewritten" (a fresh file written from the upload) or
	// "verified" (the stored copy verifies after all, so nothing was
	// written).
	How string `json:"how"`
}

// ScrubPass is the details of a scrub.pass entry, written when a full
// scrub pass finishes.
type ScrubPass struct {
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Chunks     int64     `json:"chunks"`
	Bytes      int64     `json:"bytes"`
	Damaged    int64     `json:"damaged"`
	Unindexed  int64     `json:"unindexed"`
}

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

// ExpiryRun is the details of an expiry.run entry.
type ExpiryRun struct {
	DeletionID      int64  `json:"deletion_id"`
	AuthorisationID int64  `json:"authorisation_id"`
	Digest          string `json:"digest"`
	Targets         string `json:"targets"`
}

// ChunkRemove is the details of a chunk.remove entry, written by the
// deletion executor in the transaction that removes the chunk's row.
type ChunkRemove struct {
	Hash       string `json:"hash"`
	DeletionID int64  `json:"deletion_id"`
}
