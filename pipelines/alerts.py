"""The alerts bridge: the ledger's audit events -> the Kafka topic ``iiot.alerts``, each exactly once.

`AlertsBridge.run()` follows ``GET /events`` (`ledger.events.follow_events`,
with node failover) and publishes one Kafka message per event:

* **key**: the org of the operation that raised it (UTF-8), so one org's
  alerts stay in order in one partition;
* **value**: JSON (UTF-8, sorted keys) ``{"v": 1, "chain": chain id, "seq",
  "id": "height-index-n", "height", "index", "n", "rule", "version", "kind",
  "rule_org", "severity", "message", "detail", "time" (block time, ms),
  "tx_id" (hex), "submitter", "operation": {org, operator, system, op, action,
  params, at}, "key" (the state key that proves it), "verified_at"}``;
* **headers**: ``ss-chain``, ``ss-event-seq`` (decimal), ``ss-event-id``,
  ``ss-rule``, ``ss-severity``; the message timestamp is the block time.

No loss, no duplicates across restarts, without a separate offset store:

1. the producer is *transactional* with a fixed ``transactional.id`` per
   (chain, topic) (`transactional_id`); `init_transactions` at start-up
   fences any earlier instance and aborts its unfinished transaction, so what
   a killed bridge was publishing is either committed whole or gone;
2. then the resume point is read from the topic itself: the highest
   ``ss-event-seq`` of this chain among committed messages
   (``isolation.level=read_committed``), scanning each partition backwards
   from its end (`last_published_seq`);
3. events after that seq are published in transactions of up to
   `batch_max`; events are numbered in commit order on every node, and a
   transaction commits before the next begins, so the highest committed seq
   means every lower one is committed too.

A second bridge for the same chain and topic fences the first (which then
stops with `BridgeFenced`): one publisher at a time. Metrics (own registry):
``sealstream_alerts_published_total``, ``sealstream_alerts_transactions_total``,
``sealstream_alerts_last_seq``, ``sealstream_alerts_last_height``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from sealstream._kafka_config import KafkaLike, as_endpoint
from sealstream.topics import ALERTS

if TYPE_CHECKING:
    from ledger.client import AsyncLedgerClient
    from ledger.events import AuditEvent

__all__ = [
    "ALERTS_TOPIC",
    "AlertsBridge",
    "AlertsBridgeError",
    "BridgeFenced",
    "ResumeError",
    "PublishError",
    "alert_value",
    "alert_headers",
    "last_published_seq",
    "transactional_id",
]

log = logging.getLogger("sealstream.pipelines.alerts")

ALERTS_TOPIC = ALERTS
H_CHAIN, H_SEQ, H_ID, H_RULE, H_SEVERITY = "ss-chain", "ss-event-seq", "ss-event-id", "ss-rule", "ss-severity"
_SCAN_PAGE = 1000


class AlertsBridgeError(Exception):
    """Base of the bridge's errors."""


class ResumeError(AlertsBridgeError):
    """The resume point could not be read from the topic."""


class PublishError(AlertsBridgeError):
    """A transaction could not be committed (the bridge stops; a restart resumes)."""


class BridgeFenced(PublishError):
    """Another bridge with the same transactional id took over."""


def _fenced_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


def transactional_id(chain_id: str, topic: str) -> str:
    """One per (chain, topic): a restarted bridge fences its predecessor."""
    digest = hashlib.sha256(f"{chain_id}\0{topic}".encode()).hexdigest()[:24]
    return f"sealstream-alerts-{digest}"


def alert_value(ev: "AuditEvent", chain_id: str) -> bytes:
    return json.dumps({"v": 1, "chain": chain_id, **ev.to_json()}, sort_keys=True,
                      separators=(",", ":")).encode()


def alert_headers(ev: "AuditEvent", chain_id: str) -> list[tuple[str, bytes]]:
    return [(H_CHAIN, chain_id.encode()), (H_SEQ, str(ev.seq).encode()), (H_ID, ev.id.encode()),
            (H_RULE, ev.rule.encode()), (H_SEVERITY, ev.severity.encode())]


def _header(msg: Any, name: str) -> bytes | None:
    for k, v in msg.headers() or ():
        if k == name:
            return v
    return None


def last_published_seq(bootstrap: KafkaLike, topic: str, chain_id: str, timeout_s: float = 30.0) -> int | None:
    """The highest ``ss-event-seq`` of `chain_id` committed to `topic`, or None if none.

    Reads each partition backwards in pages from its end, stopping at the
    first page that holds a message of this chain (seqs only grow with
    offsets within a partition)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer(as_endpoint(bootstrap, "alerts").confluent({
        "group.id": f"sealstream-alerts-resume-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": False}))
    want = chain_id.encode()
    best: int | None = None
    deadline = time.monotonic() + timeout_s
    try:
        meta = c.list_topics(topic, timeout=timeout_s)
        t = meta.topics.get(topic)
        if t is None or t.error is not None:
            raise ResumeError(f"topic {topic!r} does not exist; create it (`sealstream stack up` does)")
        for p in sorted(t.partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
            end = high
            while end > low:
                start = max(low, end - _SCAN_PAGE)
                found = None
                c.assign([TopicPartition(topic, p, start)])
                while True:
                    if time.monotonic() > deadline:
                        raise ResumeError(f"reading {topic}[{p}] {start}..{end} took over {timeout_s} s")
                    msgs = c.consume(500, 0.5)
                    for m in msgs:
                        if m.error() is not None:
                            raise ResumeError(f"reading {topic}[{p}]: {m.error()}")
                        if m.offset() < end and _header(m, H_CHAIN) == want:
                            found = int(_header(m, H_SEQ) or b"-1")
                    pos = c.position([TopicPartition(topic, p)])[0].offset
                    if pos >= end or any(m.offset() >= end - 1 for m in msgs):
                        break
                if found is not None:
                    best = found if best is None else max(best, found)
                    break
                end = start
        return best
    except KafkaException as exc:
        raise ResumeError(f"reading the resume point from {topic!r}: {exc}") from None
    finally:
        c.close()


@dataclass(frozen=True)
class BridgeStatus:
    resumed_after: int | None
    published: int
    last_seq: int | None
    last_height: int | None


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.published = Counter("sealstream_alerts_published", "audit events published to the alerts topic",
                                 ["severity"], registry=r)
        self.transactions = Counter("sealstream_alerts_transactions", "Kafka transactions committed", registry=r)
        self.last_seq = Gauge("sealstream_alerts_last_seq", "seq of the last event published", registry=r)
        self.last_height = Gauge("sealstream_alerts_last_height", "ledger height of the last event published",
                                 registry=r)


class AlertsBridge:
    """Follow the ledger's audit events and publish each to Kafka exactly once (see the module doc)."""

    def __init__(self, client: "AsyncLedgerClient", bootstrap: KafkaLike, topic: str = ALERTS_TOPIC, *,
                 from_height: int = 0, verify: bool = False, batch_max: int = 100,
                 registry: CollectorRegistry | None = None,
                 on_publish: "Callable[[list[AuditEvent]], None] | None" = None) -> None:
        self.client = client
        self.bootstrap = bootstrap
        self.topic = topic
        self.chain_id = client.genesis.chain_id
        self.from_height = from_height
        self.verify = verify
        self.batch_max = batch_max
        self.metrics = _Metrics(registry)
        self.resumed_after: int | None = None
        self.published = 0
        self.last: "AuditEvent | None" = None
        self._producer: Any = None
        self.on_publish = on_publish

    def status(self) -> BridgeStatus:
        return BridgeStatus(self.resumed_after, self.published, None if self.last is None else self.last.seq,
                            None if self.last is None else self.last.height)

    def _start_producer(self) -> None:
        from confluent_kafka import KafkaException, Producer

        p = Producer({**as_endpoint(self.bootstrap, "alerts").confluent(),
                      "transactional.id": transactional_id(self.chain_id, self.topic),
                      "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                      "transaction.timeout.ms": 60_000})
        try:
            p.init_transactions(30)
        except KafkaException as exc:
            raise PublishError(f"init_transactions on {self.bootstrap}: {exc}") from None
        self._producer = p

    def _publish(self, batch: list["AuditEvent"]) -> None:
        from confluent_kafka import KafkaError, KafkaException

        _FENCED_CODES = _fenced_codes()
        p = self._producer
        try:
            p.begin_transaction()
            for ev in batch:
                p.produce(self.topic, key=ev.org.encode(), value=alert_value(ev, self.chain_id),
                          headers=alert_headers(ev, self.chain_id), timestamp=ev.time)
            p.commit_transaction(30)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _FENCED_CODES:
                raise BridgeFenced("another alerts bridge for this chain took over") from None
            try:
                if isinstance(err, KafkaError) and err.txn_requires_abort():
                    p.abort_transaction(30)
            except KafkaException:
                pass
            raise PublishError(f"publishing {len(batch)} alerts: {exc}") from None

    async def run(self, stop: asyncio.Event | None = None, max_events: int | None = None) -> BridgeStatus:
        """Resume after the last published event and publish until `stop` is set
        (or `max_events` were published); raises `AlertsBridgeError` on failure."""
        stop = stop or asyncio.Event()
        await asyncio.to_thread(self._start_producer)
        try:
            self.resumed_after = await asyncio.to_thread(last_published_seq, self.bootstrap, self.topic,
                                                         self.chain_id)
            log.info("alerts bridge resuming", extra={"topic": self.topic, "chain": self.chain_id,
                                                      "after_seq": self.resumed_after})
            queue: asyncio.Queue = asyncio.Queue(maxsize=10 * self.batch_max)
            reader = asyncio.create_task(self._read(queue))
            stopper = asyncio.create_task(stop.wait())
            try:
                while max_events is None or self.published < max_events:
                    getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait({getter, stopper, reader}, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        if reader in done:
                            reader.result()  # raises the reader's error
                        break
                    batch = [getter.result()]
                    limit = self.batch_max if max_events is None else min(self.batch_max, max_events - self.published)
                    while len(batch) < limit and not queue.empty():
                        batch.append(queue.get_nowait())
                    await asyncio.to_thread(self._publish, batch)
                    self._published(batch)
            finally:
                for t in (reader, stopper):
                    t.cancel()
                await asyncio.gather(reader, stopper, return_exceptions=True)
        finally:
            p, self._producer = self._producer, None
            if p is not None:
                await asyncio.to_thread(p.flush, 10)
        return self.status()

    def _published(self, batch: list["AuditEvent"]) -> None:
        self.published += len(batch)
        self.last = batch[-1]
        m = self.metrics
        m.transactions.inc()
        for ev in batch:
            m.published.labels(ev.severity).inc()
        m.last_seq.set(self.last.seq)
        m.last_height.set(self.last.height)
        log.info("alerts published", extra={"count": len(batch), "last_seq": self.last.seq,
                                            "last_id": self.last.id})
        if self.on_publish is not None:
            self.on_publish(batch)

    async def _read(self, queue: asyncio.Queue) -> None:
        after = self.resumed_after
        async for ev in self.client.events(0 if after is not None else self.from_height, after,
                                           follow=True, verify=self.verify):
            await queue.put(ev)
