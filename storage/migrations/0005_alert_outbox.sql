-- 0005 alert outbox, every flavour: alerts written in the same transaction as what
-- raised them (the verifier's batch verdict), relayed to Kafka afterwards
-- (pipelines.outbox.AlertRelay), so an alert survives a Kafka outage or a crash.
-- attempts/attempted_at are committed before each send: an unsent row with an
-- attempt has an unknown outcome and is looked up in its topic by alert_id
-- (header ss-alert-id) before it may be sent again. sent_at: the send committed.

CREATE TABLE alert_outbox (
    id           bigserial   PRIMARY KEY,
    alert_id     text        NOT NULL UNIQUE CHECK (alert_id <> ''),
    topic        text        NOT NULL CHECK (topic <> ''),
    key          bytea,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(headers) = 'array'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    attempted_at timestamptz,
    sent_at      timestamptz,
    last_error   text,
    CHECK ((attempts = 0) = (attempted_at IS NULL))
);

-- what the relay reads: the unsent rows, oldest first
CREATE INDEX alert_outbox_unsent ON alert_outbox (id) WHERE sent_at IS NULL;

-- this database's outbox identity: the relays' Kafka transactional.id derives from it,
-- so relays of one database fence each other and those of other databases do not
INSERT INTO storage_meta (key, value) VALUES ('alert_outbox_id', gen_random_uuid()::text)
ON CONFLICT (key) DO NOTHING;
