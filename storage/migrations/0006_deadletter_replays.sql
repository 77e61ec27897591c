-- 0006 dead-letter replays, every flavour: which dead-lettered source positions
-- `sealstream pipeline deadletters replay` re-injected, so none is re-injected
-- twice (docs/pipeline.md, "Dead letters: replay").  One row per source
-- position, whatever the group: every consumer group reads the one copy.
-- A row is written (the intent, with the copy's partition end offset
-- `scan_from` and a random `nonce`) and committed before the copy is produced
-- in a Kafka transaction; `replayed_at`/`copy_offset` are set once the
-- transaction committed.  A row without `replayed_at` is a run that died in
-- between: the next run fences the old producer, looks for the copy (headers
-- ss-replay-of + ss-replay-nonce) in the source partition from `scan_from`,
-- and confirms the row (found) or deletes it (not found: never injected).

CREATE TABLE dead_letter_replays (
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    "offset"    bigint      NOT NULL CHECK ("offset" >= 0),
    reason      text        NOT NULL,
    grp         text,
    nonce       text        NOT NULL CHECK (nonce <> ''),
    scan_from   bigint      NOT NULL CHECK (scan_from >= 0),
    started_at  timestamptz NOT NULL DEFAULT now(),
    copy_offset bigint      CHECK (copy_offset >= scan_from),
    replayed_at timestamptz,
    PRIMARY KEY (topic, partition, "offset"),
    CHECK ((copy_offset IS NULL) = (replayed_at IS NULL))
);
