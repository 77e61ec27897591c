-- 0004 dead letters, every flavour: which source positions a consumer group
-- dead-lettered, so a record re-read after a crash is not dead-lettered twice.
-- The pipeline records a batch's dead letters here before producing them to
-- iiot.deadletter and marks them produced once the broker acked them; a row
-- left unmarked (a crash in between) is resolved by looking in the topic.

CREATE TABLE dead_letters (
    grp         text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    "offset"    bigint      NOT NULL CHECK ("offset" >= 0),
    reason      text        NOT NULL,
    produced    boolean     NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grp, topic, partition, "offset")
);
