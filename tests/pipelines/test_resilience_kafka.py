"""The Kafka broker is killed (SIGKILL) and restarted mid-run: no record lost or duplicated.

A PRIVATE single-node Kafka (the project's `infra.Kafka` on free ports with
its own data dir, see `infra.private_stack`) so the shared broker is never touched;
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
from infra.private_stack import PrivateStack
from support.workers import WorkerProc
from resilience_helpers import Anchoring, SimRun, check_private_run, stored_count, wait_stored

pytestmark = pytest.mark.services



def test_kafka_broker_killed_and_restarted(stack, settings, tmp_path: Path) -> None:
    with PrivateStack(tmp_path / "private", base=settings, kafka=True) as ps:
        s = ps.settings
        name = f"kk-{uuid.uuid4().hex[:8]}"
        factory = Factory.ensure(s, name, 2)
        dids = [d.did for d in factory.devices]
        gateway = f"gw-{name}"
        anchoring = Anchoring(s, gateway)
        assert set(end_offsets(s, ["iiot.sealed", "iiot.deadletter"]).values()) == {0}  # all on it is ours
        app_id = f"sealstream-pipeline-test-kk-{uuid.uuid4().hex[:8]}"
        worker = WorkerProc.manifest(s, app_id, name, tmp_path / "worker.log", gateway)
        try:
            sim = SimRun(s, RunConfig(name, devices=2, rate=2, duration=10, seed=7))
            worker.wait_ingesting()  # up and storing before the crash
            sim.at(5)
            before = stored_count(s, dids)
            ps.kill("kafka")
            time.sleep(3)
            ps.start("kafka")
            sent = sim.join(timeout=180)  # records produced while the broker was down were buffered
            after = SimRun(s, RunConfig(name, devices=2, rate=2, duration=4, seed=8)).join()
            assert after
            sent += after
            assert all(r.error is None for r in sent), [r.error for r in sent if r.error][:3]
            wait_stored(s, sent, [worker], timeout=180)
            print(f"sent {len(sent)}, stored before the kill {before}")
            assert 0 < before < len(sent)
            check_private_run(s, sent, [worker], anchoring)
            assert worker.alive(), worker.tail()
        finally:
            worker.kill()
            anchoring.close()
