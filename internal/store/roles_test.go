package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/store"
)

// The attacks of issue 13 that need only the runtime database credential
// (the one the server holds), tried with that credential: every test here
// connects as the runtime login pgtest gives, a member of
// wormvault_runtime that owns nothing.

// attackScenario is a vault with something to lose: chunks past retention
// (small ones packed, a large one a file of its own), a held chunk, a
// snapshot past retention, an indexed pack, an integrated audit log, a
// requested deletion and a scheduled one that is not yet due.
type attackScenario struct {
	*deletionStore
	loose     []chunk.Hash // past retention, unheld, in no snapshot
	held      chunk.Hash
	requested store.Deletion
	scheduled store.Deletion
}

func newAttackScenario(t *testing.T) *attackScenario {
	t.Helper()
	ds := newDeletionStore(t)
	ctx := context.Background()
	sc := &attackScenario{deletionStore: ds}
	for _, n := range []int{100, 2000, 200_000} {
		b, h := randomChunk(t, n)
		ds.mustPut(t, b)
		sc.loose = append(sc.loose, h)
	}
	b, h := randomChunk(t, 300)
	ds.mustPut(t, b)
	sc.held = h
	if _, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "case-1", Reason: "litigation", Chunks: []chunk.Hash{h}}); err != nil {
		t.Fatal(err)
	}
	sb, sh := randomChunk(t, 500)
	ds.mustPut(t, sb)
	root, _ := manifest.Manifest{Chunks: []chunk.Hash{sh}}.Marshal()
	ds.mustPut(t, root)
	if _, err := ds.CommitSnapshot(ctx, "agent-1", store.NewSnapshot{Source: "db01", Name: "daily-1",
		TakenAt: epoch, RetainUntil: epoch.Add(31 * 24 * time.Hour), ManifestRoot: chunk.Sum(root)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.pool.Exec(ctx, "INSERT INTO packs_indexed (pack_id, indexed_at) VALUES (4242, now())"); err != nil {
		t.Fatalf("the runtime role may record an indexed pack: %v", err)
	}
	// Everything above is now past retention; only the delay, the hold
	// and the executor stand between it and deletion.
	ds.clk.Advance(40 * 24 * time.Hour)
	// The integrator's position is no longer used (chunk commits are
	// logged with their rows) but stays forward-only: move it forward, as
	// the runtime role may, so that moving it back is a real attempt.
	if _, err := ds.pool.Exec(ctx, "UPDATE audit_integrator SET chunk_seq = 5"); err != nil {
		t.Fatalf("the runtime role may move the integrator forward: %v", err)
	}
	sc.requested = ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: sc.loose})
	sc.scheduled = ds.mustRequest(t, "admin-a", store.DeletionTargets{Kind: store.DeleteChunks, Chunks: sc.loose[:1]})
	ds.mustApprove(t, "admin-b", sc.scheduled.ID)
	if d := ds.mustApprove(t, "admin-c", sc.scheduled.ID); d.State != store.StateScheduled {
		t.Fatalf("second request is %s, want scheduled", d.State)
	}
	return sc
}

// state is everything the attacks try to change, and whether every chunk
// still reads back.
func (sc *attackScenario) state(t testing.TB) string {
	t.Helper()
	var readable []string
	for _, h := range append(append([]chunk.Hash{}, sc.loose...), sc.held) {
		readable = append(readable, fmt.Sprint(sc.readable(t, h)))
	}
	return sc.deletionState(t) + " | readable " + strings.Join(readable, ",")
}

// attack runs sql in a session of its own as the runtime role, so that
// session settings and temporary tables stay with the attacker.
func (sc *attackScenario) attack(t testing.TB, sql string, args ...any) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, sc.pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

type attackCase struct {
	name, sql string
	code      string
}

func (sc *attackScenario) mustRefuse(t *testing.T, cases []attackCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := sc.state(t)
			err := sc.attack(t, c.sql)
			if got := sqlState(err); got != c.code {
				t.Errorf("%s\nerr = %v, want SQLSTATE %s", c.sql, err, c.code)
			}
			if after := sc.state(t); after != before {
				t.Errorf("state changed:\n before %s\n after  %s", before, after)
			}
		})
	}
}

// Attack 1 of issue 13: set the settings the triggers used to trust, then
// release, tombstone and delete. Every statement runs in one transaction
// after the settings, as the attacker would send it.
func TestRuntimeRoleCannotSetTriggerSettings(t *testing.T) {
	t.Parallel()
	sc := newAttackScenario(t)
	id := itoa(sc.scheduled.ID)
	settings := "SELECT set_config('wormvault.deletion_id', '" + id + "', false), set_config('wormvault.now', '2199-01-01', false); "
	sc.mustRefuse(t, []attackCase{
		{"delete chunks", settings + "DELETE FROM chunks", "WV003"},
		{"release holds", settings + "UPDATE holds SET released_at = now(), released_by = 'mallory'", "WV004"},
		{"tombstone snapshots", settings + "UPDATE snapshots SET deleted_at = now(), deletion_id = " + id, "WV007"},
		{"add an admin set", settings + `INSERT INTO admin_set_versions
			(version, approvals_required, delay, governance_approvals, governance_delay, created_at, request_id)
			VALUES (2, 1, '1 second', 2, '1 second', now(), ` + id + ")", "WV008"},
		{"forge a tombstone", settings + `INSERT INTO chunk_tombstones (hash, size, stored_at, uploaded_by, pack_id, pack_offset, deleted_at, deletion_id)
			SELECT hash, size, stored_at, uploaded_by, pack_id, pack_offset, now(), ` + id + " FROM chunks", permissionDenied},
		{"forget indexed packs", settings + "DELETE FROM packs_indexed", permissionDenied},
		{"move the integrator back", settings + "UPDATE audit_integrator SET chunk_seq = 0", "WV004"},
		{"jump to executing", settings + "UPDATE deletion_requests SET state = 'executing' WHERE id = " + id, "WV006"},
		{"register before executes_at", settings + "SELECT wv_begin_execution(" + id + ")", "WV006"},
		{"move the schedule earlier", settings + `UPDATE deletion_requests SET scheduled_at = scheduled_at - interval '30 days',
			executes_at = executes_at - interval '30 days' WHERE id = ` + id, "WV006"},
		{"forge outcomes", settings + "INSERT INTO deletion_outcomes VALUES (" + id + ", 'chunk', 'x', 'deleted', '', now())", "WV007"},
	})
	// The settings change nothing for the real executor either: the
	// request is not due by the database's clock, and nothing was deleted.
	if rep, err := sc.RunDue(context.Background()); err != nil || len(rep.Executed) != 0 {
		t.Errorf("RunDue = %+v, %v; want nothing executed", rep, err)
	}
}

// Attack 1 again, without the settings: forge a request that is already
// executing or scheduled, or one that would pass the checks sooner, or
// register a transaction by hand.
func TestRuntimeRoleCannotForgeExecutingDeletion(t *testing.T) {
	t.Parallel()
	sc := newAttackScenario(t)
	const insert = `INSERT INTO deletion_requests (kind, targets, digest, reason, requested_by, requested_at,
		approvals_required, delay, expires_at, admin_set_version`
	const digest = "decode(repeat('00', 32), 'hex')"
	sc.mustRefuse(t, []attackCase{
		{"born executing", insert + ", state) VALUES ('expired', 'x', " + digest + ", 'r', 'mallory', now(), 2, '72 hours', now() + interval '7 days', 1, 'executing')", "WV006"},
		{"born scheduled in the past", insert + `, state, scheduled_at, executes_at) VALUES ('expired', 'x', ` + digest + `, 'r', 'mallory', now(), 2, '72 hours',
			now() + interval '7 days', 1, 'scheduled', now() - interval '10 days', now() - interval '10 days' + interval '72 hours')`, "WV006"},
		{"born signed", insert + ", requested_by_admin, request_format, request_signature) VALUES ('expired', 'x', " + digest +
			", 'r', 'mallory', now(), 2, '72 hours', now() + interval '7 days', 1, 'admin-a', 'raw', '\\x00')", "WV006"},
		{"requested long ago", insert + ") VALUES ('expired', 'x', " + digest + ", 'r', 'mallory', now() - interval '30 days', 2, '72 hours', now() + interval '7 days', 1)", "WV006"},
		{"one approval", insert + ") VALUES ('expired', 'x', " + digest + ", 'r', 'mallory', now(), 1, '72 hours', now() + interval '7 days', 1)", "WV006"},
		{"no delay to speak of", insert + ") VALUES ('expired', 'x', " + digest + ", 'r', 'mallory', now(), 2, '1 second', now() + interval '7 days', 1)", "WV006"},
		{"no admin set", insert + ") VALUES ('expired', 'x', " + digest + ", 'r', 'mallory', now(), 2, '72 hours', now() + interval '7 days', NULL)", "WV006"},
		{"register by hand", "INSERT INTO deletion_executions VALUES (pg_current_xact_id(), pg_backend_pid(), " + itoa(sc.scheduled.ID) + ", now())", permissionDenied},
		{"read the registrations", "SELECT * FROM deletion_executions", permissionDenied},
		{"register a request that is not scheduled", "SELECT wv_begin_execution(" + itoa(sc.requested.ID) + ")", "WV006"},
		{"move the database's clock", "INSERT INTO wv_test.clock VALUES (true, '2199-01-01')", permissionDenied},
		// A temporary table is searched before public by default: the
		// triggers must not read the attacker's copy.
		{"shadow the requests", `CREATE TEMP TABLE deletion_requests AS SELECT * FROM public.deletion_requests;
			UPDATE pg_temp.deletion_requests SET state = 'executing';
			CREATE TEMP TABLE holds AS SELECT * FROM public.holds WHERE false;
			DELETE FROM public.chunks`, "WV003"},
		{"shadow the admin keys", `CREATE TEMP TABLE admin_keys AS SELECT * FROM public.admin_keys;
			INSERT INTO pg_temp.admin_keys SELECT version, 'mallory', key_kind, public_key, added_at FROM public.admin_keys LIMIT 1;
			INSERT INTO public.deletion_approvals VALUES (` + itoa(sc.requested.ID) + ", 'mallory', now(), 'raw', '\\x00')", "WV006"},
	})
}

// The database cannot verify the admins' signatures, so a runtime
// credential can sign a request and its quorum with junk. What it cannot
// do is make that request due before the full delay on the database's own
// clock, during which any admin sees and can cancel it; and the executor,
// which verifies the signatures, refuses it.
func TestForgedQuorumWaitsTheFullDelayAndIsRefused(t *testing.T) {
	t.Parallel()
	sc := newAttackScenario(t)
	ctx := context.Background()
	if _, err := sc.cancel("admin-d", sc.scheduled.ID, "not this one"); err != nil {
		t.Fatal(err)
	}
	var id int64
	err := sc.pool.QueryRow(ctx, `INSERT INTO deletion_requests (kind, targets, digest, reason, requested_by, requested_at,
		approvals_required, delay, expires_at, admin_set_version)
		VALUES ('chunks', 'x', decode(repeat('00', 32), 'hex'), 'r', 'mallory', wv_now(), 2, '72 hours', wv_now() + interval '7 days', 1)
		RETURNING id`).Scan(&id)
	if err != nil {
		t.Fatalf("a plain request by SQL: %v", err)
	}
	for _, sql := range []string{
		"UPDATE deletion_requests SET requested_by_admin = 'admin-a', request_format = 'raw', request_signature = '\\x00' WHERE id = $1",
		"INSERT INTO deletion_approvals VALUES ($1, 'admin-b', now(), 'raw', '\\x00')",
		"INSERT INTO deletion_approvals VALUES ($1, 'admin-c', now(), 'raw', '\\x00')",
	} {
		if _, err := sc.pool.Exec(ctx, sql, id); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := sc.attack(t, `UPDATE deletion_requests SET state = 'scheduled', scheduled_at = wv_now() - interval '10 days',
		executes_at = wv_now() - interval '10 days' + delay WHERE id = $1`, id); sqlState(err) != "WV006" {
		t.Fatalf("scheduling in the past: %v, want WV006", err)
	}
	if err := sc.attack(t, `UPDATE deletion_requests SET state = 'scheduled', scheduled_at = wv_now(),
		executes_at = wv_now() + delay WHERE id = $1`, id); err != nil {
		t.Fatalf("scheduling at the database's time: %v (the database cannot tell junk signatures)", err)
	}
	if err := sc.attack(t, "SELECT wv_begin_execution($1)", id); sqlState(err) != "WV006" {
		t.Fatalf("registering before the delay: %v, want WV006", err)
	}
	sc.clk.Advance(delay)
	if _, err := sc.RunDue(ctx); err != nil {
		t.Fatalf("RunDue: %v", err)
	}
	if d, _ := sc.GetDeletion(ctx, id); d.State != store.StateRefused {
		t.Errorf("forged request is %s after RunDue, want refused", d.State)
	}
	for _, h := range sc.loose {
		if !sc.readable(t, h) {
			t.Errorf("chunk %s gone", h)
		}
	}
}

// Attack 3 of issue 13, with the runtime credential: the runtime role owns
// nothing, so it can alter, disable, drop or truncate nothing, and cannot
// create objects that the owner's code would pick up.
func TestRuntimeRoleCannotAlterDisableTruncate(t *testing.T) {
	t.Parallel()
	sc := newAttackScenario(t)
	ctx := context.Background()
	rows, _ := sc.pool.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 20 {
		t.Fatalf("tables = %v, %v", tables, err)
	}
	var cases []attackCase
	for _, tbl := range tables {
		cases = append(cases,
			attackCase{"truncate " + tbl, "TRUNCATE " + tbl + " CASCADE", permissionDenied},
			attackCase{"disable the triggers of " + tbl, "ALTER TABLE " + tbl + " DISABLE TRIGGER USER", permissionDenied},
			attackCase{"alter " + tbl, "ALTER TABLE " + tbl + " ADD COLUMN mallory int", permissionDenied},
			attackCase{"drop " + tbl, "DROP TABLE " + tbl + " CASCADE", permissionDenied},
		)
	}
	cases = append(cases,
		attackCase{"disable one trigger", "ALTER TABLE chunks DISABLE TRIGGER chunks_guard_delete", permissionDenied},
		attackCase{"drop a trigger", "DROP TRIGGER chunks_guard_delete ON chunks", permissionDenied},
		attackCase{"drop a trigger function", "DROP FUNCTION chunks_guard_delete() CASCADE", permissionDenied},
		attackCase{"replace the clock", "CREATE OR REPLACE FUNCTION wv_now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT timestamptz '2199-01-01' $$", permissionDenied},
		attackCase{"take a table", "ALTER TABLE chunks OWNER TO CURRENT_USER", permissionDenied},
		attackCase{"create a table", "CREATE TABLE public.mallory (x int)", permissionDenied},
		attackCase{"create a function", "CREATE FUNCTION public.mallory() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$", permissionDenied},
		attackCase{"create a schema", "CREATE SCHEMA mallory", permissionDenied},
		attackCase{"replica mode skips triggers", "SET session_replication_role = replica", permissionDenied},
	)
	var enabled int
	sc.pool.QueryRow(ctx, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'O'").Scan(&enabled)
	sc.mustRefuse(t, cases)
	var after int
	sc.pool.QueryRow(ctx, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'O'").Scan(&after)
	if after != enabled || enabled < 40 {
		t.Errorf("enabled triggers: %d before, %d after", enabled, after)
	}
}

// The runtime role's privileges, exactly: a new table or function is a
// decision written in its migration and here (see 009_least_privilege.sql).
func TestRuntimeRolePrivileges(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	want := map[string]string{
		"admin_keys":          "SELECT INSERT",
		"admin_set_versions":  "SELECT INSERT UPDATE",
		"audit_checkpoints":   "SELECT INSERT",
		"audit_chunks":        "SELECT INSERT",
		"audit_hashes":        "SELECT INSERT",
		"audit_integrator":    "SELECT UPDATE(chunk_seq)",
		"audit_log":           "SELECT INSERT",
		"chunk_tombstones":    "SELECT UPDATE(content_removed_at)",
		"chunks":              "SELECT INSERT DELETE UPDATE(retain_until)",
		"damaged_chunks":      "SELECT INSERT UPDATE(repaired_at,repaired_by)",
		"deletion_approvals":  "SELECT INSERT",
		"deletion_executions": "",
		"deletion_outcomes":   "SELECT INSERT",
		"distrusted_keys":     "SELECT INSERT",
		"deletion_requests": "SELECT INSERT UPDATE(state,scheduled_at,executes_at,cancelled_at,cancelled_by,cancel_reason,executed_at,report," +
			"requested_by_admin,request_format,request_signature,cancelled_by_admin,cancel_format,cancel_signature,refused_at,refusal)",
		"hold_chunks":         "SELECT INSERT",
		"hold_snapshots":      "SELECT INSERT",
		"holds":               "SELECT INSERT UPDATE(released_at,released_by)",
		"issued_tokens":       "SELECT INSERT",
		"packs_indexed":       "SELECT INSERT",
		"quota_daily":         "SELECT",
		"quota_settings":      "SELECT INSERT",
		"quota_totals":        "SELECT",
		"replica_disappeared": "SELECT INSERT",
		"replica_sources":     "SELECT INSERT UPDATE(url,kept_checkpoint,kept_size,alarm,alarm_at,last_pass_at,last_pass)",
		"restic_files":        "SELECT INSERT DELETE",
		"restic_repositories": "SELECT INSERT UPDATE(min_retention)",
		"retention_months":    "SELECT",
		"revoked_tokens":      "SELECT INSERT",
		"schema_version":      "SELECT",
		"scrub_state":         "SELECT UPDATE",
		"snapshot_chunks":     "SELECT INSERT",
		"snapshots":           "SELECT INSERT UPDATE(retain_until,deleted_at,deletion_id)",

		// 012: insert-only; a shortening version needs an executing policy request.
		"retention_policy_versions": "SELECT INSERT",
	}
	rows, _ := ts.pool.Query(ctx, `
		SELECT c.relname, concat_ws(' ',
			nullif(array_to_string(ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
				WHERE has_table_privilege($1, c.oid, p)), ' '), ''),
			'UPDATE(' || (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
				WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
				  AND NOT has_table_privilege($1, c.oid, 'UPDATE') AND has_column_privilege($1, c.oid, a.attnum, 'UPDATE')) || ')')
		FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		ORDER BY 1`, "wormvault_runtime")
	type priv struct{ table, privs string }
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (priv, error) {
		var p priv
		return p, r.Scan(&p.table, &p.privs)
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range got {
		seen[p.table] = true
		if w, ok := want[p.table]; !ok {
			t.Errorf("table %s: runtime privileges %q, and no decision here: add it to 009-style grants and to this test", p.table, p.privs)
		} else if p.privs != w {
			t.Errorf("table %s: runtime privileges %q, want %q", p.table, p.privs, w)
		}
	}
	for tbl := range want {
		if !seen[tbl] {
			t.Errorf("table %s is gone; update this test", tbl)
		}
	}

	var checks struct {
		sequences, functions                    string
		owned                                   int
		createSchema, createDB, member, ownerOf bool
	}
	err = ts.pool.QueryRow(ctx, `SELECT
		coalesce((SELECT string_agg(c.relname, ',') FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
			AND (has_sequence_privilege($1, c.oid, 'USAGE') OR has_sequence_privilege($1, c.oid, 'SELECT') OR has_sequence_privilege($1, c.oid, 'UPDATE'))), ''),
		(SELECT string_agg(p.oid::regprocedure::text, ' ' ORDER BY p.oid::regprocedure::text) FROM pg_proc p
			WHERE p.pronamespace = 'public'::regnamespace AND has_function_privilege($1, p.oid, 'EXECUTE')),
		(SELECT count(*) FROM pg_class WHERE relowner IN (SELECT oid FROM pg_roles WHERE rolname IN ($1, current_user)))
			+ (SELECT count(*) FROM pg_proc WHERE proowner IN (SELECT oid FROM pg_roles WHERE rolname IN ($1, current_user)))
			+ (SELECT count(*) FROM pg_namespace WHERE nspowner IN (SELECT oid FROM pg_roles WHERE rolname IN ($1, current_user))),
		has_schema_privilege($1, 'public', 'CREATE'), has_database_privilege($1, current_database(), 'CREATE'),
		pg_has_role(current_user, $1, 'MEMBER'),
		EXISTS (SELECT FROM pg_class WHERE relname = 'chunks' AND pg_has_role(current_user, relowner, 'MEMBER'))`,
		"wormvault_runtime").Scan(&checks.sequences, &checks.functions, &checks.owned, &checks.createSchema, &checks.createDB,
		&checks.member, &checks.ownerOf)
	if err != nil {
		t.Fatal(err)
	}
	if checks.sequences != "" {
		t.Errorf("runtime privileges on sequences %s, want none (identity columns need none)", checks.sequences)
	}
	if w := "chunk_held(bytea) executing_deletion() registered_execution() snapshot_held(bigint,text) " +
		"wv_begin_execution(bigint) wv_clock_tolerance() wv_now()"; checks.functions != w {
		t.Errorf("runtime may execute %s, want %s", checks.functions, w)
	}
	if checks.owned != 0 || checks.createSchema || checks.createDB {
		t.Errorf("runtime owns %d objects, CREATE on public %v, on the database %v; want none", checks.owned, checks.createSchema, checks.createDB)
	}
	if !checks.member || checks.ownerOf {
		t.Errorf("the store's connection: member of wormvault_runtime %v, owner of chunks %v; want a runtime login", checks.member, checks.ownerOf)
	}
}
