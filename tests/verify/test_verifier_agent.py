"""The verifier agent: verdicts per batch, verified views, Parquet export, tampering after
verification (views drop the rows at once; the audit records the failure, alerts and
counts it), and the Faust agent as `sealstream pipeline verifier` on real Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from infra.process import Child, free_ports
from pipelines.verifier import BatchVerifier, VerifyMetrics
from verify_helpers import T0
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


def _count(dataset, query: str, params: tuple = ()) -> int:
    with dataset.pool.connection() as conn:
        return conn.execute(query, params).fetchone()[0]


def _verifier(dataset, alerts: list) -> BatchVerifier:
    return BatchVerifier(dataset.collector(), dataset.store, dataset.cluster.layout.genesis().genesis_hash(),
                         VerifyMetrics(), alert=lambda k, v: alerts.append((k, json.loads(v))))


def test_verdicts_views_export_and_audit(dataset, tmp_path) -> None:
    alerts: list = []
    v = _verifier(dataset, alerts)
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=1, rows=25)
    verdict = v.verify_batch(batch.batch_id)
    assert verdict.verdict == "verified" and verdict.leaves == 3 and verdict.rows == 50
    stored = dataset.store.verdict(batch.batch_id)
    assert stored.verdict == "verified" and stored.ledger_height == batch.ledger_height and stored.checks == 1
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE device = %s", (key.did,)) == 50
    assert _count(dataset, "SELECT count(*) FROM verified_blobs WHERE device = %s", (key.did,)) == 1
    # catch-up finds nothing left for this batch
    assert batch.batch_id not in dataset.store.unverified_batches()

    # export --verified: Parquet with provenance
    out = tmp_path / "v.parquet"
    env = dict(os.environ, SEALSTREAM_PG_DSN=dataset.pool.conninfo)
    p = subprocess.run([sys.executable, "-m", "sealstream", "export", "--verified", "--device", key.did,
                        "--from", (T0 - timedelta(seconds=5)).isoformat(),
                        "--to", (T0 + timedelta(seconds=5)).isoformat(), "-o", str(out), "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    t = pq.read_table(out)
    assert t.num_rows == 50
    assert {"device", "statement_hash", "batch_id", "leaf_index", "ledger_height"} <= set(t.schema.names)
    assert set(t.column("batch_id").to_pylist()) == {batch.batch_id}
    assert set(t.column("ledger_height").to_pylist()) == {batch.ledger_height}
    assert set(bytes(h) for h in t.column("statement_hash").to_pylist()) == {r.hash for r in records[:2]}

    # tamper after verification: the trigger drops that statement's rows from the view at once
    with dataset.pool.connection() as conn:
        conn.execute("UPDATE readings SET value = -1 WHERE statement_hash = %s AND row_index = 0",
                     (records[0].hash,))
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE device = %s", (key.did,)) == 25
    # the audit re-checks it: failed, alerted, counted; the batch leaves the views entirely
    verdict = v.verify_batch(batch.batch_id, audit=True)
    assert verdict.verdict == "failed" and verdict.failed_step == "row-value"
    stored = dataset.store.verdict(batch.batch_id)
    assert stored.verdict == "failed" and stored.audit and stored.checks == 2
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE device = %s", (key.did,)) == 0
    assert _count(dataset, "SELECT count(*) FROM verified_blobs WHERE device = %s", (key.did,)) == 0
    assert alerts and alerts[-1][0] == batch.batch_id and alerts[-1][1]["step"] == "row-value"
    reg = v.metrics.registry
    assert reg.get_sample_value("sealstream_verify_batches_total", {"verdict": "failed"}) == 1
    assert reg.get_sample_value("sealstream_verify_batches_total", {"verdict": "verified"}) == 1
    assert reg.get_sample_value("sealstream_verify_failures_total", {"step": "row-value"}) == 1
    assert reg.get_sample_value("sealstream_verify_last_failure_timestamp_seconds") > 0


def test_faust_agent_verifies_anchored_batches(dataset, settings, tmp_path) -> None:
    from confluent_kafka import Consumer, Producer

    _, key = dataset.device()
    good, _ = dataset.batch(key, n_ts=1, n_img=1, rows=10)
    bad, bad_records = dataset.batch(key, n_ts=0, n_img=2, start_seq=10, t0=T0 + timedelta(minutes=1))
    import io

    forged = bad_records[0].payload[:-1] + b"\x00"
    dataset.blobs.client.put_object(dataset.blobs.bucket, "raw/" + bad_records[0].statement.payload_sha256.hex(),
                                    io.BytesIO(forged), len(forged))
    producer = Producer(kafka_endpoint(settings, "admin").confluent())
    for b in (good, bad):
        producer.produce("iiot.anchors", key=b.batch_id.encode(),
                         value=json.dumps({"v": 1, "batch_id": b.batch_id}).encode())
    producer.flush(10)
    port = free_ports(1)[0]
    app_id = f"sealstream-verifier-test-{uuid.uuid4().hex[:8]}"
    proc = Child.sealstream("verifier", ["pipeline", "verifier", "--app-id", app_id, "--ledger",
                                         str(dataset.cluster.root), "--audit-interval", "0"],
                            log_path=tmp_path / "verifier.log", home=tmp_path / "home",
                            env={"SEALSTREAM_PG_DSN": dataset.pool.conninfo}, metrics_port=port)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            got = {b: dataset.store.verdict(b.batch_id) for b in (good, bad)}
            if all(got.values()):
                break
            proc.check()
            time.sleep(0.5)
        assert got[good] is not None and got[good].verdict == "verified", proc.tail()
        assert got[bad] is not None and got[bad].verdict == "failed" and got[bad].failed_step == "payload-hash"
        metrics = proc.metrics()
        assert 'sealstream_verify_batches_total{verdict="failed"} 1.0' in metrics
        assert 'sealstream_verify_failures_total{step="payload-hash"} 1.0' in metrics
        consumer = Consumer({**kafka_endpoint(settings, "admin").confluent(), "group.id": f"t-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe(["iiot.alerts"])
        found = None
        end = time.monotonic() + 30
        while found is None and time.monotonic() < end:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error() and msg.key() == bad.batch_id.encode():
                found = json.loads(msg.value())
        consumer.close()
        assert found is not None and found["step"] == "payload-hash" and found["source"] == "verifier"
    finally:
        proc.stop(20)
