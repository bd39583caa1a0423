-- Quotas per token subject (issue 15, part 4).
--
-- A quota belongs to a token subject: every token issued with that subject
-- (re-issued, rotated, one per host of a fleet sharing a name) shares it,
-- and it counts the bytes of the chunks the subject uploaded first
-- (chunks.uploaded_by): a dedup hit stores nothing, so it costs nothing.
--
-- SQLSTATEs keep their meanings: WV004 insert-only table changed.

-- The quota settings, one row per change; the latest row of a subject is
-- its quota. NULL: no limit of that kind. Insert-only, so the history of
-- every change stays (each is also in the audit log: quota.set).
CREATE TABLE quota_settings (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject     text        NOT NULL CHECK (subject <> '' AND length(subject) <= 128),
    -- New bytes per UTC day, and bytes stored in all, at most 2^60 (1 EiB).
    daily_bytes bigint      CHECK (daily_bytes BETWEEN 0 AND 1152921504606846976),
    total_bytes bigint      CHECK (total_bytes BETWEEN 0 AND 1152921504606846976),
    set_at      timestamptz NOT NULL,
    set_by      text        NOT NULL CHECK (set_by <> ''),
    reason      text        NOT NULL DEFAULT '' CHECK (length(reason) <= 1000)
);

CREATE INDEX quota_settings_subject_idx ON quota_settings (subject, seq);

CREATE TRIGGER quota_settings_guard
    BEFORE UPDATE OR DELETE ON quota_settings
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER quota_settings_guard_truncate
    BEFORE TRUNCATE ON quota_settings
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Usage, maintained from the chunks table by the triggers below only (as
-- the owner: the runtime role may read these tables, never write them).
-- quota_daily: bytes of new chunks first uploaded by subject on day (UTC,
-- of stored_at); deletions give nothing back to a past day.
-- quota_totals: bytes of the subject's chunks still stored.
CREATE TABLE quota_daily (
    subject text   NOT NULL,
    day     date   NOT NULL,
    bytes   bigint NOT NULL,
    PRIMARY KEY (subject, day)
);

CREATE TABLE quota_totals (
    subject text   PRIMARY KEY,
    bytes   bigint NOT NULL
);

INSERT INTO quota_daily (subject, day, bytes)
SELECT uploaded_by, (stored_at AT TIME ZONE 'UTC')::date, sum(size) FROM chunks GROUP BY 1, 2;

INSERT INTO quota_totals (subject, bytes)
SELECT uploaded_by, sum(size) FROM chunks GROUP BY 1;

-- Rows are upserted in key order, and each statement that inserts or
-- deletes chunks (the group committer's insert, the executor's delete) is
-- one statement per transaction, so two of them never deadlock here.
CREATE FUNCTION quota_usage_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO quota_daily AS q (subject, day, bytes)
    SELECT uploaded_by, (stored_at AT TIME ZONE 'UTC')::date, sum(size)
    FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (subject, day) DO UPDATE SET bytes = q.bytes + excluded.bytes;
    INSERT INTO quota_totals AS q (subject, bytes)
    SELECT uploaded_by, sum(size) FROM new_rows GROUP BY 1 ORDER BY 1
    ON CONFLICT (subject) DO UPDATE SET bytes = q.bytes + excluded.bytes;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_quota_usage_insert
    AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION quota_usage_insert();

CREATE FUNCTION quota_usage_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO quota_totals AS q (subject, bytes)
    SELECT uploaded_by, -sum(size) FROM old_rows GROUP BY 1 ORDER BY 1
    ON CONFLICT (subject) DO UPDATE SET bytes = q.bytes + excluded.bytes;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_quota_usage_delete
    AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION quota_usage_delete();

-- Runtime privileges (see 009_least_privilege.sql and
-- TestRuntimeRolePrivileges):
--   quota_settings   SELECT, INSERT   insert-only (WV004). The server sets
--                    quotas for admins through the API, so the runtime
--                    role must be able to add a setting: a leaked runtime
--                    credential can raise or lower quotas (availability
--                    only; a quota never removes data).
--   quota_daily      SELECT           written by the triggers above only
--   quota_totals     SELECT           written by the triggers above only
GRANT SELECT, INSERT ON quota_settings TO wormvault_runtime;
GRANT SELECT ON quota_daily, quota_totals TO wormvault_runtime;
