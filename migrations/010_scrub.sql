-- Scrub and self-healing (issue 14, items 1 and 2).
--
-- damaged_chunks records every chunk whose stored copy was found not to
-- match its address (by the scrub, or by a read that refused it), or whose
-- content was gone. While a chunk has an open record (repaired_at IS NULL)
-- the vault reports it missing to agents, so that the next backup that
-- holds it uploads it again; a re-upload that hashes right writes a fresh
-- copy and closes the record. The chunk's row, its retention and its holds
-- never change.
--
-- What a leaked runtime credential can do here, and why it costs only
-- availability: insert a record for a healthy chunk (agents re-upload it;
-- the repair finds the stored copy verifies and closes the record), or
-- close an open record (agents deduplicate against the bad copy again, but
-- reads still verify every byte and refuse it, and the next scrub pass
-- opens a new record). Nothing here decides which bytes are served: every
-- read and every repair verifies content against its BLAKE3 address.
-- Records are never deleted, and a closed one never reopens.
CREATE TABLE damaged_chunks (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash         bytea       NOT NULL CHECK (octet_length(hash) = 32),
    detected_at  timestamptz NOT NULL,
    -- scrub, read, reconcile
    detected_by  text        NOT NULL CHECK (detected_by <> ''),
    -- what was wrong: a hash mismatch, a bad pack record, missing content
    detail       text        NOT NULL,
    -- file or pack: where the damaged copy was
    location     text        NOT NULL CHECK (location IN ('file', 'pack')),
    repaired_at  timestamptz,
    repaired_by  text,
    CHECK ((repaired_at IS NULL) = (repaired_by IS NULL))
);

-- At most one open record per chunk: a second detection of the same damage
-- adds nothing.
CREATE UNIQUE INDEX damaged_chunks_open_idx ON damaged_chunks (hash) WHERE repaired_at IS NULL;
CREATE INDEX damaged_chunks_hash_idx ON damaged_chunks (hash);

-- Insert-only, except that an open record may be closed once.
CREATE FUNCTION damaged_chunks_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'damaged_chunks records cannot be deleted' USING ERRCODE = 'WV004';
    END IF;
    IF OLD.repaired_at IS NOT NULL THEN
        RAISE EXCEPTION 'damage record % is closed already', OLD.id USING ERRCODE = 'WV004';
    END IF;
    IF (NEW.id, NEW.hash, NEW.detected_at, NEW.detected_by, NEW.detail, NEW.location)
        IS DISTINCT FROM (OLD.id, OLD.hash, OLD.detected_at, OLD.detected_by, OLD.detail, OLD.location) THEN
        RAISE EXCEPTION 'damage record % is immutable except for its repair', OLD.id USING ERRCODE = 'WV004';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER damaged_chunks_guard
    BEFORE UPDATE OR DELETE ON damaged_chunks
    FOR EACH ROW EXECUTE FUNCTION damaged_chunks_guard();
CREATE TRIGGER damaged_chunks_guard_truncate
    BEFORE TRUNCATE ON damaged_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- The scrub's position and the current pass's figures, one row, so that a
-- restart continues the pass where it stopped. cursor_seq is the last
-- chunks.seq verified in this pass; pass_last_seq the last chunk of the
-- pass (the newest at its start: later chunks are the next pass's, so a
-- pass ends under any load). A runtime credential can move it (the
-- pass then skips chunks until the next pass covers them) or fake the
-- times: every finished pass is also an audit entry (scrub.pass), which
-- the journal keeps.
CREATE TABLE scrub_state (
    id                  integer     PRIMARY KEY CHECK (id = 1),
    pass_started_at     timestamptz,
    cursor_seq          bigint      NOT NULL DEFAULT 0 CHECK (cursor_seq >= 0),
    pass_last_seq       bigint      NOT NULL DEFAULT 0,
    pass_chunks         bigint      NOT NULL DEFAULT 0,
    pass_bytes          bigint      NOT NULL DEFAULT 0,
    pass_damaged        bigint      NOT NULL DEFAULT 0,
    last_pass_started_at  timestamptz,
    last_pass_finished_at timestamptz,
    last_pass_chunks    bigint      NOT NULL DEFAULT 0,
    last_pass_bytes     bigint      NOT NULL DEFAULT 0,
    last_pass_damaged   bigint      NOT NULL DEFAULT 0,
    last_pass_unindexed bigint      NOT NULL DEFAULT 0,
    passes              bigint      NOT NULL DEFAULT 0
);
INSERT INTO scrub_state (id) VALUES (1);

CREATE TRIGGER scrub_state_guard_delete
    BEFORE DELETE ON scrub_state
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();
CREATE TRIGGER scrub_state_guard_truncate
    BEFORE TRUNCATE ON scrub_state
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

--   damaged_chunks   SELECT, INSERT, UPDATE (repaired_at, repaired_by)   close once (WV004)
--   scrub_state      SELECT, UPDATE                                      one row
GRANT SELECT, INSERT ON damaged_chunks TO wormvault_runtime;
GRANT UPDATE (repaired_at, repaired_by) ON damaged_chunks TO wormvault_runtime;
GRANT SELECT, UPDATE ON scrub_state TO wormvault_runtime;
