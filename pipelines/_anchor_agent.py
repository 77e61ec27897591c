"""The anchor agent of the Faust app: ``iiot.sealed`` -> `Anchorer` -> ``iiot.anchors``.

- The agent reads its partitions of ``iiot.sealed`` with ``noack_take``
  (at most ``pipeline_anchor_max_leaves`` seals, or what arrived within
  ``pipeline_anchor_window_s``), records the window as pending batches
  (`Anchorer.add`, retried with backoff while PostgreSQL is down) and only
  then acks the seals: a seal's offset is committed once its statement is in
  a batch, so a crash re-reads it and `add` skips it (already a leaf).
- A submitter task anchors this gateway's open batches (`anchor_pending`):
  at start-up (resolving a crash's leftovers by ledger lookup), whenever the
  agent recorded a batch, and every second for retries (per-batch backoff).
- A seal made by another gateway is anchored here too (after a rebalance a
  worker owns partitions another worker sealed; an ``--anchor-only`` process
  anchors every ingest worker's seals), but only if that gateway's key is bound
  to a gateway on *this* ledger: a seal by a key our ledger does not know
  cannot be verified against its registry.
- **No seal is acked and forgotten.**  Each seal of a window is, before the
  window is acked, either recorded in a batch, or *deferred*, or refused
  visibly (`pipelines._anchor_plan.triage`):
  - sealed by a key bound to nothing on our ledger (a gateway not registered
    *yet*, or another ledger's sharing the topic): deferred.  It is acked only
    once its statement is known to be stored *sealed* in our database (the
    durable record; ``sealstream_pipeline_anchor_deferred_total{reason}``),
    and the sweep batches it as soon as the gateway is registered;
  - never batchable here, each logged and counted in
    ``sealstream_pipeline_anchor_skipped_total{reason}``: ``malformed-seal``,
    ``not-a-gateway`` (the key is a device's or a node's), ``not-stored`` (the
    statement is not in this database);
  - an error (the ledger or PostgreSQL unreachable) retries the whole window,
    un-acked.
- **The sweep** (a periodic task, every ``SEALSTREAM_PIPELINE_ANCHOR_SWEEP_INTERVAL_S``,
  15 s; 0 = off) batches sealed statements that are in no batch although
  stored more than ``SEALSTREAM_PIPELINE_ANCHOR_SWEEP_GRACE_S`` (60 s) ago:
  deferred seals, and statements whose seal never reached an anchor agent
  (`Anchorer.sweep`).  Concurrent sweepers and agents are safe: the unique
  ``batch_leaves.statement_hash`` decides, the loser re-cuts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from typing import Any, Callable, Coroutine, Optional

from ._anchor_metrics import sweep_metrics
from ._anchor_plan import GATEWAY, UNBOUND, SealError, SealedLeaf, parse_sealed, settle_deferred, triage
from .anchor import Anchorer
from .metrics import PipelineMetrics
from sealstream.topics import ANCHORS, SEALED

__all__ = ["add_anchor_agent", "GatewayFilter", "SEALED", "ANCHORS", "SWEEP_GRACE_ENV", "SWEEP_INTERVAL_ENV",
           "sweep_settings"]

log = logging.getLogger("sealstream.pipeline.anchor")
_RAW: dict = dict(key_type=bytes, value_type=bytes)
#: The sweep's grace period and interval (seconds; interval 0 = no sweep).  Environment variables named
#: like settings (``SEALSTREAM_PIPELINE_ANCHOR_SWEEP_*``), read here until they are `Settings` fields.
SWEEP_GRACE_ENV = "SEALSTREAM_PIPELINE_ANCHOR_SWEEP_GRACE_S"
SWEEP_INTERVAL_ENV = "SEALSTREAM_PIPELINE_ANCHOR_SWEEP_INTERVAL_S"
SWEEP_GRACE_S, SWEEP_INTERVAL_S = 60.0, 15.0


def sweep_settings(settings: Any = None, environ: Optional[dict] = None) -> tuple[float, float]:
    """``(grace_s, interval_s)`` of the sweep: `settings` fields ``pipeline_anchor_sweep_grace_s`` /
    ``_interval_s`` if it has them, else the environment, else 60 s / 15 s.  `ValueError` if not a number >= 0."""
    env = os.environ if environ is None else environ
    out = []
    for field, name, default in (("pipeline_anchor_sweep_grace_s", SWEEP_GRACE_ENV, SWEEP_GRACE_S),
                                 ("pipeline_anchor_sweep_interval_s", SWEEP_INTERVAL_ENV, SWEEP_INTERVAL_S)):
        value = getattr(settings, field, None) if settings is not None else None
        if value is None:
            raw = env.get(name)
            try:
                value = default if raw in (None, "") else float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, not {value!r}")
        out.append(float(value))
    return out[0], out[1]


class GatewayFilter:
    """What is a sealing gateway's did on our ledger?  `status(did)`: ``"gateway"`` (bound to a gateway;
    our own did always), ``"unbound"`` (bound to nothing: not registered yet, or another ledger's) or
    the type of the entity it is bound to.  Answers are cached (`ttl` for gateways, `negative_ttl`
    otherwise, so a gateway registered later is seen soon); a ledger error raises (the caller retries)."""

    def __init__(self, ledger: Any, own_did: str, ttl: float = 60.0, negative_ttl: float = 10.0) -> None:
        self._ledger = ledger
        self._own = own_did
        self._ttl, self._negative_ttl = ttl, negative_ttl
        self._cache: dict[str, tuple[float, str]] = {}

    def status(self, did: Optional[str]) -> str:
        if did is None or did == self._own:
            return GATEWAY
        now = time.monotonic()
        hit = self._cache.get(did)
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = self._ledger.resolve_key(did)
        res = (answer or {}).get("resolution") or {}
        st = str(res.get("type") or UNBOUND)
        self._cache[did] = (now + (self._ttl if st == GATEWAY else self._negative_ttl), st)
        return st

    def known(self, did: Optional[str]) -> bool:
        return self.status(did) == GATEWAY


async def _retrying(what: str, fn: Callable[[], Any]) -> Any:
    """Run blocking `fn` in a thread until it succeeds.  Any error (PostgreSQL, MinIO or the ledger
    unreachable) backs off and retries: the window's seals are not acked until it succeeded, and the
    agent must not die (Faust would stop consuming the partitions)."""
    delay = 0.5
    while True:
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s failed, retrying in %.1f s: %s: %s", what, delay, type(exc).__name__, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _per_gateway(leaves: tuple[SealedLeaf, ...], logged: dict[tuple[str, str], float], what: str,
                 every_s: float = 60.0) -> list[tuple[str, int, str]]:
    """``(gateway, count, first statement hash)`` of `leaves` per sealing gateway, for those not logged
    about (`what`) in the last `every_s` seconds (one log line a minute per gateway, whatever the rate)."""
    by_gw: dict[str, list[SealedLeaf]] = {}
    for leaf in leaves:
        by_gw.setdefault(leaf.gateway or "?", []).append(leaf)
    now, out = time.monotonic(), []
    for gw, lst in by_gw.items():
        if now - logged.get((what, gw), -1e9) >= every_s:
            logged[(what, gw)] = now
            out.append((gw, len(lst), lst[0].statement_hash.hex()))
    return out


def add_anchor_agent(app: Any, anchorer: Anchorer, metrics: PipelineMetrics, *, window_s: float,
                     produce: Callable[[Any, bytes, bytes, list], Coroutine[Any, Any, None]],
                     sweep_grace_s: Optional[float] = None, sweep_interval_s: Optional[float] = None) -> None:
    """Add the anchor agent, its submitter task and the sweep task to `app`; `produce(topic, key, value,
    headers)` sends and waits for the broker's ack.  The sweep's grace and interval default to
    `sweep_settings()` (environment)."""
    sealed = app.topic(SEALED, **_RAW)
    anchors = app.topic(ANCHORS, **_RAW)
    gateways = GatewayFilter(anchorer.ledger, anchorer.ledger.key.did)
    skipped = metrics.anchor_skipped
    extra = sweep_metrics(metrics)
    grace, interval = sweep_settings()
    grace = grace if sweep_grace_s is None else sweep_grace_s
    interval = interval if sweep_interval_s is None else sweep_interval_s
    state: dict[str, Any] = {}
    logged: dict[tuple[str, str], float] = {}  # (what, gateway did) -> last log line (one a minute each)

    def kick() -> asyncio.Event:
        if "kick" not in state:
            state["kick"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
        return state["kick"]

    def publish(batch: Any, commit: Any, value: bytes) -> None:  # called from the submitter's thread
        fut = asyncio.run_coroutine_threadsafe(produce(anchors, batch.batch_id.encode("ascii"), value, []),
                                               state["loop"])
        fut.result(timeout=120)

    anchorer.publish = publish

    def leaves_of(events: list) -> list[SealedLeaf]:
        """The window's seals to cut now; every other one is settled (deferred with its statement
        stored sealed here, or refused for good), counted and logged.  Raises on a ledger or database
        error (nothing counted: the whole window is retried, un-acked)."""
        parsed, malformed = [], []
        for ev in events:
            try:
                parsed.append(parse_sealed(ev.message.value or b""))
            except SealError as exc:
                malformed.append((ev.message.partition, ev.message.offset, exc))
        tri = triage(parsed, gateways.status)
        kept: tuple[SealedLeaf, ...] = ()
        absent: tuple[SealedLeaf, ...] = ()
        if tri.defer:
            stored = anchorer.reader.sealed_statements(lf.statement_hash for lf in tri.defer)
            kept, absent = settle_deferred(tri.defer, stored)
        # settled: count and log (only now, so a retried window is not counted twice)
        for partition, offset, err in malformed:
            log.error("%s %d/%d: %s; never anchored from this seal", SEALED, partition, offset, err)
            skipped.labels("malformed-seal").inc()
        for leaf, kind in tri.refuse:
            log.error("seal of %s by %s: bound to a %s on this ledger, not a gateway; never anchored",
                      leaf.statement_hash.hex(), leaf.gateway, kind)
            skipped.labels("not-a-gateway").inc()
        if absent:
            skipped.labels("not-stored").inc(len(absent))
            for gw, n, first in _per_gateway(absent, logged, "absent"):
                log.warning("%d seal(s) by %s (not a gateway on this ledger), e.g. of %s: statement not stored "
                            "sealed in this database; never anchored here", n, gw, first)
        if kept:
            extra.deferred.labels("unknown-gateway").inc(len(kept))
            for gw, n, first in _per_gateway(kept, logged, "deferred"):
                log.warning("%d seal(s) by %s deferred, e.g. of %s: not a gateway on this ledger (not registered "
                            "yet, or another ledger's); stored sealed here, the sweep batches them once it is",
                            n, gw, first)
        return list(tri.batch)

    async def anchor_agent(stream: Any) -> None:
        kick()
        async for events in stream.noack_take(anchorer.max_leaves, within=window_s):
            leaves = await _retrying("resolve sealing gateways", functools.partial(leaves_of, events))
            if leaves:
                await _retrying("record batches", functools.partial(anchorer.add, leaves))
            for ev in events:  # only now: in batches, deferred (stored sealed: the sweep's) or refused, counted
                await stream.ack(ev)
            kick().set()

    anchor_agent.__name__ = anchor_agent.__qualname__ = "anchor"
    app.agent(sealed, name="anchor")(anchor_agent)

    async def submitter() -> None:
        event = kick()
        while True:
            try:
                await asyncio.wait_for(event.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            event.clear()
            try:
                await asyncio.to_thread(anchorer.anchor_pending, respect_backoff=True)
                await asyncio.to_thread(anchorer.backlog)
            except Exception as exc:  # noqa: BLE001 - the task must survive anything; batches stay recorded
                log.warning("anchoring pass failed, retrying: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    submitter.__name__ = submitter.__qualname__ = "anchor_submitter"
    app.task(submitter)

    if interval <= 0:
        log.warning("anchor sweep off (%s=0): statements whose seal is lost are never batched", SWEEP_INTERVAL_ENV)
        return

    async def sweeper() -> None:
        """Every `interval` s: `Anchorer.sweep` (sealed statements in no batch past `grace`), then kick
        the submitter if it wrote batches.  Errors are logged and retried at the next pass."""
        while True:
            await asyncio.sleep(interval)
            try:
                res = await asyncio.to_thread(anchorer.sweep, gateways.status, grace_s=grace)
            except Exception as exc:  # noqa: BLE001 - the task must survive anything; the next pass retries
                extra.sweep_passes.labels("error").inc()
                log.warning("anchor sweep failed, retrying in %.0f s: %s: %s", interval, type(exc).__name__, exc)
                continue
            extra.sweep_passes.labels("ok").inc()
            if res.batches:
                kick().set()

    sweeper.__name__ = sweeper.__qualname__ = "anchor_sweeper"
    app.task(sweeper)
