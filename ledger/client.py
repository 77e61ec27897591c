"""Client library: submit signed transactions and read the chain over HTTP.

`AsyncLedgerClient` (asyncio) and `LedgerClient` (sync, thread-safe: it runs
an `AsyncLedgerClient` on a private event-loop thread).

Submitting (`submit(kind, payload)`):

1. sign a `Transaction` with the submitter key and a fresh nonce (a counter
   started at the current time in microseconds, so restarts of a client with
   the same key keep moving forward);
2. send it (after a HELLO) to every sealer of the current set (the latest
   the client has verified, see below) — each sealer
   that holds the request replies, so f+1 can match. Transactions submitted
   within one event-loop turn share one `ClientRequests` frame per node
   (each keeps its own signature; the frame itself is not signed), so many
   concurrent submits cost one write and one decode per node, not one each;
3. wait for f+1 *matching* answers in `TxReplies` frames, each frame signed by
   a distinct genesis node (signature verified against its did) that is a
   sealer *at the committing height* (f of that height's set); a result is a
   `Receipt`, an error (for example ``replay``) raises `TxRefused` with that
   code (refusals carry no height: they are counted against the latest set
   the client has verified);
4. if no decision after `retry_after` seconds, re-send to *all* nodes (backups
   relay to the sealers) and keep doing so until `timeout` (`SubmitTimeout`).

Sealer sets: the client follows the chain like a light client
(`self.light`, a `LightClient` from genesis). An answer for height h in an
epoch whose set it does not know yet makes it fetch and verify the headers
up to the end of the previous epoch (`next_sealers` there names the set),
trying node after node; votes wait meanwhile. A retry also brings the
followed chain up to a node's tip (`refresh_sealers()`), so the targets of
the next submits are the current sealers. Within epoch 0 nothing is fetched.

Concurrent submits of one transaction share one wait (deduplicated by tx id),
and each node's vote counts once. Nonces must stay within the ledger's
anti-replay window (`Params.nonce_window`, 1024 by default) of the highest
committed one, so keep fewer than that many transactions of one key in flight.

Reads (`get_status`, `get_block`, `get_headers`, `get_tx`, `verified_tx`) use
the nodes' HTTP API; `verified_tx` checks every header certificate from
genesis with the light client and the tx's inclusion proof.

Contracts reads (ledgers running `ContractApp`, see docs/contracts.md):
`resolve(id, height=None)` and `resolve_key(did, height=None)` (registry,
as of a height), `get_anchor(batch_id)` and `anchors_by_root(root)`
(anchors), `get_state_proof(key)` and `verified_state(key)` (a state value
proven against the state root of a header verified from genesis). Without a
`node`, a lookup that one node answers 404 asks the next ones (it may lag)
and gives None only when none has it. Contract transactions are ordinary
`submit(kind, payload)` calls (bytes fields as `bytes`); a refusal is a
`Receipt` whose ``result`` is ``{"ok": False, "code": ..., "message": ...}``.
Also `token_account`, `token_fees`, `audit_rules`, `audit_rule`, and
`events(...)`: the audit events of ``GET /events`` (`ledger.events`).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Coroutine, Iterable, Iterator, TypeVar

import aiohttp

from trust import canonical
from trust.identity import KeyPair

from ._types import Block, BlockHeader, CommitCertificate, Genesis, SealerSet, Transaction, epoch_of
from .errors import LedgerError, WireError
from .layout import LedgerLayout, NodeAddress
from .light_client import LightClient, LightClientError, TxProof
from .messages import ClientRequests, encode_message
from .replies import TxReplies, result_error
from ._verify import CachedVerifier
from .transport import FrameError, hello, read_frame, write_frame
from .views import decode_block_view, decode_header_view, decode_tx_view

__all__ = [
    "LedgerClientError",
    "SubmitTimeout",
    "TxRefused",
    "NodeUnavailable",
    "Receipt",
    "StateProof",
    "StateProofs",
    "TxRecord",
    "AsyncLedgerClient",
    "LedgerClient",
]

T = TypeVar("T")
_MAX_FRAME = 16 * 1024 * 1024
#: most transactions in one `ClientRequests` frame
MAX_BATCH = 1024


class LedgerClientError(LedgerError):
    """Base of every error the client library raises."""


class SubmitTimeout(LedgerClientError):
    """No f+1 matching replies arrived in time."""


class TxRefused(LedgerClientError):
    """f+1 sealers refused the transaction; `code` is their error (e.g. ``replay``)."""

    def __init__(self, code: str, tx_id: bytes) -> None:
        self.code = code
        self.tx_id = tx_id
        super().__init__(f"transaction {tx_id.hex()[:16]} refused by the ledger: {code}")


class NodeUnavailable(LedgerClientError):
    """No node answered an HTTP query (or all answered with an error)."""


@dataclass(frozen=True)
class Receipt:
    """Proof-of-commit as seen by the client: f+1 sealers signed the same result."""

    tx_id: bytes
    height: int
    index: int
    block_hash: bytes
    result: Any
    nodes: tuple[str, ...]
    tx: Transaction | None = field(default=None, compare=False, repr=False)

    @property
    def refusal(self) -> tuple[str, str] | None:
        """``(code, message)`` when a contract refused the tx (``{"ok": false, ...}``;
        the tx is committed all the same, its nonce used), else None."""
        r = self.result
        if isinstance(r, dict) and r.get("ok") is False:
            return str(r.get("code", "")), str(r.get("message", ""))
        return None


@dataclass(frozen=True)
class StateProof:
    """A contracts state value with its proof as served by `/state/proof` (not yet verified)."""

    key: str
    value: bytes | None  # canonical bytes, None when absent
    height: int
    header_hash: bytes | None
    proof: dict


@dataclass(frozen=True)
class StateProofs:
    """Several state values proven at one height, as served by `/state/proofs` (not yet verified)."""

    height: int
    header_hash: bytes | None
    proofs: tuple[StateProof, ...]


@dataclass(frozen=True)
class TxRecord:
    """A committed transaction as served by `/tx/{id}`."""

    tx: Transaction
    height: int
    index: int
    result: Any
    proof: TxProof


class _Wait:
    """Votes for one transaction: node -> result bytes, until f+1 match."""

    def __init__(self, tx: Transaction, loop: asyncio.AbstractEventLoop) -> None:
        self.tx = tx
        self.future: asyncio.Future[Receipt] = loop.create_future()
        self.votes: dict[str, bytes] = {}
        self.decoded: dict[bytes, Any] = {}
        self.not_sealers: set[str] = set()  # voters that were not sealers at the committing height


class _Link:
    """One TCP connection to a node's p2p port; replies are read by a task."""

    def __init__(self, client: "AsyncLedgerClient", addr: NodeAddress) -> None:
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
                    try:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(self.addr.host, self.addr.p2p_port), 2.0)
                    except (OSError, asyncio.TimeoutError):
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


class AsyncLedgerClient:
    """Submit transactions and query nodes from asyncio code (see module doc)."""

    def __init__(self, genesis: Genesis, nodes: Iterable[NodeAddress], key: KeyPair, *,
                 timeout: float = 15.0, retry_after: float = 2.0, http_timeout: float = 10.0) -> None:
        self.genesis = genesis
        self.nodes = list(nodes)
        self.key = key
        self.timeout = timeout
        self.retry_after = retry_after
        self.http_timeout = http_timeout
        self._node_dids = frozenset(genesis.node_ids())
        self._verify = CachedVerifier(10_000)
        self.light = LightClient.from_genesis(genesis, verify=self._verify)
        self.not_sealer_votes = 0  # answers from nodes that were not sealers at the committing height
        self.header_errors = 0  # header pages that did not verify (a faulty node, or none reachable)
        self._sync_target = 0
        self._sync_task: asyncio.Task[None] | None = None
        self._nonce = itertools.count(time.time_ns() // 1000)
        self._waits: dict[bytes, _Wait] = {}
        self._links: dict[str, _Link] = {}
        self._session: aiohttp.ClientSession | None = None
        self.replies_rejected = 0
        self._outbox: dict[str, list[Transaction]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._sending: set[asyncio.Future[Any]] = set()
        self.frames_sent = 0

    @classmethod
    def from_layout(cls, root: str | Path, key: KeyPair | None = None, **kw: Any) -> "AsyncLedgerClient":
        """A client for the ledger in state directory `root` (its client key by default)."""
        layout = LedgerLayout(Path(root))
        return cls(layout.genesis(), layout.addresses(), key or layout.client_key(), **kw)

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

    async def close(self) -> None:
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
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "AsyncLedgerClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

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
            for i in range(0, len(txs), MAX_BATCH):
                frame = encode_message(ClientRequests(self.key.did, tuple(txs[i:i + MAX_BATCH])))
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
        counts = sorted(_count(wait.votes).values(), reverse=True)
        raise SubmitTimeout(
            f"transaction {wait.tx.tx_id.hex()[:16]} not confirmed by {self.need} matching sealers within "
            f"{self.timeout:g} s (best agreement {counts[0] if counts else 0}); check `sealstream ledger status`")

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
            if wait is not None and not wait.future.done() and replies.node not in wait.votes:
                self._vote(wait, replies.node, tx_id, result)

    def _vote(self, wait: _Wait, node: str, tx_id: bytes, key: bytes) -> None:
        """`key`: the canonical bytes of `node`'s answer (answers match when equal)."""
        wait.votes[node] = key
        self._tally(wait, key)

    def _tally(self, wait: _Wait, key: bytes) -> None:
        """Decide `wait` if f+1 sealers of the committing height gave answer `key`."""
        if key in wait.decoded:
            res = wait.decoded[key]
        else:
            try:
                res = canonical.decode(key)
            except ValueError:
                res = _UNDECODABLE
            wait.decoded[key] = res
        height = res.get("height") if isinstance(res, dict) and result_error(res) is None else None
        if isinstance(height, int) and height >= 1:
            sealers = self.sealers_at(height)
            if sealers is None:
                self._want_sync(height)  # votes stay; re-tallied once the headers are verified
                return
        else:
            sealers = self.sealers
        agree: list[str] = []
        for n, k in wait.votes.items():
            if k == key:
                if n in sealers:
                    agree.append(n)
                elif n not in wait.not_sealers:
                    wait.not_sealers.add(n)
                    self.not_sealer_votes += 1
        nodes = tuple(sorted(agree))
        if len(nodes) < sealers.f + 1:
            return
        tx_id = wait.tx.tx_id
        if res is _UNDECODABLE:
            wait.future.set_exception(LedgerClientError(f"undecodable reply from {nodes}"))
            wait.future.exception()
            return
        code = result_error(res)
        if code is not None:
            wait.future.set_exception(TxRefused(code, tx_id))
            wait.future.exception()  # retrieved: sharers re-raise it themselves
            return
        if not (isinstance(res, dict) and isinstance(res.get("height"), int)):
            wait.future.set_exception(LedgerClientError(f"unexpected reply {res!r}"))
            wait.future.exception()
            return
        wait.future.set_result(Receipt(tx_id, res["height"], res.get("index", 0), res.get("block") or b"",
                                       res.get("result"), nodes, wait.tx))

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
            for key in set(wait.votes.values()):
                if wait.future.done():
                    break
                self._tally(wait, key)

    # ------------------------------------------------------------ HTTP reads

    def _address(self, node: str | None) -> list[NodeAddress]:
        if node is None:
            return self.nodes
        got = [a for a in self.nodes if a.name == node or a.did == node]
        if not got:
            raise LedgerClientError(f"no node named {node!r}")
        return got

    async def _get(self, path: str, node: str | None = None, *, allow_404: bool = False,
                   ask_all: bool = False) -> Any:
        """GET `path` from `node` or node after node until one answers 200. With
        `allow_404`, a 404 gives None — at once, or with `ask_all` only once no
        node has it (a lagging node may not have committed it yet)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.http_timeout))
        errors = []
        missing = False
        for addr in self._address(node):
            try:
                async with self._session.get(addr.http_url + path) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 200:
                        return body
                    if resp.status == 404 and allow_404 and not (isinstance(body, dict)
                                                                 and body.get("error") == "no-contracts"):
                        if not ask_all:
                            return None
                        missing = True
                        continue
                    message = body.get("message", "") if isinstance(body, dict) else ""
                    errors.append(f"{addr.name}: HTTP {resp.status} {message}".strip())
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                errors.append(f"{addr.name}: {type(exc).__name__} {exc}".strip())
        if missing:
            return None
        raise NodeUnavailable(f"GET {path} failed on every node ({'; '.join(errors)}); "
                              "is the ledger up (`sealstream ledger status`)?")

    async def get_status(self, node: str | None = None) -> dict:
        """`/status` of `node` (name or did), or of the first node that answers."""
        return await self._get("/status", node)

    async def get_block(self, height: int, node: str | None = None) -> tuple[Block, CommitCertificate]:
        return decode_block_view(await self._get(f"/blocks/{height}", node))

    async def get_headers(self, start: int = 1, end: int | None = None,
                          node: str | None = None) -> list[tuple[BlockHeader, CommitCertificate]]:
        """Headers with certificates `start..end` (default: to the tip), paging as needed."""
        out: list[tuple[BlockHeader, CommitCertificate]] = []
        h = start
        while end is None or h <= end:
            q = f"/headers?from={h}" + ("" if end is None else f"&to={end}")
            page = await self._get(q, node)
            items = [decode_header_view(v) for v in page["headers"]]
            if not items:
                break
            out.extend(items)
            h = items[-1][0].height + 1
        return out

    async def get_header_page(self, start: int, end: int | None = None,
                              node: str | None = None) -> list[tuple[BlockHeader, CommitCertificate]]:
        """One ``GET /headers`` page from `start` (at most `end`): what the node sends, unverified and
        possibly short or empty; one request, so a node answering out of order cannot keep it looping."""
        page = await self._get(f"/headers?from={start}" + ("" if end is None else f"&to={end}"), node)
        return [decode_header_view(v) for v in page["headers"]]

    async def get_tx(self, tx_id: bytes | str, node: str | None = None) -> TxRecord | None:
        """The committed transaction with its inclusion proof, or None if not committed there."""
        text = tx_id.hex() if isinstance(tx_id, bytes) else tx_id
        v = await self._get(f"/tx/{text}", node, allow_404=True)
        if v is None:
            return None
        tx, result, proof = decode_tx_view(v)
        return TxRecord(tx, proof.height, proof.index, result, proof)

    async def verified_tx(self, tx_id: bytes | str, node: str | None = None) -> tuple[TxRecord, BlockHeader]:
        """`get_tx`, then check the header chain from genesis and the inclusion proof."""
        rec = await self.get_tx(tx_id, node)
        if rec is None:
            raise LedgerClientError(f"transaction {tx_id!r} is not committed on {node or 'any node'}")
        lc = LightClient.from_genesis(self.genesis)
        lc.add_chain(await self.get_headers(1, rec.height, node))
        return rec, lc.verify_tx(rec.tx, rec.proof)


    # ------------------------------------------------------------ contracts (HTTP reads)

    async def resolve(self, entity_id: str, height: int | None = None, index: int | None = None,
                      node: str | None = None) -> dict | None:
        """``GET /registry/{id}``: ``{state_height, resolution, entity}`` as of `height`
        (default: the node's height), or None if no node knows the id."""
        q = _query(height=height, index=index)
        return await self._get(f"/registry/{_quote(entity_id)}{q}", node, allow_404=True, ask_all=node is None)

    async def resolve_key(self, did: str, height: int | None = None, index: int | None = None,
                          node: str | None = None) -> dict | None:
        """``GET /registry/key/{did}``: ``{state_height, resolution}``, or None if never bound."""
        q = _query(height=height, index=index)
        return await self._get(f"/registry/key/{_quote(did)}{q}", node, allow_404=True, ask_all=node is None)

    async def get_anchor(self, batch_id: str, node: str | None = None) -> dict | None:
        """``GET /anchors/{batch_id}``: the anchored batch (root hex, tree size, gateway,
        window, height, index, tx_id, ...), or None if no node has it."""
        return await self._get(f"/anchors/{_quote(batch_id)}", node, allow_404=True, ask_all=node is None)

    async def anchors_by_root(self, root: bytes | str, node: str | None = None) -> list[dict]:
        """``GET /anchors/root/{hex}``: every batch anchored with `root`, in commit order
        (empty if no node has one)."""
        text = root.hex() if isinstance(root, bytes) else root
        body = await self._get(f"/anchors/root/{_quote(text)}", node, allow_404=True, ask_all=node is None)
        return [] if body is None else list(body["batches"])

    async def get_state_proof(self, key: str, node: str | None = None) -> StateProof:
        """``GET /state/proof?key=``: the value of state `key` and its proof, unverified."""
        v = await self._get(f"/state/proof{_query(key=key)}", node)
        try:
            proof = canonical.decode(bytes.fromhex(v["canonical"]["proof"]))
            value = proof["value"]
            if not (isinstance(proof, dict) and proof.get("key") == key and v["key"] == key
                    and (value is None or type(value) is bytes)):
                raise TypeError("proof for another key")
            hh = v["header_hash"]
            return StateProof(key, value, int(v["height"]), None if hh is None else bytes.fromhex(hh), proof)
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerClientError(f"bad state proof for {key!r}: {exc}") from None

    async def get_state_proofs(self, keys: Iterable[str] = (), dids: Iterable[str] = (),
                               node: str | None = None) -> StateProofs:
        """``GET /state/proofs``: `keys` and the registry records resolving `dids`, all proven at
        one height (one certified state), unverified."""
        q = "&".join([f"key={_quote(k)}" for k in keys] + [f"did={_quote(d)}" for d in dids])
        v = await self._get(f"/state/proofs?{q}", node)
        try:
            proofs = []
            for item in v["proofs"]:
                proof = canonical.decode(bytes.fromhex(item["canonical"]))
                value = proof["value"]
                if not (isinstance(proof, dict) and proof.get("key") == item["key"]
                        and (value is None or type(value) is bytes)):
                    raise TypeError("proof for another key")
                proofs.append(StateProof(item["key"], value, int(v["height"]), None, proof))
            hh = v["header_hash"]
            return StateProofs(int(v["height"]), None if hh is None else bytes.fromhex(hh), tuple(proofs))
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerClientError(f"bad state proofs: {exc}") from None

    async def verified_state(self, key: str, node: str | None = None) -> tuple[bytes | None, BlockHeader]:
        """The canonical bytes of state `key` (None: absent), proven against the state
        root of a header this client verified from genesis (certificates checked
        by a fresh light client); raises `LedgerClientError` if anything fails."""
        from .contracts import StateProofError, verify_state_proof

        sp = await self.get_state_proof(key, node)
        if sp.height < 1 or sp.header_hash is None:
            raise LedgerClientError("the ledger has no block yet: nothing to verify a state proof against")
        lc = LightClient.from_genesis(self.genesis, verify=self._verify)
        try:
            lc.add_chain(await self.get_headers(1, sp.height, node))
        except LightClientError as exc:
            raise LedgerClientError(f"headers up to {sp.height} do not verify: {exc}") from None
        if lc.height < sp.height:
            raise LedgerClientError(f"headers up to {sp.height} were not served")
        header = lc.headers[sp.height]
        if header.header_hash() != sp.header_hash:
            raise LedgerClientError(f"the proof names header {sp.header_hash.hex()[:16]} but the verified "
                                    f"header at {sp.height} is {header.header_hash().hex()[:16]}")
        try:
            verify_state_proof(header.state_root, key, sp.value, sp.proof)
        except StateProofError as exc:
            raise LedgerClientError(f"state proof for {key!r} does not verify: {exc}") from None
        return sp.value, header


    # ------------------------------------------------------------ tokens, audit rules, events

    async def token_account(self, account: str, since_height: int | None = None, after: int | None = None,
                            limit: int | None = None, node: str | None = None) -> dict | None:
        """``GET /tokens/accounts/{id}``: balance, charges, spent and a page of its
        consumption history (``next``: the `after` of the next page), or None if unknown."""
        q = _query(since_height=since_height, after=after, limit=limit)
        return await self._get(f"/tokens/accounts/{_quote(account)}{q}", node, allow_404=True, ask_all=node is None)

    async def token_fees(self, node: str | None = None) -> dict:
        """``GET /tokens/fees``: ``{state_height, fees, supply}``."""
        return await self._get("/tokens/fees", node)

    async def audit_rules(self, org: str | None = None, active: bool = False, node: str | None = None) -> list[dict]:
        """``GET /audit/rules``: current versions of the audit rules (of `org`; only active ones)."""
        body = await self._get(f"/audit/rules{_query(org=org, active=1 if active else None)}", node)
        return list(body["rules"])

    async def audit_rule(self, rule_id: str, node: str | None = None) -> dict | None:
        """``GET /audit/rules/{id}``: ``{state_height, rule, versions}``, or None if unknown."""
        return await self._get(f"/audit/rules/{_quote(rule_id)}", node, allow_404=True, ask_all=node is None)

    def events(self, from_height: int = 0, after: int | None = None, **kw: Any) -> Any:
        """Audit events from ``GET /events`` as an async iterator (`ledger.events.follow_events`:
        ``follow``, ``verify``, ``tips``, ``node``)."""
        from .events import follow_events

        return follow_events(self, from_height, after, **kw)


_UNDECODABLE = object()


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _query(**params: Any) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(given) if given else ""


def _count(votes: dict[str, bytes]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for k in votes.values():
        out[k] = out.get(k, 0) + 1
    return out


class LedgerClient:
    """Blocking twin of `AsyncLedgerClient` (safe to share between threads)."""

    def __init__(self, genesis: Genesis, nodes: Iterable[NodeAddress], key: KeyPair, **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ledger-client", daemon=True)
        self._thread.start()
        self._async = self._call(self._make(genesis, list(nodes), key, kw))

    @staticmethod
    async def _make(genesis: Genesis, nodes: list[NodeAddress], key: KeyPair, kw: dict) -> AsyncLedgerClient:
        return AsyncLedgerClient(genesis, nodes, key, **kw)

    @classmethod
    def from_layout(cls, root: str | Path, key: KeyPair | None = None, **kw: Any) -> "LedgerClient":
        layout = LedgerLayout(Path(root))
        return cls(layout.genesis(), layout.addresses(), key or layout.client_key(), **kw)

    def _call(self, coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    @property
    def genesis(self) -> Genesis:
        return self._async.genesis

    @property
    def key(self) -> KeyPair:
        return self._async.key

    @property
    def nodes(self) -> list[NodeAddress]:
        """The nodes this client asks (a copy; `node=` arguments take their names)."""
        return list(self._async.nodes)

    def make_tx(self, kind: str, payload: Any, nonce: int | None = None) -> Transaction:
        return self._async.make_tx(kind, payload, nonce)

    def submit(self, kind: str, payload: Any) -> Receipt:
        return self._call(self._async.submit(kind, payload))

    def submit_tx(self, tx: Transaction) -> Receipt:
        return self._call(self._async.submit_tx(tx))

    def get_status(self, node: str | None = None) -> dict:
        return self._call(self._async.get_status(node))

    def get_block(self, height: int, node: str | None = None) -> tuple[Block, CommitCertificate]:
        return self._call(self._async.get_block(height, node))

    def get_headers(self, start: int = 1, end: int | None = None,
                    node: str | None = None) -> list[tuple[BlockHeader, CommitCertificate]]:
        return self._call(self._async.get_headers(start, end, node))

    def get_header_page(self, start: int, end: int | None = None,
                        node: str | None = None) -> list[tuple[BlockHeader, CommitCertificate]]:
        return self._call(self._async.get_header_page(start, end, node))

    def get_tx(self, tx_id: bytes | str, node: str | None = None) -> TxRecord | None:
        return self._call(self._async.get_tx(tx_id, node))

    def verified_tx(self, tx_id: bytes | str, node: str | None = None) -> tuple[TxRecord, BlockHeader]:
        return self._call(self._async.verified_tx(tx_id, node))

    def resolve(self, entity_id: str, height: int | None = None, index: int | None = None,
                node: str | None = None) -> dict | None:
        return self._call(self._async.resolve(entity_id, height, index, node))

    def resolve_key(self, did: str, height: int | None = None, index: int | None = None,
                    node: str | None = None) -> dict | None:
        return self._call(self._async.resolve_key(did, height, index, node))

    def get_state_proofs(self, keys: Iterable[str] = (), dids: Iterable[str] = (),
                         node: str | None = None) -> StateProofs:
        return self._call(self._async.get_state_proofs(tuple(keys), tuple(dids), node))

    def get_anchor(self, batch_id: str, node: str | None = None) -> dict | None:
        return self._call(self._async.get_anchor(batch_id, node))

    def anchors_by_root(self, root: bytes | str, node: str | None = None) -> list[dict]:
        return self._call(self._async.anchors_by_root(root, node))

    def get_state_proof(self, key: str, node: str | None = None) -> StateProof:
        return self._call(self._async.get_state_proof(key, node))

    def verified_state(self, key: str, node: str | None = None) -> tuple[bytes | None, BlockHeader]:
        return self._call(self._async.verified_state(key, node))

    def token_account(self, account: str, since_height: int | None = None, after: int | None = None,
                      limit: int | None = None, node: str | None = None) -> dict | None:
        return self._call(self._async.token_account(account, since_height, after, limit, node))

    def token_fees(self, node: str | None = None) -> dict:
        return self._call(self._async.token_fees(node))

    def audit_rules(self, org: str | None = None, active: bool = False, node: str | None = None) -> list[dict]:
        return self._call(self._async.audit_rules(org, active, node))

    def audit_rule(self, rule_id: str, node: str | None = None) -> dict | None:
        return self._call(self._async.audit_rule(rule_id, node))

    def events(self, from_height: int = 0, after: int | None = None, **kw: Any) -> Iterator[Any]:
        """Blocking iterator over `AsyncLedgerClient.events` (same arguments)."""
        agen = self._async.events(from_height, after, **kw)
        try:
            while True:
                try:
                    yield self._call(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._call(agen.aclose())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> "LedgerClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
