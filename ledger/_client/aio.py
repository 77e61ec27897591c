"""`AsyncLedgerClient`: submission (`submission.Submission`) and HTTP reads
(`queries.Queries`) over one set of nodes, one key and one verifier cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from trust.identity import KeyPair

from ..values import Genesis
from .._verify import CachedVerifier
from ..layout import LedgerLayout, NodeAddress
from .queries import Queries
from .submission import Submission

__all__ = ["AsyncLedgerClient"]


class AsyncLedgerClient(Submission, Queries):
    """Submit transactions and query nodes from asyncio code (see `ledger.client`)."""

    def __init__(self, genesis: Genesis, nodes: Iterable[NodeAddress], key: KeyPair, *,
                 timeout: float = 15.0, retry_after: float = 2.0, http_timeout: float = 10.0) -> None:
        self.genesis = genesis
        self.nodes = list(nodes)
        self.key = key
        self._verify = CachedVerifier(10_000)
        self._init_submission(timeout, retry_after)
        self._init_queries(http_timeout)

    @classmethod
    def from_layout(cls, root: str | Path, key: KeyPair | None = None, **kw: Any) -> "AsyncLedgerClient":
        """A client for the ledger in state directory `root` (its client key by default)."""
        layout = LedgerLayout(Path(root))
        return cls(layout.genesis(), layout.addresses(), key or layout.client_key(), **kw)

    async def close(self) -> None:
        await self._close_submission()
        await self._close_queries()

    async def __aenter__(self) -> "AsyncLedgerClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
