-- 0009 least privilege (issue 17), every flavour: a role per job and exactly its rights.
--
-- The owner (the role that runs migrations: the stack's admin) owns every object. The other
-- roles are cluster-wide and made here NOLOGIN when missing (`sealstream stack up` gives them
-- LOGIN and their password when security is on); their names are sealstream.settings.PG_ROLES:
--   sealstream_pipeline  the pipeline workers: insert the ingest tables, attach seal receipts,
--                        move open batches through the anchor state machine, dead-letter log;
--   sealstream_verifier  the verifier agent and `sealstream verify`: read everything, write
--                        verdicts (batch_verdicts, verified_statements) and their alerts;
--   sealstream_analyst   data scientists: SELECT the verified_* views only (exports);
--   sealstream_grafana   the Grafana datasource: SELECT what the dashboards read.
-- The grants are one function, storage_grant_privileges(), which `storage.migrate` runs again
-- after every migration run (a role made later, by a DBA, gets its rights on the next migrate),
-- and which a later migration that adds a table replaces with its grants (CREATE OR REPLACE).
-- Partitions made by readings_ensure_partition are reached through their parent only
-- (PostgreSQL checks the parent's privileges), so they need no grants.

-- Rows a writer must not touch: a batch once anchored (the trigger already freezes its root,
-- size and coordinates; row security keeps the writer from every other column too, and from
-- inserting a batch that is not pending), and a statement once its batch is anchored. The
-- owner and superusers bypass row security; the views and foreign keys are the owner's.
ALTER TABLE batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY batches_read ON batches FOR SELECT USING (true);
CREATE POLICY batches_new ON batches FOR INSERT WITH CHECK (anchor_state = 'pending');
CREATE POLICY batches_open ON batches FOR UPDATE USING (anchor_state <> 'anchored') WITH CHECK (true);

ALTER TABLE statements ENABLE ROW LEVEL SECURITY;
CREATE POLICY statements_read ON statements FOR SELECT USING (true);
CREATE POLICY statements_new ON statements FOR INSERT WITH CHECK (true);
CREATE POLICY statements_unanchored ON statements FOR UPDATE USING (NOT EXISTS (
    SELECT 1 FROM batch_leaves l JOIN batches b ON b.batch_id = l.batch_id
    WHERE l.statement_hash = statements.statement_hash AND b.anchor_state = 'anchored')) WITH CHECK (true);

-- What the pipeline's inserts set off runs as the owner: creating a daily partition (CREATE,
-- ATTACH, moving rows out of readings_default) and the verification triggers (they delete from
-- verified_statements, which the writer may not). Pinned search_path, as for every definer.
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['readings_ensure_partition(date)', 'verification_forget_rows()',
                             'verification_forget_reading()', 'verification_forget_row()'] LOOP
        IF to_regprocedure(f) IS NOT NULL THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = public, pg_temp', f);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION storage_grant_privileges() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r text;
    roles text[] := ARRAY['sealstream_pipeline', 'sealstream_verifier', 'sealstream_analyst', 'sealstream_grafana'];
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
