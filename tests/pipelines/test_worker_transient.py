"""Transient failures vs bad input vs bugs while a record is checked and stored (pure logic, fakes only).

- `transient_cause` classifies each exception class the worker can meet: outages (ledger, PostgreSQL,
  MinIO, network) are retried, bad input and bugs are not outages;
- `IngestProcessor.process_batch` never turns an exception of the per-record check (directory lookup,
  stored-statement lookup, last-seq lookup) into a dead letter: it raises (once its started PUTs are done),
  while bad input is still dead-lettered with its reason;
- `Retrier`: an outage is waited out (backoff, a retry counted per cause) and then every record is sealed;
  an unexpected exception is retried a bounded number of times, then only its record is dead-lettered
  ``internal-error`` naming the exception class, never its message; a `RecordError` is not retried.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Optional

import psycopg
import psycopg_pool
import pytest

from ledger.client import LedgerClientError, NodeUnavailable, SubmitTimeout, TxRefused
from ledger.errors import WireError
from ledger.light_client import HeaderLinkError
from pipelines.checks import DeviceKey, Limits
from pipelines.devices import generate, seal
from pipelines.devices import faults as F
from pipelines.dlq import DeadLetterLookupError
from pipelines.worker import (RETRY_CAUSES, DeadLetter, IngestProcessor, RawRecord, Retrier, Seal, transient_cause,
                              UNEXPECTED_ATTEMPTS)
from sealstream.settings import load_settings
from storage.errors import (BatchConflict, BlobStoreUnavailable, DatabaseError, MigrationError, RecordError)
from storage.writers import SealedOutcome
from trust.errors import StatementError
from trust.identity import KeyPair

LIMITS = Limits.from_settings(load_settings())
SECRET = "s3cr3t-payload-bytes"


def _from(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


class _Transient(Exception):
    transient = True


@pytest.mark.parametrize("exc, cause", [
    (NodeUnavailable("GET /registry/key/x failed on every node"), "ledger"),
    (SubmitTimeout("no f+1 replies"), "ledger"),
    (LedgerClientError("bad state proof for 'k'"), "ledger"),
    (HeaderLinkError("headers do not link"), "ledger"),
    (WireError("node answered garbage"), "ledger"),
    (DatabaseError("cannot connect to PostgreSQL within 5 s"), "database"),
    (_from(DatabaseError("statement: connection refused"), psycopg.OperationalError("refused")), "database"),
    (psycopg.OperationalError("connection is lost"), "database"),
    (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), "database"),
    (psycopg.errors.SerializationFailure("could not serialize"), "database"),
    (psycopg_pool.PoolTimeout("couldn't get a connection after 30 s"), "database"),
    (BlobStoreUnavailable("raw/ab", "MinIO unreachable"), "blobstore"),
    (MigrationError("schema missing"), "storage"),
    (TimeoutError(), "timeout"),
    (ConnectionRefusedError(111, "refused"), "network"),
    (DeadLetterLookupError("broker unreachable"), "network"),
    (OSError(5, "EIO"), "io"),
    (_from(RuntimeError("directory failed"), NodeUnavailable("no node")), "ledger"),
    (_from(ValueError("wrapped"), _from(KeyError("k"), ConnectionResetError())), "network"),
    (_Transient("the directory says: try again"), "other"),
])
def test_outages_are_transient(exc: BaseException, cause: str) -> None:
    assert transient_cause(exc) == cause
    assert cause in RETRY_CAUSES


@pytest.mark.parametrize("exc", [
    KeyError("ts"), ValueError("bad"), TypeError("None"), ZeroDivisionError(), AssertionError(),
    StatementError("malformed-headers", "bad seq"),
    RecordError("readings: missing column 'ts'"),
    _from(RecordError("refused rows"), psycopg.OperationalError("refused")),  # bad input whatever its cause
    TxRefused("replay", b"\x01" * 32),
    psycopg.errors.NumericValueOutOfRange("bigint out of range"),
    _from(DatabaseError("statements: value too long"), psycopg.errors.StringDataRightTruncation("too long")),
    _from(DatabaseError("statements: duplicate"), psycopg.errors.UniqueViolation("dup")),
    RuntimeError("bug"),
])
def test_bad_input_and_bugs_are_not_transient(exc: BaseException) -> None:
    assert transient_cause(exc) is None


def test_batch_conflict_keeps_the_storage_retry() -> None:
    # any StorageError other than a RecordError was retried before; still is (cause "storage")
    assert transient_cause(BatchConflict("batch b twice")) == "storage"


# ----------------------------------------------------------------------------- fakes around IngestProcessor


class _Directory:
    """Device keys, or an exception raised for the next `fail` lookups."""

    def __init__(self, *keys: KeyPair, revoked: tuple[KeyPair, ...] = ()) -> None:
        self.known = {k.did: DeviceKey(k.did, k.did, k in revoked) for k in keys}
        self.error: Optional[BaseException] = None
        self.fail = 0
        self.calls = 0
        self._lock = threading.Lock()

    def resolve(self, did: str) -> Optional[DeviceKey]:
        with self._lock:
            self.calls += 1
            if self.fail > 0:
                self.fail -= 1
                assert self.error is not None
                raise self.error
        return self.known.get(did)


class _Reader:
    def __init__(self) -> None:
        self.error: Optional[BaseException] = None
        self.stored: dict = {}

    def statement(self, h: bytes):
        if self.error is not None:
            raise self.error
        return self.stored.get(h)


class _Blobs:
    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.running = 0
        self._lock = threading.Lock()

    def put_raw(self, payload: bytes, content_type: str, digest: bytes) -> str:
        with self._lock:
            self.running += 1
        time.sleep(0.01)  # still running while the next records are checked
        with self._lock:
            self.objects[digest] = payload
            self.running -= 1
        return "raw/" + digest.hex()


class _Writer:
    """Statements by hash; a (device, seq) held by another statement is a conflict."""

    def __init__(self) -> None:
        self.rows: dict[bytes, object] = {}
        self.seqs: dict[tuple[str, int], bytes] = {}
        self.calls = 0

    def write_sealed(self, writes):
        self.calls += 1
        out = []
        for w in writes:
            st = w.statement.statement
            h = st.hash()
            held = self.seqs.get((st.device, st.seq))
            if held is not None and held != h:
                out.append(SealedOutcome("conflict"))
            elif h in self.rows:
                out.append(SealedOutcome("present", self.rows[h]))
            else:
                self.rows[h] = w.statement
                self.seqs[(st.device, st.seq)] = h
                out.append(SealedOutcome("inserted"))
        return out


def _processor(directory: _Directory, reader: Optional[_Reader] = None, *, last_seq=lambda did: None,
               blobs: Optional[_Blobs] = None, writer: Optional[_Writer] = None) -> IngestProcessor:
    return IngestProcessor(writer or _Writer(), reader or _Reader(), blobs or _Blobs(), KeyPair.generate(),
                           directory.resolve, LIMITS, stored_last_seq=last_seq, archive_parallel=4)


def _raw(msg, offset: int, now: int, partition: int = 0) -> RawRecord:
    return RawRecord(msg.topic, partition, offset, msg.key, msg.value, list(msg.headers), now)


def _batch(dev: KeyPair, n: int, now: int, kind: str = "image", first_seq: int = 1) -> list[RawRecord]:
    return [_raw(seal(dev, first_seq + i, now, generate(kind, 1, "d", first_seq + i, now)), i, now)
            for i in range(n)]


def _reasons(results) -> list[str]:
    return [r.reason if isinstance(r, DeadLetter) else "sealed" for r in results]


def test_bad_input_is_still_dead_lettered_with_its_reason() -> None:
    dev, rogue, gone = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    now = int(time.time() * 1000)
    good = seal(dev, 1, now, generate("timeseries", 1, "t", 1, now))
    recs = [_raw(good, 0, now),
            _raw(F.bad_signature(seal(dev, 2, now, generate("timeseries", 1, "t", 2, now))), 1, now),
            _raw(seal(rogue, 1, now, generate("timeseries", 1, "r", 1, now)), 2, now),
            _raw(seal(gone, 1, now, generate("timeseries", 1, "g", 1, now)), 3, now),
            _raw(F.malform_headers(seal(dev, 3, now, generate("timeseries", 1, "t", 3, now))), 4, now),
            _raw(F.as_replay(good), 5, now)]
    proc = _processor(_Directory(dev, gone, revoked=(gone,)))
    out = proc.process_batch(recs)
    assert _reasons(out) == ["sealed", "bad-signature", "unknown-device", "revoked-device", "malformed-headers",
                             "replay"]


@pytest.mark.parametrize("error", [NodeUnavailable("GET /registry/key failed on every node"),
                                   SubmitTimeout("timeout"), KeyError("bug in the directory")])
def test_a_failing_directory_raises_and_never_dead_letters(error: BaseException) -> None:
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    directory = _Directory(dev)
    blobs, writer = _Blobs(), _Writer()
    proc = _processor(directory, blobs=blobs, writer=writer)
    recs = _batch(dev, 5, now)

    def third_fails(did: str):  # the first two records pass (their PUTs start), the third one's lookup fails
        if directory.calls == 2:
            raise error
        return directory.resolve(did)

    proc.lookup = third_fails
    with pytest.raises(type(error)) as got:
        proc.process_batch(recs)
    assert any("iiot.images.raw/0/2" in n for n in getattr(got.value, "__notes__", []))
    assert blobs.running == 0  # no PUT still running when the caller retries
    assert writer.calls == 0  # nothing written, nothing acked
    assert proc.last_seq(dev.did) is None  # the seq cache did not move
    proc.close()


def test_a_failing_stored_statement_lookup_raises() -> None:
    """A seq replay asks PostgreSQL whether it is a redelivery: PostgreSQL down is an outage, not a replay."""
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    reader = _Reader()
    reader.error = DatabaseError("statement: connection refused")
    proc = _processor(_Directory(dev), reader, last_seq=lambda did: 7)
    with pytest.raises(DatabaseError) as got:
        proc.process_batch(_batch(dev, 2, now, first_seq=3))  # seq 3 <= 7: looked up
    assert transient_cause(got.value) == "database"


def test_a_failing_last_seq_lookup_raises() -> None:
    dev = KeyPair.generate()
    now = int(time.time() * 1000)

    def down(did: str):
        raise psycopg.OperationalError("connection failed: Connection refused")

    proc = _processor(_Directory(dev), last_seq=down)
    with pytest.raises(psycopg.OperationalError) as got:
        proc.process_batch(_batch(dev, 2, now))
    assert transient_cause(got.value) == "database"


# ----------------------------------------------------------------------------- the Retrier


class _Clock:
    """A fake asyncio sleep: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def sleep(self, s: float) -> None:
        self.delays.append(s)


def _retrier(clock: _Clock, causes: list[str], attempts: int = UNEXPECTED_ATTEMPTS) -> Retrier:
    return Retrier(causes.append, sleep=clock.sleep, unexpected_attempts=attempts)


def test_an_outage_while_checking_is_waited_out_then_every_record_sealed() -> None:
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    directory = _Directory(dev)
    directory.error, directory.fail = NodeUnavailable("ledger down"), 9  # 9 lookups fail, then it is back
    writer = _Writer()
    proc = _processor(directory, writer=writer)
    clock, causes = _Clock(), []
    out = asyncio.run(_retrier(clock, causes).batch(proc.process_batch, _batch(dev, 6, now)))
    assert _reasons(out) == ["sealed"] * 6
    assert causes == ["ledger"] * 9  # one failed lookup per attempt: the batch stops at the first
    assert clock.delays == [0.5, 1, 2, 4, 8, 10, 10, 10, 10]  # backoff, capped
    assert len(writer.rows) == 6
    proc.close()


def test_an_outage_longer_than_the_bug_bound_never_dead_letters() -> None:
    """More outage retries than `UNEXPECTED_ATTEMPTS`: still no dead letter (an outage is not bounded)."""
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    down = {"on": True}

    def last_seq(did: str):
        if down["on"]:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return None

    proc = _processor(_Directory(dev), last_seq=last_seq)
    calls = {"n": 0}

    def process_batch(recs):
        calls["n"] += 1
        if calls["n"] == 3 * UNEXPECTED_ATTEMPTS:
            down["on"] = False  # PostgreSQL is back
        return proc.process_batch(recs)

    clock, causes = _Clock(), []
    out = asyncio.run(_retrier(clock, causes).batch(process_batch, _batch(dev, 3, now)))
    assert _reasons(out) == ["sealed"] * 3
    assert causes == ["database"] * (3 * UNEXPECTED_ATTEMPTS - 1)
    proc.close()


def test_a_bug_on_one_record_is_retried_bounded_then_only_it_is_dead_lettered() -> None:
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    recs = _batch(dev, 4, now)
    poison = recs[2]
    proc = _processor(_Directory(dev))
    calls = {"batch": 0}

    def process_batch(batch):
        calls["batch"] += 1
        return proc.process_batch(batch)

    def check(rec, last_seq):  # the check of the poison record hits a bug, with a secret in its message
        if rec is poison:
            raise KeyError(SECRET)
        return IngestProcessor._check(proc, rec, last_seq)

    proc._check = check
    clock, causes = _Clock(), []
    out = asyncio.run(_retrier(clock, causes).batch(process_batch, recs))
    assert _reasons(out) == ["sealed", "sealed", "internal-error", "sealed"]
    dead = out[2]
    assert dead.detail == f"KeyError after {UNEXPECTED_ATTEMPTS} attempts"
    assert SECRET not in dead.detail and all(SECRET.encode() not in v for _, v in dead.headers)
    assert dead.value == poison.value and dead.key == poison.key  # original bytes kept
    # bounded: the batch UNEXPECTED_ATTEMPTS times, then each record once, the poison one UNEXPECTED_ATTEMPTS times
    assert calls["batch"] == UNEXPECTED_ATTEMPTS + 3 + UNEXPECTED_ATTEMPTS
    assert causes == ["unexpected"] * (2 * (UNEXPECTED_ATTEMPTS - 1))
    assert [s.statement.seq for s in out if isinstance(s, Seal)] == [1, 2, 4]
    proc.close()


def test_a_bug_that_goes_away_is_not_dead_lettered() -> None:
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    proc = _processor(_Directory(dev))
    left = {"n": UNEXPECTED_ATTEMPTS - 1}

    def flaky(recs):
        if left["n"] > 0:
            left["n"] -= 1
            raise RuntimeError("a race")
        return proc.process_batch(recs)

    clock, causes = _Clock(), []
    out = asyncio.run(_retrier(clock, causes).batch(flaky, _batch(dev, 3, now)))
    assert _reasons(out) == ["sealed"] * 3
    assert causes == ["unexpected"] * (UNEXPECTED_ATTEMPTS - 1)
    proc.close()


def test_rows_the_writer_refuses_are_malformed_at_once() -> None:
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    recs = _batch(dev, 3, now)
    calls = {"n": 0}

    def refuses_second(batch):
        calls["n"] += 1
        if any(r is recs[1] for r in batch):
            raise RecordError("readings: missing column 'ts'")
        return [f"ok-{r.offset}" for r in batch]

    clock, causes = _Clock(), []
    out = asyncio.run(_retrier(clock, causes).batch(refuses_second, recs))
    assert out[0] == "ok-0" and out[2] == "ok-2"
    assert isinstance(out[1], DeadLetter) and out[1].reason == "malformed-payload"
    assert calls["n"] == 1 + 3 and causes == [] and clock.delays == []


def test_call_retries_only_outages() -> None:
    clock, causes = _Clock(), []
    r = _retrier(clock, causes)
    seq = iter([BlobStoreUnavailable("raw/x", "down"), ConnectionResetError(), None])

    def fn():
        e = next(seq)
        if e is not None:
            raise e
        return "done"

    assert asyncio.run(r.call(fn)) == "done"
    assert causes == ["blobstore", "network"]

    def bug():
        raise ValueError("bug")

    with pytest.raises(ValueError):
        asyncio.run(r.call(bug))
    assert causes == ["blobstore", "network"]


def test_retrier_needs_an_attempt() -> None:
    with pytest.raises(ValueError):
        Retrier(unexpected_attempts=0)


def test_every_retry_cause_is_exported_from_zero() -> None:
    """Dashboards sum the retries counter: each cause's series exists before the first retry."""
    from prometheus_client import CollectorRegistry, generate_latest

    from pipelines.metrics import PipelineMetrics
    from pipelines.worker import RETRY_CAUSES

    text = generate_latest(PipelineMetrics(CollectorRegistry()).registry).decode()
    got = {line.split('cause="')[1].split('"')[0] for line in text.splitlines()
           if line.startswith("sealstream_pipeline_store_retries_total{")}
    assert got == set(RETRY_CAUSES)
