"""`LedgerClient`: the blocking twin of `AsyncLedgerClient`, safe to share between threads.

It runs an `AsyncLedgerClient` on a private event-loop thread and waits for
each call there.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Coroutine, Iterable, Iterator, TypeVar

from ..values import Block, BlockHeader, CommitCertificate, Genesis, Transaction
from ..layout import LedgerLayout, NodeAddress
from .aio import AsyncLedgerClient
from .records import Receipt, StateProof, StateProofs, TxRecord

if TYPE_CHECKING:
    from trust.identity import KeyPair

__all__ = ["LedgerClient"]

T = TypeVar("T")


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
