package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
)

// What a hold covers.
const (
	HoldChunks    = "chunks"    // listed chunks
	HoldSnapshots = "snapshots" // listed snapshots and every chunk they reference
	HoldSource    = "source"    // every snapshot of a source, present and future
)

// Hold is a legal hold: while it is active (not released), nothing it covers
// may be deleted, whatever its retention.
type Hold struct {
	ID     int64
	Name   string
	Reason string
	// Kind is HoldChunks, HoldSnapshots or HoldSource; Source is set for
	// HoldSource.
	Kind        string
	Source      string
	TargetCount int
	PlacedBy    string
	PlacedAt    time.Time
	// ReleasedAt is nil while the hold is active. Release goes through an
	// approved deletion request (not built yet).
	ReleasedAt *time.Time
	ReleasedBy string
}

type holdRow struct {
	ID          int64      `db:"id"`
	Name        string     `db:"name"`
	Reason      string     `db:"reason"`
	Kind        string     `db:"target_kind"`
	Source      *string    `db:"source"`
	TargetCount int        `db:"target_count"`
	PlacedBy    string     `db:"placed_by"`
	PlacedAt    time.Time  `db:"placed_at"`
	ReleasedAt  *time.Time `db:"released_at"`
	ReleasedBy  *string    `db:"released_by"`
}

func (r holdRow) hold() Hold {
	h := Hold{ID: r.ID, Name: r.Name, Reason: r.Reason, Kind: r.Kind, TargetCount: r.TargetCount,
		PlacedBy: r.PlacedBy, PlacedAt: r.PlacedAt.UTC()}
	if r.Source != nil {
		h.Source = *r.Source
	}
	if r.ReleasedAt != nil {
		t := r.ReleasedAt.UTC()
		h.ReleasedAt = &t
	}
	if r.ReleasedBy != nil {
		h.ReleasedBy = *r.ReleasedBy
	}
	return h
}

const holdColumns = "id, name, reason, target_kind, source, target_count, placed_by, placed_at, released_at, released_by"

// HoldDetail is a hold with its targets.
type HoldDetail struct {
	Hold
	Chunks    []chunk.Hash // HoldChunks: the held chunks, in hash order
	Snapshots []int64      // HoldSnapshots: the held snapshot ids, ascending
}

// HoldRef is an active hold as it applies to one chunk or snapshot: Via
// says how ("chunk", "snapshot" with SnapshotID, or "source" with Source).
type HoldRef struct {
	ID         int64
	Name       string
	Reason     string
	Via        string
	SnapshotID int64
	Source     string
}

// NewHold is a hold to place: a name and reason, and exactly one of
// Chunks, Snapshots or Source.
type NewHold struct {
	Name      string
	Reason    string
	Chunks    []chunk.Hash
	Snapshots []int64
	Source    string
}

// checkText accepts 1 to max characters of printable text (and, if
// multiline, newlines and tabs).
func checkText(field, v string, max int, multiline bool) error {
	if strings.TrimSpace(v) == "" {
		return invalid(field, "is required")
	}
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > max {
		return invalid(field, "must be valid UTF-8, at most %d characters", max)
	}
	for _, r := range v {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t')) {
			return invalid(field, "contains a control character")
		}
	}
	return nil
}

const (
	insertHoldSQL = `
INSERT INTO holds (name, reason, target_kind, source, target_count, placed_by, placed_at)
VALUES (@name, @reason, @kind, @source, @count, @by, @now)
RETURNING ` + holdColumns
	insertHoldChunksSQL    = `INSERT INTO hold_chunks (hold_id, hash) SELECT $1, unnest($2::bytea[])`
	insertHoldSnapshotsSQL = `INSERT INTO hold_snapshots (hold_id, snapshot_id) SELECT $1, unnest($2::bigint[])`
	unknownSnapshotsSQL    = `
SELECT u.id FROM unnest($1::bigint[]) AS u(id)
WHERE NOT EXISTS (SELECT FROM snapshots s WHERE s.id = u.id) ORDER BY u.id`
	sourceExistsSQL = `SELECT EXISTS (SELECT FROM snapshots WHERE source = $1)`
)

// PlaceHold places a legal hold for actor, with its audit entry, in one
// transaction. Holding something unknown is refused: chunks that are not
// stored with a *MissingChunksError, unknown snapshots or a source without
// snapshots with ErrNotFound.
func (s *Store) PlaceHold(ctx context.Context, actor string, nh NewHold) (HoldDetail, error) {
	now := s.clk.Now()
	if err := checkText("name", nh.Name, 200, false); err != nil {
		return HoldDetail{}, err
	}
	if err := checkText("reason", nh.Reason, 2000, true); err != nil {
		return HoldDetail{}, err
	}
	var kind string
	var count int
	n := 0
	if len(nh.Chunks) > 0 {
		n++
		kind = HoldChunks
		nh.Chunks = dedup(nh.Chunks)
		slices.SortFunc(nh.Chunks, func(a, b chunk.Hash) int { return strings.Compare(string(a[:]), string(b[:])) })
		count = len(nh.Chunks)
	}
	if len(nh.Snapshots) > 0 {
		n++
		kind = HoldSnapshots
		slices.Sort(nh.Snapshots)
		nh.Snapshots = slices.Compact(nh.Snapshots)
		count = len(nh.Snapshots)
	}
	if nh.Source != "" {
		n++
		kind = HoldSource
		count = 1
		if err := checkName("source", nh.Source); err != nil {
			return HoldDetail{}, err
		}
	}
	if n != 1 {
		return HoldDetail{}, invalid("target", "name exactly one of chunks, snapshots or source")
	}
	if count > s.opts.MaxBatch {
		return HoldDetail{}, invalid(kind, "%d targets, at most %d per hold", count, s.opts.MaxBatch)
	}
	var d HoldDetail
	err := s.inTx(ctx, "place hold", func(tx pgx.Tx) error {
		if err := checkHoldTargets(ctx, tx, kind, nh); err != nil {
			return err
		}
		var source *string
		if kind == HoldSource {
			source = &nh.Source
		}
		rows, _ := tx.Query(ctx, insertHoldSQL, pgx.NamedArgs{
			"name": nh.Name, "reason": nh.Reason, "kind": kind, "source": source, "count": count, "by": actor, "now": now,
		})
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[holdRow])
		if err != nil {
			return sqlErr("insert hold", err)
		}
		d = HoldDetail{Hold: row.hold(), Chunks: nh.Chunks, Snapshots: nh.Snapshots}
		details := map[string]any{"hold_id": d.ID, "name": d.Name, "reason": d.Reason, "kind": kind}
		switch kind {
		case HoldChunks:
			keys := make([][]byte, len(nh.Chunks))
			list := make([]string, len(nh.Chunks))
			for i := range nh.Chunks {
				keys[i], list[i] = nh.Chunks[i][:], nh.Chunks[i].String()
			}
			if _, err := tx.Exec(ctx, insertHoldChunksSQL, d.ID, keys); err != nil {
				return sqlErr("hold chunks", err)
			}
			details["chunks"] = list
		case HoldSnapshots:
			if _, err := tx.Exec(ctx, insertHoldSnapshotsSQL, d.ID, nh.Snapshots); err != nil {
				return sqlErr("hold snapshots", err)
			}
			details["snapshots"] = nh.Snapshots
		case HoldSource:
			details["source"] = nh.Source
		}
		return sqlErr("audit", s.appendAudit(ctx, tx, now, actor, "hold.place", details))
	})
	if err != nil {
		return HoldDetail{}, err
	}
	s.log.InfoContext(ctx, "legal hold placed", "hold_id", d.ID, "kind", kind, "targets", count, "subject", actor)
	return d, nil
}

func checkHoldTargets(ctx context.Context, tx pgx.Tx, kind string, nh NewHold) error {
	switch kind {
	case HoldChunks:
		keys := make([][]byte, len(nh.Chunks))
		for i := range nh.Chunks {
			keys[i] = nh.Chunks[i][:]
		}
		return missingIn(ctx, tx, keys)
	case HoldSnapshots:
		rows, _ := tx.Query(ctx, unknownSnapshotsSQL, nh.Snapshots)
		unknown, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return sqlErr("look up snapshots", err)
		}
		if len(unknown) > 0 {
			return fmt.Errorf("store: place hold: snapshots %v: %w", unknown, ErrNotFound)
		}
	case HoldSource:
		var ok bool
		if err := tx.QueryRow(ctx, sourceExistsSQL, nh.Source).Scan(&ok); err != nil {
			return sqlErr("look up source", err)
		}
		if !ok {
			return fmt.Errorf("store: place hold: source %q has no snapshots: %w", nh.Source, ErrNotFound)
		}
	}
	return nil
}

// HoldPage is one page of holds. Next is empty on the last page.
type HoldPage struct {
	Holds []Hold
	Next  string
}

const (
	listHoldsSQL     = `SELECT ` + holdColumns + ` FROM holds WHERE id > $1 ORDER BY id LIMIT $2`
	getHoldSQL       = `SELECT ` + holdColumns + ` FROM holds WHERE id = $1`
	holdChunkListSQL = `SELECT hash FROM hold_chunks WHERE hold_id = $1 ORDER BY hash`
	holdSnapshotsSQL = `SELECT snapshot_id FROM hold_snapshots WHERE hold_id = $1 ORDER BY snapshot_id`
	holdsQueryDigest = "holds"
)

// ListHolds returns holds in the order they were placed, active and
// released, one keyset page at a time.
func (s *Store) ListHolds(ctx context.Context, limit int, cursor string) (HoldPage, error) {
	limit, err := pageLimit(limit)
	if err != nil {
		return HoldPage{}, err
	}
	var after int64
	if cursor != "" {
		k, err := decodeCursor(cursorHolds, holdsQueryDigest, cursor)
		if err != nil {
			return HoldPage{}, err
		}
		after = k.ID
	}
	rows, _ := s.pool.Query(ctx, listHoldsSQL, after, limit+1)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[holdRow])
	if err != nil {
		return HoldPage{}, dbErr("list holds", err)
	}
	page := HoldPage{Holds: make([]Hold, 0, len(list))}
	for _, r := range list[:min(len(list), limit)] {
		page.Holds = append(page.Holds, r.hold())
	}
	if len(list) > limit {
		page.Next = encodeCursor(cursorHolds, holdsQueryDigest, cursorKey{ID: page.Holds[limit-1].ID})
	}
	return page, nil
}

// GetHold returns hold id with its targets, or ErrNotFound.
func (s *Store) GetHold(ctx context.Context, id int64) (HoldDetail, error) {
	var d HoldDetail
	err := s.inReadTx(ctx, fmt.Sprintf("get hold %d", id), func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, getHoldSQL, id)
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[holdRow])
		if err != nil {
			return sqlErr(fmt.Sprintf("get hold %d", id), err)
		}
		d.Hold = row.hold()
		switch d.Kind {
		case HoldChunks:
			rows, _ := tx.Query(ctx, holdChunkListSQL, id)
			keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
			if err != nil {
				return sqlErr("held chunks", err)
			}
			d.Chunks = make([]chunk.Hash, len(keys))
			for i, b := range keys {
				d.Chunks[i], _ = chunk.FromBytes(b)
			}
		case HoldSnapshots:
			rows, _ := tx.Query(ctx, holdSnapshotsSQL, id)
			if d.Snapshots, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
				return sqlErr("held snapshots", err)
			}
		}
		return nil
	})
	return d, err
}
