-- The append-only, hash-linked audit log (invariant 6). Each entry's hash is
-- SHA-256(prev_hash || payload), where payload is the exact canonical JSON
-- that was hashed, so anyone can re-walk the chain.
CREATE TABLE audit_log (
    seq       bigint      PRIMARY KEY CHECK (seq >= 1),
    at        timestamptz NOT NULL,
    actor     text        NOT NULL,
    action    text        NOT NULL,
    payload   text        NOT NULL,
    prev_hash bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash      bytea       NOT NULL UNIQUE CHECK (octet_length(hash) = 32)
);

CREATE FUNCTION audit_log_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only'
        USING ERRCODE = 'WV004';
END
$$;

CREATE TRIGGER audit_log_guard_change
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();

CREATE TRIGGER audit_log_guard_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard();

-- Revoked token ids. A row here makes the token useless at once.
CREATE TABLE revoked_tokens (
    jti        text        PRIMARY KEY CHECK (jti <> ''),
    revoked_at timestamptz NOT NULL,
    revoked_by text        NOT NULL,
    reason     text        NOT NULL DEFAULT ''
);

CREATE TRIGGER revoked_tokens_guard_change
    BEFORE UPDATE OR DELETE ON revoked_tokens
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
