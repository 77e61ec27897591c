"""`DeadLetterLog` on a fresh, migrated database: record once per (group, position), mark produced."""

from __future__ import annotations

import pytest

from storage import PARTITIONED, TIMESCALEDB
from storage.deadletters import DeadLetterLog
from storage.migrate import load_migrations
from storage.records import KafkaPosition

pytestmark = pytest.mark.services

A = KafkaPosition("iiot.images.raw", 0, 7)
B = KafkaPosition("iiot.images.raw", 1, 7)
C = KafkaPosition("iiot.video.raw", 0, 3)


def test_dead_letters_migration_is_shared_by_both_flavours() -> None:
    ts, pg = load_migrations(TIMESCALEDB), load_migrations(PARTITIONED)
    assert ts[3] == pg[3] and (pg[3].version, pg[3].name, pg[3].flavour) == (4, "deadletters", None)
    assert "PRIMARY KEY (grp, topic, partition, \"offset\")" in pg[3].sql


def test_record_once_per_group_and_position_then_mark(pool) -> None:
    log = DeadLetterLog(pool)
    assert log.record("g1", []) == [] and log.mark_produced("g1", []) == 0
    first = log.record("g1", [(A, "bad-signature"), (B, "unknown-device")])
    assert [(r.position, r.reason, r.new, r.produced) for r in first] == [
        (A, "bad-signature", True, False), (B, "unknown-device", True, False)]
    assert all(r.recorded_at is not None for r in first)
    # re-read before the mark (a crash after the produce): recorded, not produced, first reason kept
    again = log.record("g1", [(B, "internal-error"), (A, "bad-signature"), (C, "oversized")])
    assert [(r.position, r.reason, r.new, r.produced) for r in again] == [
        (B, "unknown-device", False, False), (A, "bad-signature", False, False), (C, "oversized", True, False)]
    assert again[1].recorded_at == first[0].recorded_at
    assert log.mark_produced("g1", [A, C]) == 2
    assert log.mark_produced("g1", [A]) == 0  # already marked
    third = log.record("g1", [(A, "bad-signature"), (B, "unknown-device"), (C, "oversized")])
    assert [(r.new, r.produced) for r in third] == [(False, True), (False, False), (False, True)]
    # another group dead-letters the same positions on its own
    other = log.record("g2", [(A, "unknown-device")])
    assert [(r.new, r.produced, r.reason) for r in other] == [(True, False, "unknown-device")]
    assert [(r.position, r.produced) for r in log.rows("g1")] == [(A, True), (B, False), (C, True)]


def test_database_unreachable_is_a_database_error(migrated_dsn) -> None:
    """What the worker's retry loop catches (the batch waits, nothing is produced)."""
    from storage import DatabaseError, open_pool

    pool = open_pool(migrated_dsn, max_size=1)
    pool.close()
    log = DeadLetterLog(pool)
    with pytest.raises(DatabaseError, match="record dead letters"):
        log.record("g1", [(A, "bad-signature")])
    with pytest.raises(DatabaseError, match="mark dead letters produced"):
        log.mark_produced("g1", [A])
