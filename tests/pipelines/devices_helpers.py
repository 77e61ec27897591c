"""Helpers for the simulator tests: read records back from Kafka, and run the ingest checks.

`ingest_checks` mirrors what the ingest agent will verify (DESIGN.md step 4),
using only `trust` functions, so each injected fault can be shown to fail
exactly the check it names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from pipelines import offsets
from pipelines.devices import Factory, max_payload_bytes
from pipelines.devices.sentlog import SentRecord
from sealstream.settings import Settings
from trust.errors import StatementError
from trust.statement import Statement, from_kafka_headers, verify_statement
from sealstream._kafka_config import kafka_endpoint


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def read_records(settings: Settings, where: list[tuple[str, int, int]], timeout: float = 20.0) -> dict:
    """The records at exactly these (topic, partition, offset) positions, keyed by position."""
    wanted = set(where)
    by_tp: dict[tuple[str, int], list[int]] = {}
    for t, p, o in wanted:
        by_tp.setdefault((t, p), []).append(o)
    c = Consumer({**kafka_endpoint(settings, "admin").confluent(), "group.id": f"test-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(t, p, min(offs)) for (t, p), offs in by_tp.items()])
        last = {tp: max(offs) for tp, offs in by_tp.items()}
        got: dict[tuple[str, int, int], Record] = {}
        done: set[tuple[str, int]] = set()
        import time

        deadline = time.monotonic() + timeout
        while len(done) < len(by_tp) and time.monotonic() < deadline:
            for m in c.consume(500, 1.0):
                assert m.error() is None, m.error()
                pos = (m.topic(), m.partition(), m.offset())
                if pos in wanted:
                    got[pos] = Record(*pos, m.key(), m.value(), list(m.headers() or []), m.timestamp()[1])
                if m.offset() >= last[(m.topic(), m.partition())]:
                    done.add((m.topic(), m.partition()))
        return got
    finally:
        c.close()


def end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    """High watermark of every partition of `topics`."""
    return offsets.end_offsets(kafka_endpoint(settings, "admin"), topics)


def read_range(settings: Settings, start: dict, end: dict, timeout: float = 20.0) -> list[Record]:
    """Every record in [start, end) of each partition."""
    where = [(t, p, o) for (t, p), hi in end.items() for o in range(start.get((t, p), 0), hi)]
    return list(read_records(settings, where, timeout).values()) if where else []


def ingest_checks(rec: Record, factory: Factory, settings: Settings, seen: dict[str, int]) -> set[str]:
    """The names of the checks `rec` fails: headers, registered, signature, hash, size, seq, clock.

    `seen` maps device -> highest seq accepted so far (updated for records that pass).
    """
    try:
        stmt, sig = from_kafka_headers(rec.headers)
    except StatementError as exc:
        assert exc.reason == "malformed-header", exc.reason
        return {"headers"}
    failed = set()
    devices = factory.by_did()
    if stmt.device not in devices or rec.key != stmt.device.encode():
        failed.add("registered")
    key = devices[stmt.device].keypair.public_key if stmt.device in devices else None
    if not verify_statement(stmt, sig, key):
        failed.add("signature")
    if not stmt.matches_payload(rec.value):
        failed.add("hash")
    if stmt.size > max_payload_bytes(settings, stmt.kind) or len(rec.value) > max_payload_bytes(settings, stmt.kind):
        failed.add("size")
    if stmt.seq <= seen.get(stmt.device, -1):
        failed.add("seq")
    if abs(stmt.ts - rec.timestamp_ms) > settings.max_clock_skew_ms:
        failed.add("clock")
    if not failed:
        seen[stmt.device] = stmt.seq
    return failed


def statement_of(rec: Record) -> Statement:
    return from_kafka_headers(rec.headers)[0]


def positions(records: list[SentRecord]) -> list[tuple[str, int, int]]:
    return [(r.topic, r.partition, r.offset) for r in records]
