-- 0002 readings, plain PostgreSQL flavour: native range partitioning on time.
-- Daily partitions readings_pYYYYMMDD (UTC days) are created on demand by the
-- writer through readings_ensure_partition(); readings_default takes every
-- row no daily partition covers, so no row is ever refused.

CREATE TABLE readings (
    time           timestamptz      NOT NULL,
    device         text             NOT NULL,
    sensor         text             NOT NULL,
    value          double precision,
    statement_hash bytea            NOT NULL,
    row_index      integer          NOT NULL CHECK (row_index >= 0)
) PARTITION BY RANGE (time);

CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- (statement_hash, row_index) is the record key; a unique index on a
-- partitioned table must contain the partition key, and time is a function
-- of the record, so adding it changes nothing.
CREATE UNIQUE INDEX readings_record_key ON readings (statement_hash, row_index, time);
CREATE INDEX readings_device_time_idx ON readings (device, time);
CREATE INDEX readings_time_idx ON readings USING brin (time);

-- Create the daily partition holding `day` (UTC) unless it exists; true when
-- this call created it.  Two workers racing for the same day serialise on an
-- advisory lock; rows of that day already in readings_default are moved into
-- the new partition before it is attached (ATTACH refuses otherwise).
CREATE FUNCTION readings_ensure_partition(day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    part text        := 'readings_p' || to_char(day, 'YYYYMMDD');
    lo   timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi   timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('sealstream.readings_ensure_partition'), hashtext(part));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    LOCK TABLE readings_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM readings_default WHERE time >= %L AND time < %L RETURNING *) '
        'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    RETURN true;
EXCEPTION WHEN duplicate_table THEN
    RETURN false;
END
$$;
