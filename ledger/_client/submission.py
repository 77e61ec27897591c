"""Submitting transactions: signing, TCP batching to the sealers, retries, following sealer sets.

A submit signs a `Transaction` (nonce: a counter started at the current time
in microseconds), queues it for every sealer of the latest verified set, and
waits for the tally (`tally.Tally`) to decide. Everything queued in one
event-loop turn leaves as one `ClientRequests` frame per node (at most
`MAX_BATCH` txs); the frame is not signed, each tx is. Answers arrive as
signed `TxReplies` frames on the same connections. After `retry_after` the
tx goes to every node (backups relay), until `timeout`. The client follows
the chain as a light client to know the sealer set of each height.

With a TLS layout (a node address with a ``client_port``) the connection is TLS 1.3 to that
port, and the node's certificate must carry the Ed25519 key the genesis names for it
(`ledger.tls.pinned`, checked before anything is written): a node is trusted for what the
genesis says, nothing else. A node that fails the pin counts in ``handshake_errors`` and is
tried again after the usual pause.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from typing import TYPE_CHECKING, Any, Iterable

from ..values import BlockHeader, CommitCertificate, Genesis, SealerSet, Transaction, epoch_of
from .._verify import CachedVerifier
from ..errors import WireError
from ..layout import NodeAddress
from ..light_client import LightClient, LightClientError
from ..messages import ClientRequests, encode_message
from ..replies import TxReplies
from ..tls import client_context, pinned
from ..transport import FrameError, hello, read_frame, write_frame
from .errors import LedgerClientError, SubmitTimeout
from .records import Receipt
from .tally import Tally, Undecided

if TYPE_CHECKING:
    from trust.identity import KeyPair

__all__ = ["MAX_BATCH", "Submission"]

_MAX_FRAME = 16 * 1024 * 1024
#: most transactions in one `ClientRequests` frame
MAX_BATCH = 1024
#: most tx bytes in one frame: a node takes at most ``ledger_client_max_frame`` (1 MiB) from a client
MAX_BATCH_BYTES = 768 * 1024


def _batches(txs: list[Transaction]) -> list[tuple[Transaction, ...]]:
    """`txs` in order, in chunks of at most `MAX_BATCH` txs and `MAX_BATCH_BYTES` (a larger tx alone)."""
    out: list[tuple[Transaction, ...]] = []
    cur: list[Transaction] = []
    size = 0
    for tx in txs:
        n = len(tx.raw)
        if cur and (len(cur) >= MAX_BATCH or size + n > MAX_BATCH_BYTES):
            out.append(tuple(cur))
            cur, size = [], 0
        cur.append(tx)
        size += n
    if cur:
        out.append(tuple(cur))
    return out


class _Wait:
    """One submitted transaction: its tally and the future its submitters await."""

    def __init__(self, tx: Transaction, loop: asyncio.AbstractEventLoop) -> None:
        self.tx = tx
        self.future: asyncio.Future[Receipt] = loop.create_future()
        self.tally = Tally(tx)


class _Link:
    """One TCP connection to a node's p2p port; replies are read by a task."""

    def __init__(self, client: "Submission", addr: NodeAddress) -> None:
        self.client = client
        self.addr = addr
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock = asyncio.Lock()
        self.down_until = 0.0

    async def send(self, frame: bytes) -> bool:
        if self.writer is None or self.writer.is_closing():
            if time.monotonic() < self.down_until:
                return False
            async with self._connecting:
                if self.writer is None or self.writer.is_closing():
                    a = self.addr
                    try:
                        if a.client_port is None:  # a plaintext layout: the one port of before
                            conn = asyncio.open_connection(a.host, a.p2p_port)
                        else:
                            conn = asyncio.open_connection(a.host, a.client_port, ssl=self.client._tls(),
                                                           server_hostname=a.host, ssl_handshake_timeout=2.0)
                        reader, writer = await asyncio.wait_for(conn, 2.0)
                    except (OSError, asyncio.TimeoutError):
                        self.down_until = time.monotonic() + 0.5
                        return False
                    if a.client_port is not None and not pinned(writer.get_extra_info("ssl_object"), a.did):
                        self.client.handshake_errors += 1
                        writer.transport.abort()
                        self.down_until = time.monotonic() + 0.5
                        return False
                    write_frame(writer, hello(self.client.genesis.chain_id, self.client.key.did))
                    self.writer = writer
                    self.reader_task = asyncio.ensure_future(self._read(reader))
        assert self.writer is not None
        try:
            write_frame(self.writer, frame)
            await self.writer.drain()
        except (OSError, ConnectionError):
            self.writer.close()
            return False
        return True

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await read_frame(reader, _MAX_FRAME)
                if frame is None:
                    break
                self.client._on_reply(frame)
        except (FrameError, OSError, ConnectionError):
            pass
        finally:
            if self.writer is not None:
                self.writer.close()

    async def close(self) -> None:
        if self.reader_task is not None:
            self.reader_task.cancel()
        if self.writer is not None:
            self.writer.close()


class Submission:
    """The submitting half of `AsyncLedgerClient` (its state is set by `_init_submission`)."""

    genesis: Genesis
    nodes: list[NodeAddress]
    key: KeyPair
    _verify: CachedVerifier

    def _init_submission(self, timeout: float, retry_after: float) -> None:
        self.timeout = timeout
        self.retry_after = retry_after
        self._node_dids = frozenset(self.genesis.node_ids())
        self.light = LightClient.from_genesis(self.genesis, verify=self._verify)
        self.not_sealer_votes = 0  # answers from nodes that were not sealers at the committing height
        self.header_errors = 0  # header pages that did not verify (a faulty node, or none reachable)
        self._sync_target = 0
        self._sync_task: asyncio.Task[None] | None = None
        self._nonce = itertools.count(time.time_ns() // 1000)
        self._waits: dict[bytes, _Wait] = {}
        self._links: dict[str, _Link] = {}
        self.replies_rejected = 0
        self._outbox: dict[str, list[Transaction]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._sending: set[asyncio.Future[Any]] = set()
        self.frames_sent = 0
        self.handshake_errors = 0  # nodes whose TLS certificate did not carry their genesis key
        self._tls_context: ssl.SSLContext | None = None

    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = client_context()
        return self._tls_context

    if TYPE_CHECKING:  # provided by `queries.Queries`, the other half of `AsyncLedgerClient`
        async def get_headers(self, start: int = 1, end: int | None = None,
                              node: str | None = None) -> list[tuple[BlockHeader, CommitCertificate]]: ...

    @property
    def sealers(self) -> SealerSet:
        """The latest sealer set this client has verified (genesis until it follows a rotation)."""
        sets = self.light.sealer_sets
        return sets[max(sets)]

    @property
    def voters(self) -> frozenset[str]:
        return frozenset(self.sealers.members)

    @property
    def need(self) -> int:
        return self.sealers.f + 1

    def sealers_at(self, height: int) -> SealerSet | None:
        """The verified sealer set of `height`'s epoch, or None if not followed that far yet."""
        return self.light.sealer_sets.get(epoch_of(max(height, 1), self.genesis.params.epoch_length))

    async def _close_submission(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._outbox.clear()
        for fut in list(self._sending):
            fut.cancel()
        for link in self._links.values():
            await link.close()
        self._links.clear()

    # ------------------------------------------------------------ submitting

    def make_tx(self, kind: str, payload: Any, nonce: int | None = None) -> Transaction:
        """A transaction signed by this client's key (fresh nonce unless given)."""
        return Transaction.create(self.key, next(self._nonce) if nonce is None else nonce, kind, payload)

    async def submit(self, kind: str, payload: Any) -> Receipt:
        """Sign and submit one transaction; return once f+1 sealers report it committed."""
        return await self.submit_tx(self.make_tx(kind, payload))

    async def submit_tx(self, tx: Transaction) -> Receipt:
        """Submit an already signed transaction (it may be someone else's)."""
        wait = self._waits.get(tx.tx_id)
        if wait is not None:
            return await asyncio.shield(wait.future)
        wait = _Wait(tx, asyncio.get_running_loop())
        self._waits[tx.tx_id] = wait
        try:
            return await self._drive(wait)
        finally:
            self._waits.pop(tx.tx_id, None)

    def _enqueue(self, targets: Iterable[NodeAddress], tx: Transaction) -> None:
        """Queue `tx` for each target; queued txs leave in one frame per node at the next loop turn."""
        for a in targets:
            self._outbox.setdefault(a.name, []).append(tx)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        outbox, self._outbox = self._outbox, {}
        by_name = {a.name: a for a in self.nodes}
        for name, txs in outbox.items():
            link = self._link(by_name[name])
            for chunk in _batches(txs):
                frame = encode_message(ClientRequests(self.key.did, chunk))
                self.frames_sent += 1
                fut = asyncio.ensure_future(link.send(frame))
                self._sending.add(fut)
                fut.add_done_callback(self._sending.discard)

    async def _drive(self, wait: _Wait) -> Receipt:
        deadline = time.monotonic() + self.timeout
        targets = [a for a in self.nodes if a.did in self.voters]
        while True:
            self._enqueue(targets, wait.tx)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done, _ = await asyncio.wait({wait.future}, timeout=min(self.retry_after, left))
            if done:
                return wait.future.result()
            targets = self.nodes  # retry: broadcast to every node
            self._want_sync(None)  # and follow the chain to a tip: the sealers may have changed
            if time.monotonic() >= deadline:
                break
        raise SubmitTimeout(
            f"transaction {wait.tx.tx_id.hex()[:16]} not confirmed by {self.need} matching sealers within "
            f"{self.timeout:g} s (best agreement {wait.tally.best_agreement()}); check `sealstream ledger status`")

    def _link(self, addr: NodeAddress) -> _Link:
        link = self._links.get(addr.name)
        if link is None:
            link = self._links[addr.name] = _Link(self, addr)
        return link

    def _on_reply(self, frame: bytes) -> None:
        try:
            replies = TxReplies.decode(frame)
        except WireError:
            self.replies_rejected += 1
            return
        waits = [(self._waits.get(t), t, r) for t, r in replies.items]
        if not any(w is not None and not w.future.done() for w, _, _ in waits):
            return
        if replies.node not in self._node_dids or not replies.verify(self.genesis.chain_id, self._verify):
            self.replies_rejected += 1
            return
        for wait, tx_id, result in waits:
            if wait is not None and not wait.future.done() and replies.node not in wait.tally.votes:
                self._vote(wait, replies.node, tx_id, result)

    def _vote(self, wait: _Wait, node: str, tx_id: bytes, key: bytes) -> None:
        """`key`: the canonical bytes of `node`'s answer (answers match when equal)."""
        wait.tally.vote(node, key)
        self._tally(wait, key)

    def _tally(self, wait: _Wait, key: bytes) -> None:
        """Decide `wait` if f+1 sealers of the committing height gave answer `key` (`Tally.decide`)."""
        tally = wait.tally
        seen = len(tally.not_sealers)
        out = tally.decide(key, self.sealers_at, self.sealers)
        self.not_sealer_votes += len(tally.not_sealers) - seen
        if isinstance(out, Undecided):
            if out.sync_height is not None:
                self._want_sync(out.sync_height)  # votes stay; re-tallied once the headers are verified
            return
        if isinstance(out, Receipt):
            wait.future.set_result(out)
        else:
            wait.future.set_exception(out)
            wait.future.exception()  # retrieved: sharers re-raise it themselves

    # ------------------------------------------------------------ following sealer sets

    def _want_sync(self, height: int | None) -> None:
        """Follow headers far enough to know the set of `height` (None: to a node's tip)."""
        if height is None:
            target = -1
        else:
            L = self.genesis.params.epoch_length
            target = epoch_of(height, L) * L  # its epoch's set is named by the header at this height
            if target <= self.light.height:
                return
        self._sync_target = target if target < 0 or self._sync_target < 0 else max(self._sync_target, target)
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.ensure_future(self._sync())

    async def refresh_sealers(self, up_to: int | None = None) -> SealerSet:
        """Verify headers from where the client is to `up_to` (default: a node's tip); the latest set."""
        end = None if up_to is None else up_to
        if end is not None and end <= self.light.height:
            return self.sealers
        for addr in self.nodes:
            try:
                self.light.add_chain(await self.get_headers(self.light.height + 1, end, addr.name))
            except (LedgerClientError, LightClientError):
                self.header_errors += 1
                continue
            if end is None or self.light.height >= end:
                break
        return self.sealers

    async def _sync(self) -> None:
        try:
            for attempt in range(20):
                target, self._sync_target = self._sync_target, 0
                await self.refresh_sealers(None if target < 0 else target)
                self._retally()
                if target >= 0 and self.light.height < target:
                    self._sync_target = max(self._sync_target, target) if self._sync_target >= 0 else -1
                if self._sync_target == 0 or not any(not w.future.done() for w in self._waits.values()):
                    return
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        finally:
            self._sync_task = None

    def _retally(self) -> None:
        for wait in list(self._waits.values()):
            for key in set(wait.tally.votes.values()):
                if wait.future.done():
                    break
                self._tally(wait, key)
