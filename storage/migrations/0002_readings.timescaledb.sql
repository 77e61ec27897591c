-- 0002 readings, TimescaleDB flavour: a hypertable with 1-day chunks and a
-- compression policy.  Same table, index and function names as the
-- partitioned flavour, so writers and queries do not change.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE readings (
    time           timestamptz      NOT NULL,
    device         text             NOT NULL,
    sensor         text             NOT NULL,
    value          double precision,
    statement_hash bytea            NOT NULL,
    row_index      integer          NOT NULL CHECK (row_index >= 0)
);

SELECT create_hypertable('readings', 'time',
                         chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => false);

CREATE UNIQUE INDEX readings_record_key ON readings (statement_hash, row_index, time);
CREATE INDEX readings_device_time_idx ON readings (device, time);
CREATE INDEX readings_time_idx ON readings USING brin (time);

ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device',
    timescaledb.compress_orderby = 'time, statement_hash, row_index'
);
SELECT add_compression_policy('readings', INTERVAL '7 days');

-- Chunks are created by TimescaleDB itself: nothing to do.
CREATE FUNCTION readings_ensure_partition(day date) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
