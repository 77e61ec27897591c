"""A ledger node process: the sans-I/O `Replica` wired to TCP, SQLite, timers and HTTP.

Run as ``python -m ledger.node --root DIR --node NAME`` (`infra.ledger_cluster` and
``sealstream ledger up`` do). The node:

* loads genesis, its key (0600) and the peers' addresses from the state
  directory (`ledger.layout`), opens its `BlockStore` and rebuilds the replica
  from the persisted blocks (the store also serves as its archive);
* runs the app the genesis names (`LedgerLayout.executor`): `ContractApp`
  from ``contracts.json`` when ``Genesis.app`` is ``contracts:<hash>`` — and
  refuses to start (exit 2, one log line saying why) when that file is missing
  or its hash differs — else `KVExecutor`;
* feeds `Tick(now_ms)` before every event, decodes frames (a malformed one is
  dropped and counted as ``malformed``; one holding more CBOR items than its
  link allows is dropped as ``too_many_items``; a frame above `OFF_LOOP_BYTES`
  is decoded on a worker thread, so the loop keeps serving meanwhile), and turns a `Request` whose sender is
  not a node (a client) into `RequestSubmitted(tx, client=connection)`;
* carries out effects in order: `CommitBlock` is appended (fsync) to the
  store before anything after it runs; `Reply`s are gathered per client
  connection into one signed `TxReplies` frame; timers are `loop.call_later` handles;
* carries out `Persist(state)` by writing the replica's `SafetyState` (view,
  NEW-VIEW constraints, the last PRE-PREPARE/PREPARE/COMMIT it signed and its
  prepared certificate) to the store's state table, fsynced, before the
  effects after it (the messages it guards) run; a restarted replica is
  rebuilt with `Replica(safety=...)` and rejoins the view it crashed in
  (stores from before this only recorded the view: `Replica(min_view=)`
  then sits that view out);
* serves `ledger.http_api` on its HTTP port — over TLS 1.3 with its own certificate in a TLS
  layout (the client port's context: server authentication; callers pin its genesis key,
  `ledger.https`) — and ``/metrics`` alone over plain HTTP on its metrics port (for Prometheus;
  not while ``SEALSTREAM_METRICS=0``), logs JSON lines to stderr and shuts down cleanly on
  SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from .values import epoch_of
from .contracts.reputation import Reporter, own_score
from .consensus import (
    Broadcast,
    CancelTimer,
    CommitBlock,
    Effect,
    Persist,
    Event,
    MessageReceived,
    Replica,
    Reply,
    RequestSubmitted,
    RequestsSubmitted,
    SafetyState,
    Send,
    SetTimer,
    Tick,
    TimerFired,
)
from .errors import LedgerError, WireError
from .http_api import make_app, make_metrics_app
from .layout import LedgerLayout
from .messages import ClientRequests, Request, decode_message, encode_message
from .metrics import NodeMetrics
from .replies import TxReplies
from .store import BlockStore
from .transport import Connection, Limits, Peer, Transport
from ._verify import CachedVerifier

__all__ = ["Node", "main"]

log = logging.getLogger("sealstream.ledger.node")

_VIEW_KEY = "view"  # legacy: the highest view entered (stores written before SafetyState)
_SAFETY_KEY = "safety"
_ARRIVAL_TTL_S = 600.0
#: frames larger than this are decoded off the event loop (`loop.run_in_executor`)
OFF_LOOP_BYTES = 64 * 1024
#: CBOR items a frame may hold, from a peer (a node's HELLO) and from a client
MAX_FRAME_ITEMS = 1 << 19
CLIENT_MAX_FRAME_ITEMS = 1 << 16


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """One replica process's event loop side (construct, then `await run()`)."""

    def __init__(self, layout: LedgerLayout, name: str) -> None:
        self.layout = layout
        self.name = name
        self.address = layout.address(name)
        self.genesis = layout.genesis()
        self.key = layout.node_key(name)
        self.did = self.key.did
        self._node_set = frozenset(self.genesis.node_ids())
        self.app = layout.app()
        self.executor = layout.executor(self.genesis)  # checks contracts.json against the genesis first
        layout.node_dir(name).mkdir(parents=True, exist_ok=True)
        self.store = BlockStore.open(layout.store_path(name), self.genesis)
        min_view = int(self.store.get_state(_VIEW_KEY, 0))
        saved = self.store.get_state(_SAFETY_KEY)
        safety = None if saved is None else SafetyState.from_wire(saved)
        self.replica = Replica(self.genesis, self.did, self.key.sign, executor=self.executor,
                               verify=CachedVerifier(), committed=self.store.blocks(), archive=self.store,
                               now=now_ms(), min_view=min_view, safety=safety)
        self.persists = 0
        peers = [Peer(a.did, a.host, a.p2p_port) for a in layout.addresses()]
        self.limits = Limits.from_env()
        # TLS bound to the genesis keys unless the layout is a plaintext one (`LedgerLayout.tls`)
        self.tls = layout.node_tls(name, self.key) if layout.tls else None
        self.transport = Transport(chain_id=self.genesis.chain_id, node_id=self.did, host=self.address.host,
                                   port=self.address.p2p_port, peers=peers, on_frame=self._on_frame,
                                   limits=self.limits, tls=self.tls,
                                   client_port=self.address.client_port if self.tls else None)
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.drops: Counter[str] = Counter()
        self.committed_tx = 0
        self.started = time.time()
        self.metrics = NodeMetrics(name, self._metric_values)
        self._timers: dict[tuple, asyncio.TimerHandle] = {}
        self._arrived: dict[bytes, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._logged_view = self.replica.view
        # heartbeats while a backup and equivocation evidence, for reputation (no-op when it is off)
        self.reporter = Reporter(self.key, nonce=time.time_ns() // 1000)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Start the transport, the HTTP API and the replica; return after SIGTERM."""
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stop.set)
        await self.transport.start()
        self._runner = web.AppRunner(make_app(self), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.address.host, self.address.http_port,
                          ssl_context=None if self.tls is None else self.tls.client_server).start()
        a = self.address
        if a.metrics_port is not None and self.metrics.enabled:
            self._metrics_runner = web.AppRunner(make_metrics_app(self), access_log=None)
            await self._metrics_runner.setup()
            await web.TCPSite(self._metrics_runner, a.metrics_host or a.host, a.metrics_port).start()
        log.info("node started", extra={"node": self.name, "did": self.did, "app": self.app,
                                        "height": self.replica.height,
                                        "view": self.replica.view, "p2p_port": self.address.p2p_port,
                                        "http_port": self.address.http_port, "https": self.tls is not None,
                                        "metrics_port": self.address.metrics_port if self._metrics_runner else None,
                                        "sealer": self.replica.is_sealer,
                                        "client_port": self.transport.client_port, "tls": self.tls is not None})
        self._execute(self.replica.start())
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            await self._stop.wait()
        finally:
            housekeeping.cancel()
            await self.close()

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        log.info("node stopping", extra={"node": self.name, "height": self.replica.height})
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self.transport.close()
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self._decoder.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(30)
            cutoff = time.monotonic() - _ARRIVAL_TTL_S
            for tid in [t for t, at in self._arrived.items() if at < cutoff]:
                del self._arrived[tid]
            log.info("status", extra={"node": self.name, "height": self.replica.height, "view": self.replica.view,
                                      "peers": len(self.transport.connected), "mempool": len(self.replica.mempool)})

    # ------------------------------------------------------------ input

    def _on_frame(self, conn: Connection, frame: bytes) -> Any:
        if len(frame) > OFF_LOOP_BYTES:
            return self._on_large_frame(conn, frame)
        try:
            msg = decode_message(frame)
        except WireError:
            self.drops["malformed"] += 1
            return None
        self._on_msg(conn, msg)
        return None

    async def _on_large_frame(self, conn: Connection, frame: bytes) -> None:
        """Decode on the worker thread with the link's item bound; the transport awaits this,
        so one connection's frames stay in order while others are served."""
        items = MAX_FRAME_ITEMS if conn.peer else CLIENT_MAX_FRAME_ITEMS
        assert self._loop is not None
        try:
            msg = await self._loop.run_in_executor(self._decoder, decode_message, frame, items)
        except WireError as exc:
            self.drops["too_many_items" if "more than" in str(exc) else "malformed"] += 1
            return
        self._on_msg(conn, msg)

    def _on_msg(self, conn: Connection, msg: Any) -> None:
        if isinstance(msg, Request) and not conn.peer:
            # a client: the tx signature is what counts (the core checks it)
            if msg.tx.submitter != msg.sender:
                self.drops["bad_request"] += 1
                return
            self._arrived.setdefault(msg.tx.tx_id, time.monotonic())
            # clients send to every sealer themselves, so sealers need not relay
            self.dispatch(RequestSubmitted(msg.tx, conn, relay=not self.replica.is_sealer))
            return
        if isinstance(msg, ClientRequests):
            if conn.peer:
                self.drops["bad_request"] += 1
                return
            txs = tuple(tx for tx in msg.txs if tx.submitter == msg.sender)
            if len(txs) != len(msg.txs):
                self.drops["bad_request"] += len(msg.txs) - len(txs)
            if not txs:
                return
            now = time.monotonic()
            for tx in txs:
                self._arrived.setdefault(tx.tx_id, now)
            self.dispatch(RequestsSubmitted(txs, conn, relay=not self.replica.is_sealer))
            return
        if not conn.peer:
            self.drops["not_peer"] += 1  # a client's link carries requests only
            return
        self.dispatch(MessageReceived(conn.remote, msg))

    def dispatch(self, event: Event) -> None:
        self.replica.handle(Tick(now_ms()))
        self._execute(self.replica.handle(event))

    def _fire(self, timer_id: tuple) -> None:
        self._timers.pop(timer_id, None)
        self.dispatch(TimerFired(timer_id))

    # ------------------------------------------------------------ effects

    def _execute(self, effects: list[Effect]) -> None:
        r = self.replica
        if r.view != self._logged_view:
            log.info("view changed", extra={"node": self.name, "view": r.view, "primary_did": r.primary,
                                            "height": r.height})
            self._logged_view = r.view
        replies: dict[Connection, list[tuple[bytes, Any]]] = {}
        for e in effects:
            if isinstance(e, Send):
                self.transport.send(e.to, encode_message(e.msg))
            elif isinstance(e, Broadcast):
                data = encode_message(e.msg)
                for to in e.to:
                    self.transport.send(to, data)
            elif isinstance(e, SetTimer):
                old = self._timers.pop(e.timer_id, None)
                if old is not None:
                    old.cancel()
                assert self._loop is not None
                self._timers[e.timer_id] = self._loop.call_later(e.delay / 1000, self._fire, e.timer_id)
            elif isinstance(e, CancelTimer):
                old = self._timers.pop(e.timer_id, None)
                if old is not None:
                    old.cancel()
            elif isinstance(e, CommitBlock):
                self._commit(e)
            elif isinstance(e, Persist):
                # fsynced before the messages after it are handed to the transport
                self.store.put_state(_SAFETY_KEY, e.state.to_wire())
                self.persists += 1
            elif isinstance(e, Reply):
                self._reply(e, replies)
        for conn, items in replies.items():
            # one signature per client connection and event (e.g. all its txs in a block)
            if not conn.closed:
                conn.send(TxReplies.of(self.did, items).sign(self.genesis.chain_id, self.key.sign).encode())
        own = self.reporter.due(r)
        if own and self._loop is not None:
            self._loop.call_soon(self._submit_own, own)

    def _submit_own(self, txs: list) -> None:
        """This node's reputation txs, signed by its key, relayed to the sealers like a client's."""
        for tx in txs:
            (log.info if tx.kind == "reputation.evidence" else log.debug)(
                "reputation tx", extra={"node": self.name, "kind": tx.kind, "height": self.replica.height})
            self.dispatch(RequestSubmitted(tx, None, relay=True))

    def _commit(self, e: CommitBlock) -> None:
        self.store.append(e.block, e.cert, e.results)  # fsynced before any later effect
        self.committed_tx += len(e.block.txs)
        now = time.monotonic()
        pop = self._arrived.pop
        self.metrics.commit_latency.observe_many(
            [now - t for t in (pop(tx.tx_id, None) for tx in e.block.txs) if t is not None])
        log.debug("committed", extra={"node": self.name, "height": e.block.height, "txs": len(e.block.txs),
                                      "view": e.cert.view})

    def _reply(self, e: Reply, replies: dict[Connection, list[tuple[bytes, Any]]]) -> None:
        if isinstance(e.result, dict) and "error" in e.result:
            self._arrived.pop(e.tx_id, None)
        if isinstance(e.client, Connection):
            replies.setdefault(e.client, []).append((e.tx_id, e.result))

    # ------------------------------------------------------------ status

    def all_drops(self) -> dict[str, int]:
        """Replica, transport and node drops, reasons in snake_case."""
        out: Counter[str] = Counter()
        for src in (self.replica.drops, self.transport.drops, self.drops):
            for reason, n in src.items():
                out[reason.replace("-", "_")] += n
        return dict(out)

    def _metric_values(self) -> dict[str, Any]:
        r = self.replica
        t = self.transport
        return {"height": r.height, "view": r.view, "sealers": r.sealers.n, "is_sealer": int(r.is_sealer),
                "refused": dict(t.refused), "over_limit": dict(t.over_limit),
                "handshake_failures": dict(t.handshake_failures),
                "mempool_refusals": {k[len("request_"):].lower().replace("-", "_"): n for k, n in r.drops.items()
                                     if k.startswith("request_")},
                "replays": {k[len("replay_"):]: n for k, n in r.drops.items() if k.startswith("replay_")},
                "connections": len(t._conns),
                "reputation": own_score(cast(Any, self.executor).rep_history, self.genesis, self.did),
                "sealer": int(r.is_sealer),
                "peers_connected": len(self.transport.connected), "view_changes": r.view_change_count,
                "committed_tx": self.committed_tx, "drops": self.all_drops()}

    def status(self) -> dict[str, Any]:
        r = self.replica
        names = {n.did: n.name for n in self.genesis.nodes}
        return {
            "node": self.name,
            "did": self.did,
            "chain_id": self.genesis.chain_id,
            "app": self.app,
            "height": r.height,
            "tip": r.last_hash.hex(),
            "state_root": bytes(self.executor.state_root()).hex(),
            "view": r.view,
            "changing_view": r.changing,
            "primary": names.get(r.primary, r.primary),
            "primary_did": r.primary,
            "role": "primary" if r.primary == self.did and r.is_sealer else ("sealer" if r.is_sealer else "backup"),
            "is_sealer": r.is_sealer,
            "epoch": epoch_of(r.height + 1, r.params.epoch_length),
            "sealers": [names.get(s, s) for s in r.sealers.members],
            "sealer_dids": list(r.sealers.members),
            "stable_checkpoint": r.stable,
            "mempool": len(r.mempool),
            "peers_connected": sorted(names.get(p, p) for p in self.transport.connected),
            "peers_total": len(self.transport.peers),
            "committed_tx": self.committed_tx,
            "view_changes": r.view_change_count,
            "drops": self.all_drops(),
            "refused": dict(self.transport.refused),
            "over_limit": dict(self.transport.over_limit),
            "handshake_failures": dict(self.transport.handshake_failures),
            "tls": self.tls is not None,
            "uptime_s": round(time.time() - self.started, 1),
        }


# ---------------------------------------------------------------- process entry


class _JsonLines(logging.Formatter):
    _STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                                 "logger": record.name, "msg": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in self._STD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ledger.node", description="Run one ledger node.")
    ap.add_argument("--root", required=True, type=Path, help="ledger state directory (see ledger.layout)")
    ap.add_argument("--node", required=True, help="node name, e.g. node0")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    try:
        asyncio.run(_amain(args.root, args.node))
    except (OSError, LedgerError) as exc:
        log.error("node failed to start", extra={"node": args.node, "error": str(exc)})
        return 2
    return 0


async def _amain(root: Path, name: str) -> None:
    node = Node(LedgerLayout(root), name)
    await node.run()


if __name__ == "__main__":
    sys.exit(main())
