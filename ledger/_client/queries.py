"""Reading the chain over the nodes' HTTP API.

Blocks, headers (paged), committed txs with their inclusion proofs
(`verified_tx` checks the headers from genesis and the proof), contracts
reads (registry, anchors, state proofs; `verified_state` proves a value
against a verified header), tokens, audit rules and the audit events stream
(`ledger.events`). Without a `node`, a read goes node after node until one
answers; a lookup one node answers 404 asks the next ones (it may lag) and
gives None only when none has it.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import TYPE_CHECKING, Any, Iterable, cast

import aiohttp

from trust import canonical

from ..values import Block, BlockHeader, CommitCertificate, Genesis
from .._verify import CachedVerifier
from ..https import Pins, describe
from ..layout import NodeAddress
from ..light_client import LightClient, LightClientError
from ..views import decode_block_view, decode_header_view, decode_tx_view
from .errors import LedgerClientError, NodeUnavailable
from .records import StateProof, StateProofs, TxRecord

if TYPE_CHECKING:
    from .aio import AsyncLedgerClient

__all__ = ["Queries"]


class Queries:
    """The reading half of `AsyncLedgerClient` (its state is set by `_init_queries`)."""

    genesis: Genesis
    nodes: list[NodeAddress]
    _verify: CachedVerifier

    def _init_queries(self, http_timeout: float) -> None:
        self.http_timeout = http_timeout
        self._session: aiohttp.ClientSession | None = None
        # each node's HTTPS certificate is pinned to the key the genesis names for it (`ledger.https`)
        self.http_pins = Pins(self.genesis)

    async def _close_queries(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
                async with self._session.get(addr.http_url + path, ssl=self.http_pins.aiohttp_ssl(addr)) as resp:
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
                errors.append(f"{addr.name}: {describe(exc)}")
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
        from ..contracts import StateProofError, verify_state_proof

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
        from ..events import follow_events

        return follow_events(cast("AsyncLedgerClient", self), from_height, after, **kw)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _query(**params: Any) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(given) if given else ""
