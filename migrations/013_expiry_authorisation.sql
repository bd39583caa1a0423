-- Routine expiry (issue 15, part 3): a standing expiry authorisation,
-- approved once like an admin-set change, under which the executor
-- removes, on a schedule, what a manual `expired` request would.
--
--   kind expiry_authorisation  a governed request (the governance quorum
--                              and delay, like admin_set and policy). Its
--                              targets text names its terms (interval,
--                              per-run ceilings). Executed, it stays
--                              'executing': that is "in force". Any one
--                              admin suspends it with a signed cancel
--                              (executing -> cancelled); it never becomes
--                              'executed'.
--   expiry runs                requests of kind 'expired' (before = the run's
--                              time, the whole vault) that name their
--                              authorisation in authorisation_id. The
--                              executor inserts one per run and, in the same
--                              transaction, either starts it
--                              (wv_begin_execution: requested -> executing,
--                              only while the authorisation is in force, one
--                              run at a time) or refuses it (requested ->
--                              refused, above the ceiling). They take no
--                              signatures: their authority is the
--                              authorisation's, which the executor
--                              re-verifies, against the stored signatures and
--                              the data directory's journal, at every run.
--
-- Everything else is as for a manual deletion: the chunk rows still leave
-- only through chunks_guard_delete (past retention by the database's
-- clock, unheld, in no retained snapshot), each with its tombstone, and
-- content is removed only after the journal's replay allowed it.
--
-- What a leaked runtime credential can do here: nothing it could not do
-- before. It cannot insert a run without an authorisation in force, start
-- a second run of one authorisation while one executes, change a run's
-- authorisation (no UPDATE privilege on the column, and the guard), or
-- end an authorisation except by a (signed) cancel or a refusal, both of
-- which only stop deletions.
--
-- The governed kinds (the governance quorum and delay) are
-- ('admin_set','policy','expiry_authorisation') everywhere.

ALTER TABLE deletion_requests
    DROP CONSTRAINT deletion_requests_kind_check,
    ADD CONSTRAINT deletion_requests_kind_check
        CHECK (kind IN ('chunks','snapshots','expired','hold_release','admin_set','policy','expiry_authorisation')),
    ADD COLUMN authorisation_id bigint REFERENCES deletion_requests (id),
    ADD CONSTRAINT deletion_requests_run_kind CHECK (authorisation_id IS NULL OR kind = 'expired');

CREATE INDEX deletion_requests_runs_idx ON deletion_requests (authorisation_id, requested_at)
    WHERE authorisation_id IS NOT NULL;

-- As 009, with the governed kinds.
CREATE OR REPLACE FUNCTION deletion_requests_check_insert() RETURNS trigger
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
        IF (NEW.kind IN ('admin_set','policy','expiry_authorisation')
                AND (NEW.approvals_required < v.governance_approvals OR NEW.delay < v.governance_delay))
            OR (NEW.kind NOT IN ('admin_set','policy','expiry_authorisation')
                AND (NEW.approvals_required < v.approvals_required OR NEW.delay < v.delay)) THEN
            RAISE EXCEPTION 'deletion request policy (% approvals, delay %) is weaker than admin set version %', NEW.approvals_required, NEW.delay, latest
                USING ERRCODE = 'WV006';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- A run names an authorisation in force when it is made.
CREATE FUNCTION deletion_requests_check_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NEW.authorisation_id IS NOT NULL AND NOT EXISTS (
        SELECT FROM deletion_requests a
        WHERE a.id = NEW.authorisation_id AND a.kind = 'expiry_authorisation' AND a.state = 'executing') THEN
        RAISE EXCEPTION 'an expiry run is made only under an expiry authorisation in force, not %', NEW.authorisation_id
            USING ERRCODE = 'WV006';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER deletion_requests_check_run
    BEFORE INSERT ON deletion_requests
    FOR EACH ROW EXECUTE FUNCTION deletion_requests_check_run();

-- As 009, and: a run (requested, with an authorisation) starts through
-- wv_begin_execution only while its authorisation is in force.
CREATE OR REPLACE FUNCTION wv_begin_execution(did bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r record;
    x xid8 := pg_current_xact_id();
    other bigint;
BEGIN
    SELECT id, kind, state, executes_at, authorisation_id INTO r FROM deletion_requests WHERE id = did FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'deletion request % does not exist', did USING ERRCODE = 'WV006';
    END IF;
    IF r.state = 'requested' AND r.authorisation_id IS NOT NULL THEN
        -- A routine expiry run starts only under an authorisation in
        -- force, locked against a concurrent suspension, and one run of
        -- an authorisation at a time.
        PERFORM FROM deletion_requests a
        WHERE a.id = r.authorisation_id AND a.kind = 'expiry_authorisation' AND a.state = 'executing' FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'expiry run % has no expiry authorisation in force', did USING ERRCODE = 'WV006';
        END IF;
        IF EXISTS (SELECT FROM deletion_requests o WHERE o.authorisation_id = r.authorisation_id
                   AND o.id <> did AND o.state = 'executing') THEN
            RAISE EXCEPTION 'expiry authorisation % already has a run executing', r.authorisation_id USING ERRCODE = 'WV006';
        END IF;
    ELSIF r.state = 'scheduled' THEN
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
    IF r.state IN ('scheduled', 'requested') THEN
        UPDATE deletion_requests SET state = 'executing' WHERE id = did;
    END IF;
END
$$;

-- The state machine of 009, and:
--   requested → executing   an expiry run, through wv_begin_execution
--   requested → refused     an expiry run above its ceiling
--   executing → cancelled   an expiry authorisation in force, suspended by
--                           one admin's signed cancel
-- An expiry authorisation is never 'executed'; authorisation_id is
-- immutable.
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
        NEW.approvals_required, NEW.delay, NEW.expires_at, NEW.admin_set_version, NEW.authorisation_id)
        IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.targets, OLD.digest, OLD.reason, OLD.requested_by, OLD.requested_at,
        OLD.approvals_required, OLD.delay, OLD.expires_at, OLD.admin_set_version, OLD.authorisation_id) THEN
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
         OR (OLD.state = 'requested' AND OLD.authorisation_id IS NOT NULL AND NEW.state IN ('executing', 'refused'))
         OR (OLD.state = 'scheduled' AND NEW.state IN ('cancelled', 'executing', 'refused'))
         OR (OLD.state = 'executing' AND OLD.kind <> 'expiry_authorisation' AND NEW.state IN ('executing', 'executed', 'refused'))
         OR (OLD.state = 'executing' AND OLD.kind = 'expiry_authorisation' AND NEW.state IN ('executing', 'cancelled', 'refused'))) THEN
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
