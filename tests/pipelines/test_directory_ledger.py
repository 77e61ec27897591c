"""The ledger directory (`ProvenDirectory`) against a real 4-node contracts ledger, inside the worker.

A factory's devices are registered on the ledger except one; the worker
(subprocess, ``--directory ledger``, cache TTL 1 s, ``--no-anchor``) stores the
registered devices' messages and dead-letters the unregistered one's as
``unknown-device``. One device is then revoked on the ledger; after the cache
TTL its next messages are dead-lettered ``revoked-device`` with their original
bytes, while the other devices' messages are still stored.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from support.workers import WorkerProc

from anchor_helpers import admin_client, ledger_cluster, wait_for
from devices_helpers import end_offsets, read_range, read_records
from pipelines._anchor_ledger import ensure_devices
from pipelines.devices import Factory, RunConfig, read_sent_log, run
from pipelines.devices.kinds import KIND_INFO
from storage.db import open_pool
from resilience_helpers import pin_offsets as _pin_offsets
from test_worker_e2e import _dlq_position

pytestmark = pytest.mark.services
RAW = [k.topic for k in KIND_INFO.values()]


def test_worker_resolves_devices_on_the_ledger(dev_settings, tmp_path) -> None:
    s = dev_settings
    cluster = ledger_cluster(Path(s.home) / "ledger")
    pool = open_pool(s.postgres_dsn, max_size=2)
    worker = None
    try:
        name = f"dl-{uuid.uuid4().hex[:6]}"
        factory = Factory.ensure(s, name, 2, kinds=("timeseries", "image"))
        devices = sorted(factory.devices, key=lambda d: d.spec.name)
        unregistered, revoked = devices[0], devices[1]
        ids = {d.did: f"{name}-{d.spec.name}" for d in devices}
        with admin_client(cluster) as admin:
            ensure_devices(admin, [(ids[d.did], d.did) for d in devices if d is not unregistered])
        app_id = f"sealstream-pipeline-test-{uuid.uuid4().hex[:8]}"
        _pin_offsets(s, app_id, end_offsets(s, RAW))
        dlq_start = end_offsets(s, ["iiot.deadletter"])
        worker = WorkerProc.ledger(s, app_id, f"gw-{name}", tmp_path / "worker.log", args=("--no-anchor",))

        def stored(hashes):
            with pool.connection() as conn:
                return {r[0] for r in conn.execute(
                    "SELECT encode(statement_hash, 'hex') FROM statements WHERE statement_hash = ANY(%s)",
                    ([bytes.fromhex(h) for h in hashes],)).fetchall()}

        def dead(sent):
            """statement hash -> {reason: dead letter}.  iiot.deadletter is shared: a worker of another
            group (another test, with other devices) may dead-letter the same raw records too."""
            pos = {(r.topic, r.partition, r.offset): r for r in sent}
            out: dict = {}
            for r in read_range(s, dlq_start, end_offsets(s, ["iiot.deadletter"])):
                if _dlq_position(r) in pos:
                    out.setdefault(pos[_dlq_position(r)].statement_hash, {})[
                        dict(r.headers)["ss-dlq-reason"].decode()] = r
            return out

        kinds = ("timeseries", "image")
        summary = run(s, RunConfig(name, devices=2, rate=3, duration=1.5, kinds=kinds, seed=1))
        sent1 = list(read_sent_log(summary.sent_log, summary.run_id))
        bad1 = {r.statement_hash for r in sent1 if r.device == unregistered.did}
        good1 = {r.statement_hash for r in sent1} - bad1
        assert bad1 and good1
        wait_for(lambda: stored(good1) == good1 and all("unknown-device" in dead(sent1).get(h, {}) for h in bad1),
                 60, "first run handled", worker)
        assert not stored(bad1)

        with admin_client(cluster) as admin:
            assert admin.submit("registry.revoke", {"id": ids[revoked.did], "reason": "test"}).refusal is None
        time.sleep(1.5)  # the worker's cache TTL (SEALSTREAM_PIPELINE_DIRECTORY_TTL_S=1)

        summary = run(s, RunConfig(name, devices=2, rate=3, duration=1.5, kinds=kinds, seed=2))
        sent2 = list(read_sent_log(summary.sent_log, summary.run_id))
        rev2 = {r.statement_hash for r in sent2 if r.device == revoked.did}
        unk2 = {r.statement_hash for r in sent2 if r.device == unregistered.did}
        good2 = {r.statement_hash for r in sent2} - rev2 - unk2
        assert rev2 and good2

        def second_done():
            got = dead(sent2)
            return (stored(good2) == good2 and all("revoked-device" in got.get(h, {}) for h in rev2)
                    and all("unknown-device" in got.get(h, {}) for h in unk2))

        wait_for(second_done, 60, "second run handled", worker)
        assert not stored(rev2 | unk2)
        got = dead(sent2)
        originals = read_records(s, [(r.topic, r.partition, r.offset) for r in sent2 if r.statement_hash in rev2])
        for r in sent2:
            if r.statement_hash in rev2:
                rec = got[r.statement_hash]["revoked-device"]
                assert rec.value == originals[(r.topic, r.partition, r.offset)].value
                assert rec.key == originals[(r.topic, r.partition, r.offset)].key
    finally:
        if worker is not None:
            worker.kill()
        pool.close()
        cluster.stop(timeout=5)
