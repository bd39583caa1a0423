-- Time-delayed, multi-party deletion (issue 7): the only way anything
-- leaves the vault. Requests are approved by admins other than the
-- requester, wait out a delay in which any admin can cancel, and are then
-- executed. Every rule is enforced here as well as in Go.
--
-- SQLSTATEs: WV006 an invalid deletion state change; WV007 a deletion
-- outside an executing request's path.

CREATE TABLE deletion_requests (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind               text        NOT NULL CHECK (kind IN ('chunks', 'snapshots', 'expired', 'hold_release')),
    -- The frozen, canonical description of the targets, exactly as
    -- approvers see it, and its SHA-256.
    targets            text        NOT NULL,
    digest             bytea       NOT NULL CHECK (octet_length(digest) = 32),
    reason             text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    requested_by       text        NOT NULL CHECK (requested_by <> ''),
    requested_at       timestamptz NOT NULL,
    -- The policy in force when the request was made; it cannot be
    -- weakened for a request in flight.
    approvals_required integer     NOT NULL CHECK (approvals_required >= 1),
    delay              interval    NOT NULL CHECK (delay > interval '0'),
    expires_at         timestamptz NOT NULL CHECK (expires_at > requested_at),
    state              text        NOT NULL DEFAULT 'requested'
        CHECK (state IN ('requested', 'scheduled', 'cancelled', 'expired', 'executing', 'executed')),
    scheduled_at       timestamptz,
    executes_at        timestamptz,
    cancelled_at       timestamptz,
    cancelled_by       text,
    cancel_reason      text,
    executed_at        timestamptz,
    report             jsonb,
    CHECK ((executes_at IS NULL) = (scheduled_at IS NULL)),
    CHECK (executes_at IS NULL OR executes_at = scheduled_at + delay),
    CHECK ((cancelled_at IS NULL) = (cancelled_by IS NULL))
);

CREATE INDEX deletion_requests_due_idx ON deletion_requests (executes_at) WHERE state IN ('scheduled', 'executing');
CREATE INDEX deletion_requests_open_idx ON deletion_requests (expires_at) WHERE state = 'requested';

CREATE TABLE deletion_approvals (
    deletion_id bigint      NOT NULL REFERENCES deletion_requests (id),
    -- One approval per person: a subject is one admin whatever token it
    -- used.
    approver    text        NOT NULL CHECK (approver <> ''),
    approved_at timestamptz NOT NULL,
    PRIMARY KEY (deletion_id, approver)
);

-- What execution did with each object, kept forever.
CREATE TABLE deletion_outcomes (
    deletion_id bigint      NOT NULL REFERENCES deletion_requests (id),
    object_kind text        NOT NULL CHECK (object_kind IN ('chunk', 'snapshot', 'hold')),
    object      text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('deleted', 'skipped')),
    reason      text        NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    PRIMARY KEY (deletion_id, object_kind, object)
);

-- A deleted chunk's tombstone: its identity, when and by which request,
-- and whether its content is gone from disk yet. Kept forever.
CREATE TABLE chunk_tombstones (
    hash               bytea       NOT NULL CHECK (octet_length(hash) = 32),
    size               bigint      NOT NULL,
    stored_at          timestamptz NOT NULL,
    uploaded_by        text        NOT NULL,
    pack_id            bigint,
    pack_offset        bigint,
    deleted_at         timestamptz NOT NULL,
    deletion_id        bigint      NOT NULL REFERENCES deletion_requests (id),
    content_removed_at timestamptz,
    PRIMARY KEY (hash, deleted_at)
);

CREATE INDEX chunk_tombstones_pending_idx ON chunk_tombstones (deletion_id) WHERE content_removed_at IS NULL;

ALTER TABLE snapshots
    ADD COLUMN deleted_at  timestamptz,
    ADD COLUMN deletion_id bigint REFERENCES deletion_requests (id),
    ADD CONSTRAINT snapshots_deleted CHECK ((deleted_at IS NULL) = (deletion_id IS NULL));

-- The executor's time for this transaction, set with SET LOCAL
-- wormvault.now. It comes from the server's injected clock, which the
-- executor has cross-checked against the database's clock; tests move it
-- without sleeping.
CREATE FUNCTION executor_now() RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v text := current_setting('wormvault.now', true);
BEGIN
    IF v IS NULL OR v = '' THEN
        RAISE EXCEPTION 'wormvault.now is not set: not on the executor''s path' USING ERRCODE = 'WV007';
    END IF;
    RETURN v::timestamptz;
END
$$;

-- The request executing in this transaction, as set by the executor with
-- SET LOCAL wormvault.deletion_id; NULL outside the executor's path.
CREATE FUNCTION executing_deletion() RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v text := current_setting('wormvault.deletion_id', true);
    req bigint;
BEGIN
    IF v IS NULL OR v = '' THEN
        RETURN NULL;
    END IF;
    req := v::bigint;
    IF NOT EXISTS (SELECT FROM deletion_requests r WHERE r.id = req AND r.state = 'executing') THEN
        RETURN NULL;
    END IF;
    RETURN req;
END
$$;

CREATE FUNCTION snapshot_held(sid bigint, src text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT FROM hold_snapshots hs JOIN holds ON holds.id = hs.hold_id
        WHERE hs.snapshot_id = sid AND holds.released_at IS NULL
    ) OR EXISTS (
        SELECT FROM holds WHERE holds.source = src AND holds.target_kind = 'source' AND holds.released_at IS NULL
    )
$$;

-- Whether a chunk is under a legal hold that has not been released:
-- directly, through a held snapshot, or through a held source.
CREATE FUNCTION chunk_held(h bytea) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT FROM hold_chunks hc JOIN holds ON holds.id = hc.hold_id
        WHERE hc.hash = h AND holds.released_at IS NULL
    ) OR EXISTS (
        SELECT FROM snapshot_chunks sc
        JOIN snapshots s ON s.id = sc.snapshot_id
        WHERE sc.hash = h AND s.deleted_at IS NULL AND snapshot_held(s.id, s.source)
    )
$$;


-- Chunk rows leave the table only through an executing deletion, only past
-- their retention, unheld and unreferenced by a retained snapshot; the
-- tombstone is written here, so no deletion can skip it.
CREATE OR REPLACE FUNCTION chunks_guard_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    did bigint := executing_deletion();
    at timestamptz;
BEGIN
    IF TG_OP <> 'DELETE' OR did IS NULL THEN
        RAISE EXCEPTION 'chunks cannot be deleted or truncated outside the deletion executor'
            USING ERRCODE = 'WV003';
    END IF;
    at := executor_now();
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

-- Held chunks are protected by chunks_guard_delete; the foreign key would
-- also block chunks of released holds forever.
ALTER TABLE hold_chunks DROP CONSTRAINT hold_chunks_hash_fkey;

-- Keep the auditor's per-month figures right when chunks leave.
CREATE FUNCTION retention_months_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retention_months AS m (month, slot, chunks, bytes)
    SELECT date_trunc('month', retain_until AT TIME ZONE 'UTC')::date, pg_backend_pid(), -count(*), -sum(size)
    FROM old_rows GROUP BY 1 ORDER BY 1
    ON CONFLICT (month, slot) DO UPDATE
        SET chunks = m.chunks + excluded.chunks, bytes = m.bytes + excluded.bytes;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_retention_months_delete
    AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION retention_months_delete();

-- Snapshots are tombstoned in place (deleted_at), only by an executing
-- deletion, only past retention and unheld. Everything else stays as 003
-- made it: retention extend-only, identity immutable.
CREATE OR REPLACE FUNCTION snapshots_guard_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    did bigint;
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
        IF OLD.deleted_at IS NOT NULL OR did IS NULL OR NEW.deletion_id IS DISTINCT FROM did THEN
            RAISE EXCEPTION 'snapshot % can be deleted only by its executing deletion request', OLD.id
                USING ERRCODE = 'WV007';
        END IF;
        IF OLD.retain_until > NEW.deleted_at OR snapshot_held(OLD.id, OLD.source) THEN
            RAISE EXCEPTION 'snapshot % is retained or held', OLD.id
                USING ERRCODE = 'WV007';
        END IF;
    END IF;
    IF OLD.deleted_at IS NOT NULL AND NEW.retain_until <> OLD.retain_until THEN
        RAISE EXCEPTION 'snapshot % is deleted', OLD.id USING ERRCODE = 'WV002';
    END IF;
    RETURN NEW;
END
$$;

-- Holds are released only by an executing hold-release request.
CREATE OR REPLACE FUNCTION holds_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
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

-- The request state machine. Requests are never deleted; what identifies
-- them never changes; state only moves along the lifecycle, and becomes
-- scheduled only with enough approvals from people other than the
-- requester.
CREATE FUNCTION deletion_requests_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    approvals integer;
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'deletion requests cannot be deleted' USING ERRCODE = 'WV004';
    END IF;
    IF (NEW.id, NEW.kind, NEW.targets, NEW.digest, NEW.reason, NEW.requested_by, NEW.requested_at,
        NEW.approvals_required, NEW.delay, NEW.expires_at)
        IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.targets, OLD.digest, OLD.reason, OLD.requested_by, OLD.requested_at,
        OLD.approvals_required, OLD.delay, OLD.expires_at) THEN
        RAISE EXCEPTION 'deletion request % is immutable except for its state', OLD.id USING ERRCODE = 'WV006';
    END IF;
    IF NEW.state = OLD.state AND NEW.state <> 'executing' THEN
        IF ROW(NEW.*) IS DISTINCT FROM ROW(OLD.*) THEN
            RAISE EXCEPTION 'deletion request % cannot change in state %', OLD.id, OLD.state USING ERRCODE = 'WV006';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT ((OLD.state = 'requested' AND NEW.state IN ('scheduled', 'cancelled', 'expired'))
         OR (OLD.state = 'scheduled' AND NEW.state IN ('cancelled', 'executing'))
         OR (OLD.state = 'executing' AND NEW.state IN ('executing', 'executed'))) THEN
        RAISE EXCEPTION 'deletion request % cannot go from % to %', OLD.id, OLD.state, NEW.state USING ERRCODE = 'WV006';
    END IF;
    IF NEW.state = 'scheduled' THEN
        SELECT count(*) INTO approvals FROM deletion_approvals
        WHERE deletion_id = OLD.id AND approver <> OLD.requested_by;
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

CREATE TRIGGER deletion_requests_guard
    BEFORE UPDATE OR DELETE ON deletion_requests
    FOR EACH ROW EXECUTE FUNCTION deletion_requests_guard();

CREATE TRIGGER deletion_requests_guard_truncate
    BEFORE TRUNCATE ON deletion_requests
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- An approval only for an open request, never by its requester.
CREATE FUNCTION deletion_approvals_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM deletion_requests
                   WHERE id = NEW.deletion_id AND state = 'requested' AND requested_by <> NEW.approver) THEN
        RAISE EXCEPTION 'deletion request % is not open for approval by %', NEW.deletion_id, NEW.approver
            USING ERRCODE = 'WV006';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER deletion_approvals_check
    BEFORE INSERT ON deletion_approvals
    FOR EACH ROW EXECUTE FUNCTION deletion_approvals_check();

CREATE TRIGGER deletion_approvals_guard_change
    BEFORE UPDATE OR DELETE ON deletion_approvals
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER deletion_outcomes_guard_change
    BEFORE UPDATE OR DELETE ON deletion_outcomes
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

-- Tombstones are forever; only the content-removed mark may be set, once.
CREATE FUNCTION chunk_tombstones_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.content_removed_at IS NULL AND NEW.content_removed_at IS NOT NULL
        AND (NEW.hash, NEW.size, NEW.stored_at, NEW.uploaded_by, NEW.pack_id, NEW.pack_offset, NEW.deleted_at, NEW.deletion_id)
            IS NOT DISTINCT FROM
            (OLD.hash, OLD.size, OLD.stored_at, OLD.uploaded_by, OLD.pack_id, OLD.pack_offset, OLD.deleted_at, OLD.deletion_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'chunk tombstones are kept forever' USING ERRCODE = 'WV004';
END
$$;

CREATE TRIGGER chunk_tombstones_guard
    BEFORE UPDATE OR DELETE ON chunk_tombstones
    FOR EACH ROW EXECUTE FUNCTION chunk_tombstones_guard();

CREATE TRIGGER chunk_tombstones_guard_truncate
    BEFORE TRUNCATE ON chunk_tombstones
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();
