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
  worker owns partitions another worker sealed), but only if that gateway's
  key is bound to a gateway on *this* ledger: a seal by a key our ledger does
  not know cannot be verified against its registry, so it is left alone
  (counted in ``sealstream_pipeline_anchor_skipped_total{reason}``, logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from ._anchor_plan import SealError, SealedLeaf, parse_sealed
from .anchor import Anchorer
from .metrics import PipelineMetrics

__all__ = ["add_anchor_agent", "GatewayFilter", "SEALED", "ANCHORS"]

log = logging.getLogger("sealstream.pipeline.anchor")
SEALED = "iiot.sealed"
ANCHORS = "iiot.anchors"
_RAW: dict = dict(key_type=bytes, value_type=bytes)


class GatewayFilter:
    """Is a sealing gateway's did bound to a gateway on our ledger? (own did: always; cached)"""

    def __init__(self, ledger: Any, own_did: str, ttl: float = 60.0, negative_ttl: float = 10.0) -> None:
        self._ledger = ledger
        self._own = own_did
        self._ttl, self._negative_ttl = ttl, negative_ttl
        self._cache: dict[str, tuple[float, bool]] = {}

    def known(self, did: str | None) -> bool:
        if did is None or did == self._own:
            return True
        now = time.monotonic()
        hit = self._cache.get(did)
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = self._ledger.resolve_key(did)
        res = (answer or {}).get("resolution") or {}
        ok = res.get("type") == "gateway"
        self._cache[did] = (now + (self._ttl if ok else self._negative_ttl), ok)
        return ok


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


def add_anchor_agent(app: Any, anchorer: Anchorer, metrics: PipelineMetrics, *, window_s: float,
                     produce: Callable[[Any, bytes, bytes, list], Awaitable[None]]) -> None:
    """Add the anchor agent and its submitter task to `app`; `produce(topic, key, value, headers)`
    sends and waits for the broker's ack."""
    sealed = app.topic(SEALED, **_RAW)
    anchors = app.topic(ANCHORS, **_RAW)
    gateways = GatewayFilter(anchorer.ledger, anchorer.ledger.key.did)
    skipped = metrics.anchor_skipped
    state: dict[str, Any] = {}

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
        out = []
        for ev in events:
            try:
                leaf = parse_sealed(ev.message.value or b"")
            except SealError as exc:
                log.error("iiot.sealed %d/%d: %s", ev.message.partition, ev.message.offset, exc)
                skipped.labels("malformed-seal").inc()
                continue
            if not gateways.known(leaf.gateway):
                log.warning("seal of %s by gateway %s: not a gateway on this ledger, not anchored here",
                            leaf.statement_hash.hex(), leaf.gateway)
                skipped.labels("unknown-gateway").inc()
                continue
            out.append(leaf)
        return out

    async def anchor_agent(stream: Any) -> None:
        kick()
        async for events in stream.noack_take(anchorer.max_leaves, within=window_s):
            leaves = await _retrying("resolve sealing gateways", lambda: leaves_of(events))
            if leaves:
                await _retrying("record batches", lambda: anchorer.add(leaves))
            for ev in events:  # only now: their statements are in batches (or not ours)
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
