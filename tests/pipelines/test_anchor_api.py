"""`pipelines.anchor.Anchorer` against the real PostgreSQL, MinIO and a 4-node contracts ledger.

Stored statements are batched and anchored: the ledger's anchors lookup returns
each batch's root and size at the `(height, tx_index)` recorded in `batches`,
the tx's inclusion proof verifies with the light client, the manifest is in
MinIO; then the crash/retry paths: a batch left `submitted` whose ANCHOR was
committed is resolved by lookup (no second tx), a batch left `submitted` whose
ANCHOR never left is submitted once, DUPLICATE_BATCH is recorded as anchored,
an unfunded gateway's refusal is `failed` and retried once funded, and a
statement already in a batch is never put into another.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone

import pytest

from anchor_helpers import admin_client, ledger_cluster, register_gateway
from pipelines._anchor_plan import ANCHOR_KIND, SealedLeaf, anchor_payload
from pipelines.anchor import Anchorer, AnchorRefused, window_ms
from pipelines.metrics import PipelineMetrics
from storage import Manifest, StatementRecord
from storage.blobs import BlobStore
from storage.db import open_pool
from storage.readers import Reader
from storage.writers import Writer
from trust import merkle
from trust.identity import KeyPair
from trust.statement import Statement, sign_statement

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def cluster(stack, tmp_path_factory):
    c = ledger_cluster(tmp_path_factory.mktemp("anchor-ledger"))
    yield c
    c.stop(timeout=5)


@pytest.fixture(scope="module")
def pool(stack, settings):
    p = open_pool(settings.postgres_dsn, max_size=4)
    yield p
    p.close()


def _statements(pool, n: int) -> list[bytes]:
    dev = KeyPair.generate()
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    recs = []
    for i in range(n):
        st = Statement.for_payload(dev.did, i, now + i, "image", "image/jpeg", os.urandom(16))
        recs.append(StatementRecord(st, sign_statement(st, dev)))
    Writer(pool).write_statements(recs)
    return [r.hash for r in recs]


def _anchorer(settings, cluster, pool, name: str, key: KeyPair, **kw) -> Anchorer:
    client = cluster.client(key=key)
    return Anchorer(Writer(pool), Reader(pool), BlobStore.from_settings(settings), client, name,
                    on_close=client.close, **kw)


def _check_on_ledger(cluster, reader: Reader, batch) -> None:
    with cluster.client() as c:
        doc = c.get_anchor(batch.batch_id)
        assert doc is not None
        assert bytes.fromhex(doc["root"]) == batch.root and doc["tree_size"] == batch.tree_size
        assert (doc["height"], doc["index"]) == (batch.ledger_height, batch.tx_index)
        rec, header = c.verified_tx(doc["tx_id"])
    assert rec.tx.kind == ANCHOR_KIND and rec.tx.payload["root"] == batch.root
    assert header.height == batch.ledger_height
    leaves = reader.batch_leaves(batch.batch_id)
    assert merkle.root(merkle.leaf_hashes(leaves)) == batch.root


def test_anchor_statements_and_manifests(settings, cluster, pool) -> None:
    gw = KeyPair.generate()
    name = f"gw-{uuid.uuid4().hex[:8]}"
    register_gateway(cluster, name, gw)
    metrics = PipelineMetrics()
    a = _anchorer(settings, cluster, pool, name, gw, max_leaves=4, metrics=metrics)
    try:
        hashes = _statements(pool, 10)
        batches = a.anchor_statements(hashes)
        assert [b.tree_size for b in batches] == [4, 4, 2]
        reader = Reader(pool)
        seen = []
        for b in batches:
            assert b.anchor_state == "anchored" and b.gateway == name
            _check_on_ledger(cluster, reader, b)
            m = BlobStore.from_settings(settings).get_manifest(b.batch_id)
            assert m == Manifest.for_batch(b, tuple(reader.batch_leaves(b.batch_id)))
            seen += reader.batch_leaves(b.batch_id)
        assert sorted(seen) == sorted(hashes)
        # again: nothing new is batched or submitted
        assert a.anchor_statements(hashes) == batches
        assert a.add([SealedLeaf(h, 0) for h in hashes]) == []
        assert metrics.batches_anchored._value.get() == 3
        assert a.backlog() == 0
    finally:
        a.close()


def test_restart_resolves_submitted_batches_by_lookup(settings, cluster, pool) -> None:
    gw = KeyPair.generate()
    name = f"gw-{uuid.uuid4().hex[:8]}"
    register_gateway(cluster, name, gw)
    a = _anchorer(settings, cluster, pool, name, gw, max_leaves=100)
    reader, writer = Reader(pool), Writer(pool)
    try:
        # Batch 1: claimed and committed on the ledger, then "crashed" before recording it.
        (b1,) = a.add(SealedLeaf(h, 0) for h in _statements(pool, 3))
        writer.mark_submitted(b1.batch_id)
        receipt = a.ledger.submit(ANCHOR_KIND, anchor_payload(b1.batch_id, b1.root, b1.tree_size, name,
                                                              window_ms(b1)))
        assert receipt.refusal is None
        # Batch 2: claimed, "crashed" before the ANCHOR left.
        (b2,) = a.add(SealedLeaf(h, 0) for h in _statements(pool, 2))
        writer.mark_submitted(b2.batch_id)
        # Batch 3: anchored by the ledger but recorded failed (gave up waiting) -> DUPLICATE_BATCH path.
        (b3,) = a.add(SealedLeaf(h, 0) for h in _statements(pool, 2))
        writer.mark_submitted(b3.batch_id)
        r3 = a.ledger.submit(ANCHOR_KIND, anchor_payload(b3.batch_id, b3.root, b3.tree_size, name, window_ms(b3)))
        writer.mark_failed(b3.batch_id, "timeout")

        done = {b.batch_id: b for b in a.anchor_pending()}
        assert set(done) == {b1.batch_id, b2.batch_id, b3.batch_id}
        assert (done[b1.batch_id].ledger_height, done[b1.batch_id].tx_index) == (receipt.height, receipt.index)
        assert (done[b3.batch_id].ledger_height, done[b3.batch_id].tx_index) == (r3.height, r3.index)
        for b in done.values():
            _check_on_ledger(cluster, reader, b)
            assert reader.batch(b.batch_id).attempts <= 2
        # each batch id anchored once: resubmitting is refused by the ledger
        again = a.ledger.submit(ANCHOR_KIND, anchor_payload(b2.batch_id, b2.root, b2.tree_size, name,
                                                            window_ms(b2)))
        assert again.refusal[0] == "DUPLICATE_BATCH"
    finally:
        a.close()


def test_unfunded_gateway_fails_then_retries(settings, cluster, pool) -> None:
    gw = KeyPair.generate()
    name = f"gw-{uuid.uuid4().hex[:8]}"
    with admin_client(cluster) as admin:
        assert admin.submit("registry.register_gateway",
                            {"id": name, "org": "operator", "key": gw.did}).refusal is None
    metrics = PipelineMetrics()
    a = _anchorer(settings, cluster, pool, name, gw, metrics=metrics)
    try:
        hashes = _statements(pool, 3)
        with pytest.raises(AnchorRefused) as err:
            a.anchor_statements(hashes)
        (b,) = a.reader.open_batches(gateway=name)
        assert err.value.code == "INSUFFICIENT_QUOTA" and b.anchor_state == "failed"
        assert "INSUFFICIENT_QUOTA" in b.last_error
        assert metrics.batches_failed._value.get() == 1
        assert a.backlog() == 3
        register_gateway(cluster, name, gw)  # funds it
        (done,) = a.anchor_pending()
        assert done.batch_id == b.batch_id and done.anchor_state == "anchored" and done.attempts == 2
        # a statement already in a batch is never cut into another one
        other = _anchorer(settings, cluster, pool, name + "x", KeyPair.generate())
        try:
            assert other.add([SealedLeaf(h, 0) for h in hashes]) == []
        finally:
            other.close()
    finally:
        a.close()
