"""Smoke test of ``bench/pipeline.py --confidential`` (issue 18) on the real stack with a tiny load:
report shape, never timings. Both drains (plain and confidential, the real trusted worker) store
every record; the confidential drain stores no readings rows (envelopes are blobs); the device-side
figures cover every kind and 1, 3 and 10 recipients; the throwaway databases and buckets are gone."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bench import _pipeline_confidential as conf
from bench import pipeline as bench_pipeline


@pytest.mark.services
def test_bench_pipeline_confidential_tiny_run(stack, settings) -> None:
    args = bench_pipeline.parse_args(["--confidential", "--messages", "9", "--repeats", "1", "--device-rounds", "1",
                                      "--no-anchor", "--json"])
    rep = conf.build_confidential_report(args)
    json.dumps(rep, default=str)
    assert rep["mode"] == "confidential" and rep["load"]["messages"] == 9
    assert rep["load"]["envelope_bytes"] > rep["load"]["plain_bytes"] and rep["load"]["key_record_bytes"] > 0
    runs = {r["consumer"]: r for r in rep["runs"]}
    assert set(runs) == {"plain", "confidential"} and all(r["records"] == 9 for r in runs.values())
    assert runs["plain"]["readings"] > 0 and runs["confidential"]["readings"] == 0
    assert rep["ratio"]["records_per_s"] > 0 and rep["target_ratio"] == 0.85
    assert set(rep["device"]) == {"timeseries", "image", "video"}
    for d in rep["device"].values():
        assert set(d["us_per_message"]) == {"sign", "confidential_1", "confidential_3", "confidential_10"}
        assert all(v > 0 for v in d["us_per_message"].values())
    text = conf.format_confidential_report(rep)
    for needle in ("ratio confidential/plain", "device side", "10 recipient(s)", "load average"):
        assert needle in text
    created = rep["created"]
    assert len(created["databases"]) == 2 and not created["kept"]
    with psycopg.connect(make_conninfo(settings.postgres_dsn, dbname="postgres"), autocommit=True) as conn:
        assert conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                            (created["databases"],)).fetchall() == []
