"""Kafka plumbing of the pipeline benchmark (and the resilience tests): partition end offsets,
pinning a consumer group's start, and following ``iiot.sealed`` for one set of devices.

Kept apart from the consumers so the trusted worker and the baseline are
started, positioned and observed the same way.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

__all__ = ["end_offsets", "pin_offsets", "SealFollower"]


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """High watermark of every partition of `topics`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        md = c.list_topics(timeout=10)
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in topics for p in md.topics[t].partitions}
    finally:
        c.close()


def pin_offsets(bootstrap: str, group: str, offsets: dict, timeout: float = 40.0) -> None:
    """Commit `offsets` for the (empty) consumer `group`, so its members start exactly there.

    Retried until `timeout`: a member that just left may still hold the group.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    deadline = time.monotonic() + timeout
    while True:
        try:
            res = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group].result(10)
            errors = [tp.error for tp in res.topic_partitions if tp.error is not None]
            if errors:
                raise RuntimeError(f"offsets not altered: {errors[0]}")
            return
        except Exception:  # noqa: BLE001 - retried until the deadline, then raised
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@dataclass(frozen=True)
class SealSeen:
    """First sighting of one statement's seal: its hash, device ts (ms) and the seal's Kafka timestamp (ms)."""

    statement_hash: str
    device_ts_ms: int
    sealed_ms: int


class SealFollower:
    """Reads ``iiot.sealed`` from given offsets, keeping the first seal of each statement of `devices`."""

    def __init__(self, bootstrap: str, start: dict[tuple[str, int], int], devices: set[str]) -> None:
        self.devices = {d.encode() for d in devices}
        self.seen: dict[str, SealSeen] = {}
        self.repeats = 0
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                            "enable.auto.commit": False, "fetch.max.bytes": 64 * 1024 * 1024})
        self._c.assign([TopicPartition(t, p, o) for (t, p), o in start.items()])

    def poll(self, seconds: float = 0.5) -> int:
        """Read what arrived (for up to `seconds`); returns how many statements have been seen."""
        deadline = time.monotonic() + seconds
        while True:
            msgs = self._c.consume(1000, max(0.0, min(0.2, deadline - time.monotonic())))
            for m in msgs:
                if m.error() is not None or m.key() not in self.devices:
                    continue
                doc = json.loads(m.value())
                h = doc["statement_hash"]
                if h in self.seen:
                    self.repeats += 1
                else:
                    self.seen[h] = SealSeen(h, int(doc["ts"]), m.timestamp()[1])
            if not msgs and time.monotonic() >= deadline:
                return len(self.seen)

    def close(self) -> None:
        self._c.close()
