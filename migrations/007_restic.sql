-- restic repositories on the vault (issue 10). A restic file is a vault
-- chunk (BLAKE3-addressed, durable, under retention) plus a row here that
-- maps (repository, type, restic name) to it.
--
-- SQLSTATEs: WV001 retention shortened, WV002 immutable row changed and
-- WV004 insert-only table changed keep the meanings of 001-003. New here:
-- WV010 a restic file other than a lock deleted; WV011 a restic file that
-- names a chunk which is not stored with that size.

CREATE TABLE restic_repositories (
    name          text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    created_at    timestamptz NOT NULL,
    created_by    text        NOT NULL CHECK (created_by <> ''),
    -- The repository's own minimum retention; the vault's minimum applies
    -- when it is shorter. It only ever grows.
    min_retention interval    NOT NULL DEFAULT '0' CHECK (min_retention >= interval '0')
);

CREATE FUNCTION restic_repositories_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'restic repositories cannot be deleted' USING ERRCODE = 'WV004';
    END IF;
    IF NEW.min_retention < OLD.min_retention THEN
        RAISE EXCEPTION 'the minimum retention of restic repository % can only be extended (% to %)',
            OLD.name, OLD.min_retention, NEW.min_retention
            USING ERRCODE = 'WV001';
    END IF;
    IF (NEW.name, NEW.created_at, NEW.created_by) IS DISTINCT FROM (OLD.name, OLD.created_at, OLD.created_by) THEN
        RAISE EXCEPTION 'restic repository % is immutable: only min_retention may change', OLD.name
            USING ERRCODE = 'WV002';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER restic_repositories_guard
    BEFORE UPDATE OR DELETE ON restic_repositories
    FOR EACH ROW EXECUTE FUNCTION restic_repositories_guard();

CREATE TRIGGER restic_repositories_guard_truncate
    BEFORE TRUNCATE ON restic_repositories
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- The name mapping. No foreign key to chunks: a chunk whose retention ended
-- may leave through an approved deletion, and its mapping row then stays as
-- the record of what was there (readers join chunks and no longer see it).
CREATE TABLE restic_files (
    repo       text        NOT NULL REFERENCES restic_repositories (name),
    type       text        NOT NULL CHECK (type IN ('config', 'data', 'keys', 'locks', 'snapshots', 'index')),
    name       text        NOT NULL,
    chunk      bytea       NOT NULL CHECK (octet_length(chunk) = 32),
    size       bigint      NOT NULL CHECK (size >= 0),
    -- Insert-only sequence: the order in which files were acknowledged.
    seq        bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    created_at timestamptz NOT NULL,
    created_by text        NOT NULL CHECK (created_by <> ''),
    PRIMARY KEY (repo, type, name),
    CHECK ((type = 'config' AND name = 'config') OR (type <> 'config' AND name ~ '^[0-9a-f]{64}$'))
);

CREATE INDEX restic_files_chunk_idx ON restic_files (chunk);
-- The latest snapshot file of a repository, for retention.
CREATE INDEX restic_files_snapshots_idx ON restic_files (repo, created_at) WHERE type = 'snapshots';

-- Rows are never changed. The only row that may go is a lock's: restic
-- creates, refreshes and removes lock files as part of every command. The
-- lock's chunk stays stored under its retention.
CREATE FUNCTION restic_files_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.type = 'locks' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'restic % file % of repository % cannot be deleted: only locks can; deletion goes through an approved deletion request',
            OLD.type, OLD.name, OLD.repo
            USING ERRCODE = 'WV010';
    END IF;
    RAISE EXCEPTION 'restic files are immutable' USING ERRCODE = 'WV002';
END
$$;

CREATE TRIGGER restic_files_guard
    BEFORE UPDATE OR DELETE ON restic_files
    FOR EACH ROW EXECUTE FUNCTION restic_files_guard();

CREATE TRIGGER restic_files_guard_truncate
    BEFORE TRUNCATE ON restic_files
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Backstop for the Go code: a new row names a stored chunk of its size.
CREATE FUNCTION restic_files_check_chunk() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.repo, n.type, n.name INTO bad
    FROM new_files n LEFT JOIN chunks c ON c.hash = n.chunk
    WHERE c.hash IS NULL OR c.size <> n.size
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'restic % file % of repository % names a chunk that is not stored with its size',
            bad.type, bad.name, bad.repo
            USING ERRCODE = 'WV011';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER restic_files_check_chunk
    AFTER INSERT ON restic_files
    REFERENCING NEW TABLE AS new_files
    FOR EACH STATEMENT EXECUTE FUNCTION restic_files_check_chunk();
