"""`Writer.write_sealed`: statements and their readings/blob rows in one transaction, against the real
PostgreSQL: per-record outcomes, refused statements get no child rows, redeliveries are idempotent and get
their missing receipt, and a failure writes nothing."""

from __future__ import annotations

import dataclasses

import pytest
from storage_helpers import KEY, readings, statement_record, utc

from storage import BlobRecord, KafkaPosition, Reader, RecordError, Writer
from storage.writers import ReadingsPart, SealedWrite
from trust.identity import KeyPair
from trust.receipt import seal_receipt
from trust.statement import Statement, sign_statement

pytestmark = pytest.mark.services

GATEWAY = KeyPair.generate()


def _sealed(seq: int, kind: str = "timeseries", rows: int = 5, key: KeyPair = KEY, pos: int | None = None):
    rec, payload = statement_record(seq, kind, key=key)
    if pos is not None:
        rec = dataclasses.replace(rec, kafka=KafkaPosition(rec.kafka.topic, 0, pos))
    h = rec.hash
    rec = dataclasses.replace(rec, receipt=seal_receipt(h, f"raw/{rec.statement.payload_sha256.hex()}", GATEWAY))
    if kind == "timeseries":
        return SealedWrite(rec, readings=ReadingsPart(rec.statement.device, h, readings(utc(2026, 11, 22), rows)))
    return SealedWrite(rec, blob=BlobRecord.for_statement(rec.statement))


def _counts(pool, h: bytes) -> tuple[int, int, int]:
    with pool.connection() as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {t} WHERE statement_hash = %s", (h,)).fetchone()[0]
                     for t in ("statements", "readings", "blobs"))


def test_outcomes_and_child_rows(pool) -> None:
    writer, reader = Writer(pool), Reader(pool)
    a, b, img = _sealed(100), _sealed(101, rows=7), _sealed(100, "image", key=KeyPair.generate())
    out = writer.write_sealed([a, b, img])
    assert [o.status for o in out] == ["inserted"] * 3
    assert _counts(pool, a.statement.hash) == (1, 5, 0)
    assert _counts(pool, b.statement.hash) == (1, 7, 0)
    assert _counts(pool, img.statement.hash) == (1, 0, 1)
    assert reader.statement(a.statement.hash).receipt == a.statement.receipt

    # the same seq, another statement (conflict); the same statement from another offset (elsewhere);
    # a redelivery (present); a new one: only the last two get rows
    other = _sealed(100)
    elsewhere = dataclasses.replace(b, statement=dataclasses.replace(
        b.statement, kafka=KafkaPosition(b.statement.kafka.topic, 0, 9999)))
    new = _sealed(102, rows=3)
    out = writer.write_sealed([other, elsewhere, a, new])
    assert [o.status for o in out] == ["conflict", "elsewhere", "present", "inserted"]
    assert out[1].stored.kafka == b.statement.kafka and out[2].stored.receipt == a.statement.receipt
    assert _counts(pool, other.statement.hash) == (0, 0, 0)
    assert _counts(pool, b.statement.hash) == (1, 7, 0)
    assert _counts(pool, a.statement.hash) == (1, 5, 0)
    assert _counts(pool, new.statement.hash) == (1, 3, 0)


def test_redelivery_gets_missing_receipt_and_rows(pool) -> None:
    writer, reader = Writer(pool), Reader(pool)
    w = _sealed(200, rows=4)
    bare = dataclasses.replace(w.statement, receipt=None)
    assert writer.write_statements([bare]).inserted == 1  # stored before, unsealed and without readings
    out = writer.write_sealed([w])
    assert out[0].status == "present" and out[0].stored.receipt is None
    assert reader.statement(w.statement.hash).receipt == w.statement.receipt
    assert _counts(pool, w.statement.hash) == (1, 4, 0)


def test_a_failed_write_leaves_nothing(pool) -> None:
    writer = Writer(pool)
    good = _sealed(300)
    st = Statement.for_payload(KEY.did, 301, 1_700_000_000_000, "timeseries", "application/vnd.apache.arrow.stream",
                               b"x" * 64)
    bad_rows = readings(utc(2026, 11, 22), 2).drop_columns(["value"])  # a writer refuses this
    bad = SealedWrite(dataclasses.replace(good.statement, statement=st, signature=sign_statement(st, KEY),
                                          receipt=seal_receipt(st.hash(), "raw/x", GATEWAY)),
                      readings=ReadingsPart(KEY.did, st.hash(), bad_rows))
    with pytest.raises(RecordError, match="missing column 'value'"):
        writer.write_sealed([good, bad])
    assert _counts(pool, good.statement.hash) == (0, 0, 0)
