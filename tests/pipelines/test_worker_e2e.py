"""The pipeline worker (Faust, subprocess) against the real Kafka, PostgreSQL and MinIO.

A fresh factory (2 devices per kind) runs for a few seconds with each fault once;
then: every good record is stored exactly once (statement, readings = Arrow rows,
blob in MinIO with its digest), every fault is dead-lettered with its reason and
original bytes, every stored statement has one seal receipt that verifies with the
gateway key. The worker is then killed (SIGKILL), its group's offsets reset to
before the run and it is restarted: everything is re-read, nothing is duplicated,
no stored record is dead-lettered, no fault is dead-lettered again, each seal is
re-emitted byte for byte.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from devices_helpers import end_offsets, read_range, read_records
from pipelines.devices import FAULTS, Factory, FaultPlan, RunConfig, read_sent_log, run
from pipelines.devices.kinds import KIND_INFO
from pipelines.devices.timeseries import read_timeseries
from pipelines.worker import gateway_key
from storage.blobs import BlobStore
from resilience_helpers import pin_offsets
from support.workers import WorkerProc
from storage.db import open_pool
from trust.hashes import sha256
from trust.receipt import SealReceipt, verify_receipt

pytestmark = pytest.mark.services
RAW = [k.topic for k in KIND_INFO.values()]
ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-test"


def _collect(settings, start: dict, want, timeout: float, what: str, worker: WorkerProc):
    """Poll [start, end) of the output topics until `want(records)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_range(settings, start, end_offsets(settings, list({t for t, _ in start})))
        if want(records):
            return records
        worker.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{worker.log.read_text()[-3000:]}\n"
                                 + "\n".join(ln for ln in worker.metrics().splitlines() if ln.startswith("sealstream")))
        time.sleep(1.0)


def _dlq_position(rec) -> tuple[str, int, int]:
    h = dict(rec.headers)
    return h["ss-dlq-topic"].decode(), int(h["ss-dlq-partition"]), int(h["ss-dlq-offset"])


def test_ingest_store_seal_and_replay(dev_settings, tmp_path) -> None:
    s = dev_settings
    name = f"wk-{uuid.uuid4().hex[:8]}"
    app_id = f"sealstream-pipeline-test-{uuid.uuid4().hex[:8]}"
    factory = Factory.ensure(s, name, 2)
    dids = {d.did for d in factory.devices}
    gw = gateway_key(Path(s.home), GATEWAY)
    raw_start = end_offsets(s, RAW)
    out_start = end_offsets(s, ["iiot.sealed", "iiot.deadletter"])
    pin_offsets(s, app_id, raw_start)
    worker = WorkerProc.manifest(s, app_id, name, tmp_path / "worker.log", GATEWAY)
    try:
        summary = run(s, RunConfig(name, devices=2, rate=3, duration=3, seed=11,
                                   faults=FaultPlan.parse([f"{f}:1" for f in FAULTS])))
        sent = list(read_sent_log(summary.sent_log, summary.run_id))
        assert all(r.error is None for r in sent) and {r.fault for r in sent if r.fault} == set(FAULTS)
        good = {r.statement_hash: r for r in sent if r.fault is None}
        faults = {(r.topic, r.partition, r.offset): r for r in sent if r.fault}
        originals = read_records(s, list(faults))

        def ours_sealed(records):
            return [r for r in records if r.topic == "iiot.sealed" and r.key.decode() in dids]

        def ours_dlq(records):
            pos = {(r.topic, r.partition, r.offset) for r in sent}
            # other consumer groups (tests, benches) on the shared stack dead-letter the same records
            return [r for r in records if r.topic == "iiot.deadletter" and _dlq_position(r) in pos
                    and dict(r.headers).get("ss-dlq-group") == app_id.encode()]

        def complete(records, n=1):
            return (len({json.loads(r.value)["statement_hash"] for r in ours_sealed(records)}) >= len(good)
                    and len(ours_dlq(records)) >= n * len(faults))

        out = _collect(s, out_start, complete, 60, "seals and dead letters", worker)

        # -- dead letters: one per fault, right reason, original bytes and headers intact
        dlq = ours_dlq(out)
        assert len(dlq) == len(faults)
        for rec in dlq:
            pos = _dlq_position(rec)
            orig = originals[pos]
            assert dict(rec.headers)["ss-dlq-reason"].decode() == faults[pos].fault, pos
            assert rec.value == orig.value and rec.key == orig.key
            assert rec.headers[:len(orig.headers)] == orig.headers

        # -- seals: exactly one per good statement, verifying with the gateway key
        seals = ours_sealed(out)
        by_hash: dict[str, list] = {}
        for rec in seals:
            by_hash.setdefault(json.loads(rec.value)["statement_hash"], []).append(rec)
        assert set(by_hash) == set(good) and all(len(v) == 1 for v in by_hash.values())
        for h, (rec,) in by_hash.items():
            doc = json.loads(rec.value)
            receipt = SealReceipt.from_dict(doc["receipt"])
            assert receipt.gateway == gw.did and verify_receipt(receipt, gw.public_key)
            assert receipt.statement_hash.hex() == h and rec.key.decode() == doc["device"]
            assert sha256(bytes.fromhex(doc["statement"])).hex() == h

        # -- storage: each good record once; readings = Arrow rows; blobs in MinIO with their digest
        blobs = BlobStore.from_settings(s)
        good_raw = read_records(s, [(r.topic, r.partition, r.offset) for r in good.values()])
        with open_pool(s.postgres_dsn) as pool, pool.connection() as conn:
            def snapshot():
                st = conn.execute("SELECT encode(statement_hash, 'hex'), kind, receipt_signature IS NOT NULL "
                                  "FROM statements WHERE device = ANY(%s) ORDER BY 1", (list(dids),)).fetchall()
                rd = dict(conn.execute("SELECT encode(statement_hash, 'hex'), count(*) FROM readings "
                                       "WHERE device = ANY(%s) GROUP BY 1", (list(dids),)).fetchall())
                bl = dict(conn.execute("SELECT encode(b.statement_hash, 'hex'), b.object_key FROM blobs b "
                                       "JOIN statements s USING (statement_hash) WHERE s.device = ANY(%s)",
                                       (list(dids),)).fetchall())
                return st, rd, bl

            st, rd, bl = snapshot()
            assert sorted(r[0] for r in st) == sorted(good) and all(r[2] for r in st)
            for r in good.values():
                payload = good_raw[(r.topic, r.partition, r.offset)].value
                if r.kind == "timeseries":
                    assert rd[r.statement_hash] == read_timeseries(payload).num_rows
                else:
                    assert bl[r.statement_hash] == "raw/" + sha256(payload).hex()
                    assert blobs.get_raw(sha256(payload)) == payload
            assert set(bl) | set(rd) == set(good)

            metrics = worker.metrics()
            assert 'sealstream_pipeline_ingested_total{kind="video"}' in metrics
            assert 'sealstream_pipeline_deadletters_total{reason="replay"} 1.0' in metrics

            # -- kill -9, reset the group to before the run, restart: re-read everything
            worker.kill()
            pin_offsets(s, app_id, raw_start)
            worker = WorkerProc.manifest(s, app_id, name, tmp_path / "worker2.log", GATEWAY)

            def twice(records):
                hashes = [json.loads(r.value)["statement_hash"] for r in ours_sealed(records)]
                return all(hashes.count(h) >= 2 for h in good)

            out2 = _collect(s, out_start, twice, 60, "re-emitted seals", worker)
            assert snapshot() == (st, rd, bl)  # nothing duplicated, nothing new
            dlq2 = ours_dlq(out2)
            # a fault is dead-lettered once per group, even when re-read (dead_letters); a stored record never is
            assert all(_dlq_position(r) in faults for r in dlq2)
            assert len(dlq2) == len(faults)
            assert {dict(r.headers)["ss-dlq-reason"].decode() for r in dlq2} == set(FAULTS)
            resealed: dict[str, set] = {}
            for rec in ours_sealed(out2):
                resealed.setdefault(json.loads(rec.value)["statement_hash"], set()).add(rec.value)
            assert all(len(v) == 1 for v in resealed.values())  # the same seal bytes each time
            assert "sealstream_pipeline_redeliveries_total" in worker.metrics()
    finally:
        worker.kill()
