-- Retention policies on the server (issue 15, part 2).
--
-- Admins name policies (daily, weekly, monthly and yearly terms and a
-- minimum) and attach each to sources by a pattern. At snapshot commit the
-- vault computes the snapshot's retention from the policies that match its
-- source and from its own clock; agents may ask for longer, never shorter.
--
-- A policy is a chain of insert-only versions, like the admin set: the
-- current policy is its newest version. A version that only lengthens
-- (every term at least as long, the same pattern) may be added by an admin
-- at once; one that shortens a term, changes the pattern or detaches the
-- policy (pattern NULL) only by its executing 'policy' request, which takes
-- the governance quorum and delay (WV008, as for the admin set).
--
-- SQLSTATEs keep their meanings: WV004 insert-only table changed, WV006
-- deletion request refused, WV008 governed change outside its request.

-- New governed kinds: 'policy' (this migration) and
-- 'expiry_authorisation' (standing expiry). Both are governance kinds.
ALTER TABLE deletion_requests
    DROP CONSTRAINT deletion_requests_kind_check,
    ADD CONSTRAINT deletion_requests_kind_check
        CHECK (kind IN ('chunks','snapshots','expired','hold_release','admin_set','policy','expiry_authorisation'));

CREATE TABLE retention_policy_versions (
    name           text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    version        bigint      NOT NULL CHECK (version >= 1),
    -- Sources the policy covers, as a glob (* ? and literal name
    -- characters); NULL: detached, it covers nothing.
    pattern        text        CHECK (pattern ~ '^[A-Za-z0-9._:@+=/*?-]{1,128}$'),
    daily_days     integer     NOT NULL CHECK (daily_days BETWEEN 0 AND 36600),
    weekly_weeks   integer     NOT NULL CHECK (weekly_weeks BETWEEN 0 AND 5300),
    monthly_months integer     NOT NULL CHECK (monthly_months BETWEEN 0 AND 1200),
    yearly_years   integer     NOT NULL CHECK (yearly_years BETWEEN 0 AND 100),
    minimum_days   integer     NOT NULL CHECK (minimum_days BETWEEN 0 AND 36600),
    created_at     timestamptz NOT NULL,
    created_by     text        NOT NULL CHECK (created_by <> ''),
    -- The policy request whose execution made this version; NULL for
    -- versions an admin added directly (creation, lengthening).
    request_id     bigint      REFERENCES deletion_requests (id),
    PRIMARY KEY (name, version)
);

-- One version per request: a request cannot be replayed into a second one.
CREATE UNIQUE INDEX retention_policy_versions_request_idx ON retention_policy_versions (request_id);

-- A version is the next one of its policy; it may shorten, re-point or
-- detach only in the transaction executing its own 'policy' request.
CREATE FUNCTION retention_policy_versions_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    prev record;
BEGIN
    SELECT * INTO prev FROM retention_policy_versions WHERE name = NEW.name ORDER BY version DESC LIMIT 1;
    IF NEW.version <> coalesce(prev.version, 0) + 1 THEN
        RAISE EXCEPTION 'retention policy % version % is not the next one', NEW.name, NEW.version USING ERRCODE = 'WV008';
    END IF;
    IF NEW.request_id IS NOT NULL AND (NEW.request_id IS DISTINCT FROM executing_deletion()
        OR NOT EXISTS (SELECT FROM deletion_requests WHERE id = NEW.request_id AND kind = 'policy')) THEN
        RAISE EXCEPTION 'a retention policy version names a request only in that request''s execution' USING ERRCODE = 'WV008';
    END IF;
    IF prev.version IS NOT NULL AND NEW.request_id IS NULL
        AND (NEW.pattern IS DISTINCT FROM prev.pattern
             OR NEW.daily_days < prev.daily_days OR NEW.weekly_weeks < prev.weekly_weeks
             OR NEW.monthly_months < prev.monthly_months OR NEW.yearly_years < prev.yearly_years
             OR NEW.minimum_days < prev.minimum_days) THEN
        RAISE EXCEPTION 'retention policy % is shortened, re-pointed or detached only through an executing policy request', NEW.name
            USING ERRCODE = 'WV008';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER retention_policy_versions_check
    BEFORE INSERT ON retention_policy_versions
    FOR EACH ROW EXECUTE FUNCTION retention_policy_versions_check();

CREATE TRIGGER retention_policy_versions_guard
    BEFORE UPDATE OR DELETE ON retention_policy_versions
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER retention_policy_versions_guard_truncate
    BEFORE TRUNCATE ON retention_policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Governance kinds take the admin set's governance quorum and delay (009's
-- rule for admin_set, now for every governed kind).
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

-- Listings and `restore latest` order by the vault's commit time, never
-- by the agent's taken_at.
CREATE INDEX snapshots_committed_idx ON snapshots (committed_at, id);
CREATE INDEX snapshots_source_committed_idx ON snapshots (source, committed_at, id);

-- Runtime privileges (see 009_least_privilege.sql and
-- TestRuntimeRolePrivileges):
--   retention_policy_versions   SELECT, INSERT   insert-only (WV004); a
--                               version that shortens needs an executing
--                               policy request (WV008)
GRANT SELECT, INSERT ON retention_policy_versions TO wormvault_runtime;
