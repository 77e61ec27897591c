"""Consumer lag of the worker's group: ``sealstream_pipeline_consumer_lag{group, topic, partition}``.

Lag is the partition's high watermark (the offset the next record will get)
minus the group's committed offset (the next record the group will read), so
it counts records written but not yet processed *and acknowledged*. It is read
from the broker at scrape time (a collector, no bookkeeping in the agents) by
a consumer that never subscribes, so it does not join the group. A partition
the group never committed counts from where a new group starts
(``earliest``: the low watermark, ``latest``: nothing). Several workers of one
group report the same values: dashboards take ``max by (topic, partition)``.
Reads are cached for ``ttl_s`` so scrapers cannot hammer the broker; a broker
that does not answer yields no samples (and a warning), never a scrape error.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sealstream._kafka_config import KafkaLike, as_endpoint

__all__ = ["ConsumerLag", "partition_lag", "LAG_METRIC"]

log = logging.getLogger("sealstream.pipeline")
LAG_METRIC = "sealstream_pipeline_consumer_lag"


def partition_lag(committed: int, low: int, high: int, offset_reset: str = "earliest") -> int:
    """Records of one partition the group has not committed yet (``committed < 0``: no commit)."""
    if committed < 0:
        committed = low if offset_reset == "earliest" else high
    return max(0, high - max(committed, low))


class ConsumerLag(Collector):
    """Collector of the lag of ``group`` on ``topics`` (confluent-kafka, read at scrape time)."""

    def __init__(self, bootstrap: KafkaLike, group: str, topics: Sequence[str], offset_reset: str = "earliest",
                 ttl_s: float = 2.0, timeout_s: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = tuple(topics)
        self.offset_reset = offset_reset
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._consumer: Any = None  # a confluent_kafka Consumer, made on first use
        self._at = float("-inf")
        self._lags: Mapping[tuple[str, int], int] = {}

    def measure(self) -> dict[tuple[str, int], int]:
        """``{(topic, partition): lag}`` read from the broker now."""
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:
            self._consumer = Consumer(as_endpoint(self.bootstrap, "pipeline").confluent({
                "group.id": self.group, "enable.auto.commit": False, "client.id": f"{self.group}-lag"}))
        c = self._consumer
        meta = c.list_topics(timeout=self.timeout_s)
        tps = [TopicPartition(t, p) for t in self.topics if t in meta.topics for p in sorted(meta.topics[t].partitions)]
        out: dict[tuple[str, int], int] = {}
        for tp in c.committed(tps, timeout=self.timeout_s):
            low, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=self.timeout_s,
                                                cached=False)
            out[(tp.topic, tp.partition)] = partition_lag(tp.offset, low, high, self.offset_reset)
        return out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                try:
                    self._lags = self.measure()
                except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Kafka is down
                    log.warning("consumer lag not read: %s", exc)
                    self._lags = {}
                self._at = time.monotonic()
            lags = dict(self._lags)
        g = GaugeMetricFamily(LAG_METRIC, "Records in the partition not yet committed by the worker group.",
                              labels=["group", "topic", "partition"])
        for (topic, partition), lag in sorted(lags.items()):
            g.add_metric([self.group, topic, str(partition)], float(lag))
        yield g

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
