"""The edge agent: sources -> per (source, device) groups -> signed payloads -> spool -> Kafka.

Each source runs in its own supervised task: an exception in one is logged, counted
(``sealstream_edge_source_restarts_total``) and the source restarted with backoff (1 s doubling to
30 s); the others never notice. Readings are grouped per (source, device) and cut at
``[edge.group] readings`` readings or ``seconds`` after the group's first reading; every due group is
signed and spooled in one fsynced transaction (`edge.spool`). Blobs are signed and spooled one by
one, and `emit` returns only once they are durable. The sender thread (`edge.sender`) forwards.

When the spool is full (`Spool.full`: size or age bound) `emit` waits until there is room (the
source is held at its boundary: files stay in the camera folder, MQTT/OPC UA/Modbus values are not
taken), ``sealstream_edge_spool_full{reason}`` is 1, the wait is counted per source
(``sealstream_edge_spool_blocked_seconds_total``) and logged at the start and end. Room means below
`RESUME_FRACTION` (90 %) of ``max_bytes`` and no message older than ``max_age_s`` (`Agent.spool_full`):
then the alarm is 0 again and every held source resumes where it was held. Nothing already spooled
is dropped.

Durable windows (``durable_windows=True``, the default): `emit` of a reading returns True only once
the reading is committed (fsynced) to the spool's ``pending_readings`` table. One writer task commits
every reading that arrived meanwhile in one transaction (group commit: concurrent sources share an
fsync; one source emitting in a loop pays one fsync per reading). A cut window is signed and spooled,
and its pending readings deleted, in ONE transaction; on start the pending readings are reloaded
into their (source, device) windows in emit order. So a SIGKILL or a power loss loses no reading
`emit` acknowledged, and none ends up in two messages. With ``durable_windows=False`` (benchmarks)
the open windows are only in memory: a SIGKILL loses at most one window per (source, device).

Confidential devices (``confidential = { stream, recipients }``, issue 18): every payload is sealed
for the stream's recipients (`edge.sdk.seal_confidential`) before it is spooled, so the spool, Kafka
and everything after hold the envelope, never the plaintext. Their open windows are durable too, but
never in plaintext: their pending readings go to ``pending_sealed``, each sealed with AES-256-GCM
under the spool key (`edge.pending_seal`, ``[edge.spool] pending_key``, by default
``<spool>/pending.key``, 0600), the AAD binding source, device and row id. A sealed row that does not
open at a restart (edited, moved, another key) is refused with its reason (logged,
``sealstream_edge_pending_refused_total{reason}``, kept in ``pending_refused``), never crashed on.
With ``durable_windows=False`` their windows are in memory like everyone's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from sealstream._kafka_config import KafkaLike

from .config import EdgeConfig, source_factory
from .metrics import EdgeMetrics
from .model import BlobItem, Item, Reading, Signer, Source
from .pending_seal import PendingKey
from .sdk import (
    MAX_SENSORS_PER_PAYLOAD,
    TIMESERIES_CONTENT_TYPE,
    Producer,
    Recipients,
    seal_confidential,
    sign_payload,
    timeseries_payload,
)
from .sender import Sender
from .signing import load_signer
from .spool import Spool

__all__ = ["Agent", "MAX_BYTES", "RESUME_FRACTION", "run_agent"]

log = logging.getLogger("edge.agent")

#: Once full, the sources resume when the spool is below this fraction of ``max_bytes`` (and no message is too old).
RESUME_FRACTION = 0.9

#: The pipeline's default payload limits (SEALSTREAM_MAX_*_BYTES); the agent refuses bigger blobs at the source.
MAX_BYTES = {"timeseries": 512 * 1024, "image": 1_000_000, "video": 8 * 1024 * 1024}


@dataclass
class _Group:
    source: str
    device: str
    rows: list[Reading] = field(default_factory=list)
    started: float = 0.0
    #: The `pending_readings` ids of `rows` (durable windows).
    ids: list[int] = field(default_factory=list)
    #: The `pending_sealed` ids of `rows` (durable windows of a confidential device).
    sealed_ids: list[int] = field(default_factory=list)


class _Context:
    """The `SourceContext` of one source."""

    def __init__(self, agent: "Agent", source: str) -> None:
        self.agent, self.source = agent, source
        self.errors: dict[str, int] = {}
        self.current_state = "connecting"
        self.readings = 0

    async def emit(self, item: Item) -> bool:
        return await self.agent._emit(self, item)

    def error(self, reason: str, detail: str = "") -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.agent.metrics.source_errors.labels(self.source, reason).inc()
        log.warning("source input refused", extra={"source": self.source, "reason": reason, "detail": detail[:500]})

    def state(self, state: str) -> None:
        if state != self.current_state:
            log.info("source state", extra={"source": self.source, "state": state})
        self.current_state = state
        self.agent.metrics.set_state(self.source, state)


class Agent:
    """One edge agent. `sources` overrides the config's (tests, benchmarks)."""

    def __init__(self, cfg: EdgeConfig, bootstrap: KafkaLike, *, sources: Optional[list[Source]] = None,
                 signers: Optional[dict[str, Signer]] = None, metrics_port: Optional[int] = None,
                 max_bytes: Optional[dict[str, int]] = None, durable_windows: bool = True) -> None:
        self.cfg, self.bootstrap = cfg, bootstrap
        self.metrics = EdgeMetrics()
        self.metrics_port = cfg.metrics_port if metrics_port is None else metrics_port
        self.max_bytes = dict(MAX_BYTES, **(max_bytes or {}))
        self.signers = signers if signers is not None else {n: load_signer(d) for n, d in cfg.devices.items()}
        #: the recipients of each confidential device (a file re-read when it changes)
        self.recipients = {n: Recipients(d.confidential.stream, d.confidential.recipients)
                           for n, d in cfg.devices.items() if d.confidential is not None}
        if sources is None:
            sources = [source_factory(s.type, s.section)(s.name, s.section) for s in cfg.sources.values()]
        self.sources = sources
        self.spool = Spool(cfg.spool.path, cfg.spool.max_bytes, cfg.spool.max_age_s)
        #: the spool key of sealed open windows (confidential devices, or sealed rows left from before)
        self.pending_key: Optional[PendingKey] = None
        if durable_windows and (self.recipients or self.spool.pending_sealed):
            self.pending_key = PendingKey.load_or_create(cfg.spool.pending_key_path)
        self.contexts = {s.name: _Context(self, s.name) for s in sources}
        self._groups: dict[tuple[str, str], _Group] = {}
        self.durable_windows = durable_windows
        self._buf: list[tuple[str, Reading, "asyncio.Future[bool]"]] = []
        self._buf_wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._due = asyncio.Event()
        self._stopping = asyncio.Event()
        self._full_since: Optional[float] = None
        self._full_reason: Optional[str] = None
        self.sender: Optional[Sender] = None
        self.started_ms = int(time.time() * 1000)

    # -- what sources call -----------------------------------------------------------------------------
    def spool_full(self) -> Optional[str]:
        """The spool's bound reached (``"size"``/``"age"``), or None. Once full, it stays full (the
        sources held) until the spool is below `RESUME_FRACTION` of ``max_bytes`` and no message is
        older than ``max_age_s``: one alarm per outage, not one per message that fits in again."""
        reason = self.spool.full()
        if (reason is None and self._full_since is not None
                and self.spool.depth[1] > RESUME_FRACTION * self.cfg.spool.max_bytes):
            reason = self._full_reason or "size"
        return reason

    async def _room(self, ctx: _Context) -> bool:
        """Wait while the spool is full (the documented policy); False if the agent stops meanwhile."""
        reason = self.spool_full()
        if reason is None:
            return True
        began = time.monotonic()
        self.metrics.refused.labels(ctx.source).inc()
        if self._full_since is None:
            self._full_since, self._full_reason = began, reason
            self.metrics.spool_full.labels(reason).set(1)
            n, b = self.spool.depth
            log.error("spool full: sources are held until Kafka drains it", extra={
                "reason": reason, "messages": n, "bytes": b, "max_bytes": self.cfg.spool.max_bytes,
                "max_age_s": self.cfg.spool.max_age_s})
        while not self._stopping.is_set():
            await asyncio.sleep(0.2)
            if self.spool_full() is None:
                break
        waited = time.monotonic() - began
        self.metrics.blocked.labels(ctx.source).inc(waited)
        if self.spool_full() is None and self._full_since is not None:
            n, b = self.spool.depth
            log.warning("spool has room again; sources resume",
                        extra={"held_s": round(time.monotonic() - self._full_since, 1), "messages": n, "bytes": b})
            self._full_since = self._full_reason = None
            for r in ("size", "age"):
                self.metrics.spool_full.labels(r).set(0)
        return not self._stopping.is_set()

    async def _emit(self, ctx: _Context, item: Item) -> bool:
        dev = self.cfg.devices.get(item.device)
        if dev is None:
            ctx.error("unknown-device", f"device {item.device!r} is not in the config")
            return False
        if isinstance(item, Reading):
            if dev.kind != "timeseries":
                ctx.error("kind-mismatch", f"a reading for {item.device}, a {dev.kind} device")
                return False
            if dev.sensors and item.sensor not in dev.sensors:
                ctx.error("unknown-sensor", f"sensor {item.sensor!r} is not one of {item.device}'s")
                return False
            if not (0 <= item.ts_ms < 2**63):
                ctx.error("bad-timestamp", f"ts {item.ts_ms}")
                return False
            if not await self._room(ctx):
                return False
            self.metrics.readings.labels(ctx.source).inc()
            ctx.readings += 1
            skew = (item.received_ms - item.ts_ms) / 1000
            self.metrics.skew.labels(ctx.source).observe(skew)
            self.metrics.skew_last.labels(item.device).set(skew)
            if self.durable_windows:
                fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                self._buf.append((ctx.source, item, fut))
                self._buf_wake.set()
                return await fut  # True once the reading is committed to pending_readings/pending_sealed
            if self._add_to_group(ctx.source, item, None):
                self._due.set()
                await asyncio.sleep(0)  # let the flusher run before the next reading piles up
            return True
        if isinstance(item, BlobItem):
            if dev.kind != item.kind:
                ctx.error("kind-mismatch", f"a {item.kind} for {item.device}, a {dev.kind} device")
                return False
            if len(item.data) > self.max_bytes[item.kind]:
                ctx.error("oversized", f"{len(item.data)} bytes > {self.max_bytes[item.kind]} for {item.kind}")
                return False
            if not await self._room(ctx):
                return False
            self.metrics.blobs.labels(ctx.source).inc()
            signer = self.signers[item.device]

            def build(seq: int, item: BlobItem = item) -> Any:
                return self._message(item.device, signer, seq, item.ts_ms, item.kind, item.content_type, item.data,
                                     item.received_ms)

            async with self._flush_lock:
                (msg,) = await asyncio.to_thread(self.spool.append, [(signer.did, build, item.ref, ctx.source)])
            self.metrics.spool_writes.inc()
            if msg is not None:
                self.metrics.messages.labels(ctx.source, item.kind).inc()
                self.metrics.skew.labels(ctx.source).observe((item.received_ms - item.ts_ms) / 1000)
            return True
        ctx.error("bad-item", f"{type(item).__name__} is not a Reading or BlobItem")
        return False

    def _message(self, device: str, signer: Signer, seq: int, ts_ms: int, kind: str, content_type: str,
                 payload: bytes, received_ms: int) -> Any:
        """The Kafka record of one payload: signed, and sealed first for a confidential device."""
        rc = self.recipients.get(device)
        if rc is None:
            return sign_payload(signer, seq, ts_ms, kind, content_type, payload, received_ms)
        return seal_confidential(signer, seq, ts_ms, kind, content_type, payload, stream=rc.stream,
                                 recipients=rc.current(), received_ms=received_ms)

    # -- grouping --------------------------------------------------------------------------------------
    def _add_to_group(self, source: str, r: Reading, pending_id: Optional[int], sealed: bool = False) -> bool:
        """Append to the (source, device) window; True when it is full (due)."""
        key = (source, r.device)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(source, r.device, [], time.monotonic())
        g.rows.append(r)
        if pending_id is not None:
            (g.sealed_ids if sealed else g.ids).append(pending_id)
        return len(g.rows) >= self.cfg.group.readings

    def _reload_pending(self) -> int:
        """The open windows from `pending_readings` and `pending_sealed` (the database is the truth):
        start, and shutdown. Plain and sealed rows of one window are never mixed in one device's
        config life (a device is confidential or not), so each table's id order is the emit order."""
        self._groups = {}
        n = kept = 0
        rows: list[tuple[int, tuple[str, str, str, float, int, int], bool]] = [
            (id_, r, False) for id_, r in self.spool.load_pending()]
        if self.pending_key is not None:
            opened, refused = self.spool.load_sealed(self.pending_key)
            rows += [(id_, r, True) for id_, r in opened]
            for id_, device, reason, detail in refused:
                self.metrics.pending_refused.labels(reason).inc()
                log.error("a sealed pending reading was refused (kept in pending_refused)",
                          extra={"reason": reason, "row": id_, "device": device, "detail": detail[:300]})
        for id_, (source, device, sensor, value, ts_ms, received_ms), sealed in rows:
            dev = self.cfg.devices.get(device)
            if device not in self.signers or dev is None or dev.kind != "timeseries":
                kept += 1  # stays pending (never dropped) until the device is configured again
                continue
            self._add_to_group(source, Reading(device, sensor, value, ts_ms, received_ms), id_, sealed)
            n += 1
        if kept:
            log.warning("pending readings of devices not configured (as time series) are kept, not spooled",
                        extra={"readings": kept})
        if any(len(g.rows) >= self.cfg.group.readings for g in self._groups.values()):
            self._due.set()
        return n

    async def _pending_writer(self) -> None:
        """Group commit of the readings `emit` holds: one fsynced transaction per batch, then into windows."""
        while True:
            await self._buf_wake.wait()
            self._buf_wake.clear()
            while self._buf:
                batch, self._buf = self._buf, []
                rows = [(src, r.device, r.sensor, float(r.value), int(r.ts_ms), int(r.received_ms))
                        for src, r, _ in batch]
                sealed = [r.device in self.recipients for _, r, _ in batch]  # no plaintext on disk for these
                ids: Optional[list[int]] = None
                while ids is None:
                    try:
                        ids = await asyncio.to_thread(self.spool.add_pending, rows, sealed, self.pending_key)
                    except Exception:
                        log.exception("writing pending readings failed; retried in 1 s")
                        if self._stopping.is_set():
                            for _s, _r, fut in batch + self._buf:
                                if not fut.done():
                                    fut.set_result(False)  # not acknowledged: the source keeps it
                            self._buf = []
                            return
                        await asyncio.sleep(1.0)
                due = False
                for (src, r, fut), id_, seal in zip(batch, ids, sealed):
                    due = self._add_to_group(src, r, id_, seal) or due
                    if not fut.done():
                        fut.set_result(True)
                if due:
                    self._due.set()
            if self._stopping.is_set():
                return

    async def flush(self, force: bool = False) -> int:
        """Sign and spool every due group (all when `force`); the number of messages spooled."""
        async with self._flush_lock:
            now = time.monotonic()
            due = [k for k, g in self._groups.items()
                   if force or len(g.rows) >= self.cfg.group.readings or now - g.started >= self.cfg.group.seconds]
            builds = []
            kinds = []
            consumed: list[int] = []
            consumed_sealed: list[int] = []
            popped = {k: self._groups.pop(k) for k in due}
            for g in popped.values():
                consumed.extend(g.ids)
                consumed_sealed.extend(g.sealed_ids)
                signer = self.signers[g.device]
                rows = g.rows
                for part in _split(rows, self.cfg.group.readings):
                    def build(seq: int, part: list[Reading] = part, signer: Signer = signer,
                              device: str = g.device) -> Any:
                        payload = timeseries_payload((r.ts_ms, r.sensor, r.value) for r in part)
                        return self._message(device, signer, seq, max(r.ts_ms for r in part), "timeseries",
                                             TIMESERIES_CONTENT_TYPE, payload, max(r.received_ms for r in part))
                    builds.append((signer.did, build, None, g.source))
                    kinds.append(g.source)
            if not builds:
                return 0
            try:
                await asyncio.to_thread(self.spool.append, builds, consumed, consumed_sealed)
            except Exception:
                for k, g in popped.items():  # rolled back: the windows are still open, in order
                    newer = self._groups.get(k)
                    if newer is not None:
                        g.rows += newer.rows
                        g.ids += newer.ids
                        g.sealed_ids += newer.sealed_ids
                    self._groups[k] = g
                raise
            self.metrics.spool_writes.inc()
            for src in kinds:
                self.metrics.messages.labels(src, "timeseries").inc()
            return len(builds)

    async def _flusher(self) -> None:
        tick = min(0.25, self.cfg.group.seconds / 4)
        while True:
            try:
                await asyncio.wait_for(self._due.wait(), tick)
            except asyncio.TimeoutError:
                pass
            if self._stopping.is_set():
                return  # the agent's shutdown flushes everything (force)
            self._due.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("spooling a group failed; retried on the next tick")
                await asyncio.sleep(1.0)

    # -- running ---------------------------------------------------------------------------------------
    async def _supervise(self, source: Source) -> None:
        ctx = self.contexts[source.name]
        backoff = 1.0
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                await source.run(ctx)
                log.warning("source returned; restarting it", extra={"source": source.name})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - isolation: one source's crash never stops the others
                log.error("source crashed; restarting it", extra={"source": source.name,
                                                                  "error": f"{type(exc).__name__}: {exc}"[:500]})
            self.metrics.source_restarts.labels(source.name).inc()
            ctx.state("disconnected")
            if time.monotonic() - began > 60:
                backoff = 1.0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    def status(self) -> dict:
        st = self.spool.stats()
        return {
            "pid": os.getpid(), "factory": self.cfg.factory, "started_ms": self.started_ms,
            "updated_ms": int(time.time() * 1000), "kafka_bootstrap": str(self.bootstrap),
            "last_send_ms": self.sender.last_send_ms if self.sender else None,
            "sent": self.sender.sent if self.sender else 0,
            "spool": {"messages": st.messages, "bytes": st.bytes, "oldest_age_s": round(st.age_s(), 3),
                      "full": self.spool_full(), "rejected": st.rejected},
            "sources": {n: {"state": c.current_state, "readings": c.readings, "errors": dict(c.errors)}
                        for n, c in self.contexts.items()},
        }

    def _write_status(self) -> None:
        path = self.cfg.spool.path / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, path)

    def _gauges(self) -> None:
        st = self.spool.stats()
        self.metrics.spool_messages.set(st.messages)
        self.metrics.spool_bytes.set(st.bytes)
        self.metrics.spool_age.set(st.age_s())
        full = self.spool_full()
        for r in ("size", "age"):
            self.metrics.spool_full.labels(r).set(1 if full == r else 0)

    async def _housekeeping(self) -> None:
        n = 0
        while True:
            try:
                self._gauges()
                if n % 4 == 0:
                    await asyncio.to_thread(self._write_status)
                if n % 3600 == 0:
                    self.spool.prune_refs(max(7 * 86400, 2 * self.cfg.spool.max_age_s))
                if self.sender is not None and self.sender.error is not None:
                    raise RuntimeError(f"the Kafka sender stopped: {self.sender.error}")
            except RuntimeError:
                raise
            except Exception:
                log.exception("housekeeping failed")
            n += 1
            await asyncio.sleep(0.5)

    async def run(self, stop: Optional[asyncio.Event] = None) -> None:
        """Until `stop` is set (or SIGTERM/SIGINT when run by `run_agent`): then flush and drain."""
        stop = stop or asyncio.Event()
        if self.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(self.metrics_port, registry=self.metrics.registry)
        self.sender = Sender(self.spool, lambda: Producer(self.bootstrap), self.metrics)
        self.sender.start()
        reloaded = self._reload_pending() if self.durable_windows else 0
        n, b = self.spool.depth
        log.info("edge agent started", extra={"factory": self.cfg.factory, "sources": len(self.sources),
                                              "devices": len(self.signers), "spooled": n, "spool_bytes": b,
                                              "pending_readings": reloaded,
                                              "kafka": str(self.bootstrap), "metrics_port": self.metrics_port})
        tasks = [asyncio.create_task(self._supervise(s), name=f"source-{s.name}") for s in self.sources]
        # the writer and the flusher are not cancelled at shutdown (a commit is never cut off): they end
        # after their current transaction once _stopping is set
        committers = [asyncio.create_task(self._flusher(), name="flusher"),
                      asyncio.create_task(self._pending_writer(), name="pending-writer")]
        housekeeping = asyncio.create_task(self._housekeeping(), name="housekeeping")
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, housekeeping, *committers], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            self._stopping.set()
            for t in tasks + [housekeeping, stopper]:
                t.cancel()
            await asyncio.gather(*tasks, housekeeping, stopper, return_exceptions=True)
            self._due.set()
            self._buf_wake.set()
            await asyncio.gather(*committers, return_exceptions=True)
            try:
                if self.durable_windows:
                    self._reload_pending()  # exactly what is pending, whatever the flusher was doing
                await self.flush(force=True)
            finally:
                self.sender.stop()
                await asyncio.to_thread(self.sender.join, 30)
                self._write_status()
                self.spool.close()
                log.info("edge agent stopped", extra={"sent": self.sender.sent, "spooled": self.spool.depth[0]})


def _split(rows: list[Reading], n: int) -> list[list[Reading]]:
    """Groups of at most `n` readings and at most 127 sensors each (Arrow dictionary<int8>)."""
    out: list[list[Reading]] = []
    cur: list[Reading] = []
    names: set[str] = set()
    for r in rows:
        if len(cur) >= n or (r.sensor not in names and len(names) >= MAX_SENSORS_PER_PAYLOAD):
            out.append(cur)
            cur, names = [], set()
        cur.append(r)
        names.add(r.sensor)
    if cur:
        out.append(cur)
    return out


def run_agent(cfg: EdgeConfig, bootstrap: KafkaLike) -> None:
    """Run until SIGTERM/SIGINT (blocking)."""

    async def main() -> None:
        agent = Agent(cfg, bootstrap)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    asyncio.run(main())
