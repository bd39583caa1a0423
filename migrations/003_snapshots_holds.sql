-- Snapshots, legal holds and the indexes behind the auditor's retention
-- queries (issue 5).
--
-- SQLSTATEs raised here reuse the meanings of 001/002 so that the Go side
-- maps them exactly: WV001 retention shortened, WV002 immutable row
-- changed, WV003 delete outside the deletion executor, WV004 insert-only
-- table changed. WV005 is new: a snapshot reference that is not retained at
-- least as long as its snapshot (only a bug can raise it).

-- A generic guard for insert-only tables.
CREATE FUNCTION insert_only_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is insert-only', TG_TABLE_NAME
        USING ERRCODE = 'WV004';
END
$$;

-- Snapshots: a named, retained set of chunks. Immutable once committed,
-- except that retain_until may grow.
CREATE TABLE snapshots (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source         text        NOT NULL CHECK (source ~ '^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}$'),
    name           text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}$'),
    taken_at       timestamptz NOT NULL,
    committed_at   timestamptz NOT NULL,
    committed_by   text        NOT NULL CHECK (committed_by <> ''),
    retain_until   timestamptz NOT NULL CHECK (retain_until > committed_at),
    tags           text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 32),
    manifest_root  bytea       NOT NULL CHECK (octet_length(manifest_root) = 32),
    -- Distinct manifests and distinct chunks (manifests included) of the
    -- tree, and the bytes of those chunks, fixed at commit.
    manifest_count integer     NOT NULL CHECK (manifest_count >= 1),
    chunk_count    bigint      NOT NULL CHECK (chunk_count >= manifest_count),
    total_bytes    bigint      NOT NULL CHECK (total_bytes >= 0),
    -- Documented behaviour: a second commit under the same source and name
    -- is refused, never merged or replaced.
    UNIQUE (source, name)
);

-- Listing newest first (all sources or one) and expiry order, by keyset.
CREATE INDEX snapshots_taken_idx ON snapshots (taken_at, id);
CREATE INDEX snapshots_source_taken_idx ON snapshots (source, taken_at, id);
CREATE INDEX snapshots_retain_until_idx ON snapshots (retain_until, id);
CREATE INDEX snapshots_tags_idx ON snapshots USING gin (tags);

CREATE FUNCTION snapshots_guard_update() RETURNS trigger
LANGUAGE plpgsql AS $$
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
    RETURN NEW;
END
$$;

CREATE TRIGGER snapshots_guard_update
    BEFORE UPDATE ON snapshots
    FOR EACH ROW EXECUTE FUNCTION snapshots_guard_update();

CREATE FUNCTION snapshots_guard_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'snapshots cannot be deleted or truncated outside the deletion executor'
        USING ERRCODE = 'WV003';
END
$$;

CREATE TRIGGER snapshots_guard_delete
    BEFORE DELETE ON snapshots
    FOR EACH ROW EXECUTE FUNCTION snapshots_guard_delete();

CREATE TRIGGER snapshots_guard_truncate
    BEFORE TRUNCATE ON snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION snapshots_guard_delete();

-- The chunks a snapshot references: every chunk and manifest of its tree,
-- once. size is copied from chunks (a chunk's size never changes) so that
-- held and unique-bytes figures never have to read the chunks table.
--
-- No foreign keys: a commit inserts millions of rows, and row-by-row
-- referential checks (with a KEY SHARE lock per chunk) would cost more than
-- the commit itself. The statement-level trigger below checks the same
-- thing, and more, once per statement.
CREATE TABLE snapshot_chunks (
    snapshot_id bigint NOT NULL,
    hash        bytea  NOT NULL CHECK (octet_length(hash) = 32),
    size        bigint NOT NULL CHECK (size >= 0),
    PRIMARY KEY (snapshot_id, hash)
);

-- Which snapshots reference a chunk.
CREATE INDEX snapshot_chunks_hash_idx ON snapshot_chunks (hash, snapshot_id);

CREATE TRIGGER snapshot_chunks_guard_change
    BEFORE UPDATE OR DELETE ON snapshot_chunks
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER snapshot_chunks_guard_truncate
    BEFORE TRUNCATE ON snapshot_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Backstop for the Go checks: a reference must name an existing snapshot
-- and a stored chunk (with its true size) that is retained at least as long
-- as the snapshot. Go raises retention before inserting references.
CREATE FUNCTION snapshot_chunks_check_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.snapshot_id, encode(n.hash, 'hex') AS hash INTO bad
    FROM new_refs n
    LEFT JOIN snapshots s ON s.id = n.snapshot_id
    LEFT JOIN chunks c ON c.hash = n.hash
    WHERE s.id IS NULL OR c.hash IS NULL OR c.size <> n.size OR c.retain_until < s.retain_until
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'snapshot % reference to chunk % is not stored or not retained as long as the snapshot',
            bad.snapshot_id, bad.hash
            USING ERRCODE = 'WV005';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER snapshot_chunks_check_refs
    AFTER INSERT ON snapshot_chunks
    REFERENCING NEW TABLE AS new_refs
    FOR EACH STATEMENT EXECUTE FUNCTION snapshot_chunks_check_refs();

-- The same backstop when a snapshot's retention is extended: its chunks
-- must already be retained at least as long.
CREATE FUNCTION snapshots_check_retention() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.retain_until > OLD.retain_until AND EXISTS (
        SELECT FROM snapshot_chunks sc JOIN chunks c ON c.hash = sc.hash
        WHERE sc.snapshot_id = NEW.id AND c.retain_until < NEW.retain_until) THEN
        RAISE EXCEPTION 'snapshot % references chunks retained for less than %', NEW.id, NEW.retain_until
            USING ERRCODE = 'WV005';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER snapshots_check_retention
    AFTER UPDATE OF retain_until ON snapshots
    FOR EACH ROW EXECUTE FUNCTION snapshots_check_retention();

-- Legal holds. A held object cannot be deleted whatever its retention. A
-- hold is never deleted; releasing one (released_at) will go through the
-- multi-party approval of the deletion issue, whose migration replaces the
-- update guard. Until then no UPDATE is allowed at all.
CREATE TABLE holds (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    reason       text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    target_kind  text        NOT NULL CHECK (target_kind IN ('chunks', 'snapshots', 'source')),
    -- The held source; a source hold covers every snapshot of that source,
    -- present and future.
    source       text        CHECK ((target_kind = 'source') = (source IS NOT NULL)),
    target_count integer     NOT NULL CHECK (target_count >= 1),
    placed_by    text        NOT NULL CHECK (placed_by <> ''),
    placed_at    timestamptz NOT NULL,
    released_at  timestamptz,
    released_by  text,
    CHECK ((released_at IS NULL) = (released_by IS NULL))
);

CREATE INDEX holds_source_idx ON holds (source) WHERE source IS NOT NULL;

CREATE TABLE hold_chunks (
    hold_id bigint NOT NULL REFERENCES holds (id),
    hash    bytea  NOT NULL REFERENCES chunks (hash),
    PRIMARY KEY (hold_id, hash)
);

CREATE INDEX hold_chunks_hash_idx ON hold_chunks (hash);

CREATE TABLE hold_snapshots (
    hold_id     bigint NOT NULL REFERENCES holds (id),
    snapshot_id bigint NOT NULL REFERENCES snapshots (id),
    PRIMARY KEY (hold_id, snapshot_id)
);

CREATE INDEX hold_snapshots_snapshot_idx ON hold_snapshots (snapshot_id);

CREATE FUNCTION holds_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% cannot be changed: a hold is released only through an approved deletion request', TG_TABLE_NAME
        USING ERRCODE = 'WV004';
END
$$;

CREATE TRIGGER holds_guard_change
    BEFORE UPDATE OR DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION holds_guard();

CREATE TRIGGER holds_guard_truncate
    BEFORE TRUNCATE ON holds
    FOR EACH STATEMENT EXECUTE FUNCTION holds_guard();

CREATE TRIGGER hold_chunks_guard_change
    BEFORE UPDATE OR DELETE ON hold_chunks
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER hold_chunks_guard_truncate
    BEFORE TRUNCATE ON hold_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER hold_snapshots_guard_change
    BEFORE UPDATE OR DELETE ON hold_snapshots
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER hold_snapshots_guard_truncate
    BEFORE TRUNCATE ON hold_snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Expiry order with a unique tie-breaker, for keyset pagination, covering
-- size so that byte counts come from the index. It replaces the plain
-- retain_until index of 001, which it makes redundant (every retention
-- update would otherwise maintain both).
DROP INDEX chunks_retain_until_idx;
CREATE INDEX chunks_retain_until_hash_idx ON chunks (retain_until, hash) INCLUDE (size);

-- Chunk counts and bytes per retention month (UTC), maintained by
-- statement-level triggers so that the auditor's summary never scans the
-- chunks table. Each backend writes its own rows (slot = its pid), so
-- concurrent transactions never wait on each other here; a month's figure
-- is the sum over slots. Slot 0 holds what existed when this migration ran.
CREATE TABLE retention_months (
    month  date    NOT NULL,
    slot   integer NOT NULL,
    chunks bigint  NOT NULL,
    bytes  bigint  NOT NULL,
    PRIMARY KEY (month, slot)
);

INSERT INTO retention_months (month, slot, chunks, bytes)
SELECT date_trunc('month', retain_until AT TIME ZONE 'UTC')::date, 0, count(*), sum(size)
FROM chunks GROUP BY 1;

CREATE FUNCTION retention_months_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retention_months AS m (month, slot, chunks, bytes)
    SELECT date_trunc('month', retain_until AT TIME ZONE 'UTC')::date, pg_backend_pid(), count(*), sum(size)
    FROM new_rows GROUP BY 1 ORDER BY 1
    ON CONFLICT (month, slot) DO UPDATE
        SET chunks = m.chunks + excluded.chunks, bytes = m.bytes + excluded.bytes;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_retention_months_insert
    AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION retention_months_insert();

-- Months are upserted in order, and a transaction only ever touches its own
-- slot, so two statements can never deadlock here.
CREATE FUNCTION retention_months_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retention_months AS m (month, slot, chunks, bytes)
    SELECT month, pg_backend_pid(), sum(dc), sum(db)
    FROM (
        SELECT date_trunc('month', retain_until AT TIME ZONE 'UTC')::date AS month, 1 AS dc, size AS db FROM new_rows
        UNION ALL
        SELECT date_trunc('month', retain_until AT TIME ZONE 'UTC')::date, -1, -size FROM old_rows
    ) d
    GROUP BY month HAVING sum(dc) <> 0 OR sum(db) <> 0 ORDER BY month
    ON CONFLICT (month, slot) DO UPDATE
        SET chunks = m.chunks + excluded.chunks, bytes = m.bytes + excluded.bytes;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_retention_months_update
    AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION retention_months_update();
