"""Ingest -> store -> seal -> anchor end to end: real Kafka, PostgreSQL, MinIO and a 4-node contracts ledger.

The factory's devices and the worker's gateway are registered on the ledger; the
worker (a subprocess, ledger directory, anchor agent on) ingests a few seconds of
telemetry from 2 devices of each kind. Then every message is stored exactly once,
every statement is the leaf of exactly one batch, every batch is anchored at the
`(height, tx_index)` where the ledger's anchors lookup puts it, with its root, and
its ANCHOR tx's inclusion proof verifies from genesis with the light client; the
manifest in MinIO lists the leaves; `iiot.anchors` carries one message per batch.

The crash test SIGKILLs the worker at two exact points through the test hook
(`SEALSTREAM_ANCHOR_TEST_PAUSE`): after a batch's manifest is written and before
it is submitted, then (after a restart) after the ledger committed its ANCHOR and
before the worker recorded it. After the last restart every batch is anchored
exactly once: the ledger's record equals `batches`, the committed-but-unrecorded
batch was resolved by lookup (one claim, no second ANCHOR), and no leaf is in two
batches.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from support.workers import WorkerProc

from anchor_helpers import ledger_cluster, register_factory, wait_for
from devices_helpers import end_offsets, read_range
from pipelines.devices import Factory, RunConfig, read_sent_log, run
from pipelines.devices.kinds import KIND_INFO
from pipelines.worker import gateway_key
from storage import Manifest
from storage.blobs import BlobStore
from storage.db import open_pool
from storage.readers import Reader
from resilience_helpers import pin_offsets as _pin_offsets
from trust import merkle
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services
RAW = [k.topic for k in KIND_INFO.values()]


@pytest.fixture(scope="module")
def env(dev_settings):
    cluster = ledger_cluster(Path(dev_settings.home) / "ledger")
    pool = open_pool(dev_settings.postgres_dsn, max_size=4)
    yield dev_settings, cluster, pool
    pool.close()
    cluster.stop(timeout=5)


def _setup(s, cluster, tag: str):
    """A registered factory (2 devices per kind) and gateway, and a fresh group pinned to the ends."""
    import subprocess
    import sys
    import os

    name = f"{tag}-{uuid.uuid4().hex[:6]}"
    factory = Factory.ensure(s, name, 2)
    register_factory(cluster, factory)
    gateway = f"gw-{name}"
    gw = gateway_key(Path(s.home), gateway)
    out = subprocess.run([sys.executable, "-m", "sealstream", "pipeline", "register-gateway", "--gateway", gateway,
                          "--json"], env=dict(os.environ, SEALSTREAM_HOME=str(s.home)), capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    reg = json.loads(out.stdout)
    assert reg["did"] == gw.did and reg["registered_now"] and reg["balance"] >= 1
    app_id = f"sealstream-pipeline-test-{uuid.uuid4().hex[:8]}"
    starts = end_offsets(s, RAW + ["iiot.sealed"])
    _pin_offsets(s, app_id, starts)
    return name, factory, gateway, app_id, end_offsets(s, ["iiot.anchors"])


def _leaves(pool, hashes: list[str]) -> list[tuple[str, str, int]]:
    with pool.connection() as conn:
        return conn.execute("SELECT encode(statement_hash, 'hex'), batch_id, leaf_index FROM batch_leaves "
                            "WHERE statement_hash = ANY(%s)", ([bytes.fromhex(h) for h in hashes],)).fetchall()


def _all_anchored(pool, hashes: list[str]):
    """The batch ids of `hashes` once every one is a leaf of an anchored batch, else None."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT l.batch_id, b.anchor_state FROM batch_leaves l JOIN batches b USING (batch_id) "
                            "WHERE l.statement_hash = ANY(%s)", ([bytes.fromhex(h) for h in hashes],)).fetchall()
    if len(rows) < len(hashes) or any(state != "anchored" for _, state in rows):
        return None
    return sorted({b for b, _ in rows})


def _check_batches(s, cluster, pool, gateway, good: list[str], anchors_start: dict) -> list:
    """Every good statement stored once and in exactly one batch; each batch (of `gateway`, a name or a
    tuple of names) anchored as the ledger says, by one of those gateways."""
    gateways = (gateway,) if isinstance(gateway, str) else tuple(gateway)
    reader = Reader(pool)
    with pool.connection() as conn:
        stored = conn.execute("SELECT encode(statement_hash, 'hex') FROM statements WHERE statement_hash = ANY(%s)",
                              ([bytes.fromhex(h) for h in good],)).fetchall()
        batch_ids = [r[0] for r in conn.execute("SELECT batch_id FROM batches WHERE gateway = ANY(%s) ORDER BY 1",
                                                (list(gateways),)).fetchall()]
    assert sorted(r[0] for r in stored) == sorted(good)
    leaves = _leaves(pool, good)
    assert sorted(h for h, _, _ in leaves) == sorted(good)  # each exactly once (unique, and all there)
    blobs = BlobStore.from_settings(s)
    batches = [reader.batch(b) for b in batch_ids]
    assert {b for _, b, _ in leaves} <= set(batch_ids)
    with cluster.client() as c:
        for b in batches:
            assert b.anchor_state == "anchored", b
            doc = c.get_anchor(b.batch_id)
            assert doc is not None and doc["gateway"] in gateways
            assert (bytes.fromhex(doc["root"]), doc["tree_size"]) == (b.root, b.tree_size)
            assert (doc["height"], doc["index"]) == (b.ledger_height, b.tx_index)
            rec, header = c.verified_tx(doc["tx_id"])  # inclusion proof + header chain from genesis
            assert rec.tx.payload["batch_id"] == b.batch_id and rec.tx.payload["root"] == b.root
            assert header.height == b.ledger_height and rec.index == b.tx_index
            leaf_list = reader.batch_leaves(b.batch_id)
            assert merkle.root(merkle.leaf_hashes(leaf_list)) == b.root and len(leaf_list) == b.tree_size
            assert blobs.get_manifest(b.batch_id) == Manifest.for_batch(b, tuple(leaf_list))
    # iiot.anchors: one message per batch, matching the ledger
    msgs = [r for r in read_range(s, anchors_start, end_offsets(s, ["iiot.anchors"]))
            if r.key.decode() in set(batch_ids)]
    assert sorted(r.key.decode() for r in msgs) == batch_ids
    with cluster.client() as c:
        for r in msgs:
            doc = json.loads(r.value)
            b = next(x for x in batches if x.batch_id == doc["batch_id"])
            assert (doc["root"], doc["tree_size"], doc["height"], doc["tx_index"], doc["gateway"]) == (
                b.root.hex(), b.tree_size, b.ledger_height, b.tx_index, c.get_anchor(b.batch_id)["gateway"])
    return batches


def test_every_record_in_one_anchored_batch(env, tmp_path) -> None:
    s, cluster, pool = env
    name, factory, gateway, app_id, anchors_start = _setup(s, cluster, "ae")
    worker = WorkerProc.ledger(s, app_id, gateway, tmp_path / "worker.log",
                        extra_env={"SEALSTREAM_PIPELINE_ANCHOR_MAX_LEAVES": "16"})
    try:
        summary = run(s, RunConfig(name, devices=2, rate=3, duration=4, seed=5))
        sent = [r for r in read_sent_log(summary.sent_log, summary.run_id)]
        assert sent and all(r.error is None for r in sent)
        good = [r.statement_hash for r in sent]
        assert len({r.kind for r in sent}) == 3
        wait_for(lambda: _all_anchored(pool, good), 120, "every statement anchored", worker)
        batches = _check_batches(s, cluster, pool, gateway, good, anchors_start)
        assert len(batches) >= 2 and max(b.tree_size for b in batches) <= 16
        wait_for(lambda: worker.metric("sealstream_pipeline_anchor_backlog") == 0, 30, "backlog 0", worker)
        assert worker.metric("sealstream_pipeline_batches_anchored_total") == len(batches)
        assert "sealstream_pipeline_device_to_anchored_seconds_count" in worker.metrics()
        # the anchor agent acks what it batched: the group's iiot.sealed offsets move past our seals
        sealed_end = end_offsets(s, ["iiot.sealed"])  # all our seals are below these (their batches exist)
        wait_for(lambda: all(_committed(s, app_id, sealed_end)[tp] >= o for tp, o in sealed_end.items()), 60,
                 "iiot.sealed offsets committed", worker)
    finally:
        worker.kill()


def test_anchor_agent_in_its_own_process(env, tmp_path) -> None:
    """`worker --no-anchor` beside `worker --anchor-only` (its own group on iiot.sealed): the same
    guarantees as one worker doing both, and the work is where it should be."""
    s, cluster, pool = env
    name, factory, gateway, app_id, anchors_start = _setup(s, cluster, "ao")
    anchor_group = f"{app_id}-anchor"
    _pin_offsets(s, anchor_group, end_offsets(s, ["iiot.sealed"]))
    env_ = {"SEALSTREAM_PIPELINE_ANCHOR_MAX_LEAVES": "16"}
    ingest = WorkerProc.ledger(s, app_id, gateway, tmp_path / "ingest.log", extra_env=env_, args=("--no-anchor",))
    anchorer = WorkerProc.ledger(s, anchor_group, gateway, tmp_path / "anchor.log", extra_env=env_,
                                 args=("--anchor-only",))
    try:
        summary = run(s, RunConfig(name, devices=2, rate=3, duration=3, seed=9))
        good = [r.statement_hash for r in read_sent_log(summary.sent_log, summary.run_id)]
        assert good
        wait_for(lambda: _all_anchored(pool, good), 120, "every statement anchored", anchorer)
        batches = _check_batches(s, cluster, pool, gateway, good, anchors_start)
        wait_for(lambda: anchorer.metric("sealstream_pipeline_batches_anchored_total") == len(batches), 30,
                 "anchor metrics", anchorer)
        assert ingest.metric("sealstream_pipeline_batches_anchored_total") == 0
        assert 'sealstream_pipeline_ingested_total{kind="image"}' not in anchorer.metrics()
    finally:
        ingest.kill()
        anchorer.kill()


def _committed(s, group: str, tps) -> dict:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_endpoint(s, "admin").confluent())
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])
    res = admin.list_consumer_group_offsets([req])[group].result(10)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def _open(pool, gateway: str) -> dict[str, tuple[str, int]]:
    with pool.connection() as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT batch_id, anchor_state, attempts FROM batches WHERE gateway = %s", (gateway,)).fetchall()}


def test_sigkill_mid_batch_anchors_each_batch_once(env, tmp_path) -> None:
    s, cluster, pool = env
    name, factory, gateway, app_id, anchors_start = _setup(s, cluster, "ak")
    marker = tmp_path / "paused"
    hook = {"SEALSTREAM_ANCHOR_TEST_PAUSE_FILE": str(marker)}
    worker = WorkerProc.ledger(s, app_id, gateway, tmp_path / "w1.log",
                        extra_env={**hook, "SEALSTREAM_ANCHOR_TEST_PAUSE": "manifest"})
    try:
        summary = run(s, RunConfig(name, devices=2, rate=3, duration=3, seed=6))
        good = [r.statement_hash for r in read_sent_log(summary.sent_log, summary.run_id)]
        # 1. killed after the manifest of the first batch is written, before its submission
        first = wait_for(lambda: marker.exists() and marker.read_text(), 90, "pause after manifest", worker)
        worker.kill()
        assert _open(pool, gateway)[first] == ("pending", 0)
        assert BlobStore.from_settings(s).get_manifest(first).batch_id == first
        with cluster.client() as c:
            assert c.get_anchor(first) is None
        # 2. restarted: killed after the ledger committed the ANCHOR, before the worker recorded it
        marker.unlink()
        worker = WorkerProc.ledger(s, app_id, gateway, tmp_path / "w2.log",
                            extra_env={**hook, "SEALSTREAM_ANCHOR_TEST_PAUSE": "committed"})
        second = wait_for(lambda: marker.exists() and marker.read_text(), 90, "pause after commit", worker)
        worker.kill()
        state, attempts = _open(pool, gateway)[second]
        assert state == "submitted" and attempts == 1
        with cluster.client() as c:
            committed = c.get_anchor(second)
        assert committed is not None
        # 3. restarted without the hook: everything anchored, the committed batch resolved by lookup
        worker = WorkerProc.ledger(s, app_id, gateway, tmp_path / "w3.log")
        wait_for(lambda: _all_anchored(pool, good), 120, "every statement anchored", worker)
        wait_for(lambda: all(st == "anchored" for st, _ in _open(pool, gateway).values()), 60,
                 "every batch anchored", worker)
        batches = _check_batches(s, cluster, pool, gateway, good, anchors_start)
        by_id = {b.batch_id: b for b in batches}
        assert first in by_id and second in by_id
        assert by_id[second].attempts == 1  # not claimed again: found on the ledger
        assert (by_id[second].ledger_height, by_id[second].tx_index) == (committed["height"], committed["index"])
        # no leaf in two batches, the leaves of all batches are exactly the statements
        with pool.connection() as conn:
            n, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT statement_hash) FROM batch_leaves l JOIN batches b "
                "USING (batch_id) WHERE b.gateway = %s", (gateway,)).fetchone()
        assert n == distinct == len(good)
    finally:
        worker.kill()


def test_ledger_without_quorum_batches_fail_and_are_retried(env, tmp_path) -> None:
    """Two of four nodes down (no quorum; the other two still answer lookups): ANCHORs time out, the
    batches are `failed` and retried with backoff, never dropped; with the nodes back every batch is
    anchored once (a timed-out tx that committed later is found through DUPLICATE_BATCH / lookup)."""
    s, cluster, pool = env
    name, factory, gateway, app_id, anchors_start = _setup(s, cluster, "aq")
    worker = WorkerProc.ledger(s, app_id, gateway, tmp_path / "worker.log")
    down = cluster.names[2:]
    try:
        summary = run(s, RunConfig(name, devices=1, rate=2, duration=2, seed=7))
        good = [r.statement_hash for r in read_sent_log(summary.sent_log, summary.run_id)]
        wait_for(lambda: _all_anchored(pool, good), 60, "first run anchored", worker)
        cluster.stop(down)
        summary = run(s, RunConfig(name, devices=1, rate=2, duration=2, seed=8))
        good += [r.statement_hash for r in read_sent_log(summary.sent_log, summary.run_id)]
        wait_for(lambda: worker.metric("sealstream_pipeline_batches_failed_total") >= 2, 120,
                 "failed submissions", worker)
        assert any(st in ("failed", "submitted") for st, _ in _open(pool, gateway).values())
        cluster.start(down, timeout=60)
        wait_for(lambda: _all_anchored(pool, good), 120, "every statement anchored", worker)
        wait_for(lambda: all(st == "anchored" for st, _ in _open(pool, gateway).values()), 60,
                 "every batch anchored", worker)
        batches = _check_batches(s, cluster, pool, gateway, good, anchors_start)
        assert max(b.attempts for b in batches) >= 2
    finally:
        worker.kill()
        cluster.start(down, timeout=60)


def test_a_worker_gone_for_good_its_batches_are_adopted(env, tmp_path) -> None:
    """Two workers (two gateways) share the group; B, which anchors, is SIGKILLed after writing a batch's
    manifest and never comes back. A takes over B's partitions and, after `pipeline_anchor_adopt_after_s`,
    anchors B's batch under its own key: every statement in exactly one anchored batch."""
    from anchor_helpers import register_gateway
    from pipelines.worker import gateway_key as key_of

    s, cluster, pool = env
    name, factory, gw_a, app_id, anchors_start = _setup(s, cluster, "ad")
    gw_b = gw_a + "-b"
    register_gateway(cluster, gw_b, key_of(Path(s.home), gw_b))
    marker = tmp_path / "paused"
    adopt = {"SEALSTREAM_PIPELINE_ANCHOR_ADOPT_AFTER_S": "4"}
    # B first, so it owns iiot.sealed (one partition by default: one worker of a group anchors at a time)
    b = WorkerProc.ledger(s, app_id, gw_b, tmp_path / "b.log", extra_env={
        **adopt, "SEALSTREAM_ANCHOR_TEST_PAUSE": "manifest", "SEALSTREAM_ANCHOR_TEST_PAUSE_FILE": str(marker)})
    a = None
    try:
        summary = run(s, RunConfig(name, devices=2, rate=3, duration=4, seed=9))
        good = [r.statement_hash for r in read_sent_log(summary.sent_log, summary.run_id)]
        orphan = wait_for(lambda: marker.exists() and marker.read_text(), 90, "B paused after a manifest", b)
        a = WorkerProc.ledger(s, app_id, gw_a, tmp_path / "a.log", extra_env=adopt)  # joins the group, B still in it
        time.sleep(3)
        b.kill()  # for good
        assert _open(pool, gw_b)[orphan] == ("pending", 0)
        wait_for(lambda: _all_anchored(pool, good), 120, "every statement anchored", a)
        wait_for(lambda: all(st == "anchored" for st, _ in {**_open(pool, gw_a), **_open(pool, gw_b)}.values()),
                 60, "every batch anchored", a)
        batches = _check_batches(s, cluster, pool, (gw_a, gw_b), good, anchors_start)
        assert orphan in {x.batch_id for x in batches}
        with cluster.client() as c:
            assert c.get_anchor(orphan)["gateway"] == gw_a  # adopted: anchored under A's key
            # ... and sealed again by A, so the verifier accepts its receipts (receipt-gateway)
            from pipelines.collect import Collector
            from storage.blobs import BlobStore
            from storage.readers import Reader
            from storage.verification import VerificationStore
            from verify.chain import verify

            ev = Collector(VerificationStore(pool), Reader(pool), BlobStore.from_settings(s), c).batch(orphan)
            report = verify(ev, trusted_genesis_hash=cluster.layout.genesis().genesis_hash())
            assert report.ok, report.to_json()
        with pool.connection() as conn:
            n, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT statement_hash) FROM batch_leaves l JOIN batches x "
                "USING (batch_id) WHERE x.gateway = ANY(%s)", ([gw_a, gw_b],)).fetchone()
        assert n == distinct == len(good)
    finally:
        b.kill()
        if a is not None:
            a.kill()
