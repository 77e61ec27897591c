"""Two workers in one consumer group share the raw partitions; a rebalance loses and duplicates nothing.

Real Kafka, PostgreSQL and MinIO, and a 4-node contracts ledger both workers
anchor on with one gateway key. The broker is a PRIVATE one (`infra.private_stack`,
nothing is stopped here): on the shared broker other helpers' workers, in
their own groups, read our records too and dead-letter them as
``unknown-device``, so "never dead-lettered" could not be checked there.
A fresh factory (2 devices per kind) produces all along. Worker A starts
alone; once it stores, worker B joins (rebalance: partitions move to B); once
B stores too, A leaves cleanly (rebalance: B takes everything); 3 s later the
run stops. Afterwards every delivered record of the
sent-log is stored exactly once (statement from its own Kafka position,
readings = Arrow rows, blob and MinIO object by digest), sealed with identical
bytes, never dead-lettered (the dead-letter topic stays empty); both workers
did store records (the partitions really were shared); every record is the
leaf of exactly one batch and every batch is anchored once, where the ledger
says (both workers anchor).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from pipelines.devices import Factory, RunConfig
from infra.private_stack import PrivateStack
from support.workers import WorkerProc
from resilience_helpers import Anchoring, SimRun, check_private_run, wait_stored

pytestmark = pytest.mark.services


def test_two_workers_share_partitions_through_rebalances(stack, settings, tmp_path: Path) -> None:
    with PrivateStack(tmp_path / "private", base=settings, kafka=True) as ps:
        s = ps.settings
        name = f"rb-{uuid.uuid4().hex[:8]}"
        app_id = f"sealstream-pipeline-test-rb-{uuid.uuid4().hex[:8]}"
        Factory.ensure(s, name, 2)
        gateway = f"gw-{name}"
        anchoring = Anchoring(s, gateway)
        a = WorkerProc.manifest(s, app_id, name, tmp_path / "worker-a.log", gateway)
        b = None
        try:
            sim = SimRun(s, RunConfig(name, devices=2, rate=2, duration=120, seed=5))  # stopped below
            a.wait_ingesting()
            b = WorkerProc.manifest(s, app_id, name, tmp_path / "worker-b.log", gateway)
            b.wait_ingesting()  # B got partitions while A still holds the others
            a_before_leaving = a.ingested()
            a.stop()
            assert a.proc.returncode is not None
            time.sleep(3)  # B alone
            sim.stop()
            sent = sim.join()
            assert sent and all(r.error is None for r in sent)
            wait_stored(s, sent, [b], timeout=120)
            b_stored = b.ingested()
            print(f"sent {len(sent)}, A stored {a_before_leaving:.0f} before leaving, B {b_stored:.0f}")
            assert a_before_leaving > 0 and b_stored > 0, (a_before_leaving, b_stored)
            check_private_run(s, sent, [b], anchoring)
            assert b.alive()
        finally:
            a.kill()
            if b is not None:
                b.kill()
            anchoring.close()
