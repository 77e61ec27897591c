"""`DeadLetterLog` on a fresh, migrated database: record once per (group, position), mark produced,
summarise and prune (only produced rows older than the cutoff)."""

from __future__ import annotations

import uuid
from datetime import timedelta

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


def _group() -> str:
    return f"prune-{uuid.uuid4().hex[:8]}"


def backdate(pool, group: str, positions, age: timedelta) -> None:
    """Make `group`'s rows at `positions` look recorded `age` ago."""
    with pool.connection() as conn:
        for p in positions:
            conn.execute('UPDATE dead_letters SET recorded_at = now() - %s WHERE grp = %s AND topic = %s '
                         'AND partition = %s AND "offset" = %s', (age, group, p.topic, p.partition, p.offset))


def seed(pool, group: str) -> dict[str, KafkaPosition]:
    """In `group`: old produced (x2), old unmarked, young produced, and a younger-than-cutoff produced one."""
    log = DeadLetterLog(pool)
    pos = {name: KafkaPosition("iiot.images.raw", 0, i) for i, name in
           enumerate(["old1", "old2", "old_unmarked", "young", "edge"])}
    log.record(group, [(p, "bad-signature" if n != "old2" else "oversized") for n, p in pos.items()])
    log.mark_produced(group, [pos["old1"], pos["old2"], pos["young"], pos["edge"]])
    backdate(pool, group, [pos["old1"], pos["old2"], pos["old_unmarked"]], timedelta(days=10))
    backdate(pool, group, [pos["edge"]], timedelta(days=6))
    return pos


def test_summary_counts_per_group_and_reason(pool) -> None:
    log, g1, g2 = DeadLetterLog(pool), _group(), _group()
    seed(pool, g1)
    log.record(g2, [(A, "unknown-device")])
    mine = [s for s in log.summary() if s.group in (g1, g2)]
    assert [(s.group, s.reason, s.count, s.produced, s.unmarked) for s in mine] == sorted([
        (g1, "bad-signature", 4, 3, 1), (g1, "oversized", 1, 1, 0), (g2, "unknown-device", 1, 0, 1)])
    only = log.summary(g1)
    assert [(s.reason, s.count) for s in only] == [("bad-signature", 4), ("oversized", 1)]
    bad = only[0]
    assert bad.newest - bad.oldest > timedelta(days=9, hours=23)
    assert bad.to_json()["oldest"] == bad.oldest.isoformat() and bad.to_json()["unmarked"] == 1
    assert log.summary(_group()) == []


def test_prune_only_produced_rows_older_than_the_cutoff(pool) -> None:
    log, g, other = DeadLetterLog(pool), _group(), _group()
    pos = seed(pool, g)
    seed(pool, other)
    week = timedelta(days=7)
    assert log.prune(week, group=g, dry_run=True) == 2
    assert len(log.rows(g)) == 5  # the dry run deleted nothing
    assert log.prune(week, group=g) == 2
    assert {r.position for r in log.rows(g)} == {pos["old_unmarked"], pos["young"], pos["edge"]}
    assert log.prune(week, group=g) == 0
    assert len(log.rows(other)) == 5  # --group respected
    # a shorter age reaches the 6-day-old produced row, never the 10-day-old unmarked one
    assert log.prune(timedelta(days=5), group=g) == 1
    assert {r.position for r in log.rows(g)} == {pos["old_unmarked"], pos["young"]}
    # once marked, the old row goes too
    log.mark_produced(g, [pos["old_unmarked"]])
    assert log.prune(week, group=g) == 1
    assert [r.position for r in log.rows(g)] == [pos["young"]]
    with pytest.raises(ValueError, match="positive"):
        log.prune(timedelta(0), group=g)


def test_prune_without_group_reaches_every_group(pool) -> None:
    log, g1, g2 = DeadLetterLog(pool), _group(), _group()
    seed(pool, g1)
    seed(pool, g2)
    before = log.prune(timedelta(days=7), dry_run=True)
    assert before >= 4  # other tests' groups in this module's database may add theirs
    assert log.prune(timedelta(days=7)) == before
    assert [len(log.rows(g)) for g in (g1, g2)] == [3, 3]


def test_prunable_topics_and_prune_limited_to_topics(pool) -> None:
    """What the CLI checks on the broker before it prunes, and the prune restricted to it."""
    log, g, other = DeadLetterLog(pool), _group(), _group()
    pos = seed(pool, g)  # all on iiot.images.raw
    log.record(g, [(C, "oversized"), (B, "oversized")])
    log.mark_produced(g, [C, B])
    backdate(pool, g, [C], timedelta(days=10))  # B stays young: its topic is not prunable yet
    log.record(other, [(KafkaPosition("iiot.audio.raw", 0, 1), "oversized")])
    week = timedelta(days=7)
    assert log.prunable_topics(week, group=g) == ["iiot.images.raw", "iiot.video.raw"]
    assert log.prunable_topics(timedelta(days=11), group=g) == []
    assert log.prunable_topics(week, group=_group()) == []
    # only the named topics' rows go; an empty list deletes nothing
    assert log.prune(week, group=g, topics=[]) == 0
    assert log.prune(week, group=g, topics=["iiot.video.raw"], dry_run=True) == 1
    assert log.prune(week, group=g, topics=["iiot.video.raw"]) == 1
    assert log.prunable_topics(week, group=g) == ["iiot.images.raw"]
    assert log.prune(week, group=g, topics=["iiot.images.raw"]) == 2
    assert {r.position for r in log.rows(g)} == {pos["old_unmarked"], pos["young"], pos["edge"], B}
    with pytest.raises(ValueError, match="positive"):
        log.prunable_topics(timedelta(0))


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
    with pytest.raises(DatabaseError, match="summarise dead letters"):
        log.summary()
    with pytest.raises(DatabaseError, match="prune dead letters"):
        log.prune(timedelta(days=7), dry_run=True)
    with pytest.raises(DatabaseError, match="read prunable dead-letter topics"):
        log.prunable_topics(timedelta(days=7))
