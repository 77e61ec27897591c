"""The sender thread: spool -> idempotent Kafka producer -> delete on the broker's ack.

It reads the spool in id order (a cursor), keeps at most `max_inflight` messages in librdkafka at a
time (an outage never moves the spool into memory), and deletes what Kafka acknowledged every loop.
librdkafka retries forever (`message.timeout.ms` 0) with idempotence, so within one producer
session nothing is duplicated or reordered. A permanent refusal (e.g. a message too large for the
broker) moves that message to the spool's ``rejected`` table (counted, logged, never dropped); a
fatal producer error recreates the producer and resends everything still spooled (a record acked
but not yet deleted then reaches Kafka twice: the pipeline stores it once and dead-letters the
copy as a ``replay``). On stop it sends what was spooled meanwhile (the agent's final flush) and
waits up to `drain_s` for what is in flight; what is not acked by then stays spooled.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from .metrics import EdgeMetrics
from .sdk import Producer
from .spool import Spool

__all__ = ["Sender"]

log = logging.getLogger(__name__)


class Sender(threading.Thread):
    def __init__(self, spool: Spool, make_producer: Callable[[], Producer], metrics: EdgeMetrics, *,
                 max_inflight: int = 20_000, max_inflight_bytes: int = 64 << 20, drain_s: float = 10.0) -> None:
        super().__init__(name="edge-sender", daemon=True)
        self.spool, self.make_producer, self.metrics = spool, make_producer, metrics
        self.max_inflight, self.max_inflight_bytes, self.drain_s = max_inflight, max_inflight_bytes, drain_s
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._acked: list[tuple[int, int, str]] = []
        self._failed: list[tuple[int, object]] = []
        self._inflight: dict[int, int] = {}
        self.last_send_ms: Optional[int] = None
        self.sent = 0
        self.error: Optional[BaseException] = None

    def stop(self) -> None:
        self._halt.set()

    def _callback(self, id_: int, size: int, topic: str):
        def done(err, _partition, _offset) -> None:
            with self._lock:
                if err is None:
                    self._acked.append((id_, size, topic))
                else:
                    self._failed.append((id_, err))
        return done

    def _settle(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
            failed, self._failed = self._failed, []
        if acked:
            self.spool.delete((i, s) for i, s, _ in acked)
            for i, _s, topic in acked:
                self._inflight.pop(i, None)
                self.metrics.sent.labels(topic).inc()
            self.sent += len(acked)
            self.last_send_ms = int(time.time() * 1000)
            self.metrics.last_send.set(self.last_send_ms / 1000)
            self.metrics.kafka_up.set(1)
        self._fatal = getattr(self, "_fatal", False)
        for id_, err in failed:
            self._inflight.pop(id_, None)
            reason = _reason(err)
            self.metrics.send_errors.labels(reason).inc()
            fatal = bool(getattr(err, "fatal", lambda: False)())
            retriable = bool(getattr(err, "retriable", lambda: True)())
            if fatal or retriable:
                self._fatal = True
                log.warning("kafka delivery failed; the producer is recreated and the spool resent",
                            extra={"reason": reason, "id": id_})
            else:
                self.spool.reject(id_, reason)
                self.metrics.rejected.labels(reason).inc()
                log.error("kafka refused a message for good; kept in the spool's rejected table",
                          extra={"reason": reason, "id": id_, "spool": str(self.spool.path)})

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
            log.exception("the sender stopped")

    def _loop(self) -> None:
        producer = self.make_producer()
        cursor = 0
        self._fatal = False
        while not self._halt.is_set():
            room = self.max_inflight - len(self._inflight)
            inflight_bytes = sum(self._inflight.values())
            rows = []
            if room > 0 and inflight_bytes < self.max_inflight_bytes and not self._fatal:
                rows = self.spool.pending(cursor, min(room, 1000))
                for r in rows:
                    self._inflight[r.id] = r.size
                    producer.produce(r.message, self._callback(r.id, r.size, r.message.topic))
                    cursor = r.id
            producer.poll(0 if rows else 0.05)
            self._settle()
            if self._fatal and not self._inflight:
                producer.flush(1)
                producer = self.make_producer()
                cursor, self._fatal = 0, False
            if self._inflight and not rows:
                self.metrics.kafka_up.set(0 if self._stalled() else 1)
        # stopping: what was spooled last (the agent's final flush of every open window) goes out too,
        # within the same drain time; what Kafka does not ack by then stays spooled for the next start
        if not self._fatal:
            room = max(0, self.max_inflight - len(self._inflight))
            for r in self.spool.pending(cursor, room) if room else []:
                self._inflight[r.id] = r.size
                producer.produce(r.message, self._callback(r.id, r.size, r.message.topic))
        deadline = time.monotonic() + self.drain_s
        while self._inflight and time.monotonic() < deadline:
            producer.poll(0.1)
            self._settle()
        self._settle()

    def _stalled(self) -> bool:
        """Messages wait for more than 5 s since the last ack (a broker away)."""
        return self.last_send_ms is None or time.time() * 1000 - self.last_send_ms > 5000


def _reason(err: object) -> str:
    try:
        return str(err.name()).lower().replace("_", "-")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return "unknown"
