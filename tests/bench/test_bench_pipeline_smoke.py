"""Smoke test of bench/pipeline.py on the real stack with a tiny load: report shape, never timings.

Both consumers must drain the whole preloaded set and agree on what they
stored (records and readings); the trusted one also anchors (the bench's own
4-node ledger); the throwaway databases and buckets must be gone afterwards. The profile summariser
is checked on a synthetic py-spy file.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bench import pipeline as bench_pipeline
from bench._pipeline_profile import profile_summary
from storage.blobs import minio_client


@pytest.mark.services
def test_bench_pipeline_tiny_run(stack, settings) -> None:
    args = bench_pipeline.parse_args(["--messages", "12", "--repeats", "1", "--latency-seconds", "2",
                                      "--latency-rate", "1", "--json"])
    rep = bench_pipeline.build_report(args)
    json.dumps(rep, default=str)
    assert rep["load"]["messages"] == 12 and sum(rep["load"]["by_kind"].values()) == 12
    assert len(rep["load"]["readings"]) == 1 and rep["load"]["readings"][0] > 0  # both stored the same rows
    assert [(r["consumer"], r["records"]) for r in rep["runs"]] == [("trusted", 12), ("baseline", 12)]
    figures = {"records_per_s", "readings_per_s", "blob_mb_per_s", "seconds"}
    assert set(rep["baseline"]) == figures and set(rep["trusted"]) == figures | {"anchored_per_s", "anchoring_per_s"}
    assert rep["anchoring"] is True and rep["kafka"] == "private" and rep["trusted"]["anchored_per_s"] > 0
    assert rep["ratio"]["anchored_over_baseline"] > 0
    for name in ("trusted", "baseline"):
        assert rep[name]["records_per_s"] > 0
        lat = rep["latency"][name]["device_to_stored"]
        assert lat["n"] == 12 and lat["p50_ms"] is not None and lat["p99_ms"] >= lat["p50_ms"]
    anchored = rep["latency"]["trusted"]["device_to_anchored"]  # a record is anchored after it is stored
    assert anchored["n"] == 12 and anchored["p50_ms"] >= rep["latency"]["trusted"]["device_to_stored"]["p50_ms"]
    assert "device_to_anchored" not in rep["latency"]["baseline"]
    assert len(rep["ratio"]["per_repeat"]) == 1 and rep["ratio"]["records_per_s"] > 0
    assert rep["target_ratio"] == 0.8 and isinstance(rep["target_met"], bool)
    assert rep["profile"] is None
    text = bench_pipeline.format_report(rep)
    for needle in ("trusted", "baseline", "ratio trusted/baseline", "device_to_stored", "device_to_anchored",
                   "last batch anchored", "load average"):
        assert needle in text
    # the throwaway databases and buckets of this run (one per consumer run) are gone
    created = rep["created"]
    assert len(created["databases"]) == len(created["buckets"]) == 4 and not created["kept"]
    with psycopg.connect(make_conninfo(settings.postgres_dsn, dbname="postgres"), autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                            (created["databases"],)).fetchall()
    assert left == []
    mc = minio_client(settings, "admin")
    assert not [b for b in created["buckets"] if mc.bucket_exists(b)]


@pytest.mark.services
def test_bench_pipeline_security_both_runs_every_service_private_in_each_mode(stack, settings) -> None:
    """--security both: one round each way, Kafka, MinIO and PostgreSQL private to each mode and
    secured or not with it (a client of the other mode would be refused: TLS against plaintext or
    the reverse), both consumers drain everything, the ratio is computed; nothing is left."""
    args = bench_pipeline.parse_args(["--messages", "9", "--repeats", "1", "--latency-seconds", "0",
                                      "--no-anchor", "--security", "both", "--json"])
    rep = bench_pipeline.build_security_report(args)
    json.dumps(rep, default=str)
    for mode in ("on", "off"):
        (r,) = rep["security"][mode]
        assert r["security"] == {"mode": mode, "services_secured": mode == "on",
                                 "private": ["kafka", "minio", "postgres"]}
        assert r["kafka_security"] is (mode == "on")
        assert [(x["consumer"], x["records"]) for x in r["runs"]] == [("trusted", 9), ("baseline", 9)]
        assert "private kafka, minio, postgres" in bench_pipeline.format_report(r)
    ratio = rep["ratio_on_over_off"]
    assert ratio["trusted"] > 0 and ratio["baseline"] > 0 and len(ratio["trusted_per_round"]) == 1
    assert rep["target_ratio"] == 0.9 and isinstance(rep["target_met"], bool)
    assert "records/s with security on / off" in bench_pipeline.format_security_report(rep)


def test_profile_summary_views(tmp_path) -> None:
    loop = "<module> (sealstream/__main__.py:4);BaseEventLoop.run_forever (asyncio/base_events.py:607)"
    pool = "Thread._bootstrap (threading.py:1002);_WorkItem.run (concurrent/futures/thread.py:58)"
    proc = pool + ";IngestProcessor.process (pipelines/worker.py:180)"
    raw = tmp_path / "p.txt"
    raw.write_text(
        f"{proc};check_record (pipelines/checks.py:90);verify_statement (trust/statement.py:200);"
        "verify (nacl/signing.py:110) 30\n"
        f"{proc};IngestProcessor._store (pipelines/worker.py:220);BlobStore.put_raw (storage/blobs.py:140);"
        "urlopen (urllib3/poolmanager.py:400) 50\n"
        f"{proc};IngestProcessor._store (pipelines/worker.py:220);Writer.write_statements (storage/writers.py:180);"
        "Connection.wait (psycopg/connection.py:900) 20\n"
        f"{loop};BaseEventLoop._run_once (asyncio/base_events.py:1884);EpollSelector.select (selectors.py:468) 60\n"
        f"{loop};handle (pipelines/app.py:150);AIOKafkaProducer.send (aiokafka/producer/producer.py:400) 40\n"
        f"{pool[:pool.index(';')]};_worker (concurrent/futures/thread.py:81) 99\n")
    s = profile_summary(raw, seconds=2.0, rate_hz=100)
    assert s["samples"] == 299
    assert dict(s["store"]) == {"MinIO archive PUT": 50.0, "device signature check": 30.0,
                                "PostgreSQL statements (+ replay lookups)": 20.0}
    assert s["store_concurrency"] == 0.5  # 100 samples over 2 s at 100 Hz
    assert dict(s["event_loop"]) == {"idle (waiting in select)": 60.0,
                                     "produce + wait for acks (aiokafka producer)": 40.0}
    assert s["self"][0] == ("urlopen (poolmanager.py)", 35.7)  # 50 of 140 non-idle samples
    empty = tmp_path / "e.txt"
    empty.write_text("")
    assert profile_summary(empty) == {"samples": 0, "store": [], "store_concurrency": None, "event_loop": [],
                                      "self": []}
