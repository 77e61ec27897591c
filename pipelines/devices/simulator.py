"""The run loop: devices of a factory produce signed telemetry to Kafka at a rate, with faults on demand.

Each device sends `rate` messages per second (0 = as fast as the machine goes),
staggered so a factory does not burst; the run stops after `duration` seconds
or `count` messages, whichever comes first. Every record (good or faulty) is
appended to the sent-log with its delivery (partition, offset or error).
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from sealstream.settings import Settings
from trust.identity import KeyPair

from . import faults as F
from .factory import Device, Factory, FactoryError
from .kinds import ALL_KINDS, kind_info, max_payload_bytes
from .confidential import RecipientsInForce, seal_confidential
from .payloads import Payload, generate, generate_oversized
from .producer import Delivery, open_sink
from .sentlog import SentLog, SentRecord
from .seqstore import SeqStore
from .signing import OutMessage
from .signing import seal as _seal_plain

__all__ = ["RunConfig", "RunStats", "RunSummary", "Simulator", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """What to run: which factory, how many devices per kind, how fast, how long, which faults."""

    factory: str
    devices: int = 2
    rate: float = 1.0
    duration: float | None = None
    count: int | None = None
    kinds: tuple[str, ...] = ALL_KINDS
    faults: F.FaultPlan = F.FaultPlan()
    seed: int = 0
    client: str | None = None
    sent_log: Path | None = None
    #: a confidential stream (issue 18): every device of the run seals its payloads for the
    #: stream's recipients in force, read from the ledger (proven) and re-read every
    #: `recipients_refresh` seconds so that a grant or revoke takes effect
    confidential: str | None = None
    recipients_refresh: float = 30.0

    def __post_init__(self) -> None:
        if self.duration is None and self.count is None:
            raise ValueError("a run needs a bound: give a duration or a count")
        if self.devices < 1:
            raise ValueError("devices must be at least 1 per kind")
        if self.rate < 0:
            raise ValueError("rate must be >= 0 (0 means as fast as possible)")
        if self.confidential is not None and not self.confidential:
            raise ValueError("a confidential stream needs a name")
        if self.recipients_refresh <= 0:
            raise ValueError("recipients_refresh must be > 0 seconds")


@dataclass(frozen=True)
class RunStats:
    """A progress snapshot."""

    sent: int
    delivered: int
    errors: int
    bytes: int
    elapsed: float


@dataclass(frozen=True)
class RunSummary:
    """What a run did."""

    run_id: str
    factory: str
    client: str
    devices: int
    messages: int
    delivered: int
    bytes: int
    seconds: float
    by_kind: dict[str, int] = field(default_factory=dict)
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None
    interrupted: bool = False
    sent_log: str = ""
    #: the confidential stream sealed for, the recipient ids last in force and the height proven
    confidential: str | None = None
    recipients: list[str] = field(default_factory=list)
    recipients_height: int | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _Counters:
    """Totals updated from the producer's delivery thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.delivered = self.errors = self.bytes = 0
        self.by_kind: dict[str, int] = {}
        self.bytes_by_kind: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.first_error: str | None = None


class _FactoryLock:
    """One simulator per factory at a time (two would hand out the same seqs)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise FactoryError(f"another simulator is running factory {path.parent.name!r}; "
                               f"wait for it to finish or use another --factory") from None

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class Simulator:
    """Runs one `RunConfig` against Kafka."""

    def __init__(self, settings: Settings, config: RunConfig) -> None:
        self.settings = settings
        self.config = config
        self.run_id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._counters = _Counters()
        self._rogue_seq: dict[str, int] = {}
        self._last: dict[str, OutMessage] = {}
        self._recipients: RecipientsInForce | None = None

    def stop(self) -> None:
        """Ask a running `run` to finish early (it still flushes and writes the summary)."""
        self._stop.set()

    def stats(self, started: float) -> RunStats:
        c = self._counters
        with c.lock:
            return RunStats(c.sent, c.delivered, c.errors, c.bytes, time.monotonic() - started)

    # -- building messages -------------------------------------------------------------------
    def _rogue(self, kind: str) -> KeyPair:
        seed = hashlib.sha256(f"sealstream rogue|{self.config.factory}|{self.config.seed}|{kind}".encode()).digest()
        return KeyPair.from_seed(seed)

    def _build(self, dev: Device, fault: str | None, seqs: SeqStore) -> OutMessage | None:
        cfg, kind = self.config, dev.kind
        resolver = self._recipients

        def seal(keypair: KeyPair, seq: int, ts_ms: int, payload: Payload) -> OutMessage:
            if resolver is None:
                return _seal_plain(keypair, seq, ts_ms, payload)
            assert cfg.confidential is not None
            return seal_confidential(keypair, seq, ts_ms, payload, stream=cfg.confidential,
                                     recipients=resolver.current())

        now = int(time.time() * 1000)
        if fault == "replay":
            earlier = self._last.get(dev.did)
            return F.as_replay(earlier) if earlier is not None else None
        if fault == "unknown-device":
            rogue = self._rogue(kind)
            seq = self._rogue_seq.get(rogue.did, 0)
            self._rogue_seq[rogue.did] = seq + 1
            msg = seal(rogue, seq, now, generate(kind, cfg.seed, f"rogue-{kind_info(kind).short}", seq, now))
            return replace(msg, fault=fault)
        seq = seqs.take(dev.did)
        name = dev.spec.name
        if fault == "oversized":
            limit = max_payload_bytes(self.settings, kind)
            msg = seal(dev.keypair, seq, now, generate_oversized(kind, cfg.seed, name, seq, now, limit))
            return replace(msg, fault=fault)
        if fault == "clock-skew":
            ts = now + F.skew_ms(self.settings.max_clock_skew_ms)
            msg = seal(dev.keypair, seq, ts, generate(kind, cfg.seed, name, seq, ts))
            return replace(msg, fault=fault)
        msg = seal(dev.keypair, seq, now, generate(kind, cfg.seed, name, seq, now))
        if fault is None:
            self._last[dev.did] = msg
            return msg
        transform = {"bad-signature": F.bad_signature, "corrupted-payload": F.corrupt_payload,
                     "malformed-headers": F.malform_headers}[fault]
        return transform(msg)

    # -- the loop --------------------------------------------------------------------------------
    def run(self, on_progress: Callable[[RunStats], None] | None = None, progress_every: float = 0.25) -> RunSummary:
        cfg = self.config
        factory = Factory.ensure(self.settings, cfg.factory, cfg.devices, cfg.kinds)
        devices = factory.select(cfg.kinds, cfg.devices)
        if cfg.confidential is not None and self._recipients is None:
            try:
                self._recipients = RecipientsInForce.from_settings(self.settings, cfg.confidential,
                                                                   cfg.recipients_refresh)
            except ValueError:
                raise
            except Exception as exc:  # the ledger unreachable or unproven: a usage error
                raise ValueError(f"cannot resolve the recipients of stream {cfg.confidential!r} from the "
                                 f"ledger: {type(exc).__name__}: {exc}") from exc
        lock = _FactoryLock(factory.path / ".lock")
        sent_path = cfg.sent_log or factory.path / "sent.jsonl"
        try:
            sink = open_sink(self.settings, sorted({kind_info(k).topic for k in cfg.kinds}), cfg.client,
                             factory=cfg.factory)
        except BaseException:
            lock.release()
            raise
        seqs = SeqStore(factory.path / "seq.json")
        sent_log = SentLog(sent_path)
        sched = F.FaultScheduler(cfg.faults, cfg.seed)
        c = self._counters
        started = time.monotonic()
        deadline = started + cfg.duration if cfg.duration is not None else None
        period = 1.0 / cfg.rate if cfg.rate > 0 else 0.0
        heap = [(started + period * i / len(devices), i) for i in range(len(devices))]
        heapq.heapify(heap)
        interrupted = False
        last_progress = 0.0
        log.info("run started", extra={"run": self.run_id, "factory": cfg.factory, "devices": len(devices),
                                       "rate": cfg.rate, "client": sink.name})

        def deliver(msg: OutMessage) -> Callable[[Delivery], None]:
            def done(d: Delivery) -> None:
                sent_log.append(SentRecord.of(self.run_id, msg, d))
                with c.lock:
                    if d.error is None:
                        c.delivered += 1
                    else:
                        c.errors += 1
                        c.first_error = c.first_error or d.error
                if d.error is not None:
                    log.warning("delivery failed", extra={"run": self.run_id, "device": msg.device,
                                                          "seq": msg.statement.seq, "error": d.error})
            return done

        try:
            while not self._stop.is_set():
                if cfg.count is not None and c.sent >= cfg.count:
                    break
                due, i = heap[0]
                now = time.monotonic()
                if deadline is not None and min(due, now) >= deadline:
                    break
                if due > now:
                    sink.poll()
                    self._stop.wait(min(due - now, 0.05))
                    continue
                heapq.heapreplace(heap, (max(due + period, now - 1.0) if period else now, i))
                dev = devices[i]
                fault = sched.next()
                msg = self._build(dev, fault, seqs)
                if msg is None:  # fault not applicable yet (replay before any message)
                    sched.skipped()
                    fault = None
                    msg = self._build(dev, None, seqs)
                    assert msg is not None  # without a fault a message is always built
                if fault:
                    sched.done(fault)
                sink.send(msg, deliver(msg))
                with c.lock:
                    c.sent += 1
                    c.bytes += msg.size
                    c.by_kind[msg.statement.kind] = c.by_kind.get(msg.statement.kind, 0) + 1
                    c.bytes_by_kind[msg.statement.kind] = c.bytes_by_kind.get(msg.statement.kind, 0) + msg.size
                    if fault:
                        c.faults[fault] = c.faults.get(fault, 0) + 1
                if on_progress is not None and now - last_progress >= progress_every:
                    last_progress = now
                    on_progress(self.stats(started))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            left = sink.flush(30.0)
            sink.close()
            seqs.close()
            sent_log.close()
            lock.release()
            if self._recipients is not None:
                self._recipients.close()
        elapsed = time.monotonic() - started
        if on_progress is not None:
            on_progress(self.stats(started))
        with c.lock:
            undelivered = max(0, c.sent - c.delivered - c.errors) if left else 0
            summary = RunSummary(
                self.run_id, cfg.factory, sink.name, len(devices), c.sent, c.delivered, c.bytes, round(elapsed, 3),
                dict(c.by_kind), dict(c.bytes_by_kind), dict(c.faults), c.errors + undelivered,
                c.first_error or (f"{undelivered} message(s) not acknowledged within 30 s" if undelivered else None),
                interrupted or self._stop.is_set(), str(sent_path), cfg.confidential,
                self._recipients.ids if self._recipients else [],
                self._recipients.height if self._recipients else None)
        log.info("run finished", extra={"run": self.run_id, "messages": summary.messages,
                                        "delivered": summary.delivered, "errors": summary.errors,
                                        "seconds": summary.seconds})
        return summary


def run(settings: Settings, config: RunConfig, on_progress: Callable[[RunStats], None] | None = None) -> RunSummary:
    """Run `config` to completion (see `Simulator`)."""
    return Simulator(settings, config).run(on_progress)
