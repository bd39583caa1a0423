-- Small chunks live as records in pack files (internal/store/pack). A packed
-- chunk's row says where: pack id and the offset of its record header. A
-- chunk stored as its own file has neither.
ALTER TABLE chunks
    ADD COLUMN pack_id     bigint,
    ADD COLUMN pack_offset bigint,
    ADD CONSTRAINT chunks_pack_location
        CHECK ((pack_id IS NULL) = (pack_offset IS NULL) AND (pack_offset IS NULL OR pack_offset >= 0));

CREATE INDEX chunks_pack_idx ON chunks (pack_id, pack_offset) WHERE pack_id IS NOT NULL;

-- A chunk's location is part of its identity: immutable like its hash.
CREATE OR REPLACE FUNCTION chunks_guard_update() RETURNS trigger
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
        OR NEW.uploaded_by IS DISTINCT FROM OLD.uploaded_by
        OR NEW.pack_id IS DISTINCT FROM OLD.pack_id
        OR NEW.pack_offset IS DISTINCT FROM OLD.pack_offset THEN
        RAISE EXCEPTION 'chunk % is immutable: only retain_until may change',
            encode(OLD.hash, 'hex')
            USING ERRCODE = 'WV002';
    END IF;
    RETURN NEW;
END
$$;

-- Packs known to be fully indexed: every record in them has its row. The
-- start-up reconcile scans only packs that are not listed here.
CREATE TABLE packs_indexed (
    pack_id    bigint      PRIMARY KEY CHECK (pack_id > 0),
    indexed_at timestamptz NOT NULL
);
