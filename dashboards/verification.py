"""**Verification**: the downstream verifier's verdicts (Prometheus) and what PostgreSQL holds as verified."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from ._panels import RATE, board, prom, sql, stat, table, timeseries

__all__ = ["UID", "build"]

UID = "sealstream-verification"

#: Share of each device's readings (rows) in the time range whose evidence chain checks out.
VERIFIED_SHARE_SQL = """
SELECT r.device,
       count(*) AS rows,
       count(sa.statement_hash) FILTER (WHERE sa.anchor_state = 'anchored') AS verified_rows,
       round(count(sa.statement_hash) FILTER (WHERE sa.anchor_state = 'anchored')::numeric / count(*), 4)
           AS verified_share
FROM readings r
LEFT JOIN statement_anchors sa USING (statement_hash)
WHERE $__timeFilter(r.time)
GROUP BY r.device
ORDER BY verified_share, r.device
LIMIT 200"""


def build() -> Dashboard:
    return board(UID, "sealstream / Verification",
                 "Downstream verification: batches verified or failed and the failing step (Prometheus), "
                 "and the verified share of each device's rows (PostgreSQL, the source of truth).",
                 ["verification"], [
        (timeseries("Batches verified / failed", "Batches checked by the verifier per interval, by verdict.",
                    "short", prom(f"sum by (verdict) (increase(sealstream_verify_batches_total[{RATE}]))",
                                  "{{verdict}}")), 12, 8),
        (timeseries("Failures by step", "Verification failures per interval, by the step of the evidence chain "
                    "that broke.", "short",
                    prom(f"sum by (step) (increase(sealstream_verify_failures_total[{RATE}]))", "{{step}}")), 12, 8),
        (stat("Last verification failure", "When the verifier last saw a broken evidence chain.",
              "dateTimeFromNow", prom("max(sealstream_verify_last_failure_timestamp_seconds) * 1000")), 6, 8),
        (table("Verified share of rows per device", "Readings in the time range per device and the share whose "
               "evidence chain checks out (lowest first).", sql(VERIFIED_SHARE_SQL)), 18, 8),
    ])
