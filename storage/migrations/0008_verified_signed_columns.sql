-- The verified views show what was signed, not what a column says (issue 14).
--
-- An audit that re-verifies a batch reads each statement from its signed canonical bytes, so a
-- rewritten convenience column (statements.device/seq/ts) was not seen, and verified_blobs
-- then showed the forged value again. verified_statements now records the signed device, seq,
-- ts and payload digest when the verifier proves a statement; the views show those and keep a
-- row only where the stored row agrees with them. Statements verified before this migration
-- have NULLs and stay out of the views until their next check.
ALTER TABLE verified_statements ADD COLUMN device text;
ALTER TABLE verified_statements ADD COLUMN seq bigint;
ALTER TABLE verified_statements ADD COLUMN ts timestamptz;
ALTER TABLE verified_statements ADD COLUMN payload_sha256 bytea;

CREATE OR REPLACE VIEW verified_readings AS
SELECT r.time, r.device, r.sensor, r.value, r.statement_hash, r.row_index,
       v.batch_id, v.leaf_index, b.ledger_height, b.tx_index, b.root, b.checked_at AS verified_at
FROM readings r
JOIN verified_statements v ON v.statement_hash = r.statement_hash AND r.row_index < v.rows
                          AND r.device = v.device
JOIN batch_verdicts b ON b.batch_id = v.batch_id AND b.verdict = 'verified';

CREATE OR REPLACE VIEW verified_blobs AS
SELECT v.device, v.ts, v.seq, bl.statement_hash, bl.object_key, bl.content_type, bl.size, bl.sha256,
       v.batch_id, v.leaf_index, b.ledger_height, b.tx_index, b.root, b.checked_at AS verified_at
FROM blobs bl
JOIN verified_statements v ON v.statement_hash = bl.statement_hash AND bl.sha256 = v.payload_sha256
JOIN batch_verdicts b ON b.batch_id = v.batch_id AND b.verdict = 'verified';
