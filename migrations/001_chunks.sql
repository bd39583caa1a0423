-- The chunk index. One row per chunk ever stored; rows are never deleted
-- here (the deletion executor, a later migration, keeps tombstones).
CREATE TABLE chunks (
    hash         bytea       PRIMARY KEY CHECK (octet_length(hash) = 32),
    size         bigint      NOT NULL CHECK (size >= 0),
    -- Insert-only sequence: the order in which chunks were acknowledged.
    seq          bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    stored_at    timestamptz NOT NULL,
    retain_until timestamptz NOT NULL,
    uploaded_by  text        NOT NULL CHECK (uploaded_by <> ''),
    CHECK (retain_until >= stored_at)
);

CREATE INDEX chunks_retain_until_idx ON chunks (retain_until);

-- Invariant 3: retention only ever grows, and a chunk's identity never
-- changes, whatever SQL the application role runs. Custom SQLSTATEs let the
-- Go code map the refusal exactly.
CREATE FUNCTION chunks_guard_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.retain_until < OLD.retain_until THEN
        RAISE EXCEPTION 'retain_until of chunk % can only be extended (% to %)',
            encode(OLD.hash, 'hex'), OLD.retain_until, NEW.retain_until
            USING ERRCODE = 'WV001';
    END IF;
    IF NEW.hash IS DISTINCT FROM OLD.hash
        OR NEW.size IS DISTINCT FROM OLD.size
        OR NEW.seq IS DISTINCT FROM OLD.seq
        OR NEW.stored_at IS DISTINCT FROM OLD.stored_at
        OR NEW.uploaded_by IS DISTINCT FROM OLD.uploaded_by THEN
        RAISE EXCEPTION 'chunk % is immutable: only retain_until may change',
            encode(OLD.hash, 'hex')
            USING ERRCODE = 'WV002';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER chunks_guard_update
    BEFORE UPDATE ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunks_guard_update();

-- Nothing deletes chunk rows: deletion goes through the multi-party
-- executor, which a later migration introduces explicitly.
CREATE FUNCTION chunks_guard_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chunks cannot be deleted or truncated outside the deletion executor'
        USING ERRCODE = 'WV003';
END
$$;

CREATE TRIGGER chunks_guard_delete
    BEFORE DELETE ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunks_guard_delete();

CREATE TRIGGER chunks_guard_truncate
    BEFORE TRUNCATE ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION chunks_guard_delete();
