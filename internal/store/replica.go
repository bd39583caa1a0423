package store

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
)

// The replica side of pull replication (issue 19, internal/replica): this
// vault's record of each primary it copies from. What is copied goes
// through the ordinary store paths (PutChunk, CommitSnapshot,
// ExtendSnapshot, PlaceHold) with their checks and audit entries; this
// file keeps the primary's pinned checkpoint key, the last primary
// checkpoint verified, the alarm, and what disappeared from the primary.

// Audit actions of replication, in the replica's own log.
const (
	// ActionReplicaSource: a primary was first used, its checkpoint key pinned.
	ActionReplicaSource = "replica.source"
	// ActionReplicaPass: a pass copied what it lists, as of the primary
	// checkpoint it names.
	ActionReplicaPass = "replica.pass"
	// ActionReplicaAlarm: the primary's log was rolled back or forked.
	ActionReplicaAlarm = "replica.alarm"
	// ActionReplicaAcknowledge: an admin of the replica acknowledged the alarm.
	ActionReplicaAcknowledge = "replica.acknowledge"
)

// ReplicaSource is a primary this vault replicates from.
type ReplicaSource struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// CheckpointKey is the primary's checkpoint verifier key, pinned at
	// first use and never changed.
	CheckpointKey string    `json:"checkpoint_key"`
	CreatedAt     time.Time `json:"created_at"`
	// KeptCheckpoint is the last primary checkpoint verified (a signed
	// note); nil before the first pass and after an acknowledgement.
	KeptCheckpoint []byte `json:"kept_checkpoint,omitempty"`
	KeptSize       int64  `json:"kept_size"`
	// Alarm says why replication stopped; empty while it runs.
	Alarm      string          `json:"alarm,omitempty"`
	AlarmAt    *time.Time      `json:"alarm_at,omitempty"`
	LastPassAt *time.Time      `json:"last_pass_at,omitempty"`
	LastPass   json.RawMessage `json:"last_pass,omitempty"`
}

type replicaSourceRow struct {
	Name           string     `db:"name"`
	URL            string     `db:"url"`
	CheckpointKey  string     `db:"checkpoint_key"`
	CreatedAt      time.Time  `db:"created_at"`
	KeptCheckpoint []byte     `db:"kept_checkpoint"`
	KeptSize       *int64     `db:"kept_size"`
	Alarm          *string    `db:"alarm"`
	AlarmAt        *time.Time `db:"alarm_at"`
	LastPassAt     *time.Time `db:"last_pass_at"`
	LastPass       []byte     `db:"last_pass"`
}

func (r replicaSourceRow) source() ReplicaSource {
	s := ReplicaSource{Name: r.Name, URL: r.URL, CheckpointKey: r.CheckpointKey, CreatedAt: r.CreatedAt.UTC(),
		KeptCheckpoint: r.KeptCheckpoint, AlarmAt: r.AlarmAt, LastPassAt: r.LastPassAt, LastPass: r.LastPass}
	if r.KeptSize != nil {
		s.KeptSize = *r.KeptSize
	}
	if r.Alarm != nil {
		s.Alarm = *r.Alarm
	}
	return s
}

// ReplicaActor is the actor replication's changes are recorded under in
// the replica's log, and the uploader of the chunks it copies.
func ReplicaActor(source string) string { return "replica:" + source }

var replicaNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckReplicaName returns an *InvalidError unless name is 1 to 64
// letters, digits, '.', '_' or '-', starting with a letter or digit.
func CheckReplicaName(name string) error {
	if !replicaNamePattern.MatchString(name) {
		return invalid("source", "%q must be 1 to 64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", name)
	}
	return nil
}

const (
	replicaSourceColumns = `name, url, checkpoint_key, created_at, kept_checkpoint, kept_size, alarm, alarm_at, last_pass_at, last_pass`
	getReplicaSourceSQL  = `SELECT ` + replicaSourceColumns + ` FROM replica_sources WHERE name = $1`
	lockReplicaSourceSQL = getReplicaSourceSQL + ` FOR UPDATE`
	listReplicaSourceSQL = `SELECT ` + replicaSourceColumns + ` FROM replica_sources ORDER BY name`
	insertReplicaSQL     = `
INSERT INTO replica_sources (name, url, checkpoint_key, created_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING`
	updateReplicaURLSQL  = `UPDATE replica_sources SET url = $2 WHERE name = $1 AND url <> $2`
	replicaPassSQL       = `UPDATE replica_sources SET kept_checkpoint = $2, kept_size = $3, last_pass_at = $4, last_pass = $5 WHERE name = $1`
	replicaAlarmSQL      = `UPDATE replica_sources SET alarm = $2, alarm_at = $3 WHERE name = $1 AND alarm IS NULL`
	replicaAckSQL        = `UPDATE replica_sources SET alarm = NULL, alarm_at = NULL, kept_checkpoint = NULL, kept_size = NULL WHERE name = $1`
	insertDisappearedSQL = `
INSERT INTO replica_disappeared (source, kind, item, noticed_at) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING`
	listDisappearedSQL = `
SELECT kind, item, noticed_at FROM replica_disappeared WHERE source = $1 ORDER BY noticed_at, kind, item LIMIT $2`
	countDisappearedSQL = `SELECT count(*) FROM replica_disappeared WHERE source = $1`
	allSnapshotsSQL     = `SELECT ` + snapshotColumns + ` FROM snapshots s ORDER BY s.id`
	uploadedByAfterSQL  = `SELECT hash FROM chunks WHERE uploaded_by = $1 AND hash > $2 ORDER BY hash LIMIT $3`
	holdsPlacedBySQL    = `SELECT ` + holdColumns + ` FROM holds WHERE placed_by = $1 ORDER BY id`
)

// EnsureReplicaSource returns the primary name, recording it with url and
// its checkpoint verifier key on first use (with a replica.source audit
// entry). A later call with another key is refused with ErrConflict: a
// primary's key is pinned once. A changed url is recorded.
func (s *Store) EnsureReplicaSource(ctx context.Context, name, url, checkpointKey string) (ReplicaSource, error) {
	if err := CheckReplicaName(name); err != nil {
		return ReplicaSource{}, err
	}
	op := "replica source " + name
	var out ReplicaSource
	err := s.inTx(ctx, op, func(tx pgx.Tx) error {
		now := s.clk.Now()
		tag, err := tx.Exec(ctx, insertReplicaSQL, name, url, checkpointKey, now)
		if err != nil {
			return sqlErr(op, err)
		}
		if tag.RowsAffected() == 1 {
			details := map[string]any{"source": name, "url": url, "checkpoint_key": checkpointKey}
			if err := s.appendAudit(ctx, tx, now, ReplicaActor(name), ActionReplicaSource, details); err != nil {
				return err
			}
		} else if _, err := tx.Exec(ctx, updateReplicaURLSQL, name, url); err != nil {
			return sqlErr(op, err)
		}
		rows, _ := tx.Query(ctx, getReplicaSourceSQL, name)
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[replicaSourceRow])
		if err != nil {
			return sqlErr(op, err)
		}
		out = row.source()
		if out.CheckpointKey != checkpointKey {
			return fmt.Errorf("store: %s: the primary's checkpoint key %q is not the pinned %q: %w", op, checkpointKey, out.CheckpointKey, ErrConflict)
		}
		return nil
	})
	return out, err
}

// GetReplicaSource returns the primary name, or ErrNotFound.
func (s *Store) GetReplicaSource(ctx context.Context, name string) (ReplicaSource, error) {
	rows, _ := s.pool.Query(ctx, getReplicaSourceSQL, name)
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[replicaSourceRow])
	if err != nil {
		return ReplicaSource{}, sqlErr("replica source "+name, err)
	}
	return row.source(), nil
}

// ReplicaSources lists every primary this vault replicates from.
func (s *Store) ReplicaSources(ctx context.Context) ([]ReplicaSource, error) {
	rows, _ := s.pool.Query(ctx, listReplicaSourceSQL)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[replicaSourceRow])
	if err != nil {
		return nil, sqlErr("replica sources", err)
	}
	out := make([]ReplicaSource, len(list))
	for i, r := range list {
		out[i] = r.source()
	}
	return out, nil
}

// RecordReplicaPass keeps checkpoint (of size entries) as the last
// verified checkpoint of primary name, with the pass's figures, and logs a
// replica.pass entry naming both, in one transaction. An alarm in force
// refuses it (ErrConflict): nothing is recorded past a rollback until it is
// acknowledged.
func (s *Store) RecordReplicaPass(ctx context.Context, name string, checkpoint []byte, size int64, pass any) error {
	op := "record replica pass of " + name
	b, err := json.Marshal(pass)
	if err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return s.inTx(ctx, op, func(tx pgx.Tx) error {
		src, err := lockReplicaSource(ctx, tx, name)
		if err != nil {
			return err
		}
		if src.Alarm != "" {
			return fmt.Errorf("store: %s: an alarm is in force (%s): %w", op, src.Alarm, ErrConflict)
		}
		now := s.clk.Now()
		if _, err := tx.Exec(ctx, replicaPassSQL, name, checkpoint, size, now, b); err != nil {
			return sqlErr(op, err)
		}
		details := map[string]any{"source": name, "checkpoint_size": size, "checkpoint": string(checkpoint), "pass": json.RawMessage(b)}
		return s.appendAudit(ctx, tx, now, ReplicaActor(name), ActionReplicaPass, details)
	})
}

func lockReplicaSource(ctx context.Context, tx pgx.Tx, name string) (ReplicaSource, error) {
	rows, _ := tx.Query(ctx, lockReplicaSourceSQL, name)
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[replicaSourceRow])
	if err != nil {
		return ReplicaSource{}, sqlErr("replica source "+name, err)
	}
	return row.source(), nil
}

// RaiseReplicaAlarm stops replication from primary name until an admin
// acknowledges: the alarm and its replica.alarm audit entry, in one
// transaction. It returns false if an alarm was already in force (the
// first one stands).
func (s *Store) RaiseReplicaAlarm(ctx context.Context, name, reason string) (bool, error) {
	op := "raise replica alarm of " + name
	raised := false
	err := s.inTx(ctx, op, func(tx pgx.Tx) error {
		now := s.clk.Now()
		tag, err := tx.Exec(ctx, replicaAlarmSQL, name, reason, now)
		if err != nil {
			return sqlErr(op, err)
		}
		if raised = tag.RowsAffected() == 1; !raised {
			return nil
		}
		return s.appendAudit(ctx, tx, now, ReplicaActor(name), ActionReplicaAlarm, map[string]any{"source": name, "reason": reason})
	})
	return raised, err
}

// AcknowledgeReplicaAlarm is an admin of this vault accepting that
// primary name's log no longer extends the checkpoint kept: the alarm and
// the kept checkpoint are cleared (the next pass pins the primary's
// current checkpoint), with a replica.acknowledge entry naming actor and
// what was kept. Without an alarm it returns ErrConflict; an unknown
// source ErrNotFound. Nothing copied is touched either way.
func (s *Store) AcknowledgeReplicaAlarm(ctx context.Context, actor, name, reason string) (ReplicaSource, error) {
	op := "acknowledge replica alarm of " + name
	if err := checkText("reason", reason, 1000, true); err != nil {
		return ReplicaSource{}, err
	}
	var out ReplicaSource
	err := s.inTx(ctx, op, func(tx pgx.Tx) error {
		src, err := lockReplicaSource(ctx, tx, name)
		if err != nil {
			return err
		}
		if src.Alarm == "" {
			return fmt.Errorf("store: %s: no alarm is in force: %w", op, ErrConflict)
		}
		now := s.clk.Now()
		if _, err := tx.Exec(ctx, replicaAckSQL, name); err != nil {
			return sqlErr(op, err)
		}
		details := map[string]any{"source": name, "alarm": src.Alarm, "reason": reason,
			"kept_size": src.KeptSize, "kept_checkpoint": string(src.KeptCheckpoint)}
		if err := s.appendAudit(ctx, tx, now, actor, ActionReplicaAcknowledge, details); err != nil {
			return err
		}
		src.Alarm, src.AlarmAt, src.KeptCheckpoint, src.KeptSize = "", nil, nil, 0
		out = src
		return nil
	})
	return out, err
}

// Disappeared is something this vault still holds that its primary no
// longer has.
type Disappeared struct {
	Kind      string    `json:"kind"` // "snapshot" (item: source/name) or "chunk" (item: hash)
	Item      string    `json:"item"`
	NoticedAt time.Time `json:"noticed_at"`
}

// RecordDisappeared records that item of kind ("snapshot" or "chunk")
// disappeared from primary name, and reports whether this is news (the
// first time it is recorded).
func (s *Store) RecordDisappeared(ctx context.Context, name, kind, item string) (bool, error) {
	tag, err := s.pool.Exec(ctx, insertDisappearedSQL, name, kind, item, s.clk.Now())
	if err != nil {
		return false, sqlErr("record disappearance from "+name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReplicaDisappeared returns up to limit disappearances recorded for
// primary name, oldest first, and how many there are in all.
func (s *Store) ReplicaDisappeared(ctx context.Context, name string, limit int) ([]Disappeared, int64, error) {
	rows, _ := s.pool.Query(ctx, listDisappearedSQL, name, limit)
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Disappeared, error) {
		var d Disappeared
		err := r.Scan(&d.Kind, &d.Item, &d.NoticedAt)
		d.NoticedAt = d.NoticedAt.UTC()
		return d, err
	})
	if err != nil {
		return nil, 0, sqlErr("list disappearances from "+name, err)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, countDisappearedSQL, name).Scan(&n); err != nil {
		return nil, 0, sqlErr("count disappearances from "+name, err)
	}
	return list, n, nil
}

// AllSnapshots returns every snapshot this vault has committed, deleted
// ones included (a replica never copies again what its own admins deleted),
// in commit order. Replication compares them with the primary's listing.
func (s *Store) AllSnapshots(ctx context.Context) ([]Snapshot, error) {
	rows, _ := s.pool.Query(ctx, allSnapshotsSQL)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[snapshotRow])
	if err != nil {
		return nil, sqlErr("all snapshots", err)
	}
	out := make([]Snapshot, len(list))
	for i, r := range list {
		out[i] = r.snapshot()
	}
	return out, nil
}

// ChunksUploadedBy returns up to limit hashes of chunks first stored by
// uploader, in hash order after after: a cursor over what a replica copied,
// for checking that the primary still has it.
func (s *Store) ChunksUploadedBy(ctx context.Context, uploader string, after chunk.Hash, limit int) ([]chunk.Hash, error) {
	rows, _ := s.pool.Query(ctx, uploadedByAfterSQL, uploader, after[:], limit)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, sqlErr("chunks uploaded by "+uploader, err)
	}
	out := make([]chunk.Hash, len(keys))
	for i, k := range keys {
		out[i], _ = chunk.FromBytes(k)
	}
	return out, nil
}

// HoldsPlacedBy returns the holds actor placed, in the order placed.
func (s *Store) HoldsPlacedBy(ctx context.Context, actor string) ([]Hold, error) {
	rows, _ := s.pool.Query(ctx, holdsPlacedBySQL, actor)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[holdRow])
	if err != nil {
		return nil, sqlErr("holds placed by "+actor, err)
	}
	out := make([]Hold, len(list))
	for i, r := range list {
		out[i] = r.hold()
	}
	return out, nil
}
