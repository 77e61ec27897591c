"""Helpers for the anchor sweep tests: statements stored and sealed exactly as the worker stores them
(`IngestProcessor.process_batch` on the real PostgreSQL and MinIO, with a named gateway's key), their seals
produced to ``iiot.sealed`` only when a test says so, and who holds which statement in ``batch_leaves``."""

from __future__ import annotations

import random
import time

from pipelines.app import build_processor
from pipelines.devices import Factory, generate, seal
from pipelines.directory import ManifestDirectory
from pipelines.worker import RawRecord, Seal
from sealstream._kafka_config import kafka_endpoint


def store_sealed(settings, gateway: str, factory: Factory, per_device: int, seq0: int = 1) -> list[Seal]:
    """`per_device` messages of each device of `factory` checked, archived, stored and sealed by the worker's
    own code with the key of gateway `gateway` (``<home>/gateway/<gateway>.key``, created if missing);
    their seals (what the worker would produce to ``iiot.sealed``), *not* produced."""
    s = settings.model_copy(update={"pipeline_gateway": gateway})
    proc, pool = build_processor(s, ManifestDirectory.for_factories(s, [factory.name]))
    now = int(time.time() * 1000)
    base = random.randrange(10**9, 10**12)  # positions of this test's records (no consumer reads them there)
    recs = []
    for dev in factory.devices:
        for k in range(per_device):
            seq, ts = seq0 + k, now + k
            msg = seal(dev.keypair, seq, ts, generate(dev.kind, 1, dev.spec.name, seq, ts))
            recs.append(RawRecord(msg.topic, 0, base + len(recs), msg.key, msg.value, list(msg.headers), now))
    try:
        out = proc.process_batch(recs)
    finally:
        proc.close()
        pool.close()
    bad = [getattr(r, "reason", None) for r in out if not isinstance(r, Seal)]
    assert not bad, bad
    return out


def produce_seals(settings, seals: list[Seal]) -> dict[tuple[str, int], int]:
    """Produce `seals` to ``iiot.sealed`` as the worker does (key = device, header ``ss-statement-hash``),
    waiting for the broker's acks; per partition, the offset just past the last one produced."""
    from confluent_kafka import Producer

    p = Producer({**kafka_endpoint(settings, "admin").confluent(), "acks": "all", "enable.idempotence": True})
    ends: dict[tuple[str, int], int] = {}
    errors: list = []

    def done(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            tp = (msg.topic(), msg.partition())
            ends[tp] = max(ends.get(tp, 0), msg.offset() + 1)

    for sl in seals:
        p.produce("iiot.sealed", key=sl.key, value=sl.value,
                  headers=[("ss-statement-hash", sl.statement.hash().hex().encode("ascii"))], on_delivery=done)
    assert p.flush(30) == 0 and not errors, errors
    return ends


def hashes_of(seals: list[Seal]) -> list[bytes]:
    return [bytes(sl.statement.hash()) for sl in seals]


def leaves_of(pool, hashes: list[bytes]) -> list[tuple[bytes, str, str]]:
    """``(statement_hash, batch_id, anchor_state)`` of every ``batch_leaves`` row of `hashes`."""
    with pool.connection() as conn:
        return [(bytes(h), b, st) for h, b, st in conn.execute(
            "SELECT l.statement_hash, l.batch_id, b.anchor_state FROM batch_leaves l JOIN batches b USING (batch_id) "
            "WHERE l.statement_hash = ANY(%s)", (hashes,)).fetchall()]


def anchored_once(pool, hashes: list[bytes]) -> dict[bytes, str] | None:
    """statement -> batch id once every one of `hashes` is the leaf of exactly one batch, all anchored; else None."""
    rows = leaves_of(pool, hashes)
    if len(rows) != len(hashes) or any(st != "anchored" for _, _, st in rows):
        return None
    return {h: b for h, b, _ in rows}


def check_on_ledger(cluster, reader, batch_ids, gateways) -> None:
    """Each batch anchored where the ledger's lookup says, with its root and size, by one of `gateways`, and
    its leaves give its root."""
    from trust import merkle

    with cluster.client() as c:
        for bid in sorted(set(batch_ids)):
            b = reader.batch(bid)
            assert b is not None and b.anchor_state == "anchored", b
            doc = c.get_anchor(bid)
            assert doc is not None and doc["gateway"] in set(gateways), doc
            assert (bytes.fromhex(doc["root"]), doc["tree_size"]) == (b.root, b.tree_size)
            assert (doc["height"], doc["index"]) == (b.ledger_height, b.tx_index)
            leaves = reader.batch_leaves(bid)
            assert len(leaves) == b.tree_size and merkle.root(merkle.leaf_hashes(leaves)) == b.root
