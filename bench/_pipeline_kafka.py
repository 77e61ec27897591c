"""Kafka plumbing of the pipeline benchmark (and the resilience tests): partition end offsets and
pinning a consumer group's start (from `pipelines.offsets`), and following ``iiot.sealed`` for one
set of devices.

Kept apart from the consumers so the trusted worker and the baseline are
started, positioned and observed the same way.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from pipelines.offsets import end_offsets, pin_offsets  # re-exported: one place positions consumer groups
from sealstream._kafka_config import KafkaLike, as_endpoint

__all__ = ["end_offsets", "pin_offsets", "SealFollower"]


@dataclass(frozen=True)
class SealSeen:
    """First sighting of one statement's seal: its hash, device ts (ms) and the seal's Kafka timestamp (ms)."""

    statement_hash: str
    device_ts_ms: int
    sealed_ms: int


class SealFollower:
    """Reads ``iiot.sealed`` from given offsets, keeping the first seal of each statement of `devices`."""

    def __init__(self, bootstrap: KafkaLike, start: dict[tuple[str, int], int], devices: set[str]) -> None:
        self.devices = {d.encode() for d in devices}
        self.seen: dict[str, SealSeen] = {}
        self.repeats = 0
        self._c = Consumer({**as_endpoint(bootstrap).confluent(), "group.id": f"bench-{uuid.uuid4().hex}",
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
