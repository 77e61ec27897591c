"""The alert outbox relay: unsent ``alert_outbox`` rows -> Kafka, each committed to its topic once.

A writer puts an alert in ``alert_outbox`` in the same PostgreSQL
transaction as its cause (`storage.outbox`); `AlertRelay.run_once` (blocking;
the verifier agent calls it from a timer and after each alert) delivers them:

1. the producer is *transactional* (idempotent, ``acks=all``) with a
   ``transactional.id`` fixed per database (`transactional_id`, from the
   outbox id migration 0005 stores); `init_transactions` fences any earlier
   relay of this database and resolves its unfinished transaction (aborted,
   or completed if its commit had started), so after it, what an earlier
   relay sent is final;
2. unsent rows that already had an attempt (a crash or error between the
   send and the mark: outcome unknown) are looked up in their topic by the
   ``ss-alert-id`` header, reading only committed messages, from the earliest
   attempt (minus `lookback_s`) to the end (`find_alerts`); found ones are
   marked sent, not sent again;
3. the others are marked attempted (committed), produced in one Kafka
   transaction, committed, and marked sent.

Any failure (broker unreachable, a lookup that cannot reach the topic's end,
PostgreSQL down) records the error on the rows, drops the producer and backs
off (`backoff_s`, 0.5 s, doubling to `max_backoff_s`, 30 s); the next round starts again at 1 with a new
producer.  A relay that another one fenced fails its commit and does the same.
So each alert is committed to its topic exactly once, as seen by consumers
reading with ``isolation.level=read_committed`` (librdkafka's default; an
aborted attempt is visible to ``read_uncommitted`` readers, which should
de-duplicate by ``ss-alert-id``, also the message key's stable companion).
A session advisory lock (`AlertOutbox.relay_lock`) keeps to one relay per
database at a time.

Metrics (`OutboxMetrics`, in the caller's registry):
``sealstream_alert_outbox_backlog`` (unsent rows),
``sealstream_alert_outbox_oldest_age_seconds``,
``sealstream_alert_outbox_sent_total``, ``sealstream_alert_outbox_send_failures_total``,
``sealstream_alert_outbox_found_in_topic_total`` (unknown outcomes resolved as sent).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from storage.outbox import AlertOutbox, OutboxRow
from sealstream._kafka_config import KafkaLike, as_endpoint

__all__ = ["AlertRelay", "OutboxMetrics", "RelayResult", "OutboxLookupError", "find_alerts", "transactional_id",
           "H_ALERT_ID"]

log = logging.getLogger("sealstream.pipeline.outbox")
H_ALERT_ID = "ss-alert-id"


class OutboxLookupError(ConnectionError):
    """A topic could not be scanned to its end (the round is retried)."""


class OutboxMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.backlog = Gauge("sealstream_alert_outbox_backlog", "Alerts in the outbox not yet sent", registry=r)
        self.oldest_age = Gauge("sealstream_alert_outbox_oldest_age_seconds",
                                "Age of the oldest unsent alert in the outbox (0: none)", registry=r)
        self.sent = Counter("sealstream_alert_outbox_sent", "Alerts sent from the outbox (committed)", registry=r)
        self.failures = Counter("sealstream_alert_outbox_send_failures",
                                "Relay rounds that failed (nothing of theirs committed, or unknown)", registry=r)
        self.found = Counter("sealstream_alert_outbox_found_in_topic",
                             "Alerts with an unknown send outcome found already committed", registry=r)


def transactional_id(outbox_id: str) -> str:
    """One per database: relays of the same outbox fence each other."""
    return "sealstream-outbox-" + hashlib.sha256(outbox_id.encode()).hexdigest()[:24]


def _header(headers: Sequence[tuple[str, Optional[bytes]]], name: str) -> Optional[bytes]:
    for k, v in headers:
        if k == name:
            return v
    return None


def find_alerts(bootstrap: KafkaLike, topics: Sequence[str], alert_ids: Sequence[str], since: datetime,
                timeout_s: float = 30.0) -> set[str]:
    """Which of `alert_ids` are in a committed message of `topics` (``ss-alert-id`` header), every
    partition scanned from ``offsets_for_times(since)`` to its end (blocking)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    want = {a.encode() for a in alert_ids}
    found: set[str] = set()
    deadline = time.monotonic() + timeout_s
    c = Consumer({**as_endpoint(bootstrap, "verifier").confluent(),
                  "group.id": f"sealstream-outbox-lookup-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "enable.partition.eof": False,
                  "isolation.level": "read_committed", "log_level": 4})
    try:
        ms = int(since.timestamp() * 1000)
        todo: dict[tuple[str, int], int] = {}  # (topic, partition) -> end offset (exclusive)
        assign = []
        meta = c.list_topics(timeout=timeout_s)
        for topic in sorted(set(topics)):
            t = meta.topics.get(topic)
            if t is None or t.error is not None:
                raise OutboxLookupError(f"topic {topic!r} is not there")
            starts = c.offsets_for_times([TopicPartition(topic, p, ms) for p in sorted(t.partitions)],
                                         timeout=timeout_s)
            for tp in starts:
                end = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout_s,
                                              cached=False)[1]
                if 0 <= tp.offset < end:  # -1: nothing at or after `since`
                    todo[(topic, tp.partition)] = end
                    assign.append(TopicPartition(topic, tp.partition, tp.offset))
        if not assign:
            return found
        c.assign(assign)
        while todo and len(found) < len(want):
            if time.monotonic() > deadline:
                raise OutboxLookupError(f"{', '.join(sorted(set(topics)))}: scan not finished within {timeout_s:g} s")
            for m in c.consume(500, 0.5):
                if m.error() is not None:
                    raise OutboxLookupError(f"{m.topic()}: {m.error()}")
                aid = _header(m.headers() or [], H_ALERT_ID)
                if aid in want:
                    found.add(aid.decode())
                tp = (m.topic(), m.partition())
                if tp in todo and m.offset() >= todo[tp] - 1:
                    del todo[tp]
            # gaps (transaction markers, aborted messages) leave the position past the last message read
            for tp in c.position([TopicPartition(t, p) for t, p in todo]):
                if tp.offset >= todo[(tp.topic, tp.partition)]:
                    del todo[(tp.topic, tp.partition)]
        return found
    except KafkaException as exc:
        raise OutboxLookupError(str(exc)) from exc
    finally:
        c.close()


@dataclass(frozen=True)
class RelayResult:
    """One round: ``sent`` rows committed now, ``found`` resolved as already sent, ``error`` when it
    failed (``skipped``: backing off, or another relay holds the lock)."""

    sent: int = 0
    found: int = 0
    error: Optional[str] = None
    skipped: bool = False


class AlertRelay:
    """Send the outbox's unsent rows to Kafka, each committed once (see the module doc; blocking,
    one round at a time per instance)."""

    def __init__(self, outbox: AlertOutbox, bootstrap: KafkaLike, *, metrics: Optional[OutboxMetrics] = None,
                 batch_max: int = 100, lookback_s: float = 60.0, timeout_s: float = 30.0,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 producer_config: Optional[dict[str, Any]] = None) -> None:
        self.outbox = outbox
        self.bootstrap = bootstrap
        self.metrics = metrics or OutboxMetrics()
        self.batch_max, self.lookback_s, self.timeout_s = batch_max, lookback_s, timeout_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.producer_config = dict(producer_config or {})
        self._producer: Any = None
        self._txid: Optional[str] = None
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0
        #: test hooks, called in a round with the rows being sent: after the produce (before the
        #: Kafka commit) and after the Kafka commit (before the mark); raising there simulates a crash
        self.before_commit: Optional[Callable[[list[OutboxRow]], None]] = None
        self.after_commit: Optional[Callable[[list[OutboxRow]], None]] = None

    # -- producer --------------------------------------------------------------

    def _start_producer(self) -> Any:
        from confluent_kafka import KafkaException, Producer

        if self._txid is None:
            self._txid = transactional_id(self.outbox.instance_id())
        conf = {**as_endpoint(self.bootstrap, "verifier").confluent(), "transactional.id": self._txid,
                "enable.idempotence": True, "acks": "all", "linger.ms": 5, "transaction.timeout.ms": 60_000,
                "log_level": 3,
                **self.producer_config}
        p = Producer(conf)
        try:
            p.init_transactions(self.timeout_s)
        except KafkaException as exc:
            raise ConnectionError(f"init_transactions on {self.bootstrap}: {exc}") from None
        return p

    def close(self) -> None:
        """Drop the producer (an unfinished transaction is resolved by the next relay's init)."""
        self._producer = None

    # -- one round -------------------------------------------------------------

    def run_once(self, *, force: bool = False) -> RelayResult:
        """Deliver what is unsent (up to `batch_max` rows per transaction, until the outbox is
        empty); refresh the backlog gauges.  Never raises for Kafka or database trouble: the
        result carries the error and the next round (after the backoff, unless `force`) retries."""
        with self._lock:
            if not force and time.monotonic() < self._retry_at:
                return RelayResult(skipped=True, error="backing off")
            sent = found = 0
            try:
                with self.outbox.relay_lock() as held:
                    if not held:
                        return RelayResult(skipped=True, error="another relay holds the outbox lock")
                    for _ in range(1000):  # bounded: 1000 transactions per round
                        s, f, more = self._round()
                        sent, found = sent + s, found + f
                        if not more:
                            break
                self._failures, self._retry_at = 0, 0.0
                return RelayResult(sent, found)
            except Exception as exc:  # noqa: BLE001 - Kafka/PostgreSQL trouble: back off and retry
                self._producer = None
                self._failures += 1
                delay = min(self.backoff_s * 2 ** min(self._failures - 1, 16), self.max_backoff_s)
                self._retry_at = time.monotonic() + delay
                self.metrics.failures.inc()
                log.warning("alert outbox relay failed (%d in a row), retrying in %.1f s: %s", self._failures,
                            delay, exc)
                return RelayResult(sent, found, error=str(exc) or type(exc).__name__)
            finally:
                self._refresh_backlog()

    def _refresh_backlog(self) -> None:
        try:
            b = self.outbox.backlog()
        except Exception as exc:  # noqa: BLE001 - a gauge refresh never fails a round
            log.debug("outbox backlog not read: %s", exc)
            return
        self.metrics.backlog.set(b.unsent)
        age = 0.0 if b.oldest is None else (datetime.now(timezone.utc) - b.oldest).total_seconds()
        self.metrics.oldest_age.set(max(age, 0.0))

    def _round(self) -> tuple[int, int, bool]:
        rows = self.outbox.pending(self.batch_max)
        if not rows:
            return 0, 0, False
        if self._producer is None:
            self._producer = self._start_producer()  # fences and resolves earlier relays first
        found_rows: list[OutboxRow] = []
        unknown = [r for r in rows if r.attempts > 0]
        if unknown:
            since = min(r.attempted_at or r.created_at for r in unknown) - timedelta(seconds=self.lookback_s)
            ids = find_alerts(self.bootstrap, [r.message.topic for r in unknown],
                              [r.message.alert_id for r in unknown], since, self.timeout_s)
            found_rows = [r for r in unknown if r.message.alert_id in ids]
            self.outbox.mark_sent([r.id for r in found_rows])
            self.metrics.found.inc(len(found_rows))
            if unknown:
                log.warning("alert outbox: %d alert(s) with an unknown send outcome, %d already in the topic",
                            len(unknown), len(found_rows))
        done = {r.id for r in found_rows}
        todo = [r for r in rows if r.id not in done]
        if todo:
            self._send(todo)
        return len(todo), len(found_rows), len(rows) == self.batch_max

    def _send(self, rows: list[OutboxRow]) -> None:
        from confluent_kafka import KafkaException

        ids = [r.id for r in rows]
        self.outbox.mark_attempted(ids)
        p = self._producer
        try:
            p.begin_transaction()
            for r in rows:
                m = r.message
                headers = [(k, v.encode()) for k, v in m.headers] + [(H_ALERT_ID, m.alert_id.encode())]
                p.produce(m.topic, key=m.key, value=m.value, headers=headers)
            if self.before_commit is not None:
                self.before_commit(rows)
            p.commit_transaction(self.timeout_s)
        except KafkaException as exc:
            self._record_failure(ids, f"send: {exc}")
            raise ConnectionError(f"sending {len(rows)} alert(s): {exc}") from None
        except Exception as exc:
            self._record_failure(ids, f"send: {exc}")
            raise
        if self.after_commit is not None:
            self.after_commit(rows)
        self.outbox.mark_sent(ids)
        self.metrics.sent.inc(len(rows))
        log.info("alert outbox: %d alert(s) sent", len(rows))

    def _record_failure(self, ids: list[int], error: str) -> None:
        try:
            self.outbox.mark_failed(ids, error)
        except Exception as exc:  # noqa: BLE001 - the round fails anyway
            log.debug("outbox error not recorded: %s", exc)
