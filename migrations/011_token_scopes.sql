-- Scoped tokens, the token register and distrusted signing keys (issue 15,
-- parts 1 and 5).
--
-- SQLSTATEs keep their meanings: WV002 immutable row changed, WV004
-- insert-only table changed.

-- The register of issued tokens. `vault token issue` writes a row before it
-- prints the token, so that `vault token list` shows every token and
-- `vault token revoke` refuses an id that was never issued. Revocation is
-- a row in revoked_tokens, so this table is insert-only for everyone.
CREATE TABLE issued_tokens (
    jti        text        PRIMARY KEY CHECK (jti ~ '^[0-9a-f]{32}$'),
    role       text        NOT NULL CHECK (role IN ('agent', 'reader', 'auditor', 'admin', 'metrics')),
    subject    text        NOT NULL CHECK (subject <> '' AND length(subject) <= 128),
    -- The token's scope claim, as signed: required for agents and readers,
    -- absent for the other roles (auth.Scope).
    scope      jsonb       CHECK ((role IN ('agent', 'reader')) = (scope IS NOT NULL)),
    key_id     text        NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL CHECK (expires_at > issued_at),
    issued_by  text        NOT NULL CHECK (issued_by <> '')
);

CREATE INDEX issued_tokens_issued_idx ON issued_tokens (issued_at, jti);

CREATE TRIGGER issued_tokens_guard
    BEFORE UPDATE OR DELETE ON issued_tokens
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER issued_tokens_guard_truncate
    BEFORE TRUNCATE ON issued_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- Signing keys distrusted by `vault token rotate-key --compromised`: every
-- token such a key signed is refused, at once, by every server listening
-- (channel wormvault_revoked, payload "key:<kid>"). A row can only be
-- added: a leaked runtime credential can cut access (availability), never
-- trust a key again.
CREATE TABLE distrusted_keys (
    kid            text        PRIMARY KEY CHECK (kid ~ '^[0-9a-f]{16}$'),
    public_key     bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    distrusted_at  timestamptz NOT NULL,
    distrusted_by  text        NOT NULL CHECK (distrusted_by <> ''),
    reason         text        NOT NULL DEFAULT ''
);

CREATE TRIGGER distrusted_keys_guard
    BEFORE UPDATE OR DELETE ON distrusted_keys
    FOR EACH ROW EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER distrusted_keys_guard_truncate
    BEFORE TRUNCATE ON distrusted_keys
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

-- A restic repository belongs to the scope that created it: the creating
-- token's restic patterns (["*"] style lists, or {"all": true}), recorded
-- for auditors. Access is checked against the caller's scope on every
-- request; NULL for repositories created before scopes or by an admin.
ALTER TABLE restic_repositories ADD COLUMN created_scope jsonb;

CREATE OR REPLACE FUNCTION restic_repositories_guard() RETURNS trigger
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
    IF (NEW.name, NEW.created_at, NEW.created_by, NEW.created_scope)
       IS DISTINCT FROM (OLD.name, OLD.created_at, OLD.created_by, OLD.created_scope) THEN
        RAISE EXCEPTION 'restic repository % is immutable: only min_retention may change', OLD.name
            USING ERRCODE = 'WV002';
    END IF;
    RETURN NEW;
END
$$;

-- Runtime privileges (see 009_least_privilege.sql and
-- TestRuntimeRolePrivileges):
--   issued_tokens     SELECT, INSERT   insert-only (WV004)
--   distrusted_keys   SELECT, INSERT   insert-only (WV004)
-- restic_repositories keeps SELECT, INSERT, UPDATE (min_retention): the
-- new column is written once, at INSERT.
GRANT SELECT, INSERT ON issued_tokens, distrusted_keys TO wormvault_runtime;
