"""Kafka producers behind one small interface: confluent-kafka (librdkafka, the default) and kafka-python (fallback).

Both are idempotent (``acks=all``, ``enable.idempotence``) so a retry inside the
client never duplicates a record, and both accept records up to the video
topic's limit. Delivery reports (topic, partition, offset or error) come back
through a callback: on the client's I/O thread for kafka-python, from `poll`
for confluent-kafka. `open_sink` checks the broker answers and the topics exist,
and raises `ProducerError` with a one-sentence fix otherwise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from sealstream._kafka_config import KafkaEndpoint, factory_principal, kafka_endpoint
from sealstream.settings import Settings

from .signing import OutMessage

__all__ = ["Delivery", "Sink", "ProducerError", "CLIENTS", "open_sink", "default_client"]

log = logging.getLogger(__name__)
CLIENTS = ("kafka-python", "confluent")
_HEADROOM = 64 * 1024


class ProducerError(Exception):
    """Kafka cannot be used (unreachable, topic missing); the message names the fix."""


@dataclass(frozen=True)
class Delivery:
    """Where a record landed, or why it did not."""

    topic: str
    partition: int | None
    offset: int | None
    error: str | None = None


DeliveryCallback = Callable[[Delivery], None]


class Sink(Protocol):
    name: str

    def send(self, msg: OutMessage, on_delivery: DeliveryCallback) -> None: ...
    def poll(self) -> None: ...
    def flush(self, timeout: float) -> int: ...
    def close(self) -> None: ...


def _unreachable(settings: Settings, detail: object) -> ProducerError:
    return ProducerError(f"Kafka at {settings.kafka_bootstrap} is unreachable ({detail}); start it with "
                         f"`sealstream stack up` or set SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS")


def _missing(topics: Iterable[str]) -> ProducerError:
    return ProducerError(f"topic(s) {', '.join(sorted(topics))} do not exist; create them with `sealstream stack up`")


def _endpoint(settings: Settings, factory: str | None) -> KafkaEndpoint:
    """A factory's devices authenticate as its principal ``factory-<name>`` (security on: its
    certificate, made by `sealstream stack factory add`); without a factory, as the admin."""
    ep = kafka_endpoint(settings, factory_principal(factory) if factory else "admin")
    if ep.tls is not None and ep.tls.cert is not None and not ep.tls.cert.exists():
        raise ProducerError(f"no Kafka certificate for {ep.principal} ({ep.tls.cert}); enrol the factory with "
                            f"`sealstream stack factory add {factory}`, or give SEALSTREAM_KAFKA_CERT_FILE")
    return ep


class KafkaPythonSink:
    """kafka-python's `KafkaProducer`."""

    name = "kafka-python"

    def __init__(self, settings: Settings, topics: Iterable[str], factory: str | None = None) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        ep = _endpoint(settings, factory)
        try:
            self._p = KafkaProducer(
                **ep.kafka_python(), client_id=ep.principal, acks="all",
                enable_idempotence=True, linger_ms=5, batch_size=1024 * 1024,
                max_request_size=settings.kafka_video_max_message_bytes + _HEADROOM,
                max_block_ms=10_000, request_timeout_ms=30_000,
                bootstrap_timeout_ms=10_000)
        except KafkaError as exc:
            raise _unreachable(settings, exc) from None
        missing = set(topics) - self._known(topics)
        if missing:
            self._p.close(timeout=2)
            raise _missing(missing)

    def _known(self, topics: Iterable[str]) -> set[str]:
        from kafka.errors import KafkaError

        known = set()
        for t in topics:
            try:
                if self._p.partitions_for(t):
                    known.add(t)
            except KafkaError:
                pass
        return known

    def send(self, msg: OutMessage, on_delivery: DeliveryCallback) -> None:
        future = self._p.send(msg.topic, key=msg.key, value=msg.value, headers=list(msg.headers))
        topic = msg.topic
        future.add_callback(lambda md: on_delivery(Delivery(md.topic, md.partition, md.offset)))
        future.add_errback(lambda exc: on_delivery(Delivery(topic, None, None, f"{type(exc).__name__}: {exc}")))

    def poll(self) -> None:
        return None

    def flush(self, timeout: float) -> int:
        from kafka.errors import KafkaTimeoutError

        try:
            self._p.flush(timeout=timeout)
        except KafkaTimeoutError:
            return 1
        return 0

    def close(self) -> None:
        self._p.close(timeout=10)


class ConfluentSink:
    """confluent-kafka's `Producer` (librdkafka)."""

    name = "confluent"

    def __init__(self, settings: Settings, topics: Iterable[str], factory: str | None = None) -> None:
        from confluent_kafka import KafkaException, Producer

        ep = _endpoint(settings, factory)
        self._p = Producer({
            **ep.confluent(), "client.id": ep.principal, "acks": "all",
            "enable.idempotence": True, "linger.ms": 5, "batch.size": 1024 * 1024,
            "message.max.bytes": settings.kafka_video_max_message_bytes + _HEADROOM,
            "queue.buffering.max.kbytes": 128 * 1024, "logger": logging.getLogger("confluent_kafka"),
        })
        try:
            md = self._p.list_topics(timeout=10)
        except KafkaException as exc:
            raise _unreachable(settings, exc.args[0].str() if exc.args else exc) from None
        missing = set(topics) - set(md.topics)
        if missing:
            raise _missing(missing)

    def send(self, msg: OutMessage, on_delivery: DeliveryCallback) -> None:
        def report(err, m) -> None:  # librdkafka callback
            if err is not None:
                on_delivery(Delivery(m.topic(), None, None, str(err)))
            else:
                on_delivery(Delivery(m.topic(), m.partition(), m.offset()))

        while True:
            try:
                self._p.produce(msg.topic, value=msg.value, key=msg.key, headers=list(msg.headers),
                                on_delivery=report)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._p.poll(0.05)
        self._p.poll(0)

    def poll(self) -> None:
        self._p.poll(0)

    def flush(self, timeout: float) -> int:
        return self._p.flush(timeout)

    def close(self) -> None:
        self._p.flush(10)


def default_client(settings: Settings | None = None) -> str:
    """confluent-kafka when installed (3.8-22x kafka-python's msgs/s in bench/producers.py), else kafka-python.

    ``SEALSTREAM_DEVICES_KAFKA_CLIENT`` forces one.
    """
    wanted = settings.devices_kafka_client if settings is not None else "auto"
    if wanted != "auto":
        return wanted
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return "kafka-python"
    return "confluent"


def open_sink(settings: Settings, topics: Iterable[str], client: str | None = None,
              factory: str | None = None) -> Sink:
    """A connected producer for `topics` using `client` (see `CLIENTS`), as `factory`'s principal
    (``factory-<name>``; client id the same: Kafka ACLs bind the principal, not the client id)."""
    client = client or default_client(settings)
    topics = list(topics)
    started = time.monotonic()
    if client == "kafka-python":
        sink: Sink = KafkaPythonSink(settings, topics, factory)
    elif client == "confluent":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            raise ProducerError("confluent-kafka is not installed; run `.venv/bin/pip install confluent-kafka` "
                                "or use --client kafka-python") from None
        sink = ConfluentSink(settings, topics, factory)
    else:
        raise ProducerError(f"unknown Kafka client {client!r}; use one of {', '.join(CLIENTS)}")
    log.info("producer connected", extra={"client": client, "bootstrap": settings.kafka_bootstrap,
                                          "seconds": round(time.monotonic() - started, 3)})
    return sink
