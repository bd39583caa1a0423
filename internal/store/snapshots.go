package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

// Snapshot is a committed snapshot: a named set of chunks, retained at
// least until RetainUntil. Everything but RetainUntil (which only grows) and
// Held (current hold state) is fixed at commit.
type Snapshot struct {
	ID          int64
	Source      string
	Name        string
	TakenAt     time.Time
	CommittedAt time.Time
	CommittedBy string
	RetainUntil time.Time
	Tags        []string
	// ManifestRoot is the root of the manifest tree (docs/manifest.md).
	ManifestRoot chunk.Hash
	// ManifestCount, ChunkCount and TotalBytes count distinct manifests,
	// distinct chunks (manifests included) and their bytes.
	ManifestCount int
	ChunkCount    int64
	TotalBytes    int64
	// Held is true while an active legal hold covers the snapshot, directly
	// or through its source.
	Held bool
}

type snapshotRow struct {
	ID            int64     `db:"id"`
	Source        string    `db:"source"`
	Name          string    `db:"name"`
	TakenAt       time.Time `db:"taken_at"`
	CommittedAt   time.Time `db:"committed_at"`
	CommittedBy   string    `db:"committed_by"`
	RetainUntil   time.Time `db:"retain_until"`
	Tags          []string  `db:"tags"`
	ManifestRoot  []byte    `db:"manifest_root"`
	ManifestCount int       `db:"manifest_count"`
	ChunkCount    int64     `db:"chunk_count"`
	TotalBytes    int64     `db:"total_bytes"`
	Held          bool      `db:"held"`
}

func (r snapshotRow) snapshot() Snapshot {
	root, _ := chunk.FromBytes(r.ManifestRoot) // CHECK guarantees 32 bytes
	tags := r.Tags
	if tags == nil {
		tags = []string{}
	}
	return Snapshot{
		ID: r.ID, Source: r.Source, Name: r.Name, TakenAt: r.TakenAt.UTC(), CommittedAt: r.CommittedAt.UTC(),
		CommittedBy: r.CommittedBy, RetainUntil: r.RetainUntil.UTC(), Tags: tags, ManifestRoot: root,
		ManifestCount: r.ManifestCount, ChunkCount: r.ChunkCount, TotalBytes: r.TotalBytes, Held: r.Held,
	}
}

// snapshotColumns selects a snapshotRow from snapshots aliased s.
const snapshotColumns = `s.id, s.source, s.name, s.taken_at, s.committed_at, s.committed_by, s.retain_until,
	s.tags, s.manifest_root, s.manifest_count, s.chunk_count, s.total_bytes,
	(EXISTS (SELECT FROM hold_snapshots hs JOIN holds h ON h.id = hs.hold_id
	         WHERE hs.snapshot_id = s.id AND h.released_at IS NULL)
	 OR EXISTS (SELECT FROM holds h WHERE h.source = s.source AND h.released_at IS NULL)) AS held`

// NewSnapshot is what an agent commits.
type NewSnapshot struct {
	// Source names what was backed up (a host, a job); Name is chosen by
	// the agent and unique per source.
	Source string
	Name   string
	// TakenAt is when the backup was taken (by the agent's clock).
	TakenAt time.Time
	// RetainUntil is how long the agent asks the snapshot and every chunk
	// it references to be kept at least. Under a retention policy it is
	// optional: the vault keeps the later of it and the policy's date, and
	// refuses a time past the policy's longest term.
	RetainUntil time.Time
	Tags        []string
	// ManifestRoot is the hash of the root manifest chunk.
	ManifestRoot chunk.Hash
}

// CommitResult tells what CommitSnapshot did.
type CommitResult struct {
	Snapshot Snapshot
	// ExtendedChunks counts the referenced chunks whose retention was
	// raised to the snapshot's.
	ExtendedChunks int64
	// Policies name the retention policies that covered the source (none:
	// the agent's retention alone), and Class what the snapshot was under
	// them (daily, weekly, monthly, yearly), by the vault's clock.
	Policies []string
	Class    string
}

// Limits on snapshot fields, also enforced by the database.
const (
	maxTags = 32
	// MaxTakenAhead tolerates agents whose clocks run a little fast. The
	// vault orders and classes snapshots by its own commit time, so
	// taken_at decides nothing; a time further ahead is a broken clock or
	// a forgery, refused.
	MaxTakenAhead = 5 * time.Minute
)

// namePattern is the spelling of sources, snapshot names and tags: what
// host names, job names and timestamps need, and nothing that could be
// confused in a URL, a shell or a log line.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}$`)

func checkName(field, v string) error {
	if !namePattern.MatchString(v) {
		return invalid(field, "%q must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ + = / -, starting with a letter or digit", v)
	}
	return nil
}

// normalizeTags checks tags and returns them sorted without duplicates.
func normalizeTags(tags []string) ([]string, error) {
	out := make([]string, 0, len(tags))
	for i, t := range tags {
		if err := checkName(fmt.Sprintf("tags[%d]", i), t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxTags {
		return nil, invalid("tags", "%d tags, at most %d", len(out), maxTags)
	}
	return out, nil
}

// checkNewSnapshot validates ns against the clock and the retention limits
// and returns it normalized (times in UTC at the database's microsecond
// precision, tags sorted).
func (s *Store) checkNewSnapshot(now time.Time, ns NewSnapshot) (NewSnapshot, error) {
	if err := checkName("source", ns.Source); err != nil {
		return ns, err
	}
	if err := checkName("name", ns.Name); err != nil {
		return ns, err
	}
	tags, err := normalizeTags(ns.Tags)
	if err != nil {
		return ns, err
	}
	ns.Tags = tags
	ns.TakenAt = ns.TakenAt.UTC().Truncate(time.Microsecond)
	ns.RetainUntil = ns.RetainUntil.UTC().Truncate(time.Microsecond)
	switch {
	case ns.TakenAt.IsZero():
		return ns, invalid("taken_at", "is required")
	case ns.TakenAt.After(now.Add(MaxTakenAhead)):
		return ns, invalid("taken_at", "%s is more than %s ahead of the vault's clock (%s)",
			ns.TakenAt.Format(time.RFC3339), MaxTakenAhead, now.UTC().Format(time.RFC3339))
	case ns.RetainUntil.After(now.Add(s.opts.MaxRetention)):
		return ns, invalid("retain_until", "more than %s ahead", s.opts.MaxRetention)
	}
	return ns, nil
}

// snapshotRetention decides how long a snapshot of ns committed at now is
// kept. Without a policy for its source it is the agent's retain_until,
// which must be at least the vault minimum. Under policies it is the later
// of the agent's and the policies' (never below the vault minimum), and an
// agent's time past the policies' longest term is refused: the vault, not
// the agent, decides retention, and agents may only ask for longer. tx
// must hold snapshotsLock when final is true (the class depends on the
// source's last commit); with final false only the bounds are checked.
func (s *Store) snapshotRetention(ctx context.Context, tx pgx.Tx, now time.Time, ns NewSnapshot) (time.Time, SnapshotClass, []string, error) {
	class, until, most, names, ok, err := policyRetention(ctx, tx, ns.Source, now)
	if err != nil {
		return time.Time{}, class, nil, err
	}
	floor := now.Add(s.opts.MinRetention)
	if !ok {
		switch {
		case ns.RetainUntil.IsZero():
			return time.Time{}, class, nil, invalid("retain_until", "is required (no retention policy covers source %q)", ns.Source)
		case ns.RetainUntil.Before(floor):
			return time.Time{}, class, nil, invalid("retain_until", "%s is earlier than the vault minimum (now + %s = %s)",
				ns.RetainUntil.Format(time.RFC3339), s.opts.MinRetention, floor.UTC().Format(time.RFC3339))
		}
		return ns.RetainUntil, class, nil, nil
	}
	if ns.RetainUntil.After(most) {
		return time.Time{}, class, nil, invalid("retain_until", "%s is later than the retention policy of source %q allows "+
			"(%s: at most %s, its longest term from now)", ns.RetainUntil.Format(time.RFC3339), ns.Source,
			strings.Join(names, ", "), most.Format(time.RFC3339))
	}
	return latest(latest(until, ns.RetainUntil), floor.UTC().Truncate(time.Microsecond)), class, names, nil
}

// snapshotsLock serialises the write phase of snapshot commits and
// extensions: each raises the retention of up to millions of chunk rows,
// and two of them locking shared rows in different orders would deadlock.
const snapshotsLock = 0x736e6170 // "snap"

const (
	snapshotExistsSQL = `SELECT EXISTS (SELECT FROM snapshots WHERE source = $1 AND name = $2)`
	createRefsSQL     = `CREATE TEMP TABLE snapshot_refs (hash bytea NOT NULL) ON COMMIT DROP`
	createSetSQL      = `CREATE TEMP TABLE snapshot_set (hash bytea PRIMARY KEY) ON COMMIT DROP`
	fillSetSQL        = `INSERT INTO snapshot_set SELECT DISTINCT hash FROM snapshot_refs ORDER BY hash`
	dropRefsSQL       = `DROP TABLE snapshot_refs`
	setBatchSQL       = `SELECT hash FROM snapshot_set WHERE hash > @after ORDER BY hash LIMIT @n`
	presentBatchSQL   = `SELECT count(*), coalesce(sum(size), 0)::bigint FROM chunks WHERE hash = ANY($1)`
	missingBatchSQL   = `
SELECT u.h FROM unnest($1::bytea[]) AS u(h)
WHERE NOT EXISTS (SELECT FROM chunks c WHERE c.hash = u.h)
ORDER BY u.h LIMIT $2`
	insertSnapshotSQL = `
INSERT INTO snapshots AS s (source, name, taken_at, committed_at, committed_by, retain_until, tags,
                            manifest_root, manifest_count, chunk_count, total_bytes)
VALUES (@source, @name, @taken, @now, @by, @until, @tags, @root, @manifests, @chunks, @bytes)
RETURNING ` + snapshotColumns
	// Extend-only by construction: rows already retained longer are not
	// touched. hash = ANY walks the primary key in order, batch by batch.
	extendBatchSQL = `UPDATE chunks SET retain_until = @until WHERE hash = ANY(@hashes) AND retain_until < @until`
	insertRefsSQL  = `
INSERT INTO snapshot_chunks (snapshot_id, hash, size)
SELECT @id, hash, size FROM chunks WHERE hash = ANY(@hashes)`
)

// CommitSnapshot commits a snapshot for actor. It walks the manifest tree
// from ns.ManifestRoot, checks that every referenced chunk (manifests
// included) is stored, records the references, and raises every referenced
// chunk's retention to at least ns.RetainUntil, with its audit entry, all in
// one transaction: on any error nothing is committed.
//
// It returns an *InvalidError for bad fields, an invalid manifest, a cycle,
// or a tree over the limits; a *MissingChunksError if chunks are not
// stored; ErrConflict if the source already has a snapshot of that name.
//
// Memory does not grow with the number of references: they stream from the
// manifests into a temporary table with COPY, and go back out in batches of
// Options.RetentionBatch.
func (s *Store) CommitSnapshot(ctx context.Context, actor string, ns NewSnapshot) (CommitResult, error) {
	now := s.clk.Now()
	ns, err := s.checkNewSnapshot(now, ns)
	if err != nil {
		return CommitResult{}, err
	}
	// It checks its chunks are stored: not before the start-up checks
	// have compared the index with the journal (online.go).
	if err := s.writeHold(); err != nil {
		return CommitResult{}, err
	}
	var res CommitResult
	var ph commitPhases
	start := time.Now()
	err = s.inTx(ctx, "commit snapshot", func(tx pgx.Tx) error {
		res, err = s.commitSnapshot(ctx, tx, actor, now, ns, &ph)
		return err
	})
	if err != nil {
		return CommitResult{}, err
	}
	s.log.InfoContext(ctx, "snapshot committed", "snapshot_id", res.Snapshot.ID, "source", ns.Source,
		"name", ns.Name, "chunks", res.Snapshot.ChunkCount, "extended", res.ExtendedChunks, "subject", actor,
		"duration", time.Since(start), "walk", ph.walk, "check", ph.check, "write", ph.write, "extend", ph.extend)
	return res, nil
}

// commitPhases times the parts of a commit, for the log: walking the
// manifests into the database, checking the references, writing retention
// and references.
type commitPhases struct{ walk, check, write, extend time.Duration }

func (s *Store) commitSnapshot(ctx context.Context, tx pgx.Tx, actor string, now time.Time, ns NewSnapshot, ph *commitPhases) (CommitResult, error) {
	var exists bool
	if err := tx.QueryRow(ctx, snapshotExistsSQL, ns.Source, ns.Name).Scan(&exists); err != nil {
		return CommitResult{}, sqlErr("look up snapshot", err)
	}
	if exists {
		return CommitResult{}, fmt.Errorf("store: snapshot %q of source %q already exists: %w", ns.Name, ns.Source, ErrConflict)
	}
	// Refuse a bad retention before walking the manifests; it is decided
	// for good under the lock below.
	if _, _, _, err := s.snapshotRetention(ctx, tx, now, ns); err != nil {
		return CommitResult{}, err
	}
	t := time.Now()
	w, err := s.loadRefs(ctx, tx, ns.ManifestRoot, nil)
	if err != nil {
		return CommitResult{}, err
	}
	ph.walk, t = time.Since(t), time.Now()
	chunks, bytes, err := s.checkRefs(ctx, tx)
	if err != nil {
		return CommitResult{}, err
	}
	ph.check, t = time.Since(t), time.Now()

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", snapshotsLock); err != nil {
		return CommitResult{}, sqlErr("lock snapshots", err)
	}
	requested := ns.RetainUntil
	until, class, policies, err := s.snapshotRetention(ctx, tx, now, ns)
	if err != nil {
		return CommitResult{}, err
	}
	ns.RetainUntil = until
	rows, _ := tx.Query(ctx, insertSnapshotSQL, pgx.NamedArgs{
		"source": ns.Source, "name": ns.Name, "taken": ns.TakenAt, "now": now, "by": actor,
		"until": ns.RetainUntil, "tags": ns.Tags, "root": ns.ManifestRoot[:],
		"manifests": w.manifests(), "chunks": chunks, "bytes": bytes,
	})
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[snapshotRow])
	if err != nil {
		return CommitResult{}, sqlErr("insert snapshot", err)
	}
	snap := row.snapshot()

	// Retention first, then the references: the database checks that every
	// inserted reference is already retained as long as its snapshot.
	var extended int64
	err = s.forEachHashBatch(ctx, tx, setBatchSQL, pgx.NamedArgs{}, func(keys [][]byte) error {
		t0 := time.Now()
		tag, err := tx.Exec(ctx, extendBatchSQL, pgx.NamedArgs{"until": ns.RetainUntil, "hashes": keys})
		if err != nil {
			return sqlErr("extend retention", err)
		}
		ph.extend += time.Since(t0)
		extended += tag.RowsAffected()
		tag, err = tx.Exec(ctx, insertRefsSQL, pgx.NamedArgs{"id": snap.ID, "hashes": keys})
		if err != nil {
			return sqlErr("insert references", err)
		}
		if tag.RowsAffected() != int64(len(keys)) {
			// The deletion executor removed a chunk (expired, unreferenced)
			// between the check and now: the agent must upload it again.
			if err := missingIn(ctx, tx, keys); err != nil {
				return err
			}
			return fmt.Errorf("store: insert references: %d rows for %d chunks", tag.RowsAffected(), len(keys))
		}
		return nil
	})
	if err != nil {
		return CommitResult{}, err
	}
	ph.write = time.Since(t)
	details := map[string]any{
		"snapshot_id": snap.ID, "source": snap.Source, "name": snap.Name, "taken_at": snap.TakenAt,
		"retain_until": snap.RetainUntil, "tags": snap.Tags, "manifest_root": snap.ManifestRoot.String(),
		"manifest_count": snap.ManifestCount, "chunk_count": snap.ChunkCount, "total_bytes": snap.TotalBytes,
		"extended_chunks": extended,
	}
	if len(policies) > 0 {
		// Why the snapshot is kept as long as it is: an auditor can
		// recompute it from the policy versions in the log.
		details["policies"], details["class"] = policies, class.String()
		if !requested.IsZero() {
			details["requested_retain_until"] = requested
		}
	}
	err = s.appendAudit(ctx, tx, now, actor, "snapshot.commit", details)
	if err != nil {
		return CommitResult{}, sqlErr("audit", err)
	}
	res := CommitResult{Snapshot: snap, ExtendedChunks: extended, Policies: []string{}}
	if len(policies) > 0 {
		res.Policies, res.Class = policies, class.String()
	}
	return res, nil
}

// loadRefs walks the manifest tree into the temporary table snapshot_set:
// every referenced hash once, in a primary key. It reads manifests with
// read, or the store's readManifest when read is nil (the rebuild passes
// one that steps over unreadable manifests).
func (s *Store) loadRefs(ctx context.Context, tx pgx.Tx, root chunk.Hash, read readManifestFunc) (*walker, error) {
	if read == nil {
		read = func(ctx context.Context, h chunk.Hash) (manifest.Manifest, bool, error) {
			return s.readManifest(ctx, tx, h)
		}
	}
	if _, err := tx.Exec(ctx, createRefsSQL); err != nil {
		return nil, sqlErr("create reference table", err)
	}
	batch := make([]chunk.Hash, 0, s.opts.RetentionBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"snapshot_refs"}, []string{"hash"},
			pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) { return []any{batch[i][:]}, nil }))
		batch = batch[:0]
		return sqlErr("copy references", err)
	}
	w := newWalker(read, s.opts.MaxManifestDepth, s.opts.MaxManifests)
	err := w.walk(ctx, root, func(h chunk.Hash) error {
		batch = append(batch, h)
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return nil, err
	}
	for _, q := range []string{createSetSQL, fillSetSQL, dropRefsSQL} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return nil, sqlErr("deduplicate references", err)
		}
	}
	return w, nil
}

// checkRefs counts the distinct referenced chunks and their bytes, and
// fails with a *MissingChunksError if any is not stored.
func (s *Store) checkRefs(ctx context.Context, tx pgx.Tx) (chunks, bytes int64, err error) {
	missing := &MissingChunksError{}
	err = s.forEachHashBatch(ctx, tx, setBatchSQL, pgx.NamedArgs{}, func(keys [][]byte) error {
		var present, size int64
		if err := tx.QueryRow(ctx, presentBatchSQL, keys).Scan(&present, &size); err != nil {
			return sqlErr("check references", err)
		}
		chunks += present
		bytes += size
		absent := int64(len(keys)) - present
		if absent == 0 {
			return nil
		}
		missing.Total += absent
		if room := MaxMissingReported - len(missing.Hashes); room > 0 {
			rows, _ := tx.Query(ctx, missingBatchSQL, keys, room)
			found, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
			if err != nil {
				return sqlErr("list missing chunks", err)
			}
			for _, b := range found {
				h, _ := chunk.FromBytes(b)
				missing.Hashes = append(missing.Hashes, h)
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if missing.Total > 0 {
		return 0, 0, missing
	}
	return chunks, bytes, nil
}

// missingIn returns a *MissingChunksError naming those of keys (in hash
// order, at most MaxMissingReported) that are not stored, or nil if all
// are.
func missingIn(ctx context.Context, tx pgx.Tx, keys [][]byte) error {
	rows, _ := tx.Query(ctx, missingBatchSQL, keys, len(keys))
	found, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return sqlErr("list missing chunks", err)
	}
	if len(found) == 0 {
		return nil
	}
	missing := &MissingChunksError{Total: int64(len(found))}
	for _, b := range found[:min(len(found), MaxMissingReported)] {
		h, _ := chunk.FromBytes(b)
		missing.Hashes = append(missing.Hashes, h)
	}
	return missing
}

// forEachHashBatch runs query, which must select hash with
// "hash > @after ORDER BY hash LIMIT @n", page by page, and calls fn with
// each page of Options.RetentionBatch hashes.
func (s *Store) forEachHashBatch(ctx context.Context, tx pgx.Tx, query string, args pgx.NamedArgs, fn func(keys [][]byte) error) error {
	a := pgx.NamedArgs{"after": []byte{}, "n": s.opts.RetentionBatch}
	for k, v := range args {
		a[k] = v
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, query, a)
		keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return sqlErr("read references", err)
		}
		if len(keys) == 0 {
			return nil
		}
		if err := fn(keys); err != nil {
			return err
		}
		if len(keys) < s.opts.RetentionBatch {
			return nil
		}
		a["after"] = keys[len(keys)-1]
	}
}

const getSnapshotSQL = `SELECT ` + snapshotColumns + ` FROM snapshots s WHERE s.id = $1`

// GetSnapshot returns snapshot id, or ErrNotFound.
func (s *Store) GetSnapshot(ctx context.Context, id int64) (Snapshot, error) {
	rows, _ := s.pool.Query(ctx, getSnapshotSQL, id)
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[snapshotRow])
	if err != nil {
		return Snapshot{}, dbErr(fmt.Sprintf("get snapshot %d", id), err)
	}
	return row.snapshot(), nil
}

// SnapshotDetail is a snapshot with figures computed when asked.
type SnapshotDetail struct {
	Snapshot
	// UniqueChunks and UniqueBytes count the chunks that no other snapshot
	// references: what this snapshot alone keeps stored.
	UniqueChunks int64
	UniqueBytes  int64
	// Holds are the active holds that cover the snapshot.
	Holds []HoldRef
}

const (
	uniqueSnapshotSQL = `
SELECT count(*), coalesce(sum(sc.size), 0)::bigint FROM snapshot_chunks sc
WHERE sc.snapshot_id = $1
  AND NOT EXISTS (SELECT FROM snapshot_chunks o WHERE o.hash = sc.hash AND o.snapshot_id <> sc.snapshot_id)`
	snapshotHoldsSQL = `
SELECT h.id, h.name, h.reason, 'snapshot' AS via, hs.snapshot_id, '' AS source
FROM hold_snapshots hs JOIN holds h ON h.id = hs.hold_id
WHERE hs.snapshot_id = @id AND h.released_at IS NULL
UNION ALL
SELECT h.id, h.name, h.reason, 'source', 0, h.source
FROM holds h WHERE h.source = @source AND h.released_at IS NULL
ORDER BY 1`
)

// SnapshotDetail returns snapshot id with its unique chunks and bytes and
// its holds, or ErrNotFound. Unique figures read every reference of the
// snapshot (through indexes), so this costs more than GetSnapshot.
func (s *Store) SnapshotDetail(ctx context.Context, id int64) (SnapshotDetail, error) {
	var d SnapshotDetail
	err := s.inReadTx(ctx, fmt.Sprintf("snapshot detail %d", id), func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, getSnapshotSQL, id)
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[snapshotRow])
		if err != nil {
			return sqlErr(fmt.Sprintf("get snapshot %d", id), err)
		}
		d.Snapshot = row.snapshot()
		if err := tx.QueryRow(ctx, uniqueSnapshotSQL, id).Scan(&d.UniqueChunks, &d.UniqueBytes); err != nil {
			return sqlErr("count unique chunks", err)
		}
		rows, _ = tx.Query(ctx, snapshotHoldsSQL, pgx.NamedArgs{"id": id, "source": d.Source})
		d.Holds, err = pgx.CollectRows(rows, pgx.RowToStructByPos[HoldRef])
		return sqlErr("snapshot holds", err)
	})
	return d, err
}

// SnapshotQuery filters and pages ListSnapshots. Zero fields do not filter.
type SnapshotQuery struct {
	Source string
	// TakenFrom (inclusive) and TakenBefore (exclusive) bound taken_at.
	TakenFrom   time.Time
	TakenBefore time.Time
	// Tags: only snapshots carrying every one of them.
	Tags []string
	// Limit is the page size (0: DefaultPageLimit; at most MaxPageLimit).
	Limit int
	// Cursor is SnapshotPage.Next of the previous page, or empty.
	Cursor string
	// SourceScope, when not nil, keeps only the sources that match one of
	// these anchored regular expressions (auth.Scope.SourceRegexps): a
	// scoped reader's view. An empty, non-nil list matches nothing.
	SourceScope []string
}

// SnapshotPage is one page of a snapshot list. Next is empty on the last
// page.
type SnapshotPage struct {
	Snapshots []Snapshot
	Next      string
}

// ListSnapshots returns snapshots newest first by the vault's commit time
// (then id), never by the agent's taken_at,
// filtered by q, one keyset page at a time. A cursor that was altered or
// that belongs to another query is refused with an *InvalidError.
func (s *Store) ListSnapshots(ctx context.Context, q SnapshotQuery) (SnapshotPage, error) {
	limit, err := pageLimit(q.Limit)
	if err != nil {
		return SnapshotPage{}, err
	}
	if q.Source != "" {
		if err := checkName("source", q.Source); err != nil {
			return SnapshotPage{}, err
		}
	}
	tags, err := normalizeTags(q.Tags)
	if err != nil {
		return SnapshotPage{}, err
	}
	from, before := q.TakenFrom.UTC().Truncate(time.Microsecond), q.TakenBefore.UTC().Truncate(time.Microsecond)
	query := fmt.Sprintf("snapshots-by-commit\x00%s\x00%d\x00%d\x00%s", q.Source, unixMicro(from), unixMicro(before), strings.Join(tags, "\x00"))
	if q.SourceScope != nil {
		query += "\x00scope\x00" + strings.Join(q.SourceScope, "\x00")
	}

	var where []string
	args := pgx.NamedArgs{"n": limit + 1}
	if q.Source != "" {
		where = append(where, "s.source = @source")
		args["source"] = q.Source
	}
	if !from.IsZero() {
		where = append(where, "s.taken_at >= @from")
		args["from"] = from
	}
	if !before.IsZero() {
		where = append(where, "s.taken_at < @before")
		args["before"] = before
	}
	if len(tags) > 0 {
		where = append(where, "s.tags @> @tags")
		args["tags"] = tags
	}
	if q.SourceScope != nil {
		where = append(where, "s.source ~ ANY(@source_scope::text[])")
		args["source_scope"] = q.SourceScope
	}
	if q.Cursor != "" {
		k, err := decodeCursor(cursorSnapshots, query, q.Cursor)
		if err != nil {
			return SnapshotPage{}, err
		}
		where = append(where, "(s.committed_at, s.id) < (@after_at, @after_id)")
		args["after_at"], args["after_id"] = k.At, k.ID
	}
	// Deleted snapshots keep their rows (tombstones) but are not listed.
	where = append(where, "s.deleted_at IS NULL")
	// Built from constant fragments only; every value is a parameter.
	sql := `SELECT ` + snapshotColumns + ` FROM snapshots s`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY s.committed_at DESC, s.id DESC LIMIT @n"
	rows, _ := s.pool.Query(ctx, sql, args)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[snapshotRow])
	if err != nil {
		return SnapshotPage{}, dbErr("list snapshots", err)
	}
	page := SnapshotPage{Snapshots: make([]Snapshot, 0, len(list))}
	for _, r := range list[:min(len(list), limit)] {
		page.Snapshots = append(page.Snapshots, r.snapshot())
	}
	if len(list) > limit {
		last := page.Snapshots[limit-1]
		page.Next = encodeCursor(cursorSnapshots, query, cursorKey{At: last.CommittedAt, ID: last.ID})
	}
	return page, nil
}

func unixMicro(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// ExtendResult tells what ExtendSnapshot did.
type ExtendResult struct {
	Snapshot Snapshot
	// Changed is false if the snapshot was already retained until the
	// requested time.
	Changed bool
	// ExtendedChunks counts the referenced chunks whose retention was
	// raised.
	ExtendedChunks int64
}

const (
	lockSnapshotSQL   = `SELECT retain_until FROM snapshots WHERE id = $1 FOR UPDATE`
	snapshotRefsSQL   = `SELECT hash FROM snapshot_chunks WHERE snapshot_id = @id AND hash > @after ORDER BY hash LIMIT @n`
	extendSnapshotSQL = `UPDATE snapshots AS s SET retain_until = @until WHERE s.id = @id RETURNING ` + snapshotColumns
)

// ExtendSnapshot extends snapshot id's retention, and that of every chunk it
// references, to until, with its audit entry, in one transaction. Retention
// is extend-only: an earlier time than the snapshot's is refused with
// ErrRetentionShortened, the same time changes nothing.
func (s *Store) ExtendSnapshot(ctx context.Context, actor string, id int64, until time.Time) (ExtendResult, error) {
	now := s.clk.Now()
	until = until.UTC().Truncate(time.Microsecond)
	switch {
	case until.IsZero():
		return ExtendResult{}, invalid("retain_until", "is required")
	case !until.After(now):
		return ExtendResult{}, invalid("retain_until", "must be in the future")
	case until.After(now.Add(s.opts.MaxRetention)):
		return ExtendResult{}, invalid("retain_until", "more than %s ahead", s.opts.MaxRetention)
	}
	var res ExtendResult
	err := s.inTx(ctx, fmt.Sprintf("extend snapshot %d", id), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", snapshotsLock); err != nil {
			return sqlErr("lock snapshots", err)
		}
		var current time.Time
		if err := tx.QueryRow(ctx, lockSnapshotSQL, id).Scan(&current); err != nil {
			return sqlErr(fmt.Sprintf("get snapshot %d", id), err)
		}
		if until.Before(current) {
			return fmt.Errorf("store: snapshot %d is retained until %s; %s would shorten it: %w",
				id, current.UTC().Format(time.RFC3339Nano), until.Format(time.RFC3339Nano), ErrRetentionShortened)
		}
		if until.Equal(current) {
			rows, _ := tx.Query(ctx, getSnapshotSQL, id)
			row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[snapshotRow])
			res.Snapshot = row.snapshot()
			return sqlErr("get snapshot", err)
		}
		err := s.forEachHashBatch(ctx, tx, snapshotRefsSQL, pgx.NamedArgs{"id": id}, func(keys [][]byte) error {
			tag, err := tx.Exec(ctx, extendBatchSQL, pgx.NamedArgs{"until": until, "hashes": keys})
			res.ExtendedChunks += tag.RowsAffected()
			return sqlErr("extend retention", err)
		})
		if err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, extendSnapshotSQL, pgx.NamedArgs{"id": id, "until": until})
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[snapshotRow])
		if err != nil {
			return sqlErr("extend snapshot", err)
		}
		res.Snapshot, res.Changed = row.snapshot(), true
		return sqlErr("audit", s.appendAudit(ctx, tx, now, actor, "snapshot.retain", map[string]any{
			"snapshot_id": id, "source": res.Snapshot.Source, "name": res.Snapshot.Name,
			"from": current.UTC(), "retain_until": until, "extended_chunks": res.ExtendedChunks,
		}))
	})
	if err != nil {
		return ExtendResult{}, err
	}
	if res.Changed {
		s.log.InfoContext(ctx, "snapshot retention extended", "snapshot_id", id, "retain_until", until,
			"extended", res.ExtendedChunks, "subject", actor)
	}
	return res, nil
}

// inTx runs fn in a transaction and commits it if fn succeeds. fn's errors
// are returned as they are (fn maps database errors where they happen);
// failures to begin or commit are mapped here.
func (s *Store) inTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return sqlErr(op, err)
	}
	defer tx.Rollback(ctx) // a no-op once committed
	if err := fn(tx); err != nil {
		return err
	}
	return sqlErr(op, tx.Commit(ctx))
}

// Transient SQLSTATEs: the transaction lost a race and may simply be
// retried.
const (
	sqlstateSerializationFailure = "40001"
	sqlstateDeadlockDetected     = "40P01"
)

// sqlErr is dbErr, plus: errors that already carry a meaning of the store's
// (a *MissingChunksError, ErrRequiresApproval) pass unchanged, and a lost
// race (deadlock, serialization failure) means "retry" (ErrUnavailable).
func sqlErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var missing *MissingChunksError
	if errors.As(err, &missing) || errors.Is(err, ErrRequiresApproval) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == sqlstateDeadlockDetected || pgErr.Code == sqlstateSerializationFailure) {
		return fmt.Errorf("store: %s: %w: %w", op, ErrUnavailable, err)
	}
	return dbErr(op, err)
}
