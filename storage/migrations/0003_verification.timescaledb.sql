-- 0003 verification, TimescaleDB flavour: the downstream verifier's
-- verdict per batch, the statements it proved (their stored rows/blob equal
-- the signed payload), and the verified views.  Same names in every flavour.

CREATE TABLE batch_verdicts (
    batch_id      text        PRIMARY KEY REFERENCES batches (batch_id),
    verdict       text        NOT NULL CHECK (verdict IN ('verified', 'failed')),
    failed_step   text,
    detail        text,
    root          bytea       NOT NULL CHECK (octet_length(root) = 32),
    ledger_height bigint      NOT NULL CHECK (ledger_height >= 0),
    tx_index      integer     NOT NULL CHECK (tx_index >= 0),
    leaves        integer     NOT NULL CHECK (leaves >= 0),
    rows          bigint      NOT NULL DEFAULT 0 CHECK (rows >= 0),
    checks        integer     NOT NULL DEFAULT 1 CHECK (checks >= 1),
    audit         boolean     NOT NULL DEFAULT false,
    checked_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT batch_verdicts_step CHECK ((verdict = 'failed') = (failed_step IS NOT NULL))
);
CREATE INDEX batch_verdicts_checked_idx ON batch_verdicts (checked_at);
CREATE INDEX batch_verdicts_failed_idx ON batch_verdicts (checked_at) WHERE verdict = 'failed';

-- One row per statement whose whole chain the verifier checked: payload,
-- device key and signature, receipt, leaf, anchor, and (time series) every
-- stored row equal to its row in the signed payload.  Deleted again by the
-- triggers below as soon as any of its rows, its blob or its statement row
-- changes, so the views never show a row changed after it was verified.
CREATE TABLE verified_statements (
    statement_hash bytea       PRIMARY KEY REFERENCES statements (statement_hash),
    batch_id       text        NOT NULL REFERENCES batch_verdicts (batch_id),
    leaf_index     integer     NOT NULL CHECK (leaf_index >= 0),
    rows           integer     NOT NULL DEFAULT 0 CHECK (rows >= 0),
    verified_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verified_statements_batch_idx ON verified_statements (batch_id);

-- Hypertables do not support transition tables: row-level triggers here.
CREATE FUNCTION verification_forget_reading() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM verified_statements WHERE statement_hash = OLD.statement_hash;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        DELETE FROM verified_statements WHERE statement_hash = NEW.statement_hash;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER readings_verification_change AFTER INSERT OR UPDATE OR DELETE ON readings
    FOR EACH ROW EXECUTE FUNCTION verification_forget_reading();

CREATE FUNCTION verification_forget_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM verified_statements WHERE statement_hash = OLD.statement_hash;
    RETURN NULL;
END
$$;

CREATE TRIGGER blobs_verification_change AFTER UPDATE OR DELETE ON blobs
    FOR EACH ROW EXECUTE FUNCTION verification_forget_row();
CREATE TRIGGER statements_verification_change AFTER UPDATE ON statements
    FOR EACH ROW WHEN (OLD.canonical IS DISTINCT FROM NEW.canonical
                       OR OLD.signature IS DISTINCT FROM NEW.signature
                       OR OLD.receipt_signature IS DISTINCT FROM NEW.receipt_signature
                       OR OLD.statement_hash IS DISTINCT FROM NEW.statement_hash)
    EXECUTE FUNCTION verification_forget_row();

-- Only rows whose batch verified and whose statement's rows equalled the
-- signed payload when it was checked; provenance columns for exports.
CREATE VIEW verified_readings AS
SELECT r.time, r.device, r.sensor, r.value, r.statement_hash, r.row_index,
       v.batch_id, v.leaf_index, b.ledger_height, b.tx_index, b.root, b.checked_at AS verified_at
FROM readings r
JOIN verified_statements v ON v.statement_hash = r.statement_hash AND r.row_index < v.rows
JOIN batch_verdicts b ON b.batch_id = v.batch_id AND b.verdict = 'verified';

CREATE VIEW verified_blobs AS
SELECT s.device, s.ts, s.seq, bl.statement_hash, bl.object_key, bl.content_type, bl.size, bl.sha256,
       v.batch_id, v.leaf_index, b.ledger_height, b.tx_index, b.root, b.checked_at AS verified_at
FROM blobs bl
JOIN statements s ON s.statement_hash = bl.statement_hash
JOIN verified_statements v ON v.statement_hash = bl.statement_hash
JOIN batch_verdicts b ON b.batch_id = v.batch_id AND b.verdict = 'verified';
