"""**Pipeline**: the workers (ingest, store, seal, anchor) from Prometheus, batches from PostgreSQL."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from ._panels import RATE, board, m, quantiles, prom, sql, table, timeseries

__all__ = ["UID", "build"]

UID = "sealstream-pipeline"


def build() -> Dashboard:
    return board(UID, "sealstream / Pipeline",
                 "Pipeline workers: ingest rate, consumer lag, dead letters, store and anchoring latency, "
                 "anchoring backlog (pipelines/metrics.py, pipelines/lag.py; batches from PostgreSQL); the Edge row: "
                 "the edge agents' sources, spool and sends (edge/metrics.py).",
                 ["pipeline"], "sealstream_pipeline_ingested_total", [
        (timeseries("Ingest rate per kind", "Records stored and sealed per second.", "ops",
                    prom(f"sum by (kind) (rate({m('sealstream_pipeline_ingested_total')}[{RATE}]))",
                         "{{kind}}")), 8, 8),
        (timeseries("Ingest throughput per kind", "Payload bytes stored and sealed per second.", "Bps",
                    prom(f"sum by (kind) (rate({m('sealstream_pipeline_ingested_bytes_total')}[{RATE}]))",
                         "{{kind}}")), 8, 8),
        (timeseries("Consumer lag", "Records written to a raw topic partition but not yet committed by the "
                    "worker group (high watermark - committed offset).", "short",
                    prom(f"max by (group, topic, partition) ({m('sealstream_pipeline_consumer_lag')})",
                         "{{group}} {{topic}}[{{partition}}]")), 8, 8),
        (timeseries("Dead letters by reason", "Records sent to iiot.deadletter per second (docs/pipeline.md).",
                    "ops", prom(f"sum by (reason) (rate({m('sealstream_pipeline_deadletters_total')}[{RATE}]))",
                                "{{reason}}")), 8, 8),
        (timeseries("Store latency", "MinIO archive + PostgreSQL writes of one record.", "s",
                    *quantiles("sealstream_pipeline_store_seconds")), 8, 8),
        (timeseries("Redeliveries and store retries", "Records re-read from an already stored offset; "
                    "store attempts retried after a service error.", "ops",
                    prom(f"sum(rate({m('sealstream_pipeline_redeliveries_total')}[{RATE}]))", "redeliveries"),
                    prom(f"sum(rate({m('sealstream_pipeline_store_retries_total')}[{RATE}]))", "store retries")), 8, 8),
        (timeseries("Device to anchored latency", "Statement timestamp (device) -> its batch anchored on the "
                    "ledger.", "s", *quantiles("sealstream_pipeline_device_to_anchored_seconds")), 8, 8),
        (timeseries("Anchoring backlog", "Sealed statements waiting for a batch to be anchored.", "short",
                    prom(f"sum({m('sealstream_pipeline_anchor_backlog')})", "backlog")), 8, 8),
        (timeseries("Batches anchored / failed", "Batches per second committed on the ledger, or failed "
                    "(retried).", "ops",
                    prom(f"sum(rate({m('sealstream_pipeline_batches_anchored_total')}[{RATE}]))", "anchored"),
                    prom(f"sum(rate({m('sealstream_pipeline_batches_failed_total')}[{RATE}]))", "failed")), 8, 8),
        (timeseries("Anchor latency", "Submitting an ANCHOR transaction -> committed.", "s",
                    *quantiles("sealstream_pipeline_anchor_seconds")), 12, 8),
        (table("Batches by anchor state", "Batches created in the time range by state (PostgreSQL, the source "
               "of truth), with the oldest not yet anchored.",
               sql("""
SELECT anchor_state,
       count(*) AS batches,
       sum(tree_size) AS statements,
       min(created_at) FILTER (WHERE anchor_state <> 'anchored') AS oldest_open
FROM batches
WHERE $__timeFilter(created_at)
GROUP BY anchor_state
ORDER BY anchor_state""")), 12, 8),
        (table("Dead letters recorded", "Dead letters per consumer group and reason in the time range "
               "(PostgreSQL dead_letters: one row per source record and group, so re-reads after a crash are "
               "not counted twice; unconfirmed = recorded, broker ack not yet marked).",
               sql("""
SELECT grp AS consumer_group,
       reason,
       count(*) AS dead_letters,
       count(*) FILTER (WHERE NOT produced) AS unconfirmed,
       max(recorded_at) AS last_recorded
FROM dead_letters
WHERE $__timeFilter(recorded_at)
GROUP BY grp, reason
ORDER BY dead_letters DESC, reason""")), 24, 8),
        *_edge_row(),
    ])


def _edge_row() -> list:
    """The Edge row: the agents of `sealstream edge run` (edge/metrics.py), one series per agent and source."""
    return [
        (timeseries("Edge readings by source", "Readings (time series values) and blobs (images, video chunks) "
                    "the edge agents' sources handed over, per second.", "ops",
                    prom(f"sum by (instance, source) (rate({m('sealstream_edge_readings_total')}[{RATE}]))",
                         "{{instance}} {{source}} readings"),
                    prom(f"sum by (instance, source) (rate({m('sealstream_edge_blobs_total')}[{RATE}]))",
                         "{{instance}} {{source}} blobs")), 8, 8),
        (timeseries("Edge messages by source", "Signed messages written to the spool per second, by source and "
                    "kind (a time series message groups up to [edge.group] readings).", "ops",
                    prom(f"sum by (instance, source, kind) (rate({m('sealstream_edge_messages_total')}[{RATE}]))",
                         "{{instance}} {{source}} {{kind}}")), 8, 8),
        (timeseries("Edge source state", "1 for each source's current connection state (connecting, connected, "
                    "disconnected); source errors by reason per second.", "short",
                    prom(f"max by (instance, source, state) ({m('sealstream_edge_source_state')}) == 1",
                         "{{instance}} {{source}} {{state}}"),
                    prom(f"sum by (instance, source, reason) (rate({m('sealstream_edge_source_errors_total')}"
                         f"[{RATE}]))", "{{instance}} {{source}} {{reason}}")), 8, 8),
        (timeseries("Edge spool depth", "Messages waiting in each agent's spool until Kafka acknowledges them; "
                    "1 while the spool is full (sources are held).", "short",
                    prom(f"max by (instance) ({m('sealstream_edge_spool_messages')})", "{{instance}} messages"),
                    prom(f"max by (instance, reason) ({m('sealstream_edge_spool_full')})",
                         "{{instance}} full ({{reason}})")), 8, 8),
        (timeseries("Edge spool age", "Age of the oldest spooled message (the spool is full at "
                    "[edge.spool] max_age_s).", "s",
                    prom(f"max by (instance) ({m('sealstream_edge_spool_oldest_age_seconds')})", "{{instance}}")),
         8, 8),
        (timeseries("Edge sends and send errors", "Messages Kafka acknowledged per second, by topic; delivery "
                    "errors by reason (the producer retries them; reason none is always 0).", "ops",
                    prom(f"sum by (instance, topic) (rate({m('sealstream_edge_sent_total')}[{RATE}]))",
                         "{{instance}} sent {{topic}}"),
                    prom(f"sum by (instance, reason) (rate({m('sealstream_edge_send_errors_total')}[{RATE}]))",
                         "{{instance}} error {{reason}}")), 8, 8),
    ]
