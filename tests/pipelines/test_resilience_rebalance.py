"""Two workers in one consumer group share the raw partitions; a rebalance loses and duplicates nothing.

Real Kafka, PostgreSQL and MinIO (the shared stack: nothing is stopped here)
and a 4-node contracts ledger both workers anchor on with one gateway key.
A fresh factory (2 devices per kind) produces for ~14 s. Worker A starts
alone; worker B joins at ~4 s (rebalance: partitions move to B); A leaves at
~9 s (rebalance: B takes everything). Afterwards every delivered record of the
sent-log is stored exactly once (statement from its own Kafka position,
readings = Arrow rows, blob and MinIO object by digest), sealed with identical
bytes, never dead-lettered; and both workers did store records (the partitions
really were shared); every record is the leaf of exactly one batch and every
batch is anchored once, where the ledger says (both workers anchor).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devices_helpers import end_offsets
from pipelines.devices import Factory, RunConfig
from pipelines.devices.kinds import KIND_INFO
from resilience_helpers import (Anchoring, SimRun, WorkerProc, check_exactly_once, metric_total, pin_offsets,
                                wait_stored)
from storage.blobs import BlobStore

pytestmark = pytest.mark.services
RAW = [k.topic for k in KIND_INFO.values()]
INGESTED = "sealstream_pipeline_ingested_total"


def test_two_workers_share_partitions_through_rebalances(dev_settings, tmp_path: Path) -> None:
    s = dev_settings
    name = f"rb-{uuid.uuid4().hex[:8]}"
    app_id = f"sealstream-test-rb-{uuid.uuid4().hex[:8]}"
    factory = Factory.ensure(s, name, 2)
    gateway = f"gw-{name}"
    anchoring = Anchoring(s, gateway)
    dids = {d.did.encode() for d in factory.devices}
    sealed_start = end_offsets(s, ["iiot.sealed"])
    dlq_start = end_offsets(s, ["iiot.deadletter"])
    pin_offsets(s, app_id, end_offsets(s, RAW))
    a = WorkerProc(s, app_id, name, tmp_path / "worker-a.log", gateway)
    b = None
    try:
        sim = SimRun(s, RunConfig(name, devices=2, rate=2, duration=14, seed=5))
        sim.at(4)
        b = WorkerProc(s, app_id, name, tmp_path / "worker-b.log", gateway)
        sim.at(9)
        a_before_leaving = metric_total(a.metrics(), INGESTED)
        a.stop()
        assert a.proc.returncode is not None
        sent = sim.join()
        assert sent and all(r.error is None for r in sent)
        wait_stored(s, sent, [b], timeout=120)
        outcome = check_exactly_once(s, sent, sealed_start, dlq_start, BlobStore.from_settings(s),
                                     lambda key: key in dids)
        b_stored = metric_total(b.metrics(), INGESTED)
        assert a_before_leaving > 0 and b_stored > 0, (a_before_leaving, b_stored)
        print(f"sent {len(sent)}, A stored {a_before_leaving:.0f} before leaving, B {b_stored:.0f}, {outcome}")
        assert outcome.stored == len(sent)
        batches = anchoring.check(sent, [b])
        print(f"{len(batches)} batches anchored, sizes {sorted(x.tree_size for x in batches)}")
        assert b.alive()
    finally:
        a.kill()
        if b is not None:
            b.kill()
        anchoring.close()
