"""Kafka consumer-group positioning shared by the demo (and meant for the benchmark and tests):
the end offsets of topics, and pinning a new consumer group's start to chosen offsets, so a run
counts exactly the records produced after it began."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from sealstream._kafka_config import KafkaLike, as_endpoint

__all__ = ["end_offsets", "pin_offsets"]


def end_offsets(kafka: KafkaLike, topics: list[str] | tuple[str, ...]) -> dict[tuple[str, int], int]:
    """High watermark of every partition of `topics`."""
    c = Consumer(as_endpoint(kafka).confluent({"group.id": f"sealstream-probe-{uuid.uuid4().hex}"}))
    try:
        md = c.list_topics(timeout=10)
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in topics for p in md.topics[t].partitions}
    finally:
        c.close()


def pin_offsets(kafka: KafkaLike, group: str, offsets: dict, timeout: float = 40.0) -> None:
    """Commit `offsets` ({(topic, partition): offset}) for the (empty) consumer `group`, so its
    members start exactly there.  Retried until `timeout`: a member that just left may still hold it."""
    admin = AdminClient(as_endpoint(kafka).confluent({"log_level": 4}))  # not librdkafka's info chatter
    tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    deadline = time.monotonic() + timeout
    while True:
        try:
            res = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group].result(10)
            errors = [tp.error for tp in res.topic_partitions if tp.error is not None]
            if errors:
                raise RuntimeError(f"offsets not altered: {errors[0]}")
            return
        except Exception:  # retried until the deadline, then raised
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
