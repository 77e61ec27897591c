"""`Anchorer.sweep` on the real PostgreSQL, MinIO and a 4-node contracts ledger (no Kafka): statements stored
and sealed as the worker stores them, whose seals never reach an anchor agent, are batched by the sweep once
past the grace and anchored; statements of a key bound to nothing on our ledger wait (reported) until it is
registered as a gateway, those of a device's key wait for good; two sweepers at once never put a statement
in two batches."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from anchor_helpers import admin_client, ledger_cluster, register_gateway, wait_for
from pipelines._anchor_agent import GatewayFilter
from pipelines._anchor_ledger import ensure_devices
from pipelines.anchor import Anchorer, AnchorError
from pipelines.devices import Factory
from pipelines.metrics import PipelineMetrics
from pipelines.worker import gateway_key
from storage.blobs import BlobStore
from storage.db import open_pool
from storage.readers import Reader
from storage.writers import Writer
from sweep_helpers import anchored_once, check_on_ledger, hashes_of, leaves_of, store_sealed

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def env(dev_settings):
    cluster = ledger_cluster(Path(dev_settings.home) / "ledger")
    pool = open_pool(dev_settings.postgres_dsn, max_size=8)
    yield dev_settings, cluster, pool
    pool.close()
    cluster.stop(timeout=5)


def _name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:6]}"


class _Anchoring:
    """An `Anchorer` of a registered, funded gateway with its own metrics, and the agent's gateway filter."""

    def __init__(self, s, cluster, pool, gateway: str, max_leaves: int = 8) -> None:
        key = gateway_key(Path(s.home), gateway)
        register_gateway(cluster, gateway, key)
        self.client = cluster.client(key=key)
        self.metrics = PipelineMetrics()
        self.anchorer = Anchorer(Writer(pool), Reader(pool), BlobStore.from_settings(s), self.client, gateway,
                                 max_leaves=max_leaves, metrics=self.metrics)
        self.gateways = GatewayFilter(self.client, key.did, negative_ttl=0.0)

    def sweep(self, grace_s: float):
        return self.anchorer.sweep(self.gateways.status, grace_s=grace_s)

    def metric(self, name: str, **labels: str) -> float:
        for fam in self.metrics.registry.collect():
            for smp in fam.samples:
                if smp.name == name and smp.labels == labels:
                    return smp.value
        return 0.0

    def close(self) -> None:
        self.client.close()


def test_statements_whose_seal_never_came_are_swept_once_past_the_grace(env) -> None:
    s, cluster, pool = env
    sealer = _name("sw-s")
    register_gateway(cluster, sealer, gateway_key(Path(s.home), sealer))
    seals = store_sealed(s, sealer, Factory.ensure(s, _name("swf"), 1), 3)  # 3 devices x 3: stored, sealed
    hashes = hashes_of(seals)
    a = _Anchoring(s, cluster, pool, _name("sw-a"))
    try:
        res = a.sweep(grace_s=3600)  # younger than the grace: left to the agents
        assert leaves_of(pool, hashes) == []
        assert not {bytes(h) for b in res.batches for h in a.anchorer.reader.batch_leaves(b.batch_id)} & set(hashes)
        # past a 1 s grace (PostgreSQL's clock): found and batched, at most 8 leaves a batch
        wait_for(lambda: a.sweep(grace_s=1.0) and len(leaves_of(pool, hashes)) == len(hashes), 30, "swept")
        assert a.metric("sealstream_pipeline_anchor_sweep_found_total") >= len(hashes)
        rows = leaves_of(pool, hashes)
        assert sorted(h for h, _, _ in rows) == sorted(hashes)  # each once (batch_leaves is unique on it)
        assert {st for _, _, st in rows} == {"pending"}
        batch_ids = {b for _, b, _ in rows}
        assert len(batch_ids) == 2 and all(b.startswith(a.anchorer.gateway + "-") for b in batch_ids)
        # swept again: nothing of ours found; their seals arriving late are already leaves, nothing written
        again = a.sweep(grace_s=0.0)
        assert not {bytes(h) for b in again.batches for h in a.anchorer.reader.batch_leaves(b.batch_id)} & set(hashes)
        from pipelines._anchor_plan import parse_sealed

        assert a.anchorer.add(parse_sealed(sl.value) for sl in seals) == []
        a.anchorer.anchor_pending()
        done = anchored_once(pool, hashes)
        assert done is not None and set(done.values()) == batch_ids
        check_on_ledger(cluster, a.anchorer.reader, batch_ids, {a.anchorer.gateway})
    finally:
        a.close()


def test_unknown_gateways_wait_until_registered_non_gateways_for_good(env) -> None:
    s, cluster, pool = env
    late, dev_gw = _name("sw-late"), _name("sw-dev")
    late_seals = store_sealed(s, late, Factory.ensure(s, _name("swl"), 1), 2)  # its key bound to nothing yet
    dev_key = gateway_key(Path(s.home), dev_gw)
    with admin_client(cluster) as admin:  # a key that is a *device's* on our ledger signs receipts
        assert ensure_devices(admin, [(dev_gw, dev_key.did)]) == 1
    dev_seals = store_sealed(s, dev_gw, Factory.ensure(s, _name("swd"), 1), 1)
    late_h, dev_h = hashes_of(late_seals), hashes_of(dev_seals)
    late_did = gateway_key(Path(s.home), late).did
    a = _Anchoring(s, cluster, pool, _name("sw-a"))
    try:
        res = a.sweep(grace_s=0.0)
        assert res.waiting["unknown-gateway"][late_did] == len(late_h)
        assert res.waiting["not-a-gateway"][dev_key.did] == len(dev_h)
        assert leaves_of(pool, late_h + dev_h) == []  # left alone, visibly
        waiting = a.metric("sealstream_pipeline_anchor_sweep_waiting", reason="unknown-gateway")
        assert waiting >= len(late_h)
        assert a.metric("sealstream_pipeline_anchor_sweep_waiting", reason="not-a-gateway") >= len(dev_h)

        register_gateway(cluster, late, gateway_key(Path(s.home), late))  # now a gateway of our ledger
        res = a.sweep(grace_s=0.0)
        assert late_did not in res.waiting["unknown-gateway"] and res.found >= len(late_h)
        assert res.waiting["not-a-gateway"][dev_key.did] == len(dev_h)
        assert sorted(h for h, _, _ in leaves_of(pool, late_h)) == sorted(late_h)
        assert leaves_of(pool, dev_h) == []
        a.anchorer.anchor_pending()
        done = anchored_once(pool, late_h)
        assert done is not None
        check_on_ledger(cluster, a.anchorer.reader, done.values(), {a.anchorer.gateway})
    finally:
        a.close()


def test_two_sweepers_at_once_never_put_a_statement_in_two_batches(env) -> None:
    s, cluster, pool = env
    sealer = _name("sw-s")
    register_gateway(cluster, sealer, gateway_key(Path(s.home), sealer))
    hashes = hashes_of(store_sealed(s, sealer, Factory.ensure(s, _name("swc"), 1), 14))  # 42 statements
    one, two = _Anchoring(s, cluster, pool, _name("sw-1")), _Anchoring(s, cluster, pool, _name("sw-2"))
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def sweeps(x: _Anchoring) -> None:
        for _ in range(3):  # same statements, same order, same batch size: every cut races the other's
            barrier.wait()
            try:
                x.sweep(grace_s=0.0)
            except AnchorError as exc:  # too many lost races in one pass: the agent's next pass goes on
                errors.append(exc)

    threads = [threading.Thread(target=sweeps, args=(x,)) for x in (one, two)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        rows = leaves_of(pool, hashes)
        assert sorted(h for h, _, _ in rows) == sorted(hashes)  # every statement in exactly one batch
        with pool.connection() as conn:
            n, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT statement_hash) FROM batch_leaves l JOIN batches b USING (batch_id) "
                "WHERE b.gateway = ANY(%s)", ([one.anchorer.gateway, two.anchorer.gateway],)).fetchone()
        assert n == distinct == len(hashes)  # and their batches hold nothing else
        found = one.metric("sealstream_pipeline_anchor_sweep_found_total") + two.metric(
            "sealstream_pipeline_anchor_sweep_found_total")
        assert found >= len(hashes)
        one.anchorer.anchor_pending()
        two.anchorer.anchor_pending()
        done = anchored_once(pool, hashes)
        assert done is not None
        check_on_ledger(cluster, one.anchorer.reader, done.values(), {one.anchorer.gateway, two.anchorer.gateway})
    finally:
        one.close()
        two.close()
