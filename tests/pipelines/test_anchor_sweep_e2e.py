"""The anchor agent never acks and forgets a seal, end to end: real Kafka, PostgreSQL, MinIO, a 4-node
contracts ledger and ``sealstream pipeline worker --anchor-only`` subprocesses.

1. Seals of a gateway not registered on the ledger yet (a new ingest worker's) reach the anchor agent: it
   acks them (the group's committed offsets pass them) without batching them, and once the gateway is
   registered the sweep batches and anchors every one of them: none lost.
2. Statements stored and sealed as the worker does, whose seals are never produced to ``iiot.sealed``:
   two anchor agents (two gateways, two consumer groups, both sweeping) batch and anchor each of them in
   exactly one batch; the seals produced late are read by both agents and change nothing.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from support.workers import WorkerProc

from anchor_helpers import ledger_cluster, register_gateway, wait_for
from devices_helpers import end_offsets
from pipelines.devices import Factory
from pipelines.worker import gateway_key
from storage.db import open_pool
from storage.readers import Reader
from sweep_helpers import anchored_once, check_on_ledger, hashes_of, leaves_of, produce_seals, store_sealed
from test_anchor_e2e import _committed
from resilience_helpers import pin_offsets as _pin_offsets

pytestmark = pytest.mark.services
SWEEP = {"SEALSTREAM_PIPELINE_ANCHOR_SWEEP_GRACE_S": "2", "SEALSTREAM_PIPELINE_ANCHOR_SWEEP_INTERVAL_S": "1",
         "SEALSTREAM_PIPELINE_ANCHOR_MAX_LEAVES": "8"}


@pytest.fixture(scope="module")
def env(dev_settings):
    cluster = ledger_cluster(Path(dev_settings.home) / "ledger")
    pool = open_pool(dev_settings.postgres_dsn, max_size=4)
    yield dev_settings, cluster, pool
    pool.close()
    cluster.stop(timeout=5)


def _name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:6]}"


def _sample(worker: WorkerProc, sample: str) -> float:
    """The value of the exposition line starting with `sample` (labels included), 0 if absent."""
    for line in worker.metrics().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    return 0.0


def _anchor_worker(s, tmp_path: Path, gateway: str, tag: str) -> WorkerProc:
    """An ``--anchor-only`` worker of `gateway` in a fresh group pinned to the end of ``iiot.sealed``."""
    group = f"sealstream-pipeline-test-{tag}-{uuid.uuid4().hex[:8]}"
    _pin_offsets(s, group, end_offsets(s, ["iiot.sealed"]))
    w = WorkerProc.ledger(s, group, gateway, tmp_path / f"{tag}.log", extra_env=SWEEP, args=("--anchor-only",))
    w.group = group  # type: ignore[attr-defined]
    return w


def _acked(s, worker: WorkerProc, ends: dict) -> bool:
    got = _committed(s, worker.group, ends)  # type: ignore[attr-defined]
    return all(got.get(tp, -1) >= o for tp, o in ends.items())


def test_seals_before_their_gateway_is_registered_are_anchored_once_it_is(env, tmp_path) -> None:
    s, cluster, pool = env
    anchorer_gw, late_gw = _name("gw-sa"), _name("gw-late")
    register_gateway(cluster, anchorer_gw, gateway_key(Path(s.home), anchorer_gw))
    worker = _anchor_worker(s, tmp_path, anchorer_gw, "sa")
    try:
        # an ingest worker whose gateway is not on the ledger yet stores, seals and produces its seals
        seals = store_sealed(s, late_gw, Factory.ensure(s, _name("swe"), 1), 4)  # 3 devices x 4
        hashes = hashes_of(seals)
        ends = produce_seals(s, seals)
        # the agent acks them (deferred: stored sealed here) and batches none of them: its ledger cannot
        # vouch for that key yet
        wait_for(lambda: _acked(s, worker, ends), 90, "the seals acked", worker)
        assert _sample(worker, 'sealstream_pipeline_anchor_deferred_total{reason="unknown-gateway"}') >= len(hashes)
        wait_for(lambda: _sample(worker, 'sealstream_pipeline_anchor_sweep_waiting{reason="unknown-gateway"}')
                 >= len(hashes), 30, "the sweep reports them waiting", worker)
        assert leaves_of(pool, hashes) == []
        # the gateway is registered: the sweep batches every one of them, and they are anchored
        register_gateway(cluster, late_gw, gateway_key(Path(s.home), late_gw))
        done = wait_for(lambda: anchored_once(pool, hashes), 120, "every statement anchored", worker)
        assert sorted(done) == sorted(hashes)  # none lost, each in exactly one batch
        check_on_ledger(cluster, Reader(pool), done.values(), {anchorer_gw})
        assert _sample(worker, "sealstream_pipeline_anchor_sweep_found_total") >= len(hashes)
        worker.check()
    finally:
        worker.kill()


def test_statements_without_a_seal_message_are_swept_once_by_two_agents(env, tmp_path) -> None:
    s, cluster, pool = env
    sealer, gw1, gw2 = _name("gw-ss"), _name("gw-s1"), _name("gw-s2")
    for g in (sealer, gw1, gw2):
        register_gateway(cluster, g, gateway_key(Path(s.home), g))
    one = _anchor_worker(s, tmp_path, gw1, "s1")
    two = _anchor_worker(s, tmp_path, gw2, "s2")
    try:
        # stored and sealed as the worker does; the seal messages are never produced
        seals = store_sealed(s, sealer, Factory.ensure(s, _name("swn"), 1), 6)  # 18 statements
        hashes = hashes_of(seals)
        done = wait_for(lambda: anchored_once(pool, hashes), 120, "every statement anchored", one)
        two.check()
        assert sorted(done) == sorted(hashes)
        with pool.connection() as conn:
            n, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT statement_hash) FROM batch_leaves l JOIN batches b USING (batch_id) "
                "WHERE b.gateway = ANY(%s)", ([gw1, gw2],)).fetchone()
        assert n == distinct == len(hashes)  # no statement in two batches, nothing else in them
        check_on_ledger(cluster, Reader(pool), done.values(), {gw1, gw2})
        found = sum(_sample(w, "sealstream_pipeline_anchor_sweep_found_total") for w in (one, two))
        assert found >= len(hashes)
        # the seals arrive late, at both agents (two groups): already leaves, nothing changes
        ends = produce_seals(s, seals)
        wait_for(lambda: _acked(s, one, ends), 90, "agent 1 acked the late seals", one)
        wait_for(lambda: _acked(s, two, ends), 90, "agent 2 acked the late seals", two)
        assert anchored_once(pool, hashes) == done
        with pool.connection() as conn:
            assert conn.execute(
                "SELECT count(*) FROM batch_leaves l JOIN batches b USING (batch_id) WHERE b.gateway = ANY(%s)",
                ([gw1, gw2],)).fetchone()[0] == len(hashes)
    finally:
        one.kill()
        two.kill()
