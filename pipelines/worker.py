"""The store + seal core of the pipeline worker (DESIGN.md steps 4-6), without Kafka.

`IngestProcessor.process_batch(records)` takes raw records (a poll's worth, in
partition order) and returns, per record, what to produce: a `DeadLetter`
(original bytes and headers plus the reason headers) or a `Seal` (the gateway
receipt, for ``iiot.sealed``).  It is blocking (PostgreSQL, MinIO, hashing
megabytes): the Faust agents call it in a thread.  Idempotent end to end:

1. pure checks (`pipelines.checks`), record after record, each device's seq
   judged against the seqs accepted before it (in the batch, else the cache);
2. payloads archived at ``raw/<sha256>`` (`BlobStore.put_raw`: one PUT each,
   in parallel);
3. the gateway signs the receipts (Ed25519 is deterministic: same key, same
   statement, same location -> the same receipt bytes);
4. one transaction (`Writer.write_sealed`): the ``statements`` rows with the
   receipts and Kafka positions, then ``readings`` (rows of the Arrow IPC
   payloads) or ``blobs`` of the statements that are new or redelivered; all
   keyed by digests.

Replay vs redelivery: a record whose seq is not above the device's last seq,
or whose statement is already stored, is a *redelivery* (Kafka at-least-once,
a reset consumer group) when the stored statement was read from this very
topic/partition/offset -- then the writes are repeated (no-ops) and the
stored receipt is sealed again; from any other position it is a ``replay``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Mapping, Optional, Sequence, Union

import psycopg
import pyarrow as pa

from confidential.envelope import CONTENT_TYPE as ENVELOPE_TYPE
from confidential.envelope import key_record_of
from ledger.client import TxRefused
from ledger.errors import LedgerError
from storage.blobs import BlobStore
from storage.errors import BlobError, DatabaseError, RecordError, StorageError
from storage.readers import Reader
from storage.records import BlobRecord, KafkaPosition, StatementRecord, payload_copy, raw_key
from storage.writers import ReadingsPart, SealedWrite, Writer
from trust.identity import KeyPair, load_keypair, save_keypair
from trust.receipt import SealReceipt, seal_receipt
from trust.statement import Statement

from .checks import Accepted, DeviceKey, Limits, Rejected, check_record

__all__ = ["RawRecord", "DeadLetter", "Seal", "IngestProcessor", "gateway_key", "seal_value", "DLQ_HEADERS",
           "RETRY_CAUSES", "UNEXPECTED_ATTEMPTS", "transient_cause", "Retrier"]

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


#: The ``cause`` label of ``sealstream_pipeline_store_retries_total``: the outages `transient_cause` names,
#: and ``unexpected`` (an exception of no known kind: retried `UNEXPECTED_ATTEMPTS` times at most).
RETRY_CAUSES = ("ledger", "database", "blobstore", "storage", "network", "timeout", "io", "other", "unexpected")
#: Attempts of a batch, then of each of its records, that raise an unexpected exception before the
#: record that still raises is dead-lettered ``internal-error``.
UNEXPECTED_ATTEMPTS = 4
#: psycopg errors about the data of one statement (a value out of range, a constraint): not an outage.
_DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its explicit causes (``raise ... from``), outermost first."""
    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen and len(seen) < 16:
        seen.add(id(e))
        yield e
        e = e.__cause__


def transient_cause(exc: BaseException) -> Optional[str]:
    """The outage `exc` reports (a `RETRY_CAUSES` label), or None: bad input or a bug.

    An outage is waited out (the batch retried with backoff, its offsets not committed), never
    dead-lettered; the first exception of the ``raise ... from`` chain that is one of these decides:

    - ``ledger``: any `ledger.errors.LedgerError` (the client's `NodeUnavailable` and `SubmitTimeout`, a
      light-client or proof failure: the ledger could not give a verdict we can trust), except
      `TxRefused` (a verdict);
    - ``database``: `storage.errors.DatabaseError` and psycopg's ``OperationalError`` (connection
      refused or lost, admin shutdown, pool timeout, serialization failure, statement timeout), except
      those caused by a ``DataError``/``IntegrityError`` (about one statement's data: not an outage);
    - ``blobstore``: a `storage.errors.BlobError` (``BlobStoreUnavailable``: MinIO unreachable or refusing);
      ``storage``: any other `StorageError`;
    - ``timeout``: `TimeoutError`; ``network``: `ConnectionError` (also the dead-letter look-up's
      ``DeadLetterLookupError``); ``io``: any other `OSError`;
    - ``other``: an exception that says so itself (``transient = True`` on its class or instance).

    `storage.errors.RecordError` (rows a writer refuses) is bad input whatever its cause.
    """
    if isinstance(exc, RecordError):
        return None
    for e in _cause_chain(exc):
        if getattr(e, "transient", None) is True:
            return "other"
        if isinstance(e, TxRefused):
            return None
        if isinstance(e, LedgerError):
            return "ledger"
        if isinstance(e, _DATA_ERRORS):
            return None
        if isinstance(e, DatabaseError):
            return None if isinstance(e.__cause__, _DATA_ERRORS) else "database"
        if isinstance(e, psycopg.OperationalError):
            return "database"
        if isinstance(e, BlobError):
            return "blobstore"
        if isinstance(e, StorageError):
            return "storage"
        if isinstance(e, TimeoutError):
            return "timeout"
        if isinstance(e, ConnectionError):
            return "network"
        if isinstance(e, OSError):
            return "io"
    return None


def _exc_name(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class Retrier:
    """How the ingest agents wait out failures (async; the blocking calls run in a thread).

    `call(fn, *args)` runs `fn` and retries it with backoff (`first_delay`, doubling up to `max_delay`)
    for as long as it raises an outage (`transient_cause`): the partition waits, nothing is acked;
    anything else raises.  `batch(process_batch, records)` is the per-batch policy:

    - an outage: retried (by `call`) until it is over, never dead-lettered;
    - a `RecordError` (rows the writer refuses): the batch is split to find the record, which is
      dead-lettered ``malformed-payload`` at once (retrying would refuse it again);
    - any other exception (a bug, or an outage of a kind `transient_cause` does not know): the batch
      is retried, `unexpected_attempts` attempts in all; then split and its records processed one at
      a time, in order, each with the same bound; the one that still raises is dead-lettered
      ``internal-error`` with only the exception's class and the attempt count as detail (its message
      may quote payload data), its traceback logged.  A bug therefore costs a few seconds of delay and
      one dead letter (original bytes kept: replayable once fixed), never a silent ack.

    `on_retry(cause)` is called once per retry (a `RETRY_CAUSES` label).
    """

    def __init__(self, on_retry: Callable[[str], None] = lambda cause: None, *, first_delay: float = 0.5,
                 max_delay: float = 10.0, unexpected_attempts: int = UNEXPECTED_ATTEMPTS,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if unexpected_attempts < 1:
            raise ValueError("unexpected_attempts must be at least 1")
        self.on_retry = on_retry
        self.first_delay, self.max_delay = first_delay, max_delay
        self.unexpected_attempts = unexpected_attempts
        self.sleep = sleep

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        delay = self.first_delay
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception as exc:
                cause = transient_cause(exc)
                if cause is None:
                    raise
                log.warning("%s failed (%s: %s: %s), retrying in %.1f s", getattr(fn, "__name__", "call"), cause,
                            type(exc).__name__, exc, delay)
                self.on_retry(cause)
                await self.sleep(delay)
                delay = min(delay * 2, self.max_delay)

    async def batch(self, process_batch: Callable[[list["RawRecord"]], list], records: Sequence["RawRecord"]
                    ) -> list:
        records = list(records)
        delay = self.first_delay
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.call(process_batch, records)
            except RecordError as exc:
                poison: Exception = exc
                break
            except Exception as exc:  # noqa: BLE001 - bounded below, then dead-lettered: never acked silently
                poison = exc
                if attempt >= self.unexpected_attempts:
                    break
                log.warning("unexpected %s processing %d record(s) from %s (attempt %d of %d), retrying in %.1f s",
                            _exc_name(exc), len(records), _pos(records[0].position), attempt,
                            self.unexpected_attempts, delay)
                self.on_retry("unexpected")
                await self.sleep(delay)
                delay = min(delay * 2, self.max_delay)
        if len(records) > 1:
            out: list = []
            for rec in records:  # one at a time, in order: the seq checks see the earlier ones stored
                out.extend(await self.batch(process_batch, [rec]))
            return out
        rec = records[0]
        log.error("dead-lettering %s after %d attempt(s): %s", _pos(rec.position), attempt,
                  "".join(traceback.format_exception(poison)))
        if isinstance(poison, RecordError):
            return [_dead(rec, "malformed-payload", f"{type(poison).__name__}: {poison}")]
        return [_dead(rec, "internal-error", f"{_exc_name(poison)} after {attempt} attempts")]


class IngestProcessor:
    """Checks, stores and seals raw records (blocking; thread-safe)."""

    def __init__(self, writer: Writer, reader: Reader, blobs: BlobStore, gateway: KeyPair,
                 lookup: Callable[[str], Optional[DeviceKey]], limits: Limits,
                 observe_store: Callable[[float], None] = lambda s: None,
                 stored_last_seq: Callable[[str], Optional[int]] = lambda did: None,
                 archive_parallel: int = 8) -> None:
        self.writer = writer
        self.reader = reader
        self.blobs = blobs
        self.gateway = gateway
        self.lookup = lookup
        self.limits = limits
        self.observe_store = observe_store
        self.stored_last_seq = stored_last_seq
        self.archive_parallel = archive_parallel
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None

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
        return self.process_batch([rec], last_seq)[0]

    def process_batch(self, records: Sequence[RawRecord], last_seq: Optional[int] = None
                      ) -> list[Union[DeadLetter, Seal]]:
        """Check, store and seal `records` (in partition order); one result per record, in order.

        The checks run one record after another, each device's seq judged against
        the seqs accepted earlier in the batch, so the outcome is the one of
        processing them one at a time.  Each accepted payload's PUT starts as soon
        as its record passed (in parallel, while the next records are checked;
        an object is content-addressed, so a PUT of a batch that fails later is
        harmless), and once all are archived every statement with its readings or blob row is
        written in **one** transaction (`Writer.write_sealed`).  The seq cache is
        advanced only once that committed: a failed batch is retried whole.
        Nothing here turns an exception into a dead letter: an error while checking a
        record (the directory, a stored-statement lookup), archiving or writing raises
        once the started PUTs are done, and the caller (`Retrier.batch`) retries an
        outage (`transient_cause`) until it is over, and retries anything else a bounded
        number of times before it splits the batch to dead-letter the poison record.
        """
        out: list = [None] * len(records)
        staged: list[tuple[int, RawRecord, Accepted, Optional[pa.Table]]] = []
        in_batch: dict[str, int] = {}
        puts: dict[bytes, Future] = {}
        pool = self._archive_pool() if self.archive_parallel > 1 and len(records) > 1 else None
        try:
            for i, rec in enumerate(records):
                try:
                    verdict = self._check(rec, last_seq if last_seq is not None else self._last_of(rec, in_batch))
                except Exception as exc:
                    # Never a dead letter here: an outage (ledger, PostgreSQL) is retried by the caller, and
                    # an unexpected error is retried a bounded number of times before `Retrier.batch`
                    # dead-letters the one record (docs/pipeline.md "Transient failures").
                    exc.add_note(f"while checking {_pos(rec.position)}")
                    raise
                if isinstance(verdict, DeadLetter):
                    out[i] = verdict
                    continue
                acc, rows = verdict
                st = acc.statement
                in_batch[st.device] = max(st.seq, in_batch.get(st.device, st.seq))
                staged.append((i, rec, acc, rows))
                if pool is not None and st.payload_sha256 not in puts:
                    puts[st.payload_sha256] = pool.submit(self.blobs.put_raw, rec.value, st.content_type,
                                                          st.payload_sha256)
            if staged:
                for i, seal_or_dead in self._store(staged, puts):
                    out[i] = seal_or_dead
        finally:
            wait(puts.values())  # none still running when the caller retries or splits the batch
        for r in out:
            if isinstance(r, Seal):
                self._accepted(r.statement.device, r.statement.seq)
        return out

    def _last_of(self, rec: RawRecord, in_batch: dict[str, int]) -> Optional[int]:
        if not rec.key:
            return None
        try:
            device = bytes(rec.key).decode("ascii")
        except UnicodeDecodeError:
            return None
        if device in in_batch:
            return in_batch[device]
        return self.last_seq(device)

    def _check(self, rec: RawRecord, last_seq: Optional[int]) -> Union[DeadLetter, tuple[Accepted, Optional[pa.Table]]]:
        """The pure checks (plus a stored-statement lookup for a seq replay); the parsed rows."""
        verdict = check_record(rec.topic, rec.key, rec.value, rec.headers, rec.timestamp_ms, self.lookup,
                               last_seq, self.limits)
        if isinstance(verdict, Rejected):
            if verdict.reason != "replay":
                return _dead(rec, verdict.reason, verdict.detail)
            assert verdict.statement is not None  # a replay is found after the statement parsed
            stored = self.reader.statement(verdict.statement.hash())
            if stored is None or stored.kafka != rec.position:
                where = f" (stored from {_pos(stored.kafka)})" if stored is not None and stored.kafka else ""
                return _dead(rec, "replay", verdict.detail + where)
            # A redelivery of what we stored from this very offset: repeat the (idempotent) writes.
            verdict = check_record(rec.topic, rec.key, rec.value, rec.headers, rec.timestamp_ms, self.lookup,
                                   None, self.limits)
            if isinstance(verdict, Rejected):  # e.g. the device was revoked since
                return _dead(rec, verdict.reason, verdict.detail)
        rows = None
        # a confidential record's payload is an envelope (ciphertext): stored as a blob, never parsed
        if verdict.statement.kind == "timeseries" and verdict.statement.content_type != ENVELOPE_TYPE:
            try:
                rows = pa.ipc.open_stream(pa.BufferReader(rec.value)).read_all()
                for col in ("ts", "sensor", "value"):
                    rows.column(col)
            except (pa.ArrowInvalid, KeyError, OSError) as exc:
                return _dead(rec, "malformed-payload", f"not an Arrow IPC stream with ts, sensor, value: {exc}")
        return verdict, rows

    def _archive(self, staged: Sequence[tuple[int, RawRecord, Accepted, Optional[pa.Table]]],
                 started: Mapping[bytes, Future]) -> None:
        """Wait for the PUTs `process_batch` started in parallel, then PUT any other accepted payload
        here (each distinct digest once: a batch of one record, or ``archive_parallel`` <= 1)."""
        for fut in started.values():
            fut.result()  # the first error raises (the batch is retried whole)
        done = set(started)
        for _, rec, acc, _ in staged:
            st = acc.statement
            if st.payload_sha256 not in done:
                self.blobs.put_raw(rec.value, st.content_type, st.payload_sha256)
                done.add(st.payload_sha256)

    def _archive_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.archive_parallel, thread_name_prefix="archive")
            return self._pool

    def _store(self, staged: Sequence[tuple[int, RawRecord, Accepted, Optional[pa.Table]]],
               started: Mapping[bytes, Future]) -> list[tuple[int, Union[DeadLetter, Seal]]]:
        began = time.perf_counter()
        self._archive(staged, started)
        writes = []
        for _, rec, acc, rows in staged:
            stmt = acc.statement
            h = stmt.hash()
            receipt = seal_receipt(h, raw_key(stmt.payload_sha256), self.gateway)
            writes.append(SealedWrite(
                StatementRecord(stmt, acc.signature, rec.position, receipt, payload=payload_copy(stmt, rec.value)),
                ReadingsPart(stmt.device, h, rows) if rows is not None else None,
                BlobRecord.for_statement(stmt) if rows is None else None,
                # wrapped keys apart from the signed bytes, in PostgreSQL (issue 18, `storage.key_records`)
                key_record_of(rec.headers) if stmt.content_type == ENVELOPE_TYPE else None,
            ))
        outcomes = self.writer.write_sealed(writes)
        elapsed = time.perf_counter() - began
        out: list[tuple[int, Union[DeadLetter, Seal]]] = []
        for (i, rec, acc, rows), w, o in zip(staged, writes, outcomes):
            stmt = acc.statement
            n = rows.num_rows if rows is not None else 0
            if o.status == "conflict":
                out.append((i, _dead(rec, "replay", f"seq {stmt.seq} of {stmt.device} is already held by "
                                                    "another statement")))
            elif o.status == "elsewhere":
                assert o.stored is not None  # "elsewhere": the stored statement says where
                out.append((i, _dead(rec, "replay", f"statement already stored from {_pos(o.stored.kafka)}")))
            else:
                sealed = w.statement.receipt
                if o.stored is not None and o.stored.receipt is not None:
                    sealed = o.stored.receipt  # sealed once; never re-signed by another gateway
                assert sealed is not None  # every write carries this gateway's receipt
                out.append((i, Seal(stmt, acc.signature, sealed, rec.position, n, o.status == "present")))
            self.observe_store(elapsed)
        return out

    def close(self) -> None:
        """Stop the archive threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _pos(p: Optional[KafkaPosition]) -> str:
    return "?" if p is None else f"{p.topic}/{p.partition}/{p.offset}"
