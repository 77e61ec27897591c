"""The device-team SDK: sign a reading batch, build the Kafka message, produce it (the agent uses it too).

    from edge.sdk import timeseries_payload, sign_payload, Producer
    from edge.signing import FileSigner

    signer = FileSigner.from_file(Path("keys/press-1.key"))
    payload = timeseries_payload([(1767225600000, "temperature", 61.8), (1767225600000, "pressure", 6.02)])
    msg = sign_payload(signer, seq=42, ts_ms=1767225600000, kind="timeseries",
                       content_type=TIMESERIES_CONTENT_TYPE, payload=payload, received_ms=1767225600013)
    with Producer("127.0.0.1:9092") as p:   # or a sealstream._kafka_config.KafkaEndpoint (TLS)
        p.produce(msg)                 # idempotent, acks=all
        p.flush(30)

The message is exactly what the pipeline accepts (docs/formats.md section 3, docs/edge.md "Wire format"):
key = the device's did, value = the payload bytes, headers = the nine ``ss-*`` statement headers
then ``ss-edge-received-ms`` (the edge's clock, ignored by ingest). `seq` must be strictly increasing
per device across restarts: keep it durable (the agent keeps it in its spool).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import pyarrow as pa

from confidential.device import RecipientsFileError, load_recipients, seal_and_sign
from confidential.envelope import DEFAULT_CHUNK_SIZE
from sealstream._kafka_config import KafkaLike, as_endpoint
from trust.statement import Statement, to_kafka_headers

from .model import Signer
from sealstream.topics import RAW_OF_KIND

__all__ = ["TIMESERIES_CONTENT_TYPE", "SCHEMA", "TOPIC_OF_KIND", "EDGE_RECEIVED_HEADER", "EdgeMessage",
           "timeseries_payload", "sign_payload", "seal_confidential", "Recipients", "Producer", "producer_config",
           "produce_all"]

log = logging.getLogger(__name__)

TIMESERIES_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
#: The simulator's schema (pipelines/devices/timeseries.py), byte for byte.
SCHEMA = pa.schema([
    pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("sensor", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
])
TOPIC_OF_KIND = dict(RAW_OF_KIND)
#: Extra header: ASCII decimal milliseconds of the edge's clock when it received the newest value.
EDGE_RECEIVED_HEADER = "ss-edge-received-ms"
MAX_SENSORS_PER_PAYLOAD = 127  # the sensor column is dictionary<int8>


@dataclass(frozen=True)
class EdgeMessage:
    """One Kafka record: topic, key (device did), value (payload), headers; and what was signed."""

    topic: str
    key: bytes
    value: bytes = field(repr=False)
    headers: tuple[tuple[str, bytes], ...] = field(repr=False)
    statement: Statement
    received_ms: int

    @property
    def size(self) -> int:
        return len(self.value) + sum(len(k) + len(v) for k, v in self.headers)


def timeseries_payload(rows: Iterable[tuple[int, str, float]]) -> bytes:
    """An Arrow IPC stream (one record batch, the simulator's schema) of ``(ts_ms, sensor, value)`` rows,
    in the given order. At most 127 distinct sensors (split larger groups)."""
    ts: list[int] = []
    idx: list[int] = []
    values: list[float] = []
    names: dict[str, int] = {}
    for t, sensor, value in rows:
        i = names.get(sensor)
        if i is None:
            if len(names) >= MAX_SENSORS_PER_PAYLOAD:
                raise ValueError(f"more than {MAX_SENSORS_PER_PAYLOAD} sensors in one payload; split the batch")
            i = names[sensor] = len(names)
        ts.append(int(t))
        idx.append(i)
        values.append(float(value))
    if not ts:
        raise ValueError("a time-series payload needs at least one reading")
    sensor = pa.DictionaryArray.from_arrays(pa.array(idx, pa.int8()), pa.array(list(names), pa.string()))
    batch = pa.record_batch([pa.array(ts, pa.timestamp("ms", tz="UTC")), sensor, pa.array(values, pa.float64())],
                            schema=SCHEMA)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def sign_payload(signer: Signer, seq: int, ts_ms: int, kind: str, content_type: str, payload: bytes,
                 received_ms: Optional[int] = None) -> EdgeMessage:
    """Sign `payload` as message `seq` of the signer's device; the ready Kafka record.

    `ts_ms` is the device's timestamp (for a time series: its newest reading); `received_ms` the edge's
    clock (default: now)."""
    stmt = Statement.for_payload(signer.did, seq, ts_ms, kind, content_type, payload)
    sig = signer.sign(stmt.signing_bytes())
    received = int(time.time() * 1000) if received_ms is None else int(received_ms)
    headers = tuple(to_kafka_headers(stmt, sig)) + ((EDGE_RECEIVED_HEADER, str(received).encode("ascii")),)
    return EdgeMessage(TOPIC_OF_KIND[kind], signer.did.encode("ascii"), payload, headers, stmt, received)


def seal_confidential(signer: Signer, seq: int, ts_ms: int, kind: str, content_type: str, payload: bytes, *,
                      stream: str, recipients: Sequence[tuple[str, bytes]], received_ms: Optional[int] = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> EdgeMessage:
    """`sign_payload` for a confidential stream (issue 18): `payload` (of MIME `content_type`) is sealed
    for `recipients` ``(id, X25519 public key)`` (`confidential.device.load_recipients` reads them from a
    recipients file or recipient public key files) with a fresh data key, and the statement signs the
    envelope. Value = the envelope, headers = the nine ``ss-*`` statement headers, ``ss-keys`` (the key
    record) then ``ss-edge-received-ms``: docs/edge.md "Confidential devices"."""
    m = seal_and_sign(signer.sign, signer.did, seq, ts_ms, kind, content_type, payload, stream=stream,
                      recipients=recipients, chunk_size=chunk_size)
    received = int(time.time() * 1000) if received_ms is None else int(received_ms)
    headers = m.headers + ((EDGE_RECEIVED_HEADER, str(received).encode("ascii")),)
    return EdgeMessage(TOPIC_OF_KIND[kind], signer.did.encode("ascii"), m.envelope, headers, m.statement, received)


class Recipients:
    """The recipients a device seals for, from its `confidential` config: a recipients file is re-read
    when it changes (its mtime or size), so a new export (`sealstream data recipients --out FILE`)
    takes effect on the next payload; a file that became unusable keeps the last good list (logged)."""

    def __init__(self, stream: str, source: "Path | Sequence[Path]") -> None:
        self.stream, self.source = stream, source
        self._stamp: Optional[tuple[int, int]] = None
        self._list = load_recipients(source, stream)
        self._stamp = self._stat()

    def _stat(self) -> Optional[tuple[int, int]]:
        if not isinstance(self.source, Path):
            return None
        try:
            st = self.source.stat()
        except OSError:
            return self._stamp
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> list[tuple[str, bytes]]:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._list = load_recipients(self.source, self.stream)
                log.info("recipients reloaded", extra={"stream": self.stream,
                                                       "recipients": [i for i, _ in self._list]})
            except RecipientsFileError as exc:
                log.warning("recipients file unusable; sealing for the last good list",
                            extra={"stream": self.stream, "error": str(exc)})
        return list(self._list)


def producer_config(bootstrap: KafkaLike, **extra: object) -> dict:
    """confluent-kafka settings of the edge: idempotent (no duplicate or reorder on an internal retry),
    acks=all, and never giving up on a message (`message.timeout.ms` 0: the spool, not librdkafka, bounds
    an outage). `bootstrap`: a bare bootstrap (PLAINTEXT) or the factory principal's `KafkaEndpoint`
    (TLS with its certificate; the client id is the principal)."""
    ep = as_endpoint(bootstrap, "factory")
    conf: dict = {
        **ep.confluent(), "client.id": ep.principal if ep.secure else "sealstream-edge", "acks": "all",
        "enable.idempotence": True, "message.timeout.ms": 0, "linger.ms": 5, "batch.size": 1024 * 1024,
        "message.max.bytes": 16 * 1024 * 1024 + 64 * 1024, "queue.buffering.max.kbytes": 256 * 1024,
        "reconnect.backoff.max.ms": 2000, "logger": logging.getLogger("confluent_kafka"),
    }
    conf.update(extra)
    return conf


class Producer:
    """A small idempotent producer of `EdgeMessage`s (confluent-kafka).

    `produce(msg, on_delivery)` calls ``on_delivery(error, partition, offset)`` from `poll`/`flush`
    (`error`: None when acknowledged, else a ``confluent_kafka.KafkaError``).
    The Kafka timestamp of the record is the edge's receive time (``CreateTime``), so the pipeline's
    clock-skew check compares the device's clock with the edge's, not with how long the WAN was down.
    """

    def __init__(self, bootstrap: KafkaLike, **extra: object) -> None:
        from confluent_kafka import Producer as _P

        self._p = _P(producer_config(bootstrap, **extra))

    def produce(self, msg: EdgeMessage,
                on_delivery: Optional[Callable[[object, Optional[int], Optional[int]], None]] = None) -> None:
        def report(err, m) -> None:
            if on_delivery is not None:
                if err is not None:
                    on_delivery(err, None, None)
                else:
                    on_delivery(None, m.partition(), m.offset())

        for _ in range(100_000):
            try:
                self._p.produce(msg.topic, value=msg.value, key=msg.key, headers=list(msg.headers),
                                timestamp=msg.received_ms, on_delivery=report)
                return
            except BufferError:  # librdkafka's queue is full: serve delivery reports, retry
                self._p.poll(0.05)
        raise BufferError("the Kafka client's queue stayed full; raise queue.buffering.max.kbytes")

    def poll(self, timeout: float = 0.0) -> int:
        return self._p.poll(timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every delivery report; the number of messages still in flight."""
        return self._p.flush(timeout)

    def __len__(self) -> int:
        return len(self._p)

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self._p.flush(10)


def produce_all(producer: Producer, messages: Sequence[EdgeMessage], timeout: float = 30.0) -> list[Optional[str]]:
    """Produce and flush `messages`; the error of each (None when acked)."""
    errors: list[Optional[str]] = [None] * len(messages)
    def record(i: int) -> Callable[[Any, Any, Any], None]:
        def on_delivery(e: Any, _p: Any, _o: Any) -> None:
            errors[i] = None if e is None else str(e)
        return on_delivery

    for i, m in enumerate(messages):
        producer.produce(m, record(i))
    left = producer.flush(timeout)
    if left:
        raise TimeoutError(f"{left} message(s) not acknowledged within {timeout:.0f} s; is Kafka reachable?")
    return errors
