"""**Verification**: the downstream verifier's verdicts (Prometheus) and what PostgreSQL holds as verified."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from ._panels import RATE, board, m, prom, sql, stat, table, timeseries

__all__ = ["UID", "build"]

UID = "sealstream-verification"

#: Share of each device's readings (rows) in the time range that the verifier proved (`verified_readings`).
VERIFIED_SHARE_SQL = """
SELECT r.device,
       count(*) AS rows,
       count(v.row_index) AS verified_rows,
       round(count(v.row_index)::numeric / count(*), 4) AS verified_share
FROM readings r
LEFT JOIN verified_readings v ON v.statement_hash = r.statement_hash AND v.row_index = r.row_index
WHERE $__timeFilter(r.time)
GROUP BY r.device
ORDER BY verified_share, r.device
LIMIT 200"""

#: Verdicts recorded in the time range, by verdict and failing step (`batch_verdicts`).
VERDICTS_SQL = """
SELECT verdict,
       coalesce(failed_step, '') AS failed_step,
       count(*) AS batches,
       sum(leaves) AS statements,
       sum(rows) AS rows,
       max(checked_at) AS last_checked
FROM batch_verdicts
WHERE $__timeFilter(checked_at)
GROUP BY verdict, failed_step
ORDER BY verdict, failed_step"""

#: The latest failed verdicts, newest first.
FAILURES_SQL = """
SELECT checked_at, batch_id, failed_step, left(detail, 200) AS detail, audit
FROM batch_verdicts
WHERE verdict = 'failed' AND $__timeFilter(checked_at)
ORDER BY checked_at DESC
LIMIT 20"""


def build() -> Dashboard:
    return board(UID, "sealstream / Verification",
                 "Downstream verification: batches verified or failed and the failing step (Prometheus), "
                 "and the verified share of each device's rows (PostgreSQL, the source of truth).",
                 ["verification"], "sealstream_verify_last_failure_timestamp_seconds", [
        (timeseries("Batches verified / failed", "Batches checked by the verifier per interval, by verdict.",
                    "short", prom(f"sum by (verdict) (increase({m('sealstream_verify_batches_total')}[{RATE}]))",
                                  "{{verdict}}")), 12, 8),
        (timeseries("Failures by step", "Verification failures per interval, by the step of the evidence chain "
                    "that broke.", "short",
                    prom(f"sum by (step) (increase({m('sealstream_verify_failures_total')}[{RATE}]))",
                         "{{step}}")), 12, 8),
        (stat("Last verification failure", "When the verifier last saw a broken evidence chain.",
              "dateTimeFromNow", prom(f"max({m('sealstream_verify_last_failure_timestamp_seconds')}) * 1000")), 6, 8),
        (table("Batch verdicts", "Verdicts recorded in the time range by verdict and failing step "
               "(batch_verdicts, the source of truth).", sql(VERDICTS_SQL)), 18, 8),
        (table("Latest failures", "The newest failed verdicts: batch, the step of the evidence chain that broke, "
               "and whether an audit found it.", sql(FAILURES_SQL)), 12, 9),
        (table("Verified share of rows per device", "Readings in the time range per device and the share the "
               "verifier proved (verified_readings), lowest first.", sql(VERIFIED_SHARE_SQL)), 12, 9),
    ])
