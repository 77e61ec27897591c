"""The store + seal core of the pipeline worker (DESIGN.md steps 4-6), without Kafka.

`IngestProcessor.process(record, last_seq)` takes one raw record and returns
what to produce: a `DeadLetter` (original bytes and headers plus the reason
headers) or a `Seal` (the gateway receipt, for ``iiot.sealed``).  It is
blocking (PostgreSQL, MinIO, hashing megabytes): the Faust agents call it in
a thread.  Idempotent end to end:

1. pure checks (`pipelines.checks`);
2. payload archived at ``raw/<sha256>`` (`BlobStore.put_raw` stats first);
3. the gateway signs the receipt (Ed25519 is deterministic: same key, same
   statement, same location -> the same receipt bytes);
4. ``statements`` row with the receipt and the Kafka position, then
   ``readings`` (rows of the Arrow IPC payload) or ``blobs``; all keyed by
   digests (`storage.Writer`).

Replay vs redelivery: a record whose seq is not above the device's last seq,
or whose statement is already stored, is a *redelivery* (Kafka at-least-once,
a reset consumer group) when the stored statement was read from this very
topic/partition/offset -- then the writes are repeated (no-ops) and the
stored receipt is sealed again; from any other position it is a ``replay``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import pyarrow as pa

from storage.blobs import BlobStore
from storage.readers import Reader
from storage.records import BlobRecord, KafkaPosition, StatementRecord, raw_key
from storage.writers import ReadingsPart, Writer
from trust.identity import KeyPair, load_keypair, save_keypair
from trust.receipt import SealReceipt, seal_receipt
from trust.statement import Statement

from .checks import Accepted, DeviceKey, Limits, Rejected, check_record

__all__ = ["RawRecord", "DeadLetter", "Seal", "IngestProcessor", "gateway_key", "seal_value", "DLQ_HEADERS"]

log = logging.getLogger(__name__)
DLQ_HEADERS = ("ss-dlq-reason", "ss-dlq-detail", "ss-dlq-topic", "ss-dlq-partition", "ss-dlq-offset")


@dataclass(frozen=True)
class RawRecord:
    """One consumed record of a raw topic."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int

    @property
    def position(self) -> KafkaPosition:
        return KafkaPosition(self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    key: Optional[bytes]
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Seal:
    statement: Statement
    signature: bytes
    receipt: SealReceipt
    position: KafkaPosition
    rows: int
    redelivery: bool

    @property
    def key(self) -> bytes:
        return self.statement.device.encode("ascii")

    @property
    def value(self) -> bytes:
        return seal_value(self.statement, self.signature, self.receipt, self.position, self.rows)


def seal_value(stmt: Statement, signature: bytes, receipt: SealReceipt, pos: KafkaPosition, rows: int) -> bytes:
    """The ``iiot.sealed`` value: compact sorted JSON carrying what the anchor agent and a verifier need.

    ``statement_hash`` (the Merkle leaf data), ``receipt`` (docs/formats.md
    section 5, JSON form), the signed ``statement`` (canonical bytes, hex) and
    device ``signature``, plus convenience copies of device, seq, ts (ms),
    kind, size, the Kafka position and the readings row count.
    """
    doc = {
        "v": 1,
        "statement_hash": stmt.hash().hex(),
        "receipt": json.loads(receipt.to_json()),
        "statement": stmt.to_bytes().hex(),
        "signature": signature.hex(),
        "device": stmt.device, "seq": stmt.seq, "ts": stmt.ts, "kind": stmt.kind, "size": stmt.size,
        "location": receipt.location,
        "kafka": {"topic": pos.topic, "partition": pos.partition, "offset": pos.offset},
        "rows": rows,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def gateway_key(home: Path, name: str) -> KeyPair:
    """The worker's gateway key ``<home>/gateway/<name>.key`` (0600), created on first use."""
    path = Path(home) / "gateway" / f"{name}.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            save_keypair(path, KeyPair.generate())
            log.info("gateway key created", extra={"path": str(path)})
        except FileExistsError:
            pass
    return load_keypair(path)


def _dead(rec: RawRecord, reason: str, detail: str) -> DeadLetter:
    headers = [(k, bytes(v) if v is not None else b"") for k, v in rec.headers]
    headers += [
        ("ss-dlq-reason", reason.encode("ascii")),
        ("ss-dlq-detail", detail.encode("utf-8", "replace")[:1000]),
        ("ss-dlq-topic", rec.topic.encode("ascii")),
        ("ss-dlq-partition", str(rec.partition).encode("ascii")),
        ("ss-dlq-offset", str(rec.offset).encode("ascii")),
    ]
    return DeadLetter(reason, detail, rec.key, rec.value, headers)


class IngestProcessor:
    """Checks, stores and seals raw records (blocking; thread-safe)."""

    def __init__(self, writer: Writer, reader: Reader, blobs: BlobStore, gateway: KeyPair,
                 lookup: Callable[[str], Optional[DeviceKey]], limits: Limits,
                 observe_store: Callable[[float], None] = lambda s: None,
                 stored_last_seq: Callable[[str], Optional[int]] = lambda did: None) -> None:
        self.writer = writer
        self.reader = reader
        self.blobs = blobs
        self.gateway = gateway
        self.lookup = lookup
        self.limits = limits
        self.observe_store = observe_store
        self.stored_last_seq = stored_last_seq
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def last_seq(self, device: str) -> Optional[int]:
        """Highest seq accepted for `device`: this process's cache, else the database's."""
        with self._lock:
            if device in self._last:
                return self._last[device]
        seq = self.stored_last_seq(device)
        with self._lock:
            if seq is not None:
                self._last[device] = max(seq, self._last.get(device, seq))
            return self._last.get(device)

    def _accepted(self, device: str, seq: int) -> None:
        with self._lock:
            if seq > self._last.get(device, -1):
                self._last[device] = seq

    def process(self, rec: RawRecord, last_seq: Optional[int] = None) -> Union[DeadLetter, Seal]:
        """Check, store and seal `rec`.  `last_seq` overrides the device's last accepted seq
        (by default `last_seq(device)`: a cache over ``max(seq)`` in ``statements``)."""
        if last_seq is None and rec.key:
            try:
                last_seq = self.last_seq(bytes(rec.key).decode("ascii"))
            except UnicodeDecodeError:
                pass
        out = self._process(rec, last_seq)
        if isinstance(out, Seal):
            self._accepted(out.statement.device, out.statement.seq)
        return out

    def _process(self, rec: RawRecord, last_seq: Optional[int]) -> Union[DeadLetter, Seal]:
        verdict = check_record(rec.topic, rec.key, rec.value, rec.headers, rec.timestamp_ms, self.lookup,
                               last_seq, self.limits)
        if isinstance(verdict, Rejected):
            if verdict.reason != "replay":
                return _dead(rec, verdict.reason, verdict.detail)
            stored = self.reader.statement(verdict.statement.hash())
            if stored is None or stored.kafka != rec.position:
                where = f" (stored from {_pos(stored.kafka)})" if stored is not None and stored.kafka else ""
                return _dead(rec, "replay", verdict.detail + where)
            # A redelivery of what we stored from this very offset: repeat the (idempotent) writes.
            verdict = check_record(rec.topic, rec.key, rec.value, rec.headers, rec.timestamp_ms, self.lookup,
                                   None, self.limits)
            if isinstance(verdict, Rejected):  # e.g. the device was revoked since
                return _dead(rec, verdict.reason, verdict.detail)
        return self._store(rec, verdict)

    def _store(self, rec: RawRecord, acc: Accepted) -> Union[DeadLetter, Seal]:
        stmt, sig = acc.statement, acc.signature
        h = stmt.hash()
        rows = None
        if stmt.kind == "timeseries":
            try:
                rows = pa.ipc.open_stream(pa.BufferReader(rec.value)).read_all()
                for col in ("ts", "sensor", "value"):
                    rows.column(col)
            except (pa.ArrowInvalid, KeyError, OSError) as exc:
                return _dead(rec, "malformed-payload", f"not an Arrow IPC stream with ts, sensor, value: {exc}")
        began = time.perf_counter()
        location = self.blobs.put_raw(rec.value, stmt.content_type)
        assert location == raw_key(stmt.payload_sha256)
        receipt = seal_receipt(h, location, self.gateway)
        wc = self.writer.write_statements([StatementRecord(stmt, sig, rec.position, receipt)])
        redelivery = False
        if wc.conflicts:
            return _dead(rec, "replay", f"seq {stmt.seq} of {stmt.device} is already held by another statement")
        if wc.present:
            stored = self.reader.statement(h)
            if stored is not None and stored.kafka is not None and stored.kafka != rec.position:
                return _dead(rec, "replay", f"statement already stored from {_pos(stored.kafka)}")
            redelivery = True
            if stored is not None and stored.receipt is not None:
                receipt = stored.receipt  # sealed once; never re-signed by another gateway
            elif stored is not None:
                self.writer.write_receipts([receipt])
        n = 0
        if rows is not None:
            self.writer.write_readings([ReadingsPart(stmt.device, h, rows)])
            n = rows.num_rows
        else:
            self.writer.write_blobs([BlobRecord.for_statement(stmt)])
        self.observe_store(time.perf_counter() - began)
        return Seal(stmt, sig, receipt, rec.position, n, redelivery)


def _pos(p: Optional[KafkaPosition]) -> str:
    return "?" if p is None else f"{p.topic}/{p.partition}/{p.offset}"
