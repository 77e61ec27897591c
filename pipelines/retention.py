"""May a dead-letter row be pruned? Only once Kafka has deleted its source record: a row pruned
while its record can still be re-read would be dead-lettered again (`sealstream pipeline
deadletters prune` asks `prune_refusal` first, `--force` skips it).

Kafka deletes whole segments: a record is gone at most ``retention.ms`` after the newest record
of its segment, which rolls after ``segment.ms``; a topic that keeps records forever (retention
-1, or compaction without deletion) never lets a row go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sealstream._kafka_config import KafkaLike, as_endpoint

__all__ = ["TopicRetention", "flag_duration", "prune_refusal", "topic_retention"]

_KAFKA_TIMEOUT_S = 10.0


def flag_duration(seconds: int) -> str:
    """`seconds` as an --older-than value: 4200 -> "70m", 1209600 -> "14d"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ms(ms: int) -> str:
    return flag_duration(ms // 1000) if ms > 0 and ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True)
class TopicRetention:
    """How long the broker keeps a source topic's records: at most retention.ms past the newest
    record of their segment, which rolls after segment.ms (Kafka deletes whole segments)."""

    topic: str
    retention_ms: int
    segment_ms: int
    cleanup_policy: str

    @property
    def forever(self) -> bool:
        """retention.ms -1, or compaction without deletion: a record may be re-read at any age."""
        return self.retention_ms < 0 or "delete" not in self.cleanup_policy.replace(" ", "").split(",")

    @property
    def min_older_than_s(self) -> int:
        return -(-(self.retention_ms + self.segment_ms) // 1000)

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "retention_ms": self.retention_ms, "segment_ms": self.segment_ms}


def topic_retention(bootstrap: KafkaLike, topics: list[str]) -> dict[str, TopicRetention | None]:
    """`topics`' deletion settings as the broker reports them (None: no such topic).
    Raises KafkaException or TimeoutError when the broker cannot be asked."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(as_endpoint(bootstrap).confluent({"log_level": 0}))  # errors are ours to say
    futures = admin.describe_configs([ConfigResource("topic", t) for t in topics],
                                     request_timeout=_KAFKA_TIMEOUT_S)
    found: dict[str, TopicRetention | None] = {}
    for res, future in futures.items():
        try:
            c = future.result(timeout=_KAFKA_TIMEOUT_S + 5)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            found[res.name] = None
            continue
        found[res.name] = TopicRetention(res.name, int(c["retention.ms"].value), int(c["segment.ms"].value),
                                          c["cleanup.policy"].value)
    return found


def prune_refusal(bootstrap: KafkaLike, topics: list[str], older_than: timedelta) -> dict[str, Any] | None:
    """Why pruning rows of source `topics` older than `older_than` is unsafe, or None: a row
    may go only once Kafka deleted its source record (a re-read would dead-letter it again)."""
    from confluent_kafka import KafkaException

    try:
        kept = topic_retention(bootstrap, topics)
    except (KafkaException, TimeoutError) as exc:
        return {"error": "kafka-unavailable", "bootstrap": str(bootstrap), "topics": topics,
                "message": f"refusing to prune: cannot read the retention of source topic(s) {', '.join(topics)} "
                           f"from Kafka at {bootstrap} ({exc}); use --force only if these topics' records are "
                           "known to be gone (topic deleted, retention passed)"}
    unknown = sorted(t for t, r in kept.items() if r is None)
    known = sorted((r for r in kept.values() if r is not None), key=lambda r: r.topic)
    forever = [r for r in known if r.forever]
    if forever:
        r = forever[0]
        return {"error": "source-retained-forever", **r.to_json(), "cleanup_policy": r.cleanup_policy,
                "message": f"refusing to prune: source topic {r.topic} keeps its records forever "
                           f"(retention.ms={r.retention_ms}, cleanup.policy={r.cleanup_policy}), so a "
                           "re-read position would be dead-lettered again at any age; --force prunes anyway"}
    if unknown:
        return {"error": "source-topic-unknown", "topic": unknown[0], "bootstrap": str(bootstrap),
                "message": f"refusing to prune: source topic {unknown[0]} does not exist on Kafka at {bootstrap} "
                           "(wrong cluster? check SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS); if the topic was deleted, "
                           "its records cannot be re-read: use --force"}
    inside = [r for r in known if older_than.total_seconds() < r.min_older_than_s]
    if inside:
        r = max(inside, key=lambda r: r.min_older_than_s)  # the cutoff that satisfies every topic
        need = flag_duration(r.min_older_than_s)
        return {"error": "cutoff-inside-retention", **r.to_json(), "min_older_than_s": r.min_older_than_s,
                "message": f"refusing to prune: --older-than {flag_duration(int(older_than.total_seconds()))} "
                           f"is inside the retention of source topic {r.topic} (retention.ms={r.retention_ms} "
                           f"({_ms(r.retention_ms)}) + segment.ms={r.segment_ms} ({_ms(r.segment_ms)})): its "
                           f"records may still be re-read and dead-lettered again; use --older-than {need} or more"}
    return None
