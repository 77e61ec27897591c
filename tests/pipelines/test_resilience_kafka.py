"""The Kafka broker is killed (SIGKILL) and restarted mid-run: no record lost or duplicated.

A PRIVATE single-node Kafka (the project's `infra.Kafka` on free ports with
its own data dir, see `private_stack`) so the shared broker is never touched;
PostgreSQL and MinIO are the shared ones; a 4-node contracts ledger in the
test's home lets the worker's anchor agent run (it reads iiot.sealed from the
private broker too). A fresh factory produces for ~10 s;
at ~5 s, once the worker has stored records, the broker is SIGKILLed, left
down for 3 s and restarted on the same data dir (the simulator's idempotent
producer buffers meanwhile, the worker's consumer and producer reconnect); a
second short run then produces to the restarted broker.
Afterwards every delivered record is stored exactly once, sealed with
identical bytes, never dead-lettered (the private dead-letter topic stays
empty), each record is the leaf of exactly one batch, every batch is anchored
once where the ledger says and announced once on iiot.anchors, and the worker
is still up.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from devices_helpers import end_offsets
from pipelines.devices import Factory, RunConfig
from private_stack import PrivateStack
from resilience_helpers import Anchoring, SimRun, WorkerProc, check_exactly_once, wait_stored
from storage.blobs import BlobStore
from storage.db import open_pool

pytestmark = pytest.mark.services


def _stored(settings, dids: list[str]) -> int:
    with open_pool(settings.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
        return conn.execute("SELECT count(*) FROM statements WHERE device = ANY(%s)", (dids,)).fetchone()[0]


def test_kafka_broker_killed_and_restarted(stack, settings, tmp_path: Path) -> None:
    with PrivateStack(tmp_path / "private", base=settings, kafka=True) as ps:
        s = ps.settings
        name = f"kk-{uuid.uuid4().hex[:8]}"
        factory = Factory.ensure(s, name, 2)
        dids = [d.did for d in factory.devices]
        gateway = f"gw-{name}"
        anchoring = Anchoring(s, gateway)
        empty = end_offsets(s, ["iiot.sealed", "iiot.deadletter"])
        assert set(empty.values()) == {0}  # a fresh broker: everything on it is this test's
        worker = WorkerProc(s, f"sealstream-test-kk-{uuid.uuid4().hex[:8]}", name, tmp_path / "worker.log", gateway)
        try:
            sim = SimRun(s, RunConfig(name, devices=2, rate=2, duration=10, seed=7))
            deadline = time.monotonic() + 60
            while _stored(s, dids) == 0:  # the worker is up and storing before the crash
                assert time.monotonic() < deadline and worker.alive(), worker.tail()
                time.sleep(0.5)
            sim.at(5)
            before = _stored(s, dids)
            ps.kill("kafka")
            time.sleep(3)
            ps.start("kafka")
            sent = sim.join(timeout=180)  # records produced while the broker was down were buffered
            after = SimRun(s, RunConfig(name, devices=2, rate=2, duration=4, seed=8)).join()
            assert after
            sent += after
            assert all(r.error is None for r in sent), [r.error for r in sent if r.error][:3]
            wait_stored(s, sent, [worker], timeout=180)
            outcome = check_exactly_once(s, sent, {k: 0 for k in empty if k[0] == "iiot.sealed"},
                                         {k: 0 for k in empty if k[0] == "iiot.deadletter"},
                                         BlobStore.from_settings(s), lambda key: True)
            dlq = end_offsets(s, ["iiot.deadletter"])
            print(f"sent {len(sent)}, stored before the kill {before}, {outcome}, dead letters {dlq}")
            assert 0 < before < len(sent)
            assert outcome.stored == len(sent)
            assert set(dlq.values()) == {0}, "a record was dead-lettered because of the broker outage"
            batches = anchoring.check(sent, [worker])
            print(f"{len(batches)} batches anchored, sizes {sorted(x.tree_size for x in batches)}")
            assert worker.alive(), worker.tail()
        finally:
            worker.kill()
            anchoring.close()
