-- 0001 core: statements, blobs, batches, batch_leaves (same in every flavour).
-- Idempotency keys: statements.statement_hash, blobs.statement_hash,
-- batches.batch_id, batch_leaves (batch_id, leaf_index) and statement_hash.

CREATE TABLE statements (
    statement_hash    bytea       PRIMARY KEY CHECK (octet_length(statement_hash) = 32),
    device            text        NOT NULL,
    seq               bigint      NOT NULL CHECK (seq >= 0),
    ts                timestamptz NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('timeseries', 'image', 'video')),
    content_type      text        NOT NULL,
    size              bigint      NOT NULL CHECK (size >= 0),
    payload_sha256    bytea       NOT NULL CHECK (octet_length(payload_sha256) = 32),
    canonical         bytea       NOT NULL,
    signature         bytea       NOT NULL CHECK (octet_length(signature) = 64),
    gateway           text,
    receipt_location  text,
    receipt_signature bytea       CHECK (octet_length(receipt_signature) = 64),
    sealed_at         timestamptz,
    kafka_topic       text,
    kafka_partition   integer,
    kafka_offset      bigint,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT statements_device_seq_key UNIQUE (device, seq),
    CONSTRAINT statements_receipt_whole CHECK (
        (gateway IS NULL AND receipt_location IS NULL AND receipt_signature IS NULL AND sealed_at IS NULL)
        OR (gateway IS NOT NULL AND receipt_location IS NOT NULL AND receipt_signature IS NOT NULL
            AND sealed_at IS NOT NULL)),
    CONSTRAINT statements_kafka_whole CHECK (
        (kafka_topic IS NULL) = (kafka_partition IS NULL) AND (kafka_topic IS NULL) = (kafka_offset IS NULL))
);
CREATE INDEX statements_device_ts_idx ON statements (device, ts);
CREATE INDEX statements_payload_idx ON statements (payload_sha256);
CREATE INDEX statements_unsealed_idx ON statements (stored_at) WHERE receipt_signature IS NULL;

-- One row per image/video statement; the object is content-addressed.
CREATE TABLE blobs (
    statement_hash bytea       PRIMARY KEY REFERENCES statements (statement_hash),
    object_key     text        NOT NULL,
    content_type   text        NOT NULL,
    size           bigint      NOT NULL CHECK (size >= 0),
    sha256         bytea       NOT NULL CHECK (octet_length(sha256) = 32),
    stored_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT blobs_content_addressed CHECK (object_key = 'raw/' || encode(sha256, 'hex'))
);
CREATE INDEX blobs_sha256_idx ON blobs (sha256);

CREATE TABLE batches (
    batch_id      text        PRIMARY KEY CHECK (batch_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    root          bytea       NOT NULL CHECK (octet_length(root) = 32),
    tree_size     bigint      NOT NULL CHECK (tree_size > 0),
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    manifest_key  text        NOT NULL,
    gateway       text,
    anchor_state  text        NOT NULL DEFAULT 'pending'
                  CONSTRAINT batches_anchor_state_check
                  CHECK (anchor_state IN ('pending', 'submitted', 'anchored', 'failed')),
    ledger_height bigint      CHECK (ledger_height >= 0),
    tx_index      integer     CHECK (tx_index >= 0),
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    submitted_at  timestamptz,
    anchored_at   timestamptz,
    failed_at     timestamptz,
    CONSTRAINT batches_window_order CHECK (window_start <= window_end),
    CONSTRAINT batches_anchor_coordinates CHECK (
        (anchor_state = 'anchored') = (ledger_height IS NOT NULL AND tx_index IS NOT NULL))
);
CREATE INDEX batches_open_idx ON batches (anchor_state, created_at) WHERE anchor_state <> 'anchored';
CREATE INDEX batches_window_idx ON batches (window_start);

-- The anchor state machine, enforced for every writer (not only storage.writers):
--   pending -> submitted | failed;  submitted -> anchored | failed;
--   failed -> submitted | anchored;  anchored is final.
-- root, tree_size and (once anchored) the ledger coordinates never change.
CREATE FUNCTION batches_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.batch_id IS DISTINCT FROM OLD.batch_id OR NEW.root IS DISTINCT FROM OLD.root
       OR NEW.tree_size IS DISTINCT FROM OLD.tree_size THEN
        RAISE EXCEPTION 'batch %: id, root and tree_size are immutable', OLD.batch_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.anchor_state IS DISTINCT FROM OLD.anchor_state AND (OLD.anchor_state, NEW.anchor_state) NOT IN (
        ('pending', 'submitted'), ('pending', 'failed'),
        ('submitted', 'anchored'), ('submitted', 'failed'),
        ('failed', 'submitted'), ('failed', 'anchored')) THEN
        RAISE EXCEPTION 'batch %: anchor state cannot go from % to %',
            OLD.batch_id, OLD.anchor_state, NEW.anchor_state
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.anchor_state = 'anchored' AND (NEW.ledger_height, NEW.tx_index)
       IS DISTINCT FROM (OLD.ledger_height, OLD.tx_index) THEN
        RAISE EXCEPTION 'batch %: already anchored at height % tx %',
            OLD.batch_id, OLD.ledger_height, OLD.tx_index
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER batches_guard_update BEFORE UPDATE ON batches
    FOR EACH ROW EXECUTE FUNCTION batches_guard_update();

-- Leaf i of a batch's RFC 9162 tree is SHA-256(0x00 || statement_hash).
-- A statement belongs to at most one batch.
CREATE TABLE batch_leaves (
    batch_id       text    NOT NULL REFERENCES batches (batch_id),
    leaf_index     integer NOT NULL CHECK (leaf_index >= 0),
    statement_hash bytea   NOT NULL REFERENCES statements (statement_hash),
    PRIMARY KEY (batch_id, leaf_index),
    CONSTRAINT batch_leaves_statement_key UNIQUE (statement_hash)
);

-- Where a statement sits in the anchored evidence (the shape of trust.receipt.AnchorRef).
CREATE VIEW statement_anchors AS
SELECT l.statement_hash, b.batch_id, l.leaf_index, b.tree_size, b.root,
       b.anchor_state, b.ledger_height, b.tx_index
FROM batch_leaves l
JOIN batches b USING (batch_id);
