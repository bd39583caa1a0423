-- Least privilege (issue 13, item 3): the database refuses what a leaked
-- runtime credential could do, because that credential no longer owns
-- anything and the triggers no longer trust anything it can set.
--
-- Two roles:
--
--   owner    the role that runs `vault migrate --owner-url URL` (this
--            migration included). It owns every table, function and
--            trigger here. It needs no CREATEROLE and should not be a
--            superuser; `vault serve` never needs it.
--   runtime  the NOLOGIN group role wormvault_runtime. The server's login
--            role (e.g. vault_app) is a member of it. It owns nothing, so it
--            can ALTER, DISABLE TRIGGER, DROP or TRUNCATE nothing; it has
--            exactly the table privileges listed at the end of this file.
--
-- Creating roles needs CREATEROLE, which the owner must not have, so this
-- migration does not create wormvault_runtime: an administrator (the
-- PostgreSQL superuser, or scripts/devdb.sh, or the docker init script)
-- does, once per cluster:
--
--   CREATE ROLE wormvault_runtime NOLOGIN;
--   CREATE ROLE vault_app LOGIN PASSWORD '...' IN ROLE wormvault_runtime;
--
-- Privileges of later migrations: every migration grants the runtime role
-- what a new table or function needs, explicitly, next to its CREATE (no
-- ALTER DEFAULT PRIVILEGES granting to the runtime role). A table nobody
-- thought about stays closed to the runtime role, the tests (which run as
-- the runtime role) fail loudly, and TestRuntimeRolePrivileges lists the
-- exact privileges per table so a change shows in review. Default
-- privileges are used only to keep new functions from being executable by
-- PUBLIC.
--
-- Time. The triggers no longer read a caller-supplied time (the former
-- executor_now() trusted the session setting wormvault.now, which any
-- session can set). They call wv_now(), which is clock_timestamp(): the
-- database server's own clock. The Go executor keeps measuring the delay
-- on the vault's clock as well, and refuses to act when the two disagree
-- by more than its MaxClockSkew; a request time the server writes must be
-- within wv_clock_tolerance() of the database's clock. Tests do not sleep:
-- internal/pgtest replaces wv_now() in its test databases only (as the
-- owner) with one that reads a time the test's fake clock pushes through
-- the owner's connection. Production databases made by these migrations
-- have no way, for any role short of the owner, to move the database's
-- time.
--
-- Which request is executing. The former executing_deletion() trusted the
-- session setting wormvault.deletion_id. Now the executor calls
-- wv_begin_execution(id), a SECURITY DEFINER function owned by the owner,
-- which checks that the request is scheduled and due by the database's
-- clock (or already executing), moves it to executing, and registers the
-- calling transaction in deletion_executions, a table the runtime role
-- cannot read or write. executing_deletion() answers only for a
-- transaction registered that way.
--
-- What this does not do: the database cannot verify the admins' Ed25519
-- signatures, so a runtime credential can still forge a request with
-- junk signatures and, after waiting the full delay on the database's
-- clock (during which any admin can see and cancel it), remove index rows
-- of content that is past retention and unheld. Content itself is removed
-- only by the executor after it verified the signatures outside the
-- database (invariant 8).
--
-- search_path. The runtime role may create temporary tables (snapshot
-- commits use them), and pg_temp comes first in the default search_path,
-- so a temporary table named like a real one would shadow it inside a
-- trigger running in that session. Every trigger or helper function that
-- reads a table therefore runs with search_path pg_catalog, public,
-- pg_temp.
--
-- SQLSTATEs keep their meanings; new here: WV012 the roles are not set up.

-- The roles this schema needs, checked before anything changes.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'wormvault_runtime') THEN
        RAISE EXCEPTION 'the role wormvault_runtime does not exist: the vault''s runtime role must be created before this migration'
            USING ERRCODE = 'WV012',
                  HINT = 'As a PostgreSQL superuser (or a role with CREATEROLE), run once per cluster: '
                      || 'CREATE ROLE wormvault_runtime NOLOGIN; '
                      || 'CREATE ROLE vault_app LOGIN PASSWORD ''...'' IN ROLE wormvault_runtime; '
                      || 'then rerun `vault migrate --owner-url URL` as the schema owner, and serve with vault_app''s URL.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'wormvault_runtime'
               AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication)) THEN
        RAISE EXCEPTION 'the role wormvault_runtime has SUPERUSER, CREATEROLE, CREATEDB, BYPASSRLS or REPLICATION: it must have none'
            USING ERRCODE = 'WV012';
    END IF;
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
        AND pg_catalog.pg_has_role(current_user, 'wormvault_runtime', 'MEMBER') THEN
        RAISE EXCEPTION 'role % is a member of wormvault_runtime: the migrations are run by the schema owner, not by the server''s runtime login', current_user
            USING ERRCODE = 'WV012',
                  HINT = 'Run `vault migrate --owner-url URL` with the owner''s URL (VAULT_OWNER_DATABASE_URL).';
    END IF;
    IF pg_catalog.pg_has_role('wormvault_runtime', current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'wormvault_runtime is a member of %, the role running the migrations: the runtime role would hold the owner''s rights', current_user
            USING ERRCODE = 'WV012';
    END IF;
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE WARNING 'migrating as the superuser %: the schema will be owned by it; prefer a dedicated owner role without SUPERUSER', current_user;
    END IF;
END
$$;

-- Nothing is public that need not be. PostgreSQL 15 already creates the
-- public schema without CREATE for PUBLIC; older clusters and restored
-- dumps may not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO wormvault_runtime;

-- The database's time, for every trigger. See the header: tests replace
-- it in their own databases; nothing a session can set changes it.
CREATE FUNCTION wv_now() RETURNS timestamptz
LANGUAGE sql VOLATILE AS $$ SELECT pg_catalog.clock_timestamp() $$;

-- How far a time the server writes (requested_at, scheduled_at) may be
-- from the database's clock: above the executor's one-minute skew check,
-- and little enough that a forged schedule gains next to nothing.
CREATE FUNCTION wv_clock_tolerance() RETURNS interval
LANGUAGE sql IMMUTABLE AS $$ SELECT interval '5 minutes' $$;

-- Transactions registered by wv_begin_execution as executing a request.
-- Only the owner (through the SECURITY DEFINER functions below) touches it.
CREATE TABLE deletion_executions (
    xact        xid8        PRIMARY KEY,
    pid         integer     NOT NULL,
    deletion_id bigint      NOT NULL REFERENCES deletion_requests (id),
    began_at    timestamptz NOT NULL
);

-- The request wv_begin_execution registered the current transaction for,
-- whatever its state; NULL if none.
CREATE FUNCTION registered_execution() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT e.deletion_id FROM deletion_executions e
    WHERE e.xact = pg_current_xact_id_if_assigned() AND e.pid = pg_backend_pid()
$$;

-- The request the current transaction executes: registered by
-- wv_begin_execution, and executing; NULL otherwise.
CREATE OR REPLACE FUNCTION executing_deletion() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT r.id FROM deletion_requests r
    WHERE r.id = registered_execution() AND r.state = 'executing'
$$;

-- wv_begin_execution puts the calling transaction on the executor's path
-- for request did: a scheduled request whose executes_at has passed on the
-- database's clock moves to executing; an executing one (an execution a
-- crash interrupted, or the next batch) stays so. Anything else is
-- refused. It is the only way into deletion_executions.
CREATE FUNCTION wv_begin_execution(did bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r record;
    x xid8 := pg_current_xact_id();
    other bigint;
BEGIN
    SELECT id, state, executes_at INTO r FROM deletion_requests WHERE id = did FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'deletion request % does not exist', did USING ERRCODE = 'WV006';
    END IF;
    IF r.state = 'scheduled' THEN
        IF r.executes_at > wv_now() THEN
            RAISE EXCEPTION 'deletion request % executes at %, and the database''s clock says %', did, r.executes_at, wv_now()
                USING ERRCODE = 'WV006';
        END IF;
    ELSIF r.state <> 'executing' THEN
        RAISE EXCEPTION 'deletion request % is %, not scheduled or executing', did, r.state USING ERRCODE = 'WV006';
    END IF;
    SELECT deletion_id INTO other FROM deletion_executions WHERE xact = x;
    IF FOUND THEN
        IF other <> did THEN
            RAISE EXCEPTION 'this transaction already executes deletion request %', other USING ERRCODE = 'WV006';
        END IF;
    ELSE
        -- Registrations of finished transactions mean nothing any more.
        DELETE FROM deletion_executions WHERE pg_xact_status(xact) IS DISTINCT FROM 'in progress';
        INSERT INTO deletion_executions (xact, pid, deletion_id, began_at) VALUES (x, pg_backend_pid(), did, wv_now());
    END IF;
    IF r.state = 'scheduled' THEN
        UPDATE deletion_requests SET state = 'executing' WHERE id = did;
    END IF;
END
$$;

-- Nothing may read the former settings any more.
DROP FUNCTION executor_now();

-- Chunk rows leave only through an executing request that deletes chunks,
-- past retention by the database's clock, unheld and unreferenced by a
-- retained snapshot. SECURITY DEFINER: the tombstone is written here, as
-- the owner; the runtime role cannot insert tombstones itself.
CREATE OR REPLACE FUNCTION chunks_guard_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    did bigint := executing_deletion();
    at timestamptz;
BEGIN
    IF TG_OP <> 'DELETE' OR did IS NULL THEN
        RAISE EXCEPTION 'chunks cannot be deleted or truncated outside the deletion executor'
            USING ERRCODE = 'WV003';
    END IF;
    IF NOT EXISTS (SELECT FROM deletion_requests WHERE id = did AND kind IN ('chunks', 'snapshots', 'expired')) THEN
        RAISE EXCEPTION 'deletion request % does not delete chunks', did USING ERRCODE = 'WV007';
    END IF;
    at := wv_now();
    IF OLD.retain_until > at THEN
        RAISE EXCEPTION 'chunk % is retained until %', encode(OLD.hash, 'hex'), OLD.retain_until
            USING ERRCODE = 'WV007';
    END IF;
    IF chunk_held(OLD.hash) THEN
        RAISE EXCEPTION 'chunk % is under a legal hold', encode(OLD.hash, 'hex')
            USING ERRCODE = 'WV007';
    END IF;
    IF EXISTS (SELECT FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
               WHERE sc.hash = OLD.hash AND s.deleted_at IS NULL AND s.retain_until > at) THEN
        RAISE EXCEPTION 'chunk % is referenced by a retained snapshot', encode(OLD.hash, 'hex')
            USING ERRCODE = 'WV007';
    END IF;
    INSERT INTO chunk_tombstones (hash, size, stored_at, uploaded_by, pack_id, pack_offset, deleted_at, deletion_id)
    VALUES (OLD.hash, OLD.size, OLD.stored_at, OLD.uploaded_by, OLD.pack_id, OLD.pack_offset, at, did);
    RETURN OLD;
END
$$;

-- Snapshots are tombstoned in place only by their executing request of a
-- kind that deletes snapshots, past retention by the database's clock,
-- unheld; deleted_at is not in the future. The rest as 005.
CREATE OR REPLACE FUNCTION snapshots_guard_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    did bigint;
    at timestamptz;
BEGIN
    IF NEW.retain_until < OLD.retain_until THEN
        RAISE EXCEPTION 'retain_until of snapshot % can only be extended (% to %)',
            OLD.id, OLD.retain_until, NEW.retain_until
            USING ERRCODE = 'WV001';
    END IF;
    IF (NEW.id, NEW.source, NEW.name, NEW.taken_at, NEW.committed_at, NEW.committed_by, NEW.tags,
        NEW.manifest_root, NEW.manifest_count, NEW.chunk_count, NEW.total_bytes)
        IS DISTINCT FROM
       (OLD.id, OLD.source, OLD.name, OLD.taken_at, OLD.committed_at, OLD.committed_by, OLD.tags,
        OLD.manifest_root, OLD.manifest_count, OLD.chunk_count, OLD.total_bytes) THEN
        RAISE EXCEPTION 'snapshot % is immutable: only retain_until may change', OLD.id
            USING ERRCODE = 'WV002';
    END IF;
    IF (NEW.deleted_at, NEW.deletion_id) IS DISTINCT FROM (OLD.deleted_at, OLD.deletion_id) THEN
        did := executing_deletion();
        IF OLD.deleted_at IS NOT NULL OR did IS NULL OR NEW.deletion_id IS DISTINCT FROM did
            OR NOT EXISTS (SELECT FROM deletion_requests WHERE id = did AND kind IN ('snapshots', 'expired')) THEN
            RAISE EXCEPTION 'snapshot % can be deleted only by its executing deletion request', OLD.id
                USING ERRCODE = 'WV007';
        END IF;
        at := wv_now();
        IF OLD.retain_until > at OR OLD.retain_until > NEW.deleted_at OR snapshot_held(OLD.id, OLD.source) THEN
            RAISE EXCEPTION 'snapshot % is retained or held', OLD.id
                USING ERRCODE = 'WV007';
        END IF;
        IF NEW.deleted_at > at + wv_clock_tolerance() THEN
            RAISE EXCEPTION 'snapshot % cannot be deleted at % in the future', OLD.id, NEW.deleted_at
                USING ERRCODE = 'WV007';
        END IF;
    END IF;
    IF OLD.deleted_at IS NOT NULL AND NEW.retain_until <> OLD.retain_until THEN
        RAISE EXCEPTION 'snapshot % is deleted', OLD.id USING ERRCODE = 'WV002';
    END IF;
    RETURN NEW;
END
$$;

-- Holds are released only by their executing hold-release request (005),
-- now with a registration nobody can forge.
CREATE OR REPLACE FUNCTION holds_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    did bigint := executing_deletion();
BEGIN
    IF TG_TABLE_NAME = 'holds' AND TG_OP = 'UPDATE' AND did IS NOT NULL
        AND OLD.released_at IS NULL AND NEW.released_at IS NOT NULL
        AND EXISTS (SELECT FROM deletion_requests WHERE id = did AND kind = 'hold_release')
        AND (NEW.id, NEW.name, NEW.reason, NEW.target_kind, NEW.source, NEW.target_count, NEW.placed_by, NEW.placed_at)
            IS NOT DISTINCT FROM
            (OLD.id, OLD.name, OLD.reason, OLD.target_kind, OLD.source, OLD.target_count, OLD.placed_by, OLD.placed_at) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% cannot be changed: a hold is released only through an approved deletion request', TG_TABLE_NAME
        USING ERRCODE = 'WV004';
END
$$;

-- A request is born requested, unsigned and unscheduled, at the
-- database's time, under the current admin set and at least its policy
-- (the governance policy for admin-set changes). The admin set is the
-- floor because the runtime role cannot change it: a version is added
-- only by an executing admin_set request (006, below).
CREATE FUNCTION deletion_requests_check_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    at timestamptz := wv_now();
    latest bigint;
    v record;
BEGIN
    IF NEW.state IS DISTINCT FROM 'requested'
        OR NEW.scheduled_at IS NOT NULL OR NEW.executes_at IS NOT NULL
        OR NEW.cancelled_at IS NOT NULL OR NEW.cancelled_by IS NOT NULL OR NEW.cancel_reason IS NOT NULL
        OR NEW.executed_at IS NOT NULL OR NEW.report IS NOT NULL
        OR NEW.requested_by_admin IS NOT NULL OR NEW.request_format IS NOT NULL OR NEW.request_signature IS NOT NULL
        OR NEW.cancelled_by_admin IS NOT NULL OR NEW.cancel_format IS NOT NULL OR NEW.cancel_signature IS NOT NULL
        OR NEW.refused_at IS NOT NULL OR NEW.refusal IS NOT NULL THEN
        RAISE EXCEPTION 'a deletion request is born requested, unsigned and unscheduled' USING ERRCODE = 'WV006';
    END IF;
    IF NEW.requested_at NOT BETWEEN at - wv_clock_tolerance() AND at + wv_clock_tolerance() THEN
        RAISE EXCEPTION 'a deletion request is made at the database''s time (%), not at %', at, NEW.requested_at
            USING ERRCODE = 'WV006';
    END IF;
    SELECT max(version) INTO latest FROM admin_set_versions;
    IF NEW.admin_set_version IS DISTINCT FROM latest THEN
        RAISE EXCEPTION 'a deletion request is made under the current admin set version %, not %', latest, NEW.admin_set_version
            USING ERRCODE = 'WV006';
    END IF;
    IF latest IS NOT NULL THEN
        SELECT * INTO v FROM admin_set_versions WHERE version = latest;
        IF (NEW.kind = 'admin_set' AND (NEW.approvals_required < v.governance_approvals OR NEW.delay < v.governance_delay))
            OR (NEW.kind <> 'admin_set' AND (NEW.approvals_required < v.approvals_required OR NEW.delay < v.delay)) THEN
            RAISE EXCEPTION 'deletion request policy (% approvals, delay %) is weaker than admin set version %', NEW.approvals_required, NEW.delay, latest
                USING ERRCODE = 'WV006';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER deletion_requests_check_insert
    BEFORE INSERT ON deletion_requests
    FOR EACH ROW EXECUTE FUNCTION deletion_requests_check_insert();

-- The state machine of 006, with the database's clock and registered
-- executions instead of session settings:
--   requested → scheduled   at the database's time (± tolerance), with the
--                           signed quorum of 006;
--   requested → expired     only once expires_at has passed;
--   scheduled → executing,  only in a transaction wv_begin_execution
--   executing → executing,  registered for this request (which checks
--   executing → executed    executes_at against the database's clock);
--   → cancelled, → refused  as in 006 (they only ever stop a deletion).
-- Only the columns of the step may change with it; once scheduled, the
-- schedule is fixed.
CREATE OR REPLACE FUNCTION deletion_requests_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    approvals integer;
    at timestamptz;
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'deletion requests cannot be deleted' USING ERRCODE = 'WV004';
    END IF;
    IF (NEW.id, NEW.kind, NEW.targets, NEW.digest, NEW.reason, NEW.requested_by, NEW.requested_at,
        NEW.approvals_required, NEW.delay, NEW.expires_at, NEW.admin_set_version)
        IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.targets, OLD.digest, OLD.reason, OLD.requested_by, OLD.requested_at,
        OLD.approvals_required, OLD.delay, OLD.expires_at, OLD.admin_set_version) THEN
        RAISE EXCEPTION 'deletion request % is immutable except for its state', OLD.id USING ERRCODE = 'WV006';
    END IF;
    IF (NEW.requested_by_admin, NEW.request_format, NEW.request_signature)
        IS DISTINCT FROM (OLD.requested_by_admin, OLD.request_format, OLD.request_signature) THEN
        IF OLD.requested_by_admin IS NOT NULL OR OLD.state <> 'requested'
            OR NOT EXISTS (SELECT FROM admin_keys WHERE version = OLD.admin_set_version AND name = NEW.requested_by_admin)
            OR ROW(NEW.state, NEW.scheduled_at, NEW.executes_at, NEW.cancelled_at, NEW.cancelled_by, NEW.cancel_reason,
                   NEW.executed_at, NEW.report, NEW.cancelled_by_admin, NEW.cancel_format, NEW.cancel_signature,
                   NEW.refused_at, NEW.refusal)
               IS DISTINCT FROM
               ROW(OLD.state, OLD.scheduled_at, OLD.executes_at, OLD.cancelled_at, OLD.cancelled_by, OLD.cancel_reason,
                   OLD.executed_at, OLD.report, OLD.cancelled_by_admin, OLD.cancel_format, OLD.cancel_signature,
                   OLD.refused_at, OLD.refusal) THEN
            RAISE EXCEPTION 'deletion request % is signed once, by an admin, while requested', OLD.id USING ERRCODE = 'WV006';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.state = OLD.state AND NEW.state <> 'executing' THEN
        IF ROW(NEW.*) IS DISTINCT FROM ROW(OLD.*) THEN
            RAISE EXCEPTION 'deletion request % cannot change in state %', OLD.id, OLD.state USING ERRCODE = 'WV006';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT ((OLD.state = 'requested' AND NEW.state IN ('scheduled', 'cancelled', 'expired'))
         OR (OLD.state = 'scheduled' AND NEW.state IN ('cancelled', 'executing', 'refused'))
         OR (OLD.state = 'executing' AND NEW.state IN ('executing', 'executed', 'refused'))) THEN
        RAISE EXCEPTION 'deletion request % cannot go from % to %', OLD.id, OLD.state, NEW.state USING ERRCODE = 'WV006';
    END IF;
    IF OLD.state <> 'requested' AND (NEW.scheduled_at, NEW.executes_at) IS DISTINCT FROM (OLD.scheduled_at, OLD.executes_at) THEN
        RAISE EXCEPTION 'the schedule of deletion request % is fixed', OLD.id USING ERRCODE = 'WV006';
    END IF;
    at := wv_now();
    IF NEW.state = 'cancelled' AND NEW.cancelled_by_admin IS NULL THEN
        RAISE EXCEPTION 'deletion request % is cancelled only with an admin''s signature', OLD.id USING ERRCODE = 'WV006';
    END IF;
    IF NEW.state = 'refused' AND (NEW.refused_at IS NULL OR NEW.refusal IS NULL) THEN
        RAISE EXCEPTION 'deletion request % is refused with a time and a reason', OLD.id USING ERRCODE = 'WV006';
    END IF;
    IF NEW.state = 'expired' AND OLD.expires_at > at + wv_clock_tolerance() THEN
        RAISE EXCEPTION 'deletion request % expires at %', OLD.id, OLD.expires_at USING ERRCODE = 'WV006';
    END IF;
    IF NEW.state = 'scheduled' THEN
        IF OLD.requested_by_admin IS NULL THEN
            RAISE EXCEPTION 'deletion request % is not signed by its requester', OLD.id USING ERRCODE = 'WV006';
        END IF;
        IF NEW.scheduled_at NOT BETWEEN at - wv_clock_tolerance() AND at + wv_clock_tolerance() THEN
            RAISE EXCEPTION 'deletion request % is scheduled at the database''s time (%), not at %', OLD.id, at, NEW.scheduled_at
                USING ERRCODE = 'WV006';
        END IF;
        SELECT count(*) INTO approvals FROM deletion_approvals a
        WHERE a.deletion_id = OLD.id AND a.approver <> OLD.requested_by_admin AND a.signature IS NOT NULL
          AND EXISTS (SELECT FROM admin_keys k WHERE k.version = OLD.admin_set_version AND k.name = a.approver);
        IF approvals < OLD.approvals_required THEN
            RAISE EXCEPTION 'deletion request % has % of % approvals', OLD.id, approvals, OLD.approvals_required
                USING ERRCODE = 'WV006';
        END IF;
    END IF;
    IF NEW.state IN ('executing', 'executed') THEN
        IF registered_execution() IS DISTINCT FROM OLD.id THEN
            RAISE EXCEPTION 'deletion request % is executed only by the executor (wv_begin_execution)', OLD.id
                USING ERRCODE = 'WV006';
        END IF;
        IF OLD.executes_at > at THEN
            RAISE EXCEPTION 'deletion request % executes at %', OLD.id, OLD.executes_at USING ERRCODE = 'WV006';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- As 006, reading only the real tables.
CREATE OR REPLACE FUNCTION deletion_approvals_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NEW.signature IS NULL OR NOT EXISTS (
        SELECT FROM deletion_requests r
        WHERE r.id = NEW.deletion_id AND r.state = 'requested'
          AND r.requested_by_admin IS NOT NULL AND r.requested_by_admin <> NEW.approver
          AND EXISTS (SELECT FROM admin_keys k WHERE k.version = r.admin_set_version AND k.name = NEW.approver)) THEN
        RAISE EXCEPTION 'deletion request % is not open for approval by %', NEW.deletion_id, NEW.approver
            USING ERRCODE = 'WV006';
    END IF;
    RETURN NEW;
END
$$;

-- What an execution did is written only by that execution.
CREATE FUNCTION deletion_outcomes_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    did bigint := executing_deletion();
BEGIN
    IF did IS NULL OR EXISTS (SELECT FROM new_outcomes WHERE deletion_id <> did) THEN
        RAISE EXCEPTION 'deletion outcomes are written only by their executing request' USING ERRCODE = 'WV007';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deletion_outcomes_check
    AFTER INSERT ON deletion_outcomes
    REFERENCING NEW TABLE AS new_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION deletion_outcomes_check();

CREATE TRIGGER deletion_outcomes_guard_truncate
    BEFORE TRUNCATE ON deletion_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER deletion_approvals_guard_truncate
    BEFORE TRUNCATE ON deletion_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- A later admin-set version only from its executing admin_set request
-- (006), now with a registration nobody can forge; one version per
-- request, so that a request cannot be replayed into a second version.
CREATE OR REPLACE FUNCTION admin_set_versions_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NEW.version <> coalesce((SELECT max(version) FROM admin_set_versions), 0) + 1 THEN
        RAISE EXCEPTION 'admin set version % is not the next one', NEW.version USING ERRCODE = 'WV008';
    END IF;
    IF NEW.version > 1 AND (NEW.request_id IS DISTINCT FROM executing_deletion()
        OR NOT EXISTS (SELECT FROM deletion_requests WHERE id = NEW.request_id AND kind = 'admin_set')) THEN
        RAISE EXCEPTION 'the admin set changes only through an executing admin_set request' USING ERRCODE = 'WV008';
    END IF;
    RETURN NEW;
END
$$;

CREATE UNIQUE INDEX admin_set_versions_request_idx ON admin_set_versions (request_id);

ALTER FUNCTION admin_keys_check() SET search_path = pg_catalog, public, pg_temp;

-- The other functions that read tables, so that a temporary table cannot
-- stand in for a real one.
ALTER FUNCTION chunk_held(bytea) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION snapshot_held(bigint, text) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION snapshot_chunks_check_refs() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION snapshots_check_retention() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION restic_files_check_chunk() SET search_path = pg_catalog, public, pg_temp;

-- The auditor's per-month figures are maintained by these triggers only,
-- as the owner; the runtime role may only read them.
ALTER FUNCTION retention_months_insert() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION retention_months_update() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION retention_months_delete() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;

-- packs_indexed lets the start-up reconcile skip packs: insert-only.
CREATE TRIGGER packs_indexed_guard_change
    BEFORE UPDATE OR DELETE ON packs_indexed
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();
CREATE TRIGGER packs_indexed_guard_truncate
    BEFORE TRUNCATE ON packs_indexed
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- The runtime role's privileges, table by table. Nothing else: no
-- TRUNCATE, REFERENCES or TRIGGER anywhere, no DDL (it owns nothing and may
-- not CREATE in public). Every table keeps its triggers as the backstop
-- for bugs in the owner's own sessions.
--
--   schema_version        SELECT                 serve checks for pending migrations
--   chunks                SELECT, INSERT, DELETE, UPDATE (retain_until)
--                         DELETE only through the executor's trigger checks (WV003/WV007)
--   audit_log             SELECT, INSERT         append-only (WV004)
--   revoked_tokens        SELECT, INSERT
--   snapshots             SELECT, INSERT, UPDATE (retain_until, deleted_at, deletion_id)
--   snapshot_chunks       SELECT, INSERT
--   holds                 SELECT, INSERT, UPDATE (released_at, released_by)   release by an executing request only
--   hold_chunks           SELECT, INSERT
--   hold_snapshots        SELECT, INSERT
--   retention_months      SELECT                 written by SECURITY DEFINER triggers
--   packs_indexed         SELECT, INSERT         insert-only
--   deletion_requests     SELECT, INSERT, UPDATE (state and lifecycle columns)   INSERT and UPDATE guarded above
--   deletion_approvals    SELECT, INSERT
--   deletion_outcomes     SELECT, INSERT         only by the executing request
--   deletion_executions   none                   only wv_begin_execution writes it
--   chunk_tombstones      SELECT, UPDATE (content_removed_at)   rows only from chunks_guard_delete
--   admin_set_versions    SELECT, INSERT, UPDATE
--                         UPDATE only because the executor takes LOCK TABLE ... IN
--                         EXCLUSIVE MODE, which PostgreSQL grants only with a table-level
--                         UPDATE, DELETE or TRUNCATE privilege; the trigger refuses
--                         every UPDATE (WV004), and INSERT needs an executing admin_set
--                         request (WV008)
--   admin_keys            SELECT, INSERT         only in the transaction of their version
--   restic_repositories   SELECT, INSERT, UPDATE (min_retention)
--   restic_files          SELECT, INSERT, DELETE only locks may be deleted (WV010)
--   audit_hashes          SELECT, INSERT
--   audit_checkpoints     SELECT, INSERT
--   audit_chunks          SELECT, INSERT
--   audit_integrator      SELECT, UPDATE (chunk_seq)   only forward (008). The cursor can
--                         still be moved forward past unlogged chunks; logging chunk
--                         commits in the committing transaction (issue 13, item 4)
--                         replaces it.
--
-- Functions: the runtime role may execute wv_now, wv_clock_tolerance,
-- wv_begin_execution, registered_execution, executing_deletion,
-- chunk_held and snapshot_held.
-- Trigger functions need no EXECUTE privilege to fire.
GRANT SELECT ON public.schema_version TO wormvault_runtime;
GRANT SELECT, INSERT, DELETE ON chunks TO wormvault_runtime;
GRANT UPDATE (retain_until) ON chunks TO wormvault_runtime;
GRANT SELECT, INSERT ON audit_log, revoked_tokens, snapshot_chunks, hold_chunks, hold_snapshots,
    packs_indexed, deletion_approvals, deletion_outcomes, admin_keys,
    audit_hashes, audit_checkpoints, audit_chunks TO wormvault_runtime;
GRANT SELECT, INSERT ON snapshots TO wormvault_runtime;
GRANT UPDATE (retain_until, deleted_at, deletion_id) ON snapshots TO wormvault_runtime;
GRANT SELECT, INSERT ON holds TO wormvault_runtime;
GRANT UPDATE (released_at, released_by) ON holds TO wormvault_runtime;
GRANT SELECT ON retention_months TO wormvault_runtime;
GRANT SELECT, INSERT ON deletion_requests TO wormvault_runtime;
GRANT UPDATE (state, scheduled_at, executes_at, cancelled_at, cancelled_by, cancel_reason, executed_at, report,
    requested_by_admin, request_format, request_signature, cancelled_by_admin, cancel_format, cancel_signature,
    refused_at, refusal) ON deletion_requests TO wormvault_runtime;
GRANT SELECT ON chunk_tombstones TO wormvault_runtime;
GRANT UPDATE (content_removed_at) ON chunk_tombstones TO wormvault_runtime;
GRANT SELECT, INSERT, UPDATE ON admin_set_versions TO wormvault_runtime;
GRANT SELECT, INSERT ON restic_repositories TO wormvault_runtime;
GRANT UPDATE (min_retention) ON restic_repositories TO wormvault_runtime;
GRANT SELECT, INSERT, DELETE ON restic_files TO wormvault_runtime;
GRANT SELECT ON audit_integrator TO wormvault_runtime;
GRANT UPDATE (chunk_seq) ON audit_integrator TO wormvault_runtime;

GRANT EXECUTE ON FUNCTION wv_now(), wv_clock_tolerance(), wv_begin_execution(bigint), registered_execution(),
    executing_deletion(),
    chunk_held(bytea), snapshot_held(bigint, text) TO wormvault_runtime;
