package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
)

// The journal's replay: each entry's change applied to the index as the
// writer that logged it applied it, in the journal's order. The SQL mirrors
// the writers' (chunks.go, snapshots.go, holds.go, deletions.go, admins.go,
// executor.go, restic.go, tokens.go); where a writer's statement can be
// reused it is.

// replayBatch bounds the entries written per statement.
const replayBatch = 2000

// errEntry marks an entry whose details do not decode: a divergence.
var errEntry = errors.New("entry does not decode")

type replayCommit struct {
	c    audit.ChunkCommit
	hash chunk.Hash
	leaf int64
}

type replayRemove struct {
	hash       chunk.Hash
	at         time.Time
	deletionID int64
	seq        int64
}

// replay writes every journal entry into the audit log and applies it.
func (r *reindexer) replay(ctx context.Context) error {
	r.commitSeen = map[[32]byte]bool{}
	err := r.s.opts.Journal.Scan(1, func(seq int64, p []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		payload := append([]byte(nil), p...)
		r.pending = append(r.pending, payload)
		e, err := audit.ParseEntry(seq-1, payload)
		if err != nil {
			// writeEntries refuses it too: the journal is damaged.
			return fmt.Errorf("journal entry %d: %w", seq, err)
		}
		if err := r.apply(ctx, e); err != nil {
			return err
		}
		if len(r.pending) >= replayBatch {
			return r.writeAudit(ctx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay the journal: %w", err)
	}
	if err := r.flush(ctx); err != nil {
		return err
	}
	if err := r.writeAudit(ctx); err != nil {
		return err
	}
	if r.head.seq != r.rep.JournalEntries {
		return fmt.Errorf("replayed %d entries of the journal's %d", r.head.seq, r.rep.JournalEntries)
	}
	return nil
}

// writeAudit inserts the pending entries verbatim, with their tree hashes
// and hash-chain links.
func (r *reindexer) writeAudit(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	if err := writeEntries(ctx, r.tx, r.head, r.pending); err != nil {
		return fmt.Errorf("write the audit log: %w", err)
	}
	h := r.head.hash
	for _, p := range r.pending {
		h = auditHash(h, string(p))
	}
	r.head = auditHead{seq: r.head.seq + int64(len(r.pending)), hash: h, payload: string(r.pending[len(r.pending)-1])}
	r.pending = r.pending[:0]
	return nil
}

// apply applies one entry. Chunk commits and removals are queued and
// applied in batches; anything else first flushes the queues, then runs
// in a savepoint: an entry that cannot be applied is a divergence, rolled
// back alone, and the replay goes on (its audit entry is still written:
// the log is the journal's, whatever the index makes of it).
func (r *reindexer) apply(ctx context.Context, e audit.Entry) error {
	switch e.Action {
	case audit.ActionChunkCommit:
		var c audit.ChunkCommit
		if err := json.Unmarshal(e.Details, &c); err != nil {
			r.divergence(ctx, "entry %d (%s): %v", e.Seq, e.Action, err)
			return nil
		}
		h, err := chunk.ParseHash(c.Hash)
		if err != nil {
			r.divergence(ctx, "entry %d (%s): %v", e.Seq, e.Action, err)
			return nil
		}
		return r.queueCommit(ctx, replayCommit{c: c, hash: h, leaf: e.Seq - 1})
	case audit.ActionChunkRemove:
		var d audit.ChunkRemove
		err := json.Unmarshal(e.Details, &d)
		var h chunk.Hash
		if err == nil {
			h, err = chunk.ParseHash(d.Hash)
		}
		if err != nil {
			r.divergence(ctx, "entry %d (%s): %v", e.Seq, e.Action, err)
			return nil
		}
		return r.queueRemove(ctx, replayRemove{hash: h, at: e.At, deletionID: d.DeletionID, seq: e.Seq})
	}
	if r.apply1 == nil {
		r.apply1 = r.appliers()
	}
	fn := r.apply1[e.Action]
	if fn == nil {
		return nil // an entry that records but changes nothing in the index
	}
	if err := r.flush(ctx); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, r.tx, func(tx pgx.Tx) error { return fn(ctx, tx, e) })
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errEntry), errors.As(err, &pgErr):
		r.divergence(ctx, "entry %d (%s) could not be applied: %v", e.Seq, e.Action, err)
		return nil
	default:
		return fmt.Errorf("entry %d (%s): %w", e.Seq, e.Action, err)
	}
}

type applier func(ctx context.Context, tx pgx.Tx, e audit.Entry) error

func (r *reindexer) appliers() map[string]applier {
	return map[string]applier{
		audit.ActionChunkRetain:      r.chunkRetain,
		audit.ActionSnapshotCommit:   r.snapshotCommit,
		audit.ActionSnapshotRetain:   r.snapshotRetain,
		"hold.place":                 r.holdPlace,
		audit.ActionGenesis:          r.adminSet,
		audit.ActionAdminSetChange:   r.adminSet,
		audit.ActionDeletionRequest:  r.deletionRequest,
		audit.ActionDeletionSign:     r.deletionSign,
		audit.ActionDeletionApprove:  r.deletionApprove,
		audit.ActionDeletionSchedule: r.deletionSchedule,
		audit.ActionDeletionCancel:   r.deletionCancel,
		audit.ActionDeletionExpire:   r.deletionState,
		audit.ActionDeletionExecute:  r.deletionState,
		audit.ActionDeletionRefused:  r.deletionState,
		audit.ActionDeletionExecuted: r.deletionExecuted,
		audit.ActionExpiryRun:        r.expiryRun,
		audit.ActionExpiryRefused:    r.expiryRun,
		"token.revoke":               r.tokenRevoke,
		"retention_policy.set":       r.retentionPolicy,
		"retention_policy.change":    r.retentionPolicy,
		"restic.repository.create":   r.resticCreate,
		audit.ActionResticRetention:  r.resticRetention,
		"restic.file":                r.resticFile,
		"restic.retain":              r.resticRetain,
		// Other entries (admin_set.skipped, deletion.*.refused) record
		// what changed nothing.
	}
}

func decode(e audit.Entry, v any) error {
	if err := json.Unmarshal(e.Details, v); err != nil {
		return fmt.Errorf("%w: %w", errEntry, err)
	}
	return nil
}

// affected fails unless tag changed a row: an entry about something the
// rebuilt index does not have.
func affected(tag pgconn.CommandTag, err error, what string) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s", errEntry, what)
	}
	return nil
}

// flush applies the queued chunk commits or removals.
func (r *reindexer) flush(ctx context.Context) error {
	if err := r.flushCommits(ctx); err != nil {
		return err
	}
	return r.flushRemoves(ctx)
}

func (r *reindexer) queueCommit(ctx context.Context, c replayCommit) error {
	if len(r.removes) > 0 || r.commitSeen[c.hash] || len(r.commits) >= replayBatch {
		if err := r.flush(ctx); err != nil {
			return err
		}
	}
	r.commitSeen[c.hash] = true
	r.commits = append(r.commits, c)
	return nil
}

func (r *reindexer) queueRemove(ctx context.Context, d replayRemove) error {
	if len(r.commits) > 0 || len(r.removes) >= replayBatch {
		if err := r.flush(ctx); err != nil {
			return err
		}
	}
	r.removes = append(r.removes, d)
	return nil
}

// A commit of a chunk the index already has (the journal never holds one
// without a removal in between) keeps the greater retention, as
// rollForward does; the row's identity stays the first's.
const replayCommitsSQL = `
INSERT INTO chunks (seq, hash, size, stored_at, retain_until, uploaded_by, pack_id, pack_offset)
OVERRIDING SYSTEM VALUE
SELECT coalesce(nullif(u.seq, 0), nextval(pg_get_serial_sequence('chunks', 'seq'))), u.hash, u.size, u.stored,
       u.until, u.by, u.pack, u.off
FROM unnest(@seq::bigint[], @hash::bytea[], @size::bigint[], @stored::timestamptz[], @until::timestamptz[],
            @by::text[], @pack::bigint[], @off::bigint[]) AS u(seq, hash, size, stored, until, by, pack, off)
ON CONFLICT (hash) DO UPDATE SET retain_until = greatest(chunks.retain_until, excluded.retain_until)
RETURNING hash, seq, (xmax <> 0) AS again`

func (r *reindexer) flushCommits(ctx context.Context) error {
	if len(r.commits) == 0 {
		return nil
	}
	n := len(r.commits)
	seqs, sizes, hashes := make([]int64, n), make([]int64, n), make([][]byte, n)
	stored, until, by := make([]time.Time, n), make([]time.Time, n), make([]string, n)
	packs, offs := make([]*int64, n), make([]*int64, n)
	leafOf := make(map[[32]byte]int64, n)
	for i, rc := range r.commits {
		c := rc.c
		seqs[i], sizes[i], hashes[i] = c.ChunkSeq, c.Size, rc.hash[:]
		stored[i], until[i], by[i] = c.StoredAt, c.RetainUntil, c.UploadedBy
		if c.PackID != 0 {
			packs[i], offs[i] = &c.PackID, &c.PackOffset
		}
		leafOf[rc.hash] = rc.leaf
	}
	rows, _ := r.tx.Query(ctx, replayCommitsSQL, pgx.NamedArgs{"seq": seqs, "hash": hashes, "size": sizes,
		"stored": stored, "until": until, "by": by, "pack": packs, "off": offs})
	type inserted struct {
		Hash  []byte `db:"hash"`
		Seq   int64  `db:"seq"`
		Again bool   `db:"again"`
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[inserted])
	if err != nil {
		return fmt.Errorf("replay chunk commits: %w", err)
	}
	var linkSeqs, linkLeaves []int64
	var linkHashes [][]byte
	for _, g := range got {
		h, _ := chunk.FromBytes(g.Hash)
		if g.Again {
			r.note(ctx, "chunk %s is committed again (entry %d) without a removal in between: kept once, with the greater retention",
				h, leafOf[h]+1)
		}
		linkSeqs, linkHashes, linkLeaves = append(linkSeqs, g.Seq), append(linkHashes, g.Hash), append(linkLeaves, leafOf[h])
	}
	if _, err := r.tx.Exec(ctx, `INSERT INTO audit_chunks (chunk_seq, hash, leaf)
		SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) ON CONFLICT DO NOTHING`,
		linkSeqs, linkHashes, linkLeaves); err != nil {
		return fmt.Errorf("replay chunk commits: link entries: %w", err)
	}
	r.commits = r.commits[:0]
	clear(r.commitSeen)
	return nil
}

// The tombstone is what chunks_guard_delete writes when the executor
// deletes a row (migrations/005).
const replayRemovesSQL = `
WITH k AS (
    SELECT DISTINCT ON (hash) hash, at, did FROM unnest(@hash::bytea[], @at::timestamptz[], @did::bigint[]) AS u(hash, at, did)
    ORDER BY hash, at),
gone AS (DELETE FROM chunks c USING k WHERE c.hash = k.hash
         RETURNING c.hash, c.size, c.stored_at, c.uploaded_by, c.pack_id, c.pack_offset, k.at, k.did)
INSERT INTO chunk_tombstones (hash, size, stored_at, uploaded_by, pack_id, pack_offset, deleted_at, deletion_id)
SELECT hash, size, stored_at, uploaded_by, pack_id, pack_offset, at, did FROM gone
RETURNING hash`

func (r *reindexer) flushRemoves(ctx context.Context) error {
	if len(r.removes) == 0 {
		return nil
	}
	n := len(r.removes)
	hashes, ats, dids := make([][]byte, n), make([]time.Time, n), make([]int64, n)
	for i, d := range r.removes {
		hashes[i], ats[i], dids[i] = d.hash[:], d.at, d.deletionID
	}
	var got [][]byte
	err := pgx.BeginFunc(ctx, r.tx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, replayRemovesSQL, pgx.NamedArgs{"hash": hashes, "at": ats, "did": dids})
		var err error
		got, err = pgx.CollectRows(rows, pgx.RowTo[[]byte])
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && n > 1 {
		// One of them cannot be applied (a removal by a request the
		// rebuilt index does not have): apply them one by one.
		all := slices.Clone(r.removes)
		for _, d := range all {
			r.removes = append(r.removes[:0], d)
			if err := r.flushRemoves(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	if errors.As(err, &pgErr) {
		r.divergence(ctx, "entry %d (removal of chunk %s) could not be applied: %v", r.removes[0].seq, r.removes[0].hash, err)
		r.removes = r.removes[:0]
		return nil
	}
	if err != nil {
		return fmt.Errorf("replay chunk removals: %w", err)
	}
	done := make(map[string]bool, len(got))
	for _, h := range got {
		done[string(h)] = true
	}
	for _, d := range r.removes {
		if !done[string(d.hash[:])] {
			r.divergence(ctx, "entry %d removes chunk %s, which the rebuilt index does not have", d.seq, d.hash)
		}
		done[string(d.hash[:])] = false // one removal per row
	}
	r.removes = r.removes[:0]
	return nil
}

func (r *reindexer) chunkRetain(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		RetainUntil time.Time `json:"retain_until"`
		Hashes      []string  `json:"hashes"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	keys, err := parseHashes(d.Hashes)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, extendRetentionSQL, pgx.NamedArgs{"until": d.RetainUntil, "hashes": keys})
	return err
}

func parseHashes(list []string) ([][]byte, error) {
	keys := make([][]byte, len(list))
	for i, s := range list {
		h, err := chunk.ParseHash(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errEntry, err)
		}
		keys[i] = h[:]
	}
	return keys, nil
}

func (r *reindexer) snapshotCommit(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID            int64     `json:"snapshot_id"`
		Source        string    `json:"source"`
		Name          string    `json:"name"`
		TakenAt       time.Time `json:"taken_at"`
		RetainUntil   time.Time `json:"retain_until"`
		Tags          []string  `json:"tags"`
		ManifestRoot  string    `json:"manifest_root"`
		ManifestCount int       `json:"manifest_count"`
		ChunkCount    int64     `json:"chunk_count"`
		TotalBytes    int64     `json:"total_bytes"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	root, err := chunk.ParseHash(d.ManifestRoot)
	if err != nil {
		return fmt.Errorf("%w: %w", errEntry, err)
	}
	if d.Tags == nil {
		d.Tags = []string{}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO snapshots (id, source, name, taken_at, committed_at, committed_by, retain_until,
			tags, manifest_root, manifest_count, chunk_count, total_bytes)
		OVERRIDING SYSTEM VALUE
		VALUES (@id, @source, @name, @taken, @at, @by, @until, @tags, @root, @manifests, @chunks, @bytes)`, pgx.NamedArgs{
		"id": d.ID, "source": d.Source, "name": d.Name, "taken": d.TakenAt, "at": e.At, "by": e.Actor,
		"until": d.RetainUntil, "tags": d.Tags, "root": root[:], "manifests": d.ManifestCount,
		"chunks": d.ChunkCount, "bytes": d.TotalBytes,
	}); err != nil {
		return err
	}
	// The references, walked from the content as the commit walked them,
	// and the retention they give: in a savepoint of their own, so that a
	// tree that cannot be walked leaves the snapshot's row.
	var refs int64
	var manifests int
	var unreadable []chunk.Hash
	err = pgx.BeginFunc(ctx, tx, func(tx pgx.Tx) error {
		var err error
		refs, manifests, unreadable, err = r.snapshotRefs(ctx, tx, d.ID, root, d.RetainUntil)
		return err
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		r.incomplete = append(r.incomplete, d.ID)
		r.note(ctx, "snapshot %d (%s/%s): its manifest tree cannot be walked (%v): no references rebuilt", d.ID, d.Source, d.Name, err)
	case len(unreadable) > 0 || refs != d.ChunkCount || manifests != d.ManifestCount:
		r.incomplete = append(r.incomplete, d.ID)
		r.note(ctx, "snapshot %d (%s/%s): %d references and %d manifests rebuilt, the commit recorded %d and %d "+
			"(%d manifests unreadable, e.g. %v): later removals or data loss", d.ID, d.Source, d.Name, refs, manifests,
			d.ChunkCount, d.ManifestCount, len(unreadable), unreadable[:min(len(unreadable), 3)])
	}
	return nil
}

// snapshotRefs walks the manifest tree under root from the stored content,
// raises the referenced chunks' retention to until and records the
// references (as commitSnapshot does), and returns how many references and
// manifests it found and which manifests it could not read. A manifest
// whose content is missing or damaged is not descended into.
func (r *reindexer) snapshotRefs(ctx context.Context, tx pgx.Tx, id int64, root chunk.Hash, until time.Time) (int64, int, []chunk.Hash, error) {
	var unreadable []chunk.Hash
	w, err := r.s.loadRefs(ctx, tx, root, func(ctx context.Context, h chunk.Hash) (manifest.Manifest, bool, error) {
		m, found, err := r.readManifest(ctx, tx, h)
		if errors.Is(err, errUnreadable) {
			unreadable = append(unreadable, h)
			return manifest.Manifest{}, false, nil
		}
		return m, found, err
	})
	if err != nil {
		return 0, 0, nil, err
	}
	var refs int64
	err = r.s.forEachHashBatch(ctx, tx, setBatchSQL, pgx.NamedArgs{}, func(keys [][]byte) error {
		if _, err := tx.Exec(ctx, extendBatchSQL, pgx.NamedArgs{"until": until, "hashes": keys}); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, insertRefsSQL, pgx.NamedArgs{"id": id, "hashes": keys})
		refs += tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, 0, nil, err
	}
	if _, err := tx.Exec(ctx, "DROP TABLE snapshot_set"); err != nil {
		return 0, 0, nil, err
	}
	return refs, w.manifests() - len(unreadable), unreadable, nil
}

// errUnreadable: a manifest whose content cannot be read back whole and
// verified.
var errUnreadable = errors.New("manifest content missing or damaged")

// readManifest is Store.readManifest for the replay: a manifest's content
// may be gone for good reason (removed later in the journal), so it is
// reported to the walk, not logged as data loss (the content check, after
// the replay, reports what the rebuilt index lacks).
func (r *reindexer) readManifest(ctx context.Context, tx pgx.Tx, h chunk.Hash) (manifest.Manifest, bool, error) {
	rows, _ := tx.Query(ctx, statChunkSQL, h[:])
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[chunkRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return manifest.Manifest{}, false, nil
	}
	if err != nil {
		return manifest.Manifest{}, false, err
	}
	c := row.chunk()
	if c.Size > r.s.opts.MaxManifestSize {
		return manifest.Manifest{}, false, fmt.Errorf("%w: %s is %d bytes", errUnreadable, h, c.Size)
	}
	var b []byte
	switch {
	case c.packed() && r.s.packs == nil:
		err = errors.New("packs are not configured")
	case c.packed():
		b, err = r.s.packs.Read(c.location(), h, c.Size)
	default:
		var f io.ReadSeekCloser
		if f, _, err = r.s.blobs.Open(ctx, h); err == nil {
			b, err = io.ReadAll(io.LimitReader(f, c.Size+1))
			f.Close()
		}
	}
	if err == nil && (int64(len(b)) != c.Size || chunk.Sum(b) != h) {
		err = chunk.ErrHashMismatch
	}
	if err != nil {
		return manifest.Manifest{}, false, fmt.Errorf("%w: %s: %w", errUnreadable, h, err)
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return manifest.Manifest{}, false, fmt.Errorf("%w: %s: %w", errUnreadable, h, err)
	}
	return m, true, nil
}

func (r *reindexer) snapshotRetain(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID          int64     `json:"snapshot_id"`
		RetainUntil time.Time `json:"retain_until"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	err := r.s.forEachHashBatch(ctx, tx, snapshotRefsSQL, pgx.NamedArgs{"id": d.ID}, func(keys [][]byte) error {
		_, err := tx.Exec(ctx, extendBatchSQL, pgx.NamedArgs{"until": d.RetainUntil, "hashes": keys})
		return err
	})
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `UPDATE snapshots SET retain_until = greatest(retain_until, $2) WHERE id = $1`, d.ID, d.RetainUntil)
	return affected(tag, err, fmt.Sprintf("snapshot %d is not in the rebuilt index", d.ID))
}

func (r *reindexer) holdPlace(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID        int64    `json:"hold_id"`
		Name      string   `json:"name"`
		Reason    string   `json:"reason"`
		Kind      string   `json:"kind"`
		Chunks    []string `json:"chunks"`
		Snapshots []int64  `json:"snapshots"`
		Source    string   `json:"source"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	var source *string
	count := 1
	switch d.Kind {
	case HoldChunks:
		count = len(d.Chunks)
	case HoldSnapshots:
		count = len(d.Snapshots)
	case HoldSource:
		source = &d.Source
	}
	if _, err := tx.Exec(ctx, `INSERT INTO holds (id, name, reason, target_kind, source, target_count, placed_by, placed_at)
		OVERRIDING SYSTEM VALUE VALUES (@id, @name, @reason, @kind, @source, @count, @by, @at)`, pgx.NamedArgs{
		"id": d.ID, "name": d.Name, "reason": d.Reason, "kind": d.Kind, "source": source, "count": count,
		"by": e.Actor, "at": e.At,
	}); err != nil {
		return err
	}
	switch d.Kind {
	case HoldChunks:
		keys, err := parseHashes(d.Chunks)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, insertHoldChunksSQL, d.ID, keys)
		return err
	case HoldSnapshots:
		_, err := tx.Exec(ctx, insertHoldSnapshotsSQL, d.ID, d.Snapshots)
		return err
	}
	return nil
}

func (r *reindexer) tokenRevoke(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		JTI    string `json:"jti"`
		Reason string `json:"reason"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO revoked_tokens (jti, revoked_at, revoked_by, reason) VALUES ($1, $2, $3, $4)
		ON CONFLICT (jti) DO NOTHING`, d.JTI, e.At, e.Actor, d.Reason)
	return err
}

func (r *reindexer) resticCreate(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		Repo  string          `json:"repository"`
		Scope json.RawMessage `json:"scope"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	var scope any
	if len(d.Scope) > 0 && string(d.Scope) != "null" {
		scope = string(d.Scope)
	}
	_, err := tx.Exec(ctx, `INSERT INTO restic_repositories (name, created_at, created_by, created_scope) VALUES ($1, $2, $3, $4::jsonb)
		ON CONFLICT (name) DO NOTHING`, d.Repo, e.At, e.Actor, scope)
	return err
}

func (r *reindexer) resticRetention(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		Repo         string `json:"repository"`
		Created      bool   `json:"created"`
		MinRetention string `json:"min_retention"`
		Retention    string `json:"retention"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	minRet, err := time.ParseDuration(d.MinRetention)
	if err != nil {
		return fmt.Errorf("%w: %w", errEntry, err)
	}
	ret := max(r.s.opts.MinRetention, minRet)
	if d.Retention != "" {
		if ret, err = time.ParseDuration(d.Retention); err != nil {
			return fmt.Errorf("%w: %w", errEntry, err)
		}
	} else {
		r.note(ctx, "restic repository %s: its entry predates the journaled retention: taken as %s", d.Repo, ret)
	}
	if d.Created {
		if _, err := tx.Exec(ctx, `INSERT INTO restic_repositories (name, created_at, created_by) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING`, d.Repo, e.At, e.Actor); err != nil {
			return err
		}
	}
	tag, err := tx.Exec(ctx, `UPDATE restic_repositories SET min_retention = greatest(min_retention, $2) WHERE name = $1`, d.Repo, minRet)
	if err := affected(tag, err, fmt.Sprintf("restic repository %s is not in the rebuilt index", d.Repo)); err != nil {
		return err
	}
	var latest *time.Time
	if err := tx.QueryRow(ctx, `SELECT max(created_at) FROM restic_files WHERE repo = $1 AND type = 'snapshots'`, d.Repo).Scan(&latest); err != nil {
		return err
	}
	var anchor *time.Time
	if latest != nil {
		a := resticAnchor(*latest)
		anchor = &a
	}
	_, err = r.s.extendRestic(ctx, tx, d.Repo, anchor, ret, e.At)
	return err
}

func (r *reindexer) resticFile(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		Repo  string `json:"repository"`
		Type  string `json:"type"`
		Name  string `json:"name"`
		Chunk string `json:"chunk"`
		Size  int64  `json:"size"`
		Seq   int64  `json:"seq"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	h, err := chunk.ParseHash(d.Chunk)
	if err != nil {
		return fmt.Errorf("%w: %w", errEntry, err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO restic_files (repo, type, name, chunk, size, seq, created_at, created_by)
		OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, d.Repo, d.Type, d.Name, h[:], d.Size, d.Seq, e.At, e.Actor)
	return err
}

// resticRetain replays the extension a restic snapshot file made: every
// file of the repository but locks retained until the entry's time (the
// end of the snapshot's day plus the retention, for files stored up to it:
// extendRestic's formula, evaluated).
func (r *reindexer) resticRetain(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		Repo        string    `json:"repository"`
		RetainUntil time.Time `json:"retain_until"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE chunks c SET retain_until = @until
		FROM (SELECT DISTINCT chunk FROM restic_files WHERE repo = @repo AND type <> 'locks') f
		WHERE c.hash = f.chunk AND c.retain_until < @until`, pgx.NamedArgs{"repo": d.Repo, "until": d.RetainUntil})
	return err
}
