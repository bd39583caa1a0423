-- Approvals signed with the admins' personal keys (issue 8). A JWT says
-- which token called; only a signature by an admin's own Ed25519 key says
-- which human agreed. The admin set is versioned and changes only through
-- an executed admin_set request (its own quorum and delay).
--
-- The database cannot verify Ed25519, so these constraints are the
-- backstop for bugs; the executor re-verifies every signature in Go before
-- it deletes anything, and refuses (state 'refused') a request whose rows
-- do not verify.

CREATE TABLE admin_set_versions (
    version              bigint      PRIMARY KEY CHECK (version >= 1),
    approvals_required   integer     NOT NULL CHECK (approvals_required >= 1),
    delay                interval    NOT NULL CHECK (delay > interval '0'),
    governance_approvals integer     NOT NULL CHECK (governance_approvals >= 2),
    governance_delay     interval    NOT NULL,
    created_at           timestamptz NOT NULL,
    -- The admin_set request whose execution made this version; NULL only
    -- for the genesis set, seeded from the data directory's admins.json.
    request_id           bigint      REFERENCES deletion_requests (id),
    CHECK ((version = 1) = (request_id IS NULL)),
    CHECK (governance_approvals >= approvals_required AND governance_delay >= delay)
);

-- Each version lists its whole membership.
CREATE TABLE admin_keys (
    version    bigint      NOT NULL REFERENCES admin_set_versions (version),
    name       text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    key_kind   text        NOT NULL CHECK (key_kind IN ('raw', 'ssh')),
    public_key bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    added_at   timestamptz NOT NULL,
    PRIMARY KEY (version, name),
    -- One key, one admin: a key enrolled twice would count twice.
    UNIQUE (version, public_key)
);

-- A version is added only as the next one: the genesis when there is none,
-- later ones only by their executing admin_set request.
CREATE FUNCTION admin_set_versions_check() RETURNS trigger
LANGUAGE plpgsql AS $$
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

CREATE TRIGGER admin_set_versions_check
    BEFORE INSERT ON admin_set_versions
    FOR EACH ROW EXECUTE FUNCTION admin_set_versions_check();

-- Members are written with their version, in the transaction that made it.
CREATE FUNCTION admin_keys_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM admin_set_versions v
                   WHERE v.version = NEW.version
                     AND v.xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text) THEN
        RAISE EXCEPTION 'admin set version % is closed', NEW.version USING ERRCODE = 'WV008';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER admin_keys_check
    BEFORE INSERT ON admin_keys
    FOR EACH ROW EXECUTE FUNCTION admin_keys_check();

CREATE TRIGGER admin_set_versions_guard_change
    BEFORE UPDATE OR DELETE ON admin_set_versions
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();
CREATE TRIGGER admin_set_versions_guard_truncate
    BEFORE TRUNCATE ON admin_set_versions
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();
CREATE TRIGGER admin_keys_guard_change
    BEFORE UPDATE OR DELETE ON admin_keys
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();
CREATE TRIGGER admin_keys_guard_truncate
    BEFORE TRUNCATE ON admin_keys
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Requests: the admin-set version they were made under, the requester as
-- an admin (set once, when the request statement's signature verified), and
-- signed cancels. A request made before this migration has no version and
-- can never be signed, so it can never execute: it expires.
ALTER TABLE deletion_requests
    DROP CONSTRAINT deletion_requests_kind_check,
    ADD CONSTRAINT deletion_requests_kind_check
        CHECK (kind IN ('chunks', 'snapshots', 'expired', 'hold_release', 'admin_set')),
    DROP CONSTRAINT deletion_requests_state_check,
    ADD CONSTRAINT deletion_requests_state_check
        CHECK (state IN ('requested', 'scheduled', 'cancelled', 'expired', 'executing', 'executed', 'refused')),
    ADD COLUMN admin_set_version  bigint REFERENCES admin_set_versions (version),
    ADD COLUMN requested_by_admin text,
    ADD COLUMN request_format     text CHECK (request_format IN ('raw', 'sshsig')),
    ADD COLUMN request_signature  bytea,
    ADD COLUMN cancelled_by_admin text,
    ADD COLUMN cancel_format      text CHECK (cancel_format IN ('raw', 'sshsig')),
    ADD COLUMN cancel_signature   bytea,
    ADD COLUMN refused_at         timestamptz,
    ADD COLUMN refusal            text,
    ADD CONSTRAINT deletion_requests_signed_request
        CHECK ((requested_by_admin IS NULL) = (request_signature IS NULL)
           AND (request_signature IS NULL) = (request_format IS NULL)
           AND (requested_by_admin IS NULL OR admin_set_version IS NOT NULL)),
    ADD CONSTRAINT deletion_requests_signed_cancel
        CHECK ((cancelled_by_admin IS NULL) = (cancel_signature IS NULL)
           AND (cancel_signature IS NULL) = (cancel_format IS NULL));

-- Approvals carry their signature; unsigned rows (from before this
-- migration) never count.
ALTER TABLE deletion_approvals
    ADD COLUMN format    text CHECK (format IN ('raw', 'sshsig')),
    ADD COLUMN signature bytea,
    ADD CONSTRAINT deletion_approvals_signed CHECK ((format IS NULL) = (signature IS NULL));

-- The state machine of 005, with: the requester is an admin who signed;
-- the signed request fields are set once, while requested; approvals that
-- count are signed, by members of the request's admin-set version other
-- than the requester; the executor may refuse a scheduled or executing
-- request whose signatures do not verify.
CREATE OR REPLACE FUNCTION deletion_requests_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    approvals integer;
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
        IF OLD.requested_by_admin IS NOT NULL OR OLD.state <> 'requested' OR NEW.state <> 'requested'
            OR NOT EXISTS (SELECT FROM admin_keys WHERE version = OLD.admin_set_version AND name = NEW.requested_by_admin) THEN
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
    IF NEW.state = 'cancelled' AND NEW.cancelled_by_admin IS NULL THEN
        RAISE EXCEPTION 'deletion request % is cancelled only with an admin''s signature', OLD.id USING ERRCODE = 'WV006';
    END IF;
    IF NEW.state = 'refused' AND (NEW.refused_at IS NULL OR NEW.refusal IS NULL) THEN
        RAISE EXCEPTION 'deletion request % is refused with a time and a reason', OLD.id USING ERRCODE = 'WV006';
    END IF;
    IF NEW.state = 'scheduled' THEN
        IF OLD.requested_by_admin IS NULL THEN
            RAISE EXCEPTION 'deletion request % is not signed by its requester', OLD.id USING ERRCODE = 'WV006';
        END IF;
        SELECT count(*) INTO approvals FROM deletion_approvals a
        WHERE a.deletion_id = OLD.id AND a.approver <> OLD.requested_by_admin AND a.signature IS NOT NULL
          AND EXISTS (SELECT FROM admin_keys k WHERE k.version = OLD.admin_set_version AND k.name = a.approver);
        IF approvals < OLD.approvals_required THEN
            RAISE EXCEPTION 'deletion request % has % of % approvals', OLD.id, approvals, OLD.approvals_required
                USING ERRCODE = 'WV006';
        END IF;
    END IF;
    IF NEW.state = 'executing' AND OLD.state = 'scheduled' AND NEW.executes_at > executor_now() THEN
        RAISE EXCEPTION 'deletion request % executes at %', OLD.id, NEW.executes_at USING ERRCODE = 'WV006';
    END IF;
    RETURN NEW;
END
$$;

-- An approval only for an open, signed request, signed, by a member of the
-- request's admin set other than the requester.
CREATE OR REPLACE FUNCTION deletion_approvals_check() RETURNS trigger
LANGUAGE plpgsql AS $$
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
