"""`IngestProcessor.process_batch` against the real PostgreSQL and MinIO (no Kafka): a batch gives the
verdicts of one-at-a-time processing (per-device seq order inside the batch, replays within the batch),
stores each accepted record once with its rows, a redelivered batch re-emits byte-identical seals, and a
stale seq cache is caught by the writer (conflict / stored elsewhere)."""

from __future__ import annotations

import time

import pytest

from pipelines.app import build_processor
from pipelines.checks import DeviceKey
from pipelines.devices import generate, seal
from pipelines.worker import DeadLetter, RawRecord, Seal
from storage.blobs import BlobStore
from trust.hashes import sha256
from trust.identity import KeyPair

pytestmark = pytest.mark.services


class _Directory:
    def __init__(self, *keys: KeyPair) -> None:
        self._known = {k.did: DeviceKey(k.did, k.did, False) for k in keys}

    def resolve(self, did: str):
        return self._known.get(did)


def _raw(msg, offset: int, now: int) -> RawRecord:
    return RawRecord(msg.topic, 0, offset, msg.key, msg.value, list(msg.headers), now)


def _reason(r) -> str:
    return r.reason if isinstance(r, DeadLetter) else "sealed"


def _rows(settings, table: str, h: bytes) -> int:
    """Rows of a statement, read as the owner (the worker's role may insert readings, not read them)."""
    import psycopg

    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} WHERE statement_hash = %s", (h,)).fetchone()[0]


def test_batch_verdicts_storage_and_redelivery(dev_settings) -> None:
    ts_dev, img_dev = KeyPair.generate(), KeyPair.generate()
    directory = _Directory(ts_dev, img_dev)
    now = int(time.time() * 1000)
    m1 = seal(ts_dev, 1, now, generate("timeseries", 1, "t", 1, now))
    m2 = seal(ts_dev, 2, now, generate("timeseries", 1, "t", 2, now))
    m2_other = seal(ts_dev, 2, now + 1, generate("timeseries", 2, "t", 2, now + 1))  # same seq, other bytes
    m3 = seal(ts_dev, 3, now, generate("timeseries", 1, "t", 3, now))
    i1 = seal(img_dev, 1, now, generate("image", 1, "i", 1, now))
    batch = [_raw(m1, 0, now), _raw(m2, 1, now), _raw(i1, 0, now), _raw(m2_other, 2, now),
             _raw(m2, 3, now), _raw(m3, 4, now)]

    proc, pool = build_processor(dev_settings, directory)
    try:
        out = proc.process_batch(batch)
        assert [_reason(r) for r in out] == ["sealed", "sealed", "sealed", "replay", "replay", "sealed"]
        assert out[3].detail.startswith("seq 2 <= last accepted seq 2")  # caught inside the batch, by seq
        assert out[4].detail.startswith("seq 2 <= last accepted seq 2")
        assert not any(r.redelivery for r in out if isinstance(r, Seal))
        for msg, r in zip((m1, m2, i1, m3), (out[0], out[1], out[2], out[5])):
            h = msg.statement.hash()
            assert r.statement.hash() == h and _rows(dev_settings, "statements", h) == 1
        assert _rows(dev_settings, "readings", m1.statement.hash()) == out[0].rows > 0
        assert _rows(dev_settings, "blobs", i1.statement.hash()) == 1
        assert _rows(dev_settings, "readings", i1.statement.hash()) == 0
        assert _rows(dev_settings, "statements", m2_other.statement.hash()) == 0
        blobs = BlobStore.from_settings(dev_settings)
        assert blobs.get_raw(sha256(i1.value)) == i1.value
        assert proc.last_seq(ts_dev.did) == 3

        # the whole batch redelivered (same offsets): same verdicts, byte-identical seals, nothing new
        again = proc.process_batch(batch)
        assert [_reason(r) for r in again] == [_reason(r) for r in out]
        for a, b in zip(out, again):
            if isinstance(a, Seal):
                assert b.redelivery and b.value == a.value
        assert _rows(dev_settings, "readings", m1.statement.hash()) == out[0].rows
    finally:
        proc.close()
        pool.close()

    # a stale seq cache (another worker stored them): the writer refuses, the position check decides
    stale, pool = build_processor(dev_settings, directory)
    stale.stored_last_seq = lambda did: None
    try:
        late = stale.process_batch([_raw(m1, 8, now), _raw(m2_other, 9, now), _raw(m3, 4, now)])
        assert [_reason(r) for r in late] == ["replay", "replay", "sealed"]
        assert "already stored from iiot.timeseries.raw/0/0" in late[0].detail
        assert "already held by another statement" in late[1].detail
        assert late[2].redelivery
        assert _rows(dev_settings, "statements", m2_other.statement.hash()) == 0
    finally:
        stale.close()
        pool.close()
