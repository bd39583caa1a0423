-- The audit log as an RFC 6962 Merkle tree log (issue 9). Entry seq is
-- leaf index seq-1; the leaf's record bytes are the entry's canonical
-- payload exactly as stored in audit_log.payload. The hash chain columns of
-- 002 are still written (and still checked by VerifyAudit), but the
-- signed Merkle checkpoints are what auditors rely on.
--
-- Every table here is insert-only (WV004), like audit_log: a row changed or
-- removed by someone who bypasses the triggers is what auditors detect.

-- The tree's stored hashes (golang.org/x/mod/sumdb/tlog's dense layout),
-- keyed by tlog.StoredHashIndex, written in the transaction of the entry
-- that produced them.
CREATE TABLE audit_hashes (
    idx  bigint PRIMARY KEY CHECK (idx >= 0),
    hash bytea  NOT NULL CHECK (octet_length(hash) = 32)
);

-- Signed checkpoints (C2SP tlog-checkpoint signed notes), one per size
-- the vault signed.
CREATE TABLE audit_checkpoints (
    size      bigint      PRIMARY KEY CHECK (size >= 1),
    root      bytea       NOT NULL CHECK (octet_length(root) = 32),
    note      text        NOT NULL,
    signed_at timestamptz NOT NULL
);

-- Chunk commits sequenced into the log by the integrator: which leaf
-- records which chunk (for inclusion proofs by chunk hash).
-- A chunk stored again after a deletion has a new chunks.seq and is
-- logged again. Removals ("chunk.remove") are appended by the deletion
-- executor in the transaction that removes the row.
CREATE TABLE audit_chunks (
    chunk_seq bigint PRIMARY KEY,
    hash      bytea  NOT NULL CHECK (octet_length(hash) = 32),
    leaf      bigint NOT NULL UNIQUE
);

CREATE INDEX audit_chunks_hash_idx ON audit_chunks (hash);

-- The integrator's position in chunks.seq: every chunk at or below it is
-- in the log. One row; it only moves forward.
CREATE TABLE audit_integrator (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    chunk_seq bigint  NOT NULL DEFAULT 0
);
INSERT INTO audit_integrator (id, chunk_seq) VALUES (true, 0);

CREATE FUNCTION audit_integrator_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.chunk_seq < OLD.chunk_seq THEN
        RAISE EXCEPTION 'the audit integrator only moves forward' USING ERRCODE = 'WV004';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_integrator_guard
    BEFORE UPDATE OR DELETE ON audit_integrator
    FOR EACH ROW EXECUTE FUNCTION audit_integrator_guard();
CREATE TRIGGER audit_integrator_guard_truncate
    BEFORE TRUNCATE ON audit_integrator
    FOR EACH STATEMENT EXECUTE FUNCTION insert_only_guard();

CREATE TRIGGER audit_hashes_guard_change
    BEFORE UPDATE OR DELETE ON audit_hashes
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_hashes_guard_truncate
    BEFORE TRUNCATE ON audit_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_checkpoints_guard_change
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_checkpoints_guard_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_chunks_guard_change
    BEFORE UPDATE OR DELETE ON audit_chunks
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_chunks_guard_truncate
    BEFORE TRUNCATE ON audit_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard();
