"""**Pipeline**: the workers (ingest, store, seal, anchor) from Prometheus, batches from PostgreSQL."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from ._panels import RATE, board, m, quantiles, prom, sql, table, timeseries

__all__ = ["UID", "build"]

UID = "sealstream-pipeline"


def build() -> Dashboard:
    return board(UID, "sealstream / Pipeline",
                 "Pipeline workers: ingest rate, consumer lag, dead letters, store and anchoring latency, "
                 "anchoring backlog (pipelines/metrics.py, pipelines/lag.py; batches from PostgreSQL).",
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
    ])
