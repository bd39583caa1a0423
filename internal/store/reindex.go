package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/mod/sumdb/tlog"
)

// Rebuilding the index from the data directory (invariant 8).
//
// The data directory is the authority: the journal holds every audit entry,
// written and fsynced by the server before the transaction that made the
// change committed, and the blob store and the packs hold the content. The
// database is an index of both. Reindex rebuilds it, in one transaction on
// the owner's connection:
//
//  1. the rows the database holds are copied aside (for the report);
//  2. user triggers are disabled on the index's tables and the tables are
//     emptied: the guards protect a live index against its writers, and a
//     rebuild writes history that those guards would refuse to write again
//     (tombstones, executed requests, past times);
//  3. the journal is replayed in order: each entry is inserted verbatim in
//     the audit log (so the Merkle root is the journal's, and checkpoints
//     auditors kept still verify), and its change is applied to the index as
//     the store's own writer applied it (reindex_replay.go);
//  4. the content is checked against the result: every indexed chunk's
//     content is read and verified (missing or damaged content is data
//     loss, reported; its row stays, as the journal has it); content that
//     no entry names is indexed as reconcile does (uploader "reconcile",
//     the minimum retention), with its chunk.commit entry journaled;
//  5. derived tables are recomputed, sequences moved past the ids the
//     journal used, triggers enabled again;
//  6. the result is compared with the rows set aside, table by table.
//
// Reindex never removes or changes content, and signs no checkpoint (the
// server signs at its next start). A row the database held that the journal
// does not explain is reported at Error, never dropped silently.

// ReindexOptions tunes Reindex.
type ReindexOptions struct {
	// DryRun rebuilds in a transaction that is then rolled back: the
	// report says what a rebuild would change, and neither the database nor
	// the journal changes. (Identity sequences may move forward: sequences
	// are not transactional. They never move back.)
	DryRun bool
	// Force rebuilds even when other sessions are connected to the
	// database (a running vault serve would write into a half-rebuilt
	// index) or when the database's audit log and the journal have no
	// entry in common (is it this vault's database?).
	Force bool
	// Examples is how many example keys the report gives per table
	// (0: DefaultReindexExamples).
	Examples int
	// Actor names who ran the rebuild in its audit entry (default
	// "reindex").
	Actor string
}

// DefaultReindexExamples is how many changed keys per table a report names.
const DefaultReindexExamples = 5

// maxReindexList bounds every list of a ReindexReport; the counts are
// always complete.
const maxReindexList = 100

// TableChange is what a rebuild changed in one table, compared with what
// the database held before.
type TableChange struct {
	Table   string `json:"table"`
	Before  int64  `json:"before"`
	After   int64  `json:"after"`
	Added   int64  `json:"added"`
	Removed int64  `json:"removed"`
	Changed int64  `json:"changed"`
	// Unrebuildable counts the removed rows that the journal cannot hold
	// (see docs/operations.md): they are reported, not divergences.
	Unrebuildable int64 `json:"unrebuildable,omitempty"`
	// Examples are keys of added (+), removed (-) and changed (~) rows.
	Examples []string `json:"examples,omitempty"`
}

// ChunkProblem is an indexed chunk whose content is missing or damaged.
type ChunkProblem struct {
	Hash    string `json:"hash"`
	Problem string `json:"problem"`
}

// ReindexReport tells what Reindex found and did.
type ReindexReport struct {
	DryRun bool `json:"dry_run"`
	// JournalEntries were replayed; DatabaseEntries is how many audit
	// entries the database held before.
	JournalEntries  int64         `json:"journal_entries"`
	DatabaseEntries int64         `json:"database_entries"`
	Tables          []TableChange `json:"tables"`

	// Verified counts indexed chunks whose content was read and matched
	// its hash.
	Verified int64 `json:"verified"`
	// DataLoss counts indexed chunks whose content is missing or does not
	// match its hash; their rows are kept, so they read as missing.
	DataLoss     int64          `json:"data_loss"`
	DataLossList []ChunkProblem `json:"data_loss_list,omitempty"`
	// Adopted counts content no journal entry names, indexed as reconcile
	// does.
	Adopted     int64    `json:"adopted"`
	AdoptedList []string `json:"adopted_list,omitempty"`
	// Tombstoned counts content of removed chunks still on disk (a crash
	// in the executor): left for the executor, never indexed again.
	Tombstoned int64 `json:"tombstoned"`
	// UnindexedCorrupt counts content no entry names that does not match
	// its hash: not indexed; reconcile quarantines it at the next start.
	UnindexedCorrupt int64 `json:"unindexed_corrupt"`
	// PacksIndexed were scanned whole and marked indexed; PacksLeft have a
	// torn tail that reconcile repairs at the next start.
	PacksIndexed int     `json:"packs_indexed"`
	PacksLeft    []int64 `json:"packs_left,omitempty"`
	// CheckpointsKept are signed checkpoints the database held that the
	// rebuilt log still matches.
	CheckpointsKept int `json:"checkpoints_kept"`

	// Divergences are what the rebuild cannot explain, each logged at
	// Error: rows the database held that the journal does not, entries
	// that could not be applied.
	Divergences     []string `json:"divergences,omitempty"`
	DivergenceCount int      `json:"divergence_count"`
	// Notes are the rebuild's known limits met on the way, logged at Warn.
	Notes     []string `json:"notes,omitempty"`
	NoteCount int      `json:"note_count"`
}

// Changed reports whether the rebuilt index differs from what the database
// held.
func (r ReindexReport) Changed() bool {
	for _, t := range r.Tables {
		if t.Added+t.Removed+t.Changed > 0 {
			return true
		}
	}
	return false
}

// reindexTable is one table of the index: how its rows are keyed for the
// report, and which columns the comparison ignores.
type reindexTable struct {
	name string
	key  string // SQL over the table's columns, as text
	// ignore names columns that are not part of what the journal records
	// (a local time stamp).
	ignore []string
	// unrebuildable is a condition on a removed row (as jsonb, v) that
	// marks what the journal cannot hold.
	unrebuildable string
}

// reindexTables are emptied and rebuilt, in an order that the report
// follows. Every table the store writes is here except audit_integrator
// (unused since chunk commits are logged in their transaction) and
// schema_version.
var reindexTables = []reindexTable{
	{name: "chunks", key: "encode(hash, 'hex')"},
	{name: "chunk_tombstones", key: "encode(hash, 'hex') || ' deleted ' || deleted_at"},
	{name: "snapshots", key: "id::text"},
	{name: "snapshot_chunks", key: "snapshot_id || '/' || encode(hash, 'hex')",
		// A snapshot whose manifests are gone (removed with the snapshot,
		// or lost): its references can no longer be walked.
		unrebuildable: "(v->>'snapshot_id')::bigint IN (SELECT id FROM reindex_incomplete)"},
	{name: "holds", key: "id::text"},
	{name: "hold_chunks", key: "hold_id || '/' || encode(hash, 'hex')"},
	{name: "hold_snapshots", key: "hold_id || '/' || snapshot_id"},
	{name: "deletion_requests", key: "id::text"},
	{name: "deletion_approvals", key: "deletion_id || '/' || approver"},
	{name: "deletion_outcomes", key: "deletion_id || '/' || object_kind || '/' || object",
		// The executor journals what it removes, not what it skipped: a
		// skipped object is rebuilt only where its candidates can be.
		unrebuildable: "v->>'outcome' = 'skipped'"},
	{name: "admin_set_versions", key: "version::text"},
	{name: "admin_keys", key: "version || '/' || name"},
	{name: "retention_policy_versions", key: "name || '/' || version"},
	{name: "restic_repositories", key: "name"},
	// Locks are transient and not journaled.
	{name: "restic_files", key: "repo || '/' || type || '/' || name", unrebuildable: "v->>'type' = 'locks'"},
	{name: "revoked_tokens", key: "jti"},
	{name: "audit_log", key: "seq::text"},
	{name: "audit_hashes", key: "idx::text"},
	{name: "audit_chunks", key: "chunk_seq::text"},
	{name: "audit_checkpoints", key: "size::text"},
	{name: "packs_indexed", key: "pack_id::text", ignore: []string{"indexed_at"}},
	{name: "retention_months", key: "month::text"},
}

// Reindex rebuilds the index from the journal (Options.Journal) and the
// content, as described above. The store must be built on the owner's
// pool (the role that ran the migrations: only it may disable triggers)
// and with the data directory's blobs and packs. No vault may serve the
// data directory meanwhile: Reindex refuses while other sessions are
// connected to the database, unless o.Force.
func (s *Store) Reindex(ctx context.Context, o ReindexOptions) (ReindexReport, error) {
	rep := ReindexReport{DryRun: o.DryRun}
	if s.opts.Journal == nil {
		return rep, errors.New("store: reindex: the store has no journal")
	}
	if o.Examples <= 0 {
		o.Examples = DefaultReindexExamples
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return rep, dbErr("reindex", err)
	}
	defer conn.Release()
	if !o.Force {
		var others int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&others); err != nil {
			return rep, dbErr("reindex: list sessions", err)
		}
		if others > 0 {
			return rep, fmt.Errorf("store: reindex: %d other sessions are connected to the database: "+
				"stop every vault serving it first (or force it): %w", others, ErrConflict)
		}
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return rep, dbErr("reindex: begin", err)
	}
	defer tx.Rollback(context.Background()) // a no-op once committed
	r := &reindexer{s: s, tx: tx, opts: o, rep: &rep, now: s.clk.Now(), adminVersion: map[int64]int64{}}
	if err := r.run(ctx); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			err = fmt.Errorf("%w (reindex needs the database owner, the role that runs the migrations)", err)
		}
		return rep, fmt.Errorf("store: reindex: %w", err)
	}
	if o.DryRun {
		if err := tx.Rollback(ctx); err != nil {
			return rep, dbErr("reindex: roll back the dry run", err)
		}
		s.log.InfoContext(ctx, "reindex dry run: nothing changed", "journal_entries", rep.JournalEntries,
			"changed", rep.Changed(), "divergences", rep.DivergenceCount, "data_loss", rep.DataLoss)
		return rep, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return rep, dbErr("reindex: commit", err)
	}
	s.log.InfoContext(ctx, "index rebuilt from the data directory", "journal_entries", rep.JournalEntries,
		"database_entries_before", rep.DatabaseEntries, "adopted", rep.Adopted, "data_loss", rep.DataLoss,
		"divergences", rep.DivergenceCount)
	return rep, nil
}

// reindexer is one rebuild, inside tx.
type reindexer struct {
	s    *Store
	tx   pgx.Tx
	opts ReindexOptions
	rep  *ReindexReport
	now  time.Time

	// The audit log: head is the last entry written, pending the entries
	// replayed but not written yet.
	head    auditHead
	pending [][]byte
	// Chunk commits and removals are applied in batches: consecutive
	// entries of one kind (see queue*).
	commits    []replayCommit
	commitSeen map[[32]byte]bool
	removes    []replayRemove
	// adminVersion maps an admin_set request to the version its execution
	// made (for its report).
	adminVersion map[int64]int64
	// incomplete lists snapshots whose references could not all be walked.
	incomplete []int64
	// apply1 maps an action to its applier (appliers).
	apply1 map[string]applier
}

func (r *reindexer) divergence(ctx context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.s.metrics.integrityAlarms.Inc()
	r.s.log.ErrorContext(ctx, "reindex: divergence the rebuild cannot explain", "detail", msg)
	r.rep.DivergenceCount++
	if len(r.rep.Divergences) < maxReindexList {
		r.rep.Divergences = append(r.rep.Divergences, msg)
	}
}

func (r *reindexer) note(ctx context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.s.log.WarnContext(ctx, "reindex: "+msg)
	r.rep.NoteCount++
	if len(r.rep.Notes) < maxReindexList {
		r.rep.Notes = append(r.rep.Notes, msg)
	}
}

func (r *reindexer) run(ctx context.Context) error {
	tx := r.tx
	j := r.s.opts.Journal
	r.rep.JournalEntries = j.Head()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", auditLock); err != nil {
		return err
	}
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(seq), 0) FROM audit_log").Scan(&r.rep.DatabaseEntries); err != nil {
		return err
	}
	if err := r.checkSameVault(ctx); err != nil {
		return err
	}
	names := make([]string, len(reindexTables))
	for i, t := range reindexTables {
		names[i] = t.name
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE reindex_old_"+t.name+" ON COMMIT DROP AS SELECT * FROM "+t.name); err != nil {
			return fmt.Errorf("set %s aside: %w", t.name, err)
		}
	}
	for _, n := range names {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+n+" DISABLE TRIGGER USER"); err != nil {
			return fmt.Errorf("disable the triggers of %s: %w", n, err)
		}
	}
	// deletion_executions (migration 009) records which transactions
	// executed which request: nothing to rebuild, and it refers to
	// deletion_requests.
	if _, err := tx.Exec(ctx, "TRUNCATE "+strings.Join(names, ", ")+", deletion_executions"); err != nil {
		return fmt.Errorf("empty the index: %w", err)
	}
	r.head = auditHead{hash: make([]byte, 32)}
	if err := r.replay(ctx); err != nil {
		return err
	}
	if err := r.keepRevocations(ctx); err != nil {
		return err
	}
	if err := r.resetSequences(ctx); err != nil {
		return err
	}
	if err := r.checkContent(ctx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO retention_months (month, slot, chunks, bytes)
		SELECT date_trunc('month', retain_until AT TIME ZONE 'UTC')::date, 0, count(*), sum(size) FROM chunks GROUP BY 1`); err != nil {
		return fmt.Errorf("recompute retention months: %w", err)
	}
	// Quota usage is derived from the chunks, by triggers disabled while
	// they were rebuilt (migrations/014_quotas.sql).
	if _, err := tx.Exec(ctx, `DELETE FROM quota_daily; DELETE FROM quota_totals;
		INSERT INTO quota_daily (subject, day, bytes)
			SELECT uploaded_by, (stored_at AT TIME ZONE 'UTC')::date, sum(size) FROM chunks GROUP BY 1, 2;
		INSERT INTO quota_totals (subject, bytes) SELECT uploaded_by, sum(size) FROM chunks GROUP BY 1`); err != nil {
		return fmt.Errorf("recompute quota usage: %w", err)
	}
	if err := r.keepCheckpoints(ctx); err != nil {
		return err
	}
	for _, n := range names {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+n+" ENABLE TRIGGER USER"); err != nil {
			return fmt.Errorf("enable the triggers of %s: %w", n, err)
		}
	}
	if err := r.compare(ctx); err != nil {
		return err
	}
	if r.opts.DryRun {
		return nil
	}
	return r.logRebuild(ctx)
}

// logRebuild appends the rebuild's own audit entry (journal first, like
// every entry): auditors see that the index was rebuilt, and what the
// rebuild found that the journal does not explain.
func (r *reindexer) logRebuild(ctx context.Context) error {
	changed := map[string][3]int64{}
	for _, t := range r.rep.Tables {
		if t.Removed+t.Changed > 0 || t.Added > 0 && t.Before > 0 {
			changed[t.Table] = [3]int64{t.Added, t.Removed, t.Changed}
		}
	}
	actor := r.opts.Actor
	if actor == "" {
		actor = "reindex"
	}
	err := r.s.appendAudit(ctx, r.tx, r.now, actor, "index.rebuild", map[string]any{
		"journal_entries": r.rep.JournalEntries, "database_entries": r.rep.DatabaseEntries,
		"divergences": r.rep.DivergenceCount, "data_loss": r.rep.DataLoss, "adopted": r.rep.Adopted,
		"changed": changed, // table: [added, removed, changed]
	})
	if err != nil {
		return fmt.Errorf("log the rebuild: %w", err)
	}
	return nil
}

// checkSameVault refuses (without Force) a database whose audit log has
// entries but none in common with the journal: the data directory of
// another vault, or a journal that never recorded this database.
func (r *reindexer) checkSameVault(ctx context.Context) error {
	if r.rep.DatabaseEntries == 0 {
		return nil
	}
	var first string
	if err := r.tx.QueryRow(ctx, "SELECT payload FROM audit_log ORDER BY seq LIMIT 1").Scan(&first); err != nil {
		return err
	}
	j := r.s.opts.Journal
	same := false
	if j.Head() > 0 {
		p, err := j.Entry(1)
		if err != nil {
			return err
		}
		same = string(p) == first
	}
	if same {
		return nil
	}
	msg := fmt.Sprintf("the database's audit log (%d entries) and the data directory's journal (%d entries) "+
		"differ from their first entry: is this the vault's database and data directory?", r.rep.DatabaseEntries, j.Head())
	if !r.opts.Force {
		return fmt.Errorf("%s (force the rebuild to replace the database's log with the journal): %w", msg, ErrConflict)
	}
	r.divergence(ctx, "%s; rebuilt from the journal as forced", msg)
	return nil
}

// keepRevocations keeps the revocations the database holds that the
// journal does not: `vault token revoke` writes them directly, and the
// server journals them only when it hears of them. A revocation only ever
// protects, so a rebuild never undoes one; the server logs it at its next
// start.
func (r *reindexer) keepRevocations(ctx context.Context) error {
	tag, err := r.tx.Exec(ctx, `INSERT INTO revoked_tokens SELECT * FROM reindex_old_revoked_tokens ON CONFLICT (jti) DO NOTHING`)
	if err != nil {
		return fmt.Errorf("keep revocations: %w", err)
	}
	if n := tag.RowsAffected(); n > 0 {
		r.note(ctx, "revoked_tokens: %d revocations the journal does not hold yet (made by vault token revoke) are kept; "+
			"the server journals them at its next start", n)
	}
	return nil
}

// resetSequences moves each identity sequence past the ids the rebuilt
// rows use. Sequences are not transactional, so they only ever move
// forward: an aborted or dry run leaves no id to be reused.
func (r *reindexer) resetSequences(ctx context.Context) error {
	for _, sq := range []struct{ table, column, max string }{
		{"chunks", "seq", "SELECT greatest((SELECT coalesce(max(seq), 0) FROM chunks), (SELECT coalesce(max(chunk_seq), 0) FROM audit_chunks))"},
		{"snapshots", "id", "SELECT coalesce(max(id), 0) FROM snapshots"},
		{"holds", "id", "SELECT coalesce(max(id), 0) FROM holds"},
		{"deletion_requests", "id", "SELECT coalesce(max(id), 0) FROM deletion_requests"},
		{"restic_files", "seq", "SELECT coalesce(max(seq), 0) FROM restic_files"},
	} {
		var used int64
		if err := r.tx.QueryRow(ctx, sq.max).Scan(&used); err != nil {
			return fmt.Errorf("sequence of %s: %w", sq.table, err)
		}
		var last *int64
		if err := r.tx.QueryRow(ctx, "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, $2)::regclass)",
			sq.table, sq.column).Scan(&last); err != nil {
			return fmt.Errorf("sequence of %s: %w", sq.table, err)
		}
		if last != nil && *last >= used || used == 0 {
			continue
		}
		if _, err := r.tx.Exec(ctx, "SELECT setval(pg_get_serial_sequence($1, $2)::regclass, $3)", sq.table, sq.column, used); err != nil {
			return fmt.Errorf("sequence of %s: %w", sq.table, err)
		}
	}
	return nil
}

// keepCheckpoints puts back the signed checkpoints the database held that
// the rebuilt log still matches. Any other is reported: the vault signed
// it, or someone forged it, over a log the journal does not hold.
func (r *reindexer) keepCheckpoints(ctx context.Context) error {
	rows, _ := r.tx.Query(ctx, "SELECT size, root, note, signed_at FROM reindex_old_audit_checkpoints ORDER BY size")
	type cp struct {
		Size     int64     `db:"size"`
		Root     []byte    `db:"root"`
		Note     string    `db:"note"`
		SignedAt time.Time `db:"signed_at"`
	}
	cps, err := pgx.CollectRows(rows, pgx.RowToStructByName[cp])
	if err != nil {
		return fmt.Errorf("read the old checkpoints: %w", err)
	}
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return readHashes(ctx, r.tx, idx, nil) })
	for _, c := range cps {
		if c.Size > r.head.seq {
			r.divergence(ctx, "a signed checkpoint of %d entries is beyond the journal's %d: dropped", c.Size, r.head.seq)
			continue
		}
		root, err := tlog.TreeHash(c.Size, hr)
		if err != nil {
			return fmt.Errorf("tree hash of %d entries: %w", c.Size, err)
		}
		if string(root[:]) != string(c.Root) {
			r.divergence(ctx, "a signed checkpoint of %d entries has root %x, the journal's tree %s: dropped", c.Size, c.Root, root)
			continue
		}
		if _, err := r.tx.Exec(ctx, `INSERT INTO audit_checkpoints (size, root, note, signed_at) VALUES ($1, $2, $3, $4)`,
			c.Size, c.Root, c.Note, c.SignedAt); err != nil {
			return fmt.Errorf("keep checkpoint %d: %w", c.Size, err)
		}
		r.rep.CheckpointsKept++
	}
	return nil
}

// compare fills the report's table changes: the rebuilt rows against the
// rows set aside. Rows the rebuild added were missing from the index (it
// is repaired); rows it removed or changed were in the index without the
// journal's backing, and are divergences.
func (r *reindexer) compare(ctx context.Context) error {
	if _, err := r.tx.Exec(ctx, `CREATE TEMP TABLE reindex_incomplete ON COMMIT DROP AS SELECT unnest($1::bigint[]) AS id`,
		r.incomplete); err != nil {
		return err
	}
	for _, t := range reindexTables {
		old, cur := "reindex_old_"+t.name, t.name
		vOld, vNew := "to_jsonb(t)", "to_jsonb(t)"
		if len(t.ignore) > 0 {
			drop := " - '{" + strings.Join(t.ignore, ",") + "}'::text[]"
			vOld, vNew = vOld+drop, vNew+drop
		}
		from := fmt.Sprintf(`(SELECT %[1]s AS k, %[2]s AS v FROM %[3]s t) o FULL JOIN (SELECT %[1]s AS k, %[4]s AS v FROM %[5]s t) n ON o.k = n.k`,
			t.key, vOld, old, vNew, cur)
		if t.name == "retention_months" {
			// Per-month sums: each backend writes its own slot.
			agg := `(SELECT month::text AS k, jsonb_build_array(sum(chunks), sum(bytes)) AS v FROM %s
				GROUP BY month HAVING sum(chunks) <> 0 OR sum(bytes) <> 0)`
			from = fmt.Sprintf(agg+` o FULL JOIN `+agg+` n ON o.k = n.k`, old, cur)
		}
		unrebuildable := "false"
		if t.unrebuildable != "" {
			unrebuildable = strings.ReplaceAll(t.unrebuildable, "v->", "o.v->")
		}
		tc := TableChange{Table: t.name}
		err := r.tx.QueryRow(ctx, `SELECT
				count(o.k), count(n.k),
				count(*) FILTER (WHERE o.k IS NULL),
				count(*) FILTER (WHERE n.k IS NULL),
				count(*) FILTER (WHERE o.k IS NOT NULL AND n.k IS NOT NULL AND o.v <> n.v),
				count(*) FILTER (WHERE n.k IS NULL AND `+unrebuildable+`)
			FROM `+from).Scan(&tc.Before, &tc.After, &tc.Added, &tc.Removed, &tc.Changed, &tc.Unrebuildable)
		if err != nil {
			return fmt.Errorf("compare %s: %w", t.name, err)
		}
		for _, op := range []struct{ mark, cond string }{
			{"-", "n.k IS NULL"}, {"~", "o.k IS NOT NULL AND n.k IS NOT NULL AND o.v <> n.v"}, {"+", "o.k IS NULL"},
		} {
			rows, _ := r.tx.Query(ctx, `SELECT coalesce(o.k, n.k) FROM `+from+` WHERE `+op.cond+` ORDER BY 1 LIMIT $1`, r.opts.Examples)
			keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("compare %s: %w", t.name, err)
			}
			for _, k := range keys {
				tc.Examples = append(tc.Examples, op.mark+k)
			}
		}
		r.rep.Tables = append(r.rep.Tables, tc)
	}
	fresh := true
	for _, tc := range r.rep.Tables {
		fresh = fresh && tc.Before == 0
	}
	if fresh {
		return nil // an empty database: everything is new, nothing diverges
	}
	for _, tc := range r.rep.Tables {
		t := tc.Table
		if tc.Added > 0 {
			r.s.log.WarnContext(ctx, "reindex: rows missing from the index, restored from the journal",
				"table", t, "added", tc.Added, "examples", tc.Examples)
		}
		if unexplained := tc.Removed - tc.Unrebuildable; unexplained > 0 || tc.Changed > 0 {
			r.divergence(ctx, "%s: the index held %d rows and %d versions of rows that the journal does not have, replaced by the journal's (e.g. %s)",
				t, unexplained, tc.Changed, strings.Join(tc.Examples, " "))
		}
		if tc.Unrebuildable > 0 {
			r.note(ctx, "%s: %d rows the journal does not record could not be rebuilt", t, tc.Unrebuildable)
		}
	}
	return nil
}
