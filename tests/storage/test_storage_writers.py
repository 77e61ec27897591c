"""Writers and readers against a real, migrated PostgreSQL (partitioned flavour)."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
from storage_helpers import KEY, readings, statement_record, utc

from storage import (
    BatchConflict,
    BatchError,
    BatchRecord,
    BlobRecord,
    InvalidTransition,
    PartitionPolicy,
    Reader,
    ReadingsPart,
    RecordError,
    Writer,
    manifest_key,
)
from trust import merkle
from trust.identity import KeyPair
from trust.receipt import AnchorRef, seal_receipt

pytestmark = pytest.mark.services

GATEWAY = KeyPair.generate()


@pytest.fixture(scope="module")
def writer(pool) -> Writer:
    return Writer(pool)


@pytest.fixture(scope="module")
def reader(pool) -> Reader:
    return Reader(pool)


def _where(dsn: str, statement_hash: bytes) -> dict[str, int]:
    """Partition name -> row count for the rows of one statement."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM readings WHERE statement_hash = %s GROUP BY 1",
            (statement_hash,),
        ).fetchall()
    return dict(rows)


# -- statements and receipts ---------------------------------------------------

def test_statements_are_idempotent_on_their_hash(writer: Writer, reader: Reader) -> None:
    records = [statement_record(seq)[0] for seq in (1, 2, 3)]
    first = writer.write_statements(records)
    again = writer.write_statements(records + records[:1])
    assert (first.inserted, first.present, first.conflicts) == (3, 0, ())
    assert (again.inserted, again.present, again.conflicts) == (0, 3, ())
    stored = reader.statement(records[1].hash)
    assert stored.statement == records[1].statement and stored.signature == records[1].signature
    assert stored.kafka == records[1].kafka and stored.receipt is None and stored.stored_at is not None
    assert reader.statement(b"\0" * 32) is None


def test_replayed_sequence_with_other_payload_is_a_conflict(writer: Writer) -> None:
    original, _ = statement_record(10)
    replay, _ = statement_record(10)  # same device and seq, different payload
    assert writer.write_statements([original]).inserted == 1
    count = writer.write_statements([replay])
    assert (count.inserted, count.present, count.conflicts) == (0, 0, (replay.hash,))


def test_receipts_attach_once(writer: Writer, reader: Reader) -> None:
    record, payload = statement_record(20)
    writer.write_statements([record])
    receipt = seal_receipt(record.hash, "raw/" + record.statement.payload_sha256.hex(), GATEWAY)
    assert writer.write_receipts([receipt]).inserted == 1
    assert writer.write_receipts([receipt]).present == 1
    other = seal_receipt(record.hash, "raw/elsewhere", GATEWAY)
    assert writer.write_receipts([other]).conflicts == (record.hash,)
    stored = reader.statement(record.hash)
    assert stored.receipt == receipt and stored.sealed_at is not None


# -- readings --------------------------------------------------------------------

def test_copy_100k_readings_twice_never_duplicates(writer: Writer, reader: Reader, migrated_dsn: str) -> None:
    record, _ = statement_record(100)
    writer.write_statements([record])
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    part = ReadingsPart(KEY.did, record.hash, readings(start, 100_000))
    first = writer.write_readings([part])
    again = writer.write_readings([part])
    assert (first.inserted, first.present) == (100_000, 0)
    assert (again.inserted, again.present) == (0, 100_000)
    where = _where(migrated_dsn, record.hash)
    assert sum(where.values()) == 100_000
    assert "readings_default" not in where
    assert all(name.startswith("readings_p") for name in where)
    # Streamed back through a server-side cursor, in order, all of them.
    got = reader.readings(KEY.did, start, start + timedelta(days=1), chunk=7_000)
    n, last = 0, None
    for r in got:
        key = (r.time, r.row_index)
        assert last is None or key > last
        last, n = key, n + 1
    assert n == 100_000


def test_readers_return_exactly_what_was_written_in_order(writer: Writer, reader: Reader) -> None:
    device = KeyPair.generate()
    start = utc(2031, 3, 4, 5, 6, 7, 123_457)  # microseconds survive exactly
    parts = []
    for seq in (1, 2):
        record, _ = statement_record(seq, key=device)
        writer.write_statements([record])
        parts.append(ReadingsPart(device.did, record.hash, readings(start + timedelta(seconds=seq), 50,
                                                                    timedelta(microseconds=1_001))))
    assert writer.write_readings(parts).inserted == 100
    got = list(reader.readings(device.did, start, start + timedelta(hours=1)))
    want = sorted(
        ((t, p.statement_hash, i, s, v) for p in parts for i, (t, s, v) in enumerate(zip(
            p.rows.column("ts").to_pylist(), p.rows.column("sensor").to_pylist(),
            p.rows.column("value").to_pylist()))),
        key=lambda w: (w[0], w[1], w[2]),
    )
    assert [(r.time, r.statement_hash, r.row_index, r.sensor, r.value) for r in got] == want
    assert {r.device for r in got} == {device.did}
    # Half-open range: the first row's time is in, `end` is out.
    assert len(list(reader.readings(device.did, start + timedelta(seconds=1), start + timedelta(seconds=2)))) == 50


def test_integer_millisecond_timestamps_are_accepted(writer: Writer, reader: Reader) -> None:
    import pyarrow as pa

    device = KeyPair.generate()
    record, _ = statement_record(1, key=device)
    writer.write_statements([record])
    ms = 1_900_000_000_123
    rows = pa.table({"ts": pa.array([ms, ms + 1], pa.int64()), "sensor": ["a", "b"], "value": [1.0, None]})
    writer.write_readings([ReadingsPart(device.did, record.hash, rows)])
    got = list(reader.readings(device.did, utc(2000, 1, 1), utc(2100, 1, 1)))
    assert [(r.time, r.value) for r in got] == [
        (datetime.fromtimestamp(ms / 1000, timezone.utc), 1.0),
        (datetime.fromtimestamp((ms + 1) / 1000, timezone.utc), None),
    ]


def test_malformed_readings_are_refused(writer: Writer) -> None:
    import pyarrow as pa

    bad = pa.table({"ts": ["yesterday"], "sensor": ["a"], "value": [1.0]})
    with pytest.raises(RecordError, match="ts has type"):
        writer.write_readings([ReadingsPart(KEY.did, b"\1" * 32, bad)])
    with pytest.raises(RecordError, match="missing column 'value'"):
        writer.write_readings([ReadingsPart(KEY.did, b"\1" * 32, pa.table({"ts": [1], "sensor": ["a"]}))])


def test_partitions_on_demand_and_default_for_rows_outside(pool, migrated_dsn: str) -> None:
    today = date(2030, 1, 10)
    w = Writer(pool, partitions=PartitionPolicy(max_age_days=10, max_ahead_days=1), today=lambda: today)
    device = KeyPair.generate()
    inside, _ = statement_record(1, key=device)
    outside, _ = statement_record(2, key=device)
    w.write_statements([inside, outside])
    w.write_readings([
        ReadingsPart(device.did, inside.hash, readings(utc(2030, 1, 5, 12), 30)),
        ReadingsPart(device.did, outside.hash, readings(utc(2029, 1, 1, 12), 20)),
    ])
    assert _where(migrated_dsn, inside.hash) == {"readings_p20300105": 30}
    assert _where(migrated_dsn, outside.hash) == {"readings_default": 20}
    # Creating the day later moves its rows out of the default partition.
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT readings_ensure_partition('2029-01-01')").fetchone() == (True,)
        assert conn.execute("SELECT readings_ensure_partition('2029-01-01')").fetchone() == (False,)
    assert _where(migrated_dsn, outside.hash) == {"readings_p20290101": 20}


def test_two_workers_racing_for_one_partition(migrated_dsn: str) -> None:
    barrier = threading.Barrier(4)
    results, errors = [], []

    def create() -> None:
        try:
            with psycopg.connect(migrated_dsn, autocommit=True) as conn:
                barrier.wait(10)
                results.append(conn.execute("SELECT readings_ensure_partition('2032-02-29')").fetchone()[0])
        except Exception as exc:  # noqa: BLE001 - reported below  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and sorted(results) == [False, False, False, True]


# -- blobs rows ------------------------------------------------------------------

def test_blob_rows_are_idempotent(writer: Writer, reader: Reader) -> None:
    record, payload = statement_record(30, kind="image")
    writer.write_statements([record])
    blob = BlobRecord.for_statement(record.statement)
    assert writer.write_blobs([blob]).inserted == 1
    assert writer.write_blobs([blob, blob]).present == 1
    stored = reader.blob(record.hash)
    assert stored.object_key == "raw/" + record.statement.payload_sha256.hex() and stored.size == len(payload)
    with pytest.raises(RecordError, match="is not 'raw/"):
        writer.write_blobs([BlobRecord(blob.statement_hash, "raw/other", "image/jpeg", 1, blob.sha256)])


# -- batches ---------------------------------------------------------------------

def _batch(writer: Writer, batch_id: str, first_seq: int, n: int = 5) -> tuple[BatchRecord, list[bytes]]:
    records = [statement_record(first_seq + i)[0] for i in range(n)]
    writer.write_statements(records)
    leaves = [r.hash for r in records]
    root = merkle.root(merkle.leaf_hashes(leaves))
    start = utc(2030, 1, 1)
    return BatchRecord(batch_id, root, n, start, start + timedelta(seconds=5), manifest_key(batch_id)), leaves


def test_batch_write_is_idempotent_and_readable(writer: Writer, reader: Reader) -> None:
    batch, leaves = _batch(writer, "b-read-1", 1000)
    assert writer.write_batch(batch, leaves) is True
    assert writer.write_batch(batch, leaves) is False
    stored = reader.batch("b-read-1")
    assert (stored.root, stored.tree_size, stored.anchor_state, stored.attempts) == (batch.root, 5, "pending", 0)
    assert reader.batch_leaves("b-read-1") == leaves
    member = reader.batch_of(leaves[3])
    assert (member.batch.batch_id, member.leaf_index, member.anchor_ref()) == ("b-read-1", 3, None)
    assert reader.batch("nope") is None and reader.batch_of(b"\0" * 32) is None


def test_batch_conflicts_write_nothing(writer: Writer, reader: Reader) -> None:
    batch, leaves = _batch(writer, "b-conflict-1", 2000)
    writer.write_batch(batch, leaves)
    # A second batch reusing a leaf of the first is refused as a whole.
    other, other_leaves = _batch(writer, "b-conflict-2", 2100, n=3)
    mixed = other_leaves[:2] + leaves[:1]
    mixed_batch = BatchRecord("b-conflict-2", merkle.root(merkle.leaf_hashes(mixed)), 3, other.window_start,
                              other.window_end, other.manifest_key)
    with pytest.raises(BatchConflict, match="already leaf of batch 'b-conflict-1'"):
        writer.write_batch(mixed_batch, mixed)
    assert reader.batch("b-conflict-2") is None and reader.batch_of(other_leaves[0]) is None
    # Same id, other root.
    with pytest.raises(BatchConflict, match="another root"):
        writer.write_batch(BatchRecord("b-conflict-1", other.root, 3, other.window_start, other.window_end,
                                       other.manifest_key), other_leaves)
    # A root that is not the leaves' root is refused before any I/O.
    with pytest.raises(RecordError, match="root does not match"):
        writer.write_batch(BatchRecord("b-x", b"\0" * 32, 5, batch.window_start, batch.window_end, "m"), leaves)


def test_anchor_state_transitions(writer: Writer, reader: Reader, migrated_dsn: str) -> None:
    batch, leaves = _batch(writer, "b-state-1", 3000)
    writer.write_batch(batch, leaves)
    assert writer.mark_submitted("b-state-1").anchor_state == "submitted"
    with pytest.raises(InvalidTransition, match="from 'submitted' to 'submitted'"):
        writer.mark_submitted("b-state-1")  # a batch is never submitted twice at once
    failed = writer.mark_failed("b-state-1", "ledger timeout")
    assert (failed.anchor_state, failed.last_error) == ("failed", "ledger timeout")
    assert writer.mark_failed("b-state-1", "still down").last_error == "still down"
    retried = writer.mark_submitted("b-state-1")
    assert (retried.anchor_state, retried.attempts) == ("submitted", 2)
    anchored = writer.mark_anchored("b-state-1", 42, 3)
    assert (anchored.anchor_state, anchored.ledger_height, anchored.tx_index) == ("anchored", 42, 3)
    assert writer.mark_anchored("b-state-1", 42, 3).anchored_at == anchored.anchored_at  # idempotent
    with pytest.raises(BatchConflict, match="already anchored at height 42"):
        writer.mark_anchored("b-state-1", 43, 0)
    for move in (lambda: writer.mark_submitted("b-state-1"), lambda: writer.mark_failed("b-state-1", "x")):
        with pytest.raises(InvalidTransition, match="from 'anchored'"):
            move()
    # The schema refuses the same moves from any client, e.g. anchored -> pending.
    with psycopg.connect(migrated_dsn) as conn, pytest.raises(psycopg.errors.CheckViolation,
                                                               match="cannot go from anchored to pending"):
        conn.execute("UPDATE batches SET anchor_state = 'pending', ledger_height = NULL, tx_index = NULL "
                     "WHERE batch_id = 'b-state-1'")
    member = reader.batch_of(leaves[4])
    assert member.anchor_ref() == AnchorRef("b-state-1", 4, 5, batch.root, 42, 3)
    with pytest.raises(BatchError, match="not found"):
        writer.mark_submitted("b-missing")


def test_pending_to_anchored_is_refused(writer: Writer) -> None:
    batch, leaves = _batch(writer, "b-state-2", 4000)
    writer.write_batch(batch, leaves)
    with pytest.raises(InvalidTransition, match="from 'pending' to 'anchored'"):
        writer.mark_anchored("b-state-2", 1, 0)


def test_only_one_worker_claims_a_batch(writer: Writer) -> None:
    batch, leaves = _batch(writer, "b-claim-1", 5000)
    writer.write_batch(batch, leaves)
    barrier = threading.Barrier(4)
    outcomes = []

    def claim() -> None:
        barrier.wait(10)
        try:
            writer.mark_submitted("b-claim-1")
            outcomes.append("won")
        except InvalidTransition:
            outcomes.append("lost")

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]


def test_schema_trigger_and_python_state_machine_agree(migrated_dsn: str) -> None:
    from storage import ANCHOR_STATES, TRANSITIONS

    coords = {"anchored": (1, 0)}
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for old in ANCHOR_STATES:
            for new in ANCHOR_STATES:
                if old == new:
                    continue
                bid = f"sm-{old}-{new}"
                conn.execute(
                    "INSERT INTO batches (batch_id, root, tree_size, window_start, window_end, manifest_key, "
                    "anchor_state, ledger_height, tx_index) VALUES (%s, %s, 1, now(), now(), 'm', %s, %s, %s)",
                    (bid, b"\1" * 32, old, *coords.get(old, (None, None))),
                )
                try:
                    conn.execute(
                        "UPDATE batches SET anchor_state = %s, ledger_height = %s, tx_index = %s "
                        "WHERE batch_id = %s", (new, *coords.get(new, (None, None)), bid),
                    )
                    allowed = True
                except psycopg.errors.CheckViolation:
                    allowed = False
                assert allowed == (new in TRANSITIONS[old]), (old, new)


def test_driver_errors_become_database_errors(writer: Writer) -> None:
    from storage import DatabaseError
    from trust.statement import Statement

    orphan = Statement.for_payload(KEY.did, 999_999, 1, "image", "image/png", b"png")
    with pytest.raises(DatabaseError, match="write blobs") as info:
        writer.write_blobs([BlobRecord.for_statement(orphan)])
    assert isinstance(info.value.__cause__, psycopg.errors.ForeignKeyViolation)
