-- A row cannot change owner while it stays verified (issue 14).
--
-- 1. The statements trigger forgot a verified statement only when its signed bytes,
--    signatures or hash changed; the columns queries filter and join on (device, seq, ts,
--    kind, payload digest, receipt location, gateway) could be rewritten silently. Now any
--    change of any of them takes the statement out of verified_statements at once.
-- 2. verified_readings and verified_blobs show a row only when the device the database
--    attributes it to is the device of its statement (the signer the verifier proved), so a
--    row re-attributed to another device leaves the views even before the next audit.
DROP TRIGGER IF EXISTS statements_verification_change ON statements;
CREATE TRIGGER statements_verification_change AFTER UPDATE ON statements
    FOR EACH ROW WHEN (OLD.canonical IS DISTINCT FROM NEW.canonical
                       OR OLD.signature IS DISTINCT FROM NEW.signature
                       OR OLD.receipt_signature IS DISTINCT FROM NEW.receipt_signature
                       OR OLD.statement_hash IS DISTINCT FROM NEW.statement_hash
                       OR OLD.device IS DISTINCT FROM NEW.device
                       OR OLD.seq IS DISTINCT FROM NEW.seq
                       OR OLD.ts IS DISTINCT FROM NEW.ts
                       OR OLD.kind IS DISTINCT FROM NEW.kind
                       OR OLD.content_type IS DISTINCT FROM NEW.content_type
                       OR OLD.size IS DISTINCT FROM NEW.size
                       OR OLD.payload_sha256 IS DISTINCT FROM NEW.payload_sha256
                       OR OLD.gateway IS DISTINCT FROM NEW.gateway
                       OR OLD.receipt_location IS DISTINCT FROM NEW.receipt_location)
    EXECUTE FUNCTION verification_forget_row();

CREATE OR REPLACE VIEW verified_readings AS
SELECT r.time, r.device, r.sensor, r.value, r.statement_hash, r.row_index,
       v.batch_id, v.leaf_index, b.ledger_height, b.tx_index, b.root, b.checked_at AS verified_at
FROM readings r
JOIN verified_statements v ON v.statement_hash = r.statement_hash AND r.row_index < v.rows
JOIN statements s ON s.statement_hash = r.statement_hash AND s.device = r.device
JOIN batch_verdicts b ON b.batch_id = v.batch_id AND b.verdict = 'verified';
