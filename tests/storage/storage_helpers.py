"""Builders of real signed statements and Arrow readings for storage tests."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from storage import KafkaPosition, StatementRecord
from trust.identity import KeyPair
from trust.statement import Statement, sign_statement

KEY = KeyPair.generate()
SENSORS = ("temperature", "vibration", "pressure", "current")


def statement_record(
    seq: int, kind: str = "timeseries", payload: bytes | None = None, key: KeyPair = KEY,
    ts: int = 1_700_000_000_000,
) -> tuple[StatementRecord, bytes]:
    payload = os.urandom(64) if payload is None else payload
    content_type = {"timeseries": "application/vnd.apache.arrow.stream", "image": "image/jpeg",
                    "video": "video/mjpeg"}[kind]
    st = Statement.for_payload(key.did, seq, ts, kind, content_type, payload)
    record = StatementRecord(st, sign_statement(st, key), KafkaPosition(f"iiot.{kind}.raw", 0, seq))
    return record, payload


def readings(start: datetime, n: int, step: timedelta = timedelta(milliseconds=10)) -> pa.RecordBatch:
    """`n` rows cycling the four sensors, `step` apart from `start`."""
    base = (start - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    us = step // timedelta(microseconds=1)
    return pa.RecordBatch.from_pydict({
        "ts": pa.array([base + i * us for i in range(n)], pa.timestamp("us", tz="UTC")),
        "sensor": pa.array([SENSORS[i % 4] for i in range(n)], pa.string()),
        "value": pa.array([20.0 + (i % 97) * 0.5 for i in range(n)], pa.float64()),
    })


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)
