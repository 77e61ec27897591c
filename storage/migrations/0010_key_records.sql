-- 0010 key records in PostgreSQL (issue 18), every flavour.
--
-- A confidential record's key record (its data key and salt wrapped for each recipient with
-- HPKE, docs/formats.md section 8) was a MinIO object of its own, keys/<statement hash>: a
-- second PUT per confidential record, the worker's dominant cost. It is now a row, written in
-- the same transaction as its statement and only when that statement is new, so a redelivered
-- raw message cannot bring back a key record that erasure destroyed.
--
-- Erasure is the only deletion: the new role sealstream_erasure may read statements and batch
-- leaves (to choose the records) and SELECT and DELETE key records, and nothing else. The
-- pipeline may only INSERT them. What a DELETE leaves behind (the dead tuple until VACUUM, the
-- WAL, backups) is in docs/storage.md.
CREATE TABLE IF NOT EXISTS key_records (
    statement_hash bytea       PRIMARY KEY REFERENCES statements (statement_hash),
    record         bytea       NOT NULL CHECK (octet_length(record) > 0),
    stored_at      timestamptz NOT NULL DEFAULT now()
);

-- The grants of 0009 again, with the key records and the erasure role.
CREATE OR REPLACE FUNCTION storage_grant_privileges() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r text;
    roles text[] := ARRAY['sealstream_pipeline', 'sealstream_verifier', 'sealstream_analyst', 'sealstream_grafana',
                           'sealstream_erasure'];
BEGIN
    FOREACH r IN ARRAY roles LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN NULL;  -- another database's migrate made it
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'role % is missing and % may not create it: no rights granted to it', r, current_user;
            END;
        END IF;
    END LOOP;

    -- Nobody but the owner and the roles below connects or makes temporary tables.
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    FOREACH r IN ARRAY roles LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r);
            EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', r);
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sealstream_pipeline') THEN
        -- staging tables: COPY into session-temporary tables made LIKE statements/blobs (LIKE needs SELECT)
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO sealstream_pipeline', current_database());
        GRANT SELECT, INSERT ON statements, blobs, batch_leaves, dead_letters TO sealstream_pipeline;
        GRANT UPDATE (gateway, receipt_location, receipt_signature, sealed_at) ON statements TO sealstream_pipeline;
        GRANT INSERT ON readings TO sealstream_pipeline;
        GRANT SELECT, INSERT ON batches TO sealstream_pipeline;
        GRANT UPDATE (anchor_state, ledger_height, tx_index, attempts, last_error, submitted_at, anchored_at,
                      failed_at) ON batches TO sealstream_pipeline;
        GRANT UPDATE (produced) ON dead_letters TO sealstream_pipeline;
        GRANT SELECT ON statement_anchors, storage_meta, schema_migrations TO sealstream_pipeline;
        GRANT EXECUTE ON FUNCTION readings_ensure_partition(date) TO sealstream_pipeline;
        -- key records: inserted with their (new) statement only; never read back, changed or deleted
        GRANT INSERT ON key_records TO sealstream_pipeline;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sealstream_verifier') THEN
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO sealstream_verifier;
        GRANT INSERT, UPDATE ON batch_verdicts TO sealstream_verifier;
        GRANT INSERT, DELETE ON verified_statements TO sealstream_verifier;
        -- the alerts of its verdicts, in the same transaction, and their relay to Kafka
        GRANT INSERT ON alert_outbox TO sealstream_verifier;
        GRANT UPDATE (attempts, attempted_at, sent_at, last_error) ON alert_outbox TO sealstream_verifier;
        GRANT USAGE ON SEQUENCE alert_outbox_id_seq TO sealstream_verifier;
        -- tables a later migration makes are readable by it too
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO sealstream_verifier;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sealstream_analyst') THEN
        GRANT SELECT ON verified_readings, verified_blobs TO sealstream_analyst;
        -- a recipient's reader (`data open`, `evidence verify --key`) needs its wrapped keys: HPKE
        -- ciphertexts, of use to the recipients named in them only
        GRANT SELECT ON key_records TO sealstream_analyst;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sealstream_erasure') THEN
        -- `sealstream data erase`: choose the records (statements, batch leaves), destroy their key
        -- records, check they are gone; nothing else
        GRANT SELECT ON statements, batch_leaves TO sealstream_erasure;
        GRANT SELECT, DELETE ON key_records TO sealstream_erasure;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sealstream_grafana') THEN
        -- the panels' queries (dashboards/*.py): batches, dead letters, verdicts, readings against verified_readings
        GRANT SELECT ON batches, dead_letters, batch_verdicts, readings, verified_readings, verified_blobs
            TO sealstream_grafana;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION storage_grant_privileges() FROM PUBLIC;

SELECT storage_grant_privileges();
