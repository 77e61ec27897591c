"""Exactly-once dead letters per (consumer group, source position).

A worker killed after producing a batch's dead letters but before its source
offsets were committed re-reads those records on restart.  `DeadLetterGate`
decides, before a batch's dead letters are produced, which of them must be
(blocking: call it in a thread):

- a position this group never dead-lettered is recorded (``dead_letters``,
  `storage.deadletters.DeadLetterLog`) and produced; once the broker acked it
  the caller calls `mark_produced`;
- a position recorded and marked produced is not produced again (``recorded``);
- a position recorded but not marked (the crash hit between the produce and the
  mark: outcome unknown) is looked up in ``iiot.deadletter``: each partition is
  scanned from the first record at or after ``recorded_at - lookback_s`` to its
  end for a dead letter whose headers name this group (``ss-dlq-group``) and
  position (``ss-dlq-topic``/``-partition``/``-offset``).  Found: marked
  produced, not produced again (``in-topic``); not found: produced.

The first verdict recorded for a position is the one kept (a record re-read
after its device was registered is still not stored twice by this path: only
dead letters are gated).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Sequence

from storage.deadletters import DeadLetterLog, DeadLetterRow
from storage.records import KafkaPosition
from sealstream._kafka_config import KafkaLike, as_endpoint
from sealstream.topics import DEADLETTER

__all__ = ["DeadLetterGate", "DeadLetterLookupError", "PRODUCE", "RECORDED", "IN_TOPIC", "find_dead_letters"]

log = logging.getLogger("sealstream.pipeline")
PRODUCE, RECORDED, IN_TOPIC = "produce", "recorded", "in-topic"


class DeadLetterLookupError(ConnectionError):
    """The dead-letter topic could not be scanned to the end (the batch is retried)."""


def _position(headers: Sequence[tuple[str, Optional[bytes]]], group: bytes) -> Optional[KafkaPosition]:
    """The source position a dead letter of `group` names (the last header of each name wins:
    ours are appended after the original record's), or None."""
    h: dict[str, Any] = {k: v for k, v in headers}
    try:
        if h.get("ss-dlq-group") != group:
            return None
        return KafkaPosition(h["ss-dlq-topic"].decode("ascii"), int(h["ss-dlq-partition"]),
                             int(h["ss-dlq-offset"]))
    except (KeyError, AttributeError, ValueError, UnicodeDecodeError):
        return None


def find_dead_letters(kafka: KafkaLike, topic: str, group: str, wanted: Sequence[KafkaPosition], since: datetime,
                      timeout_s: float = 30.0) -> set[KafkaPosition]:
    """Which of `wanted` have a dead letter of `group` in `topic`, produced at or after `since`
    (every partition scanned from ``offsets_for_times(since)`` to its end offset; blocking)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    want, gid = set(wanted), group.encode("utf-8")
    found: set[KafkaPosition] = set()
    deadline = time.monotonic() + timeout_s
    c = Consumer(as_endpoint(kafka, "pipeline").confluent({
        "group.id": f"sealstream-dlq-lookup-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "enable.partition.eof": False, "log_level": 4}))
    try:
        parts = sorted(c.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        ms = int(since.timestamp() * 1000)
        starts = c.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=timeout_s)
        todo: dict[int, int] = {}  # partition -> end offset (exclusive)
        assign = []
        for tp in starts:
            end = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout_s, cached=False)[1]
            if 0 <= tp.offset < end:  # -1: nothing at or after `since`
                todo[tp.partition] = end
                assign.append(TopicPartition(topic, tp.partition, tp.offset))
        if not assign:
            return found
        c.assign(assign)
        while todo and want - found:
            if time.monotonic() > deadline:
                raise DeadLetterLookupError(f"{topic}: scan not finished within {timeout_s:g} s")
            for m in c.consume(500, 0.5):
                if m.error() is not None:
                    raise DeadLetterLookupError(f"{topic}: {m.error()}")
                pos = _position(m.headers() or [], gid)
                if pos in want:
                    found.add(pos)
                if m.partition() in todo and m.offset() >= todo[m.partition()] - 1:
                    del todo[m.partition()]
            for tp in c.position([TopicPartition(topic, p) for p in todo]):  # gaps (e.g. control records)
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
        return found
    except KafkaException as exc:
        raise DeadLetterLookupError(f"{topic}: {exc}") from exc
    finally:
        c.close()


class DeadLetterGate:
    """Decides which dead letters of a batch to produce, for one consumer group (blocking; thread-safe)."""

    def __init__(self, log_: DeadLetterLog, bootstrap: KafkaLike, group: str, topic: str = DEADLETTER,
                 lookback_s: float = 5.0, timeout_s: float = 30.0) -> None:
        self.log, self.bootstrap, self.group, self.topic = log_, bootstrap, group, topic
        self.lookback_s, self.timeout_s = lookback_s, timeout_s

    def decide(self, letters: Sequence[tuple[KafkaPosition, str]]) -> list[str]:
        """Per ``(position, reason)``: `PRODUCE`, `RECORDED` or `IN_TOPIC` (both: do not produce).
        Records the new ones first; a `DatabaseError` or `DeadLetterLookupError` means: retry."""
        rows = self.log.record(self.group, letters)
        unknown = [r for r in rows if not r.new and not r.produced]
        in_topic: set[KafkaPosition] = set()
        if unknown:
            in_topic = self._look_up(unknown)
            self.log.mark_produced(self.group, sorted(in_topic, key=_key))
        return [PRODUCE if r.new or (not r.produced and r.position not in in_topic)
                else (RECORDED if r.produced else IN_TOPIC) for r in rows]

    def mark_produced(self, positions: Sequence[KafkaPosition]) -> int:
        """The broker acked these dead letters: never produce them again."""
        return self.log.mark_produced(self.group, positions)

    def _look_up(self, rows: Sequence[DeadLetterRow]) -> set[KafkaPosition]:
        now = datetime.now(timezone.utc)
        since = min((r.recorded_at or now) for r in rows) - timedelta(seconds=self.lookback_s)
        found = find_dead_letters(self.bootstrap, self.topic, self.group, [r.position for r in rows], since,
                                  self.timeout_s)
        log.warning("dead letters of %d position(s) recorded but not marked produced (a crash): %d found in %s, "
                    "%d to produce", len(rows), len(found), self.topic, len(rows) - len(found))
        return found


def _key(p: KafkaPosition) -> tuple:
    return p.topic, p.partition, p.offset
