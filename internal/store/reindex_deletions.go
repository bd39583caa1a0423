package store

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/audit"
)

// The replay of the admin set and of deletion requests, from request to
// execution (see reindex_replay.go).

// adminSet replays admin_set.genesis and admin_set.change: each records
// the whole set with its keys and policy.
func (r *reindexer) adminSet(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		DeletionID          *int64            `json:"deletion_id"`
		Version             int64             `json:"version"`
		Keys                map[string]string `json:"keys"`
		ApprovalsRequired   int               `json:"approvals_required"`
		Delay               string            `json:"delay"`
		GovernanceApprovals int               `json:"governance_approvals"`
		GovernanceDelay     string            `json:"governance_delay"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	delay, err1 := time.ParseDuration(d.Delay)
	gdelay, err2 := time.ParseDuration(d.GovernanceDelay)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("%w: %w", errEntry, err)
	}
	// A member keeps the time it was added while its key stays the same
	// (AdminChange.apply clones the previous members); a new member or key
	// is added now.
	prev := map[string]Admin{}
	if d.Version > 1 {
		set, err := adminSetVersion(ctx, tx, d.Version-1)
		if err != nil {
			return err
		}
		for _, a := range set.Admins {
			prev[a.Name] = a
		}
	}
	admins := make([]Admin, 0, len(d.Keys))
	for name, line := range d.Keys {
		k, err := approval.ParsePublicKey(line)
		if err != nil {
			return fmt.Errorf("%w: admin %s: %w", errEntry, name, err)
		}
		a := Admin{Name: name, Key: k}
		if p, ok := prev[name]; ok && p.Key.Equal(k) {
			a.AddedAt = p.AddedAt
		}
		admins = append(admins, a)
	}
	slices.SortFunc(admins, func(a, b Admin) int { return strings.Compare(a.Name, b.Name) })
	p := Policy{ApprovalsRequired: d.ApprovalsRequired, Delay: Duration(delay),
		GovernanceApprovals: d.GovernanceApprovals, GovernanceDelay: Duration(gdelay)}
	if err := insertAdminSet(ctx, tx, d.Version, p, e.At, d.DeletionID, admins); err != nil {
		return err
	}
	if d.DeletionID != nil {
		r.adminVersion[*d.DeletionID] = d.Version
	}
	return nil
}

func (r *reindexer) deletionRequest(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID                int64      `json:"deletion_id"`
		Kind              string     `json:"kind"`
		Digest            string     `json:"digest"`
		Reason            string     `json:"reason"`
		ApprovalsRequired int        `json:"approvals_required"`
		Delay             string     `json:"delay"`
		AdminSetVersion   *int64     `json:"admin_set_version"`
		Targets           *string    `json:"targets"`
		ExpiresAt         *time.Time `json:"expires_at"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	digest, err1 := hex.DecodeString(d.Digest)
	delay, err2 := time.ParseDuration(d.Delay)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("%w: %w", errEntry, err)
	}
	targets := ""
	if d.Targets != nil {
		targets = *d.Targets
	} else {
		r.note(ctx, "deletion %d: its entry predates the journaled targets: rebuilt without them (it can never execute)", d.ID)
	}
	expires := e.At.Add(r.s.opts.Deletion.Expiry)
	if d.ExpiresAt != nil {
		expires = *d.ExpiresAt
	} else {
		r.note(ctx, "deletion %d: its entry predates the journaled expiry: taken as the request time + %s", d.ID, r.s.opts.Deletion.Expiry)
	}
	_, err := tx.Exec(ctx, `INSERT INTO deletion_requests
		(id, kind, targets, digest, reason, requested_by, requested_at, approvals_required, delay, expires_at, admin_set_version)
		OVERRIDING SYSTEM VALUE
		VALUES (@id, @kind, @targets, @digest, @reason, @by, @at, @quorum, @delay, @expires, @version)`, pgx.NamedArgs{
		"id": d.ID, "kind": d.Kind, "targets": targets, "digest": digest, "reason": d.Reason, "by": e.Actor,
		"at": e.At, "quorum": d.ApprovalsRequired, "delay": delay, "expires": expires, "version": d.AdminSetVersion,
	})
	return err
}

// expiryRun replays expiry.run and expiry.refused: a routine expiry run's
// request, executing (its deletion.executed entry finishes it) or refused
// above its ceiling.
func (r *reindexer) expiryRun(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID                int64     `json:"deletion_id"`
		Authorisation     int64     `json:"authorisation_id"`
		Digest            string    `json:"digest"`
		Targets           string    `json:"targets"`
		Reason            string    `json:"reason"`
		ApprovalsRequired int       `json:"approvals_required"`
		Delay             string    `json:"delay"`
		AdminSetVersion   *int64    `json:"admin_set_version"`
		ExpiresAt         time.Time `json:"expires_at"`
		Refusal           string    `json:"refusal"`
		RunCeiling
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	digest, err1 := hex.DecodeString(d.Digest)
	delay, err2 := time.ParseDuration(d.Delay)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("%w: %w", errEntry, err)
	}
	args := pgx.NamedArgs{
		"id": d.ID, "targets": d.Targets, "digest": digest, "reason": d.Reason, "by": e.Actor, "at": e.At,
		"quorum": d.ApprovalsRequired, "delay": delay, "expires": d.ExpiresAt, "version": d.AdminSetVersion,
		"auth": d.Authorisation, "state": StateExecuting, "refusal": nil, "report": nil, "refused_at": nil,
	}
	if e.Action == audit.ActionExpiryRefused {
		c := d.RunCeiling
		args["state"], args["refusal"], args["refused_at"] = StateRefused, d.Refusal, e.At
		args["report"] = ExecReport{Skipped: map[string]int64{}, Ceiling: &c}
	}
	_, err := tx.Exec(ctx, `INSERT INTO deletion_requests
		(id, kind, targets, digest, reason, requested_by, requested_at, approvals_required, delay, expires_at, admin_set_version,
		 authorisation_id, state, refused_at, refusal, report)
		OVERRIDING SYSTEM VALUE
		VALUES (@id, 'expired', @targets, @digest, @reason, @by, @at, @quorum, @delay, @expires, @version,
		 @auth, @state, @refused_at, @refusal, @report)`, args)
	return err
}

// signedDetails are the details of a signed action (signatureDetails).
type signedDetails struct {
	DeletionID int64  `json:"deletion_id"`
	Signer     string `json:"signer"`
	Format     string `json:"format"`
	Signature  string `json:"signature"`
	Reason     string `json:"reason"`
}

func (d signedDetails) value() ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(d.Signature)
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %w", errEntry, err)
	}
	return b, nil
}

// decodeSigned reads a signed action's details and its signature.
func decodeSigned(e audit.Entry) (signedDetails, []byte, error) {
	var d signedDetails
	if err := decode(e, &d); err != nil {
		return d, nil, err
	}
	sig, err := d.value()
	return d, sig, err
}

func (r *reindexer) deletionSign(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	d, sig, err := decodeSigned(e)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `UPDATE deletion_requests SET requested_by_admin = $2, request_format = $3, request_signature = $4
		WHERE id = $1`, d.DeletionID, d.Signer, d.Format, sig)
	return affected(tag, err, fmt.Sprintf("deletion %d is not in the rebuilt index", d.DeletionID))
}

func (r *reindexer) deletionApprove(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	d, sig, err := decodeSigned(e)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO deletion_approvals (deletion_id, approver, approved_at, format, signature)
		VALUES ($1, $2, $3, $4, $5)`, d.DeletionID, d.Signer, e.At, d.Format, sig)
	return err
}

func (r *reindexer) deletionSchedule(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID         int64     `json:"deletion_id"`
		ExecutesAt time.Time `json:"executes_at"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'scheduled', scheduled_at = $2, executes_at = $3 WHERE id = $1`,
		d.ID, e.At, d.ExecutesAt)
	return affected(tag, err, fmt.Sprintf("deletion %d is not in the rebuilt index", d.ID))
}

func (r *reindexer) deletionCancel(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	d, sig, err := decodeSigned(e)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'cancelled', cancelled_at = $2, cancelled_by = $3,
		cancel_reason = $4, cancelled_by_admin = $5, cancel_format = $6, cancel_signature = $7 WHERE id = $1`,
		d.DeletionID, e.At, e.Actor, d.Reason, d.Signer, d.Format, sig)
	return affected(tag, err, fmt.Sprintf("deletion %d is not in the rebuilt index", d.DeletionID))
}

// deletionState replays deletion.expire, deletion.execute and
// deletion.refused.
func (r *reindexer) deletionState(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID     int64  `json:"deletion_id"`
		Reason string `json:"reason"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	var tag pgconn.CommandTag
	var err error
	switch e.Action {
	case audit.ActionDeletionExpire:
		tag, err = tx.Exec(ctx, `UPDATE deletion_requests SET state = 'expired' WHERE id = $1`, d.ID)
	case audit.ActionDeletionExecute:
		tag, err = tx.Exec(ctx, `UPDATE deletion_requests SET state = 'executing' WHERE id = $1`, d.ID)
	case audit.ActionDeletionRefused:
		tag, err = tx.Exec(ctx, `UPDATE deletion_requests SET state = 'refused', refused_at = $2, refusal = $3 WHERE id = $1`,
			d.ID, e.At, d.Reason)
	}
	return affected(tag, err, fmt.Sprintf("deletion %d is not in the rebuilt index", d.ID))
}

// Classifications of the executor (executor.go), at @now. The candidates
// are a constant fragment selecting a column hash.
const (
	replaySnapshotsSQL = `
SELECT k.id, CASE
    WHEN s.id IS NULL THEN 'not_found'
    WHEN s.deleted_at IS NOT NULL THEN 'already_deleted'
    WHEN s.retain_until > @now THEN 'retained'
    WHEN snapshot_held(s.id, s.source) THEN 'held'
    ELSE '' END AS skip
FROM unnest(@ids::bigint[]) AS k(id) LEFT JOIN snapshots s ON s.id = k.id`
	replayChunkSkipsSQL = `
WITH k AS (
    SELECT k.hash, CASE
        WHEN c.hash IS NULL AND EXISTS (SELECT FROM chunk_tombstones t WHERE t.hash = k.hash) THEN 'already_deleted'
        WHEN c.hash IS NULL THEN 'not_found'
        WHEN c.retain_until > @now THEN 'retained'
        WHEN chunk_held(c.hash) THEN 'held'
        WHEN EXISTS (SELECT FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
                     WHERE sc.hash = c.hash AND s.deleted_at IS NULL AND s.retain_until > @now) THEN 'in_retained_snapshot'
        ELSE '' END AS skip
    FROM (%s) AS k(hash) LEFT JOIN chunks c ON c.hash = k.hash
    WHERE NOT EXISTS (SELECT FROM chunk_tombstones t WHERE t.hash = k.hash AND t.deletion_id = @id)),
ins AS (
    INSERT INTO deletion_outcomes (deletion_id, object_kind, object, outcome, reason, at)
    SELECT @id, 'chunk', encode(hash, 'hex'), 'skipped', skip, @now FROM k WHERE skip <> ''
    ON CONFLICT DO NOTHING)
SELECT count(*) FROM k WHERE skip = ''`
)

// Candidate chunks of each kind of request, as the executor lists them.
var replayCandidates = map[string]string{
	DeleteChunks:    `SELECT DISTINCT unnest(@hashes::bytea[])`,
	DeleteSnapshots: `SELECT DISTINCT hash FROM snapshot_chunks WHERE snapshot_id = ANY(@ids)`,
	DeleteExpired:   `SELECT hash FROM chunks WHERE retain_until < @before`,
	DeleteExpired + "/source": `SELECT DISTINCT sc.hash FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
		WHERE s.source = @source AND s.retain_until < @before`,
}

// deletionExecuted replays what an execution did. The executor journals
// each chunk it removes (chunk.remove, replayed already) and its totals;
// what it did to snapshots and holds, and what it skipped, is recomputed
// here by its own rules at the execution's time, and checked against the
// totals.
func (r *reindexer) deletionExecuted(ctx context.Context, tx pgx.Tx, e audit.Entry) error {
	var d struct {
		ID           int64            `json:"deletion_id"`
		Deleted      int64            `json:"deleted"`
		Skipped      map[string]int64 `json:"skipped"`
		BytesFreed   int64            `json:"bytes_freed"`
		Snapshots    int64            `json:"snapshots_deleted"`
		HoldReleased bool             `json:"hold_released"`
	}
	if err := decode(e, &d); err != nil {
		return err
	}
	if d.Skipped == nil {
		d.Skipped = map[string]int64{}
	}
	now := e.At
	var text string
	if err := tx.QueryRow(ctx, "SELECT targets FROM deletion_requests WHERE id = $1", d.ID).Scan(&text); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: deletion %d is not in the rebuilt index", errEntry, d.ID)
		}
		return err
	}
	t, err := parseTargets(text)
	if err != nil {
		return fmt.Errorf("%w: deletion %d: %w", errEntry, d.ID, err)
	}
	var snapshotsDeleted int64
	switch t.Kind {
	case DeleteSnapshots, DeleteExpired:
		ids := t.Snapshots
		if t.Kind == DeleteExpired {
			rows, _ := tx.Query(ctx, `SELECT id FROM snapshots WHERE retain_until < @before AND deleted_at IS NULL
				AND (@source = '' OR source = @source) ORDER BY id`, pgx.NamedArgs{"before": t.Before, "source": t.Source})
			if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
				return err
			}
		}
		if snapshotsDeleted, err = r.deleteSnapshots(ctx, tx, d.ID, now, ids); err != nil {
			return err
		}
	case DeleteHoldRelease:
		outcome, reason := "skipped", SkipAlreadyDeleted
		if d.HoldReleased {
			outcome, reason = "deleted", ""
			tag, err := tx.Exec(ctx, `UPDATE holds SET released_at = $2, released_by = $3 WHERE id = $1 AND released_at IS NULL`,
				t.Hold, now, "deletion:"+strconv.FormatInt(d.ID, 10))
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				r.divergence(ctx, "deletion %d released hold %d, which is not an active hold in the rebuilt index", d.ID, t.Hold)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deletion_outcomes (deletion_id, object_kind, object, outcome, reason, at)
			VALUES ($1, 'hold', $2, $3, $4, $5)`, d.ID, strconv.FormatInt(t.Hold, 10), outcome, reason, now); err != nil {
			return err
		}
	}
	var removed, freed int64
	if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(size), 0) FROM chunk_tombstones WHERE deletion_id = $1`,
		d.ID).Scan(&removed, &freed); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO deletion_outcomes (deletion_id, object_kind, object, outcome, reason, at)
		SELECT $1, 'chunk', encode(hash, 'hex'), 'deleted', '', $2 FROM chunk_tombstones WHERE deletion_id = $1
		ON CONFLICT DO NOTHING`, d.ID, now); err != nil {
		return err
	}
	if cand, ok := r.candidates(t); ok {
		var deletable int64
		args := pgx.NamedArgs{"id": d.ID, "now": now, "hashes": hashKeys(t.Chunks), "ids": t.Snapshots,
			"before": t.Before, "source": t.Source}
		if err := tx.QueryRow(ctx, fmt.Sprintf(replayChunkSkipsSQL, cand), args).Scan(&deletable); err != nil {
			return err
		}
		if deletable > 0 {
			r.note(ctx, "deletion %d: %d of its chunks were deletable at its execution but no removal is journaled", d.ID, deletable)
		}
	}
	// The content of every chunk it removed is gone once it is executed
	// (removeContent runs before the executed entry, at the same time).
	if _, err := tx.Exec(ctx, `UPDATE chunk_tombstones SET content_removed_at = $2
		WHERE deletion_id = $1 AND content_removed_at IS NULL`, d.ID, now); err != nil {
		return err
	}
	rep := ExecReport{Deleted: d.Deleted, Skipped: d.Skipped, BytesFreed: d.BytesFreed, Snapshots: d.Snapshots,
		HoldReleased: d.HoldReleased, AdminSetVersion: r.adminVersion[d.ID]}
	tag, err := tx.Exec(ctx, `UPDATE deletion_requests SET state = 'executed', executed_at = $2, report = $3 WHERE id = $1`,
		d.ID, now, rep)
	if err := affected(tag, err, fmt.Sprintf("deletion %d is not in the rebuilt index", d.ID)); err != nil {
		return err
	}
	return r.checkTotals(ctx, tx, d.ID, removed, freed, snapshotsDeleted, d.Deleted, d.BytesFreed, d.Snapshots, d.Skipped)
}

// candidates returns the fragment listing t's candidate chunks, if the
// executor lists any.
func (r *reindexer) candidates(t DeletionTargets) (string, bool) {
	switch t.Kind {
	case DeleteChunks, DeleteSnapshots:
		return replayCandidates[t.Kind], true
	case DeleteExpired:
		if t.Source != "" {
			return replayCandidates[DeleteExpired+"/source"], true
		}
		return replayCandidates[DeleteExpired], true
	}
	return "", false
}

// deleteSnapshots tombstones the deletable snapshots among ids, with every
// id's outcome, as the executor's deleteSnapshots does.
func (r *reindexer) deleteSnapshots(ctx context.Context, tx pgx.Tx, id int64, now time.Time, ids []int64) (int64, error) {
	rows, _ := tx.Query(ctx, replaySnapshotsSQL, pgx.NamedArgs{"ids": ids, "now": now})
	type row struct {
		ID   int64  `db:"id"`
		Skip string `db:"skip"`
	}
	cs, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return 0, err
	}
	var ok []int64
	var objs, outcomes, reasons []string
	for _, c := range cs {
		objs = append(objs, strconv.FormatInt(c.ID, 10))
		if c.Skip == "" {
			ok = append(ok, c.ID)
			outcomes, reasons = append(outcomes, "deleted"), append(reasons, "")
			continue
		}
		outcomes, reasons = append(outcomes, "skipped"), append(reasons, c.Skip)
	}
	if _, err := tx.Exec(ctx, `UPDATE snapshots SET deleted_at = $2, deletion_id = $3 WHERE id = ANY($1)`, ok, now, id); err != nil {
		return 0, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO deletion_outcomes (deletion_id, object_kind, object, outcome, reason, at)
		SELECT $1, 'snapshot', o, r, why, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS u(o, r, why)
		ON CONFLICT DO NOTHING`, id, objs, outcomes, reasons, now)
	return int64(len(ok)), err
}

// checkTotals compares what the rebuild made of an execution with the
// totals the executor journaled. A difference is a limit of the rebuild
// (what the executor skipped is not journaled object by object), noted.
func (r *reindexer) checkTotals(ctx context.Context, tx pgx.Tx, id, removed, freed, snapshots, wantRemoved, wantFreed, wantSnapshots int64,
	wantSkipped map[string]int64) error {
	if removed != wantRemoved || freed != wantFreed {
		r.divergence(ctx, "deletion %d: the journal removes %d chunks (%d bytes); its execution reported %d (%d bytes)",
			id, removed, freed, wantRemoved, wantFreed)
	}
	if snapshots != wantSnapshots {
		r.note(ctx, "deletion %d: %d snapshots deleted by the rebuild's reckoning, %d by the executor's report", id, snapshots, wantSnapshots)
	}
	rows, _ := tx.Query(ctx, `SELECT object_kind || ':' || reason, count(*) FROM deletion_outcomes
		WHERE deletion_id = $1 AND outcome = 'skipped' GROUP BY 1`, id)
	got := map[string]int64{}
	var k string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&k, &n}, func() error { got[k] = n; return nil }); err != nil {
		return err
	}
	want := map[string]int64{}
	for k, n := range wantSkipped {
		if k != "admin_set:not_applicable" {
			want[k] = n
		}
	}
	if !sameCounts(got, want) {
		r.note(ctx, "deletion %d: skipped objects rebuilt %v, the executor reported %v", id, got, want)
	}
	return nil
}

func sameCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
