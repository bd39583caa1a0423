-- Pull replication between vaults (issue 19): a replica pulls from a
-- primary with a replicator token; the replica keeps, per primary, the
-- primary's checkpoint key and the last checkpoint it verified, and what
-- it has seen disappear from the primary.
--
-- SQLSTATEs keep their meanings: WV001 something that only grows was
-- shrunk, WV002 immutable row changed, WV004 insert-only table changed.

-- Replicator tokens: scoped like agent and reader tokens (the sources a
-- replica may copy, or all of them).
ALTER TABLE issued_tokens DROP CONSTRAINT issued_tokens_role_check;
ALTER TABLE issued_tokens ADD CONSTRAINT issued_tokens_role_check
    CHECK (role IN ('agent', 'reader', 'auditor', 'admin', 'metrics', 'replicator'));
ALTER TABLE issued_tokens DROP CONSTRAINT issued_tokens_check;
ALTER TABLE issued_tokens ADD CONSTRAINT issued_tokens_scope_check
    CHECK ((role IN ('agent', 'reader', 'replicator')) = (scope IS NOT NULL));

-- One row per primary this vault replicates from, named by the replica's
-- operator. checkpoint_key is the primary's checkpoint verifier key,
-- pinned when the source is first used and never changed. kept_* is the
-- last primary checkpoint the replica verified: the next one must extend
-- it (a consistency proof), or the replica raises alarm and copies
-- nothing newer until one of its own admins acknowledges (which clears
-- alarm and kept_*: the next pass pins the primary's current checkpoint).
CREATE TABLE replica_sources (
    name            text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    url             text        NOT NULL CHECK (url ~ '^https?://'),
    checkpoint_key  text        NOT NULL CHECK (checkpoint_key <> ''),
    created_at      timestamptz NOT NULL,
    kept_checkpoint bytea,
    kept_size       bigint      CHECK (kept_size >= 0),
    alarm           text,
    alarm_at        timestamptz,
    last_pass_at    timestamptz,
    last_pass       jsonb,
    CHECK ((kept_checkpoint IS NULL) = (kept_size IS NULL)),
    CHECK ((alarm IS NULL) = (alarm_at IS NULL))
);

CREATE FUNCTION replica_sources_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'replica sources cannot be deleted' USING ERRCODE = 'WV004';
    END IF;
    IF (NEW.name, NEW.checkpoint_key, NEW.created_at) IS DISTINCT FROM (OLD.name, OLD.checkpoint_key, OLD.created_at) THEN
        RAISE EXCEPTION 'replica source %: its name and pinned checkpoint key never change', OLD.name
            USING ERRCODE = 'WV002';
    END IF;
    -- The kept checkpoint only moves forward; only an acknowledgement
    -- (which clears it, with its audit entry) starts over.
    IF NEW.kept_size IS NOT NULL AND OLD.kept_size IS NOT NULL AND NEW.kept_size < OLD.kept_size THEN
        RAISE EXCEPTION 'replica source %: the kept checkpoint cannot move back (% to %)', OLD.name, OLD.kept_size, NEW.kept_size
            USING ERRCODE = 'WV001';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER replica_sources_guard
    BEFORE UPDATE OR DELETE ON replica_sources
    FOR EACH ROW EXECUTE FUNCTION replica_sources_guard();

CREATE TRIGGER replica_sources_guard_truncate
    BEFORE TRUNCATE ON replica_sources
    FOR EACH STATEMENT EXECUTE FUNCTION replica_sources_guard();

-- What the replica still holds and the primary no longer has: each
-- disappearance is reported once (metric, ERROR log, webhook) and kept
-- here for `vault replicate status`. Insert-only.
CREATE TABLE replica_disappeared (
    source     text        NOT NULL REFERENCES replica_sources (name),
    kind       text        NOT NULL CHECK (kind IN ('snapshot', 'chunk')),
    item       text        NOT NULL CHECK (item <> '' AND length(item) <= 300),
    noticed_at timestamptz NOT NULL,
    PRIMARY KEY (source, kind, item)
);

CREATE TRIGGER replica_disappeared_guard
    BEFORE UPDATE OR DELETE ON replica_disappeared
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER replica_disappeared_guard_truncate
    BEFORE TRUNCATE ON replica_disappeared
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Runtime privileges (see 009_least_privilege.sql and
-- TestRuntimeRolePrivileges):
--   replica_sources      SELECT, INSERT, UPDATE of the moving columns
--   replica_disappeared  SELECT, INSERT   insert-only (WV004)
GRANT SELECT, INSERT ON replica_sources, replica_disappeared TO wormvault_runtime;
GRANT UPDATE (url, kept_checkpoint, kept_size, alarm, alarm_at, last_pass_at, last_pass) ON replica_sources TO wormvault_runtime;
