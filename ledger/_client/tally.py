"""The f+1 reply tally of one transaction: pure (no I/O, no asyncio, no clock).

Each node's answer is its canonical bytes, so answers match when equal;
each distinct answer is decoded once to read its height. An answer decides
once f+1 *sealers of the committing height* gave it (f of that height's set;
refusals, which carry no height, count against the latest set the client
has verified). Votes of other nodes are remembered in `not_sealers` and
ignored. When the set of the answer's height is not known yet the tally says
so (`Undecided.sync_height`): the caller follows the headers and tallies
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

from trust import canonical

from ..values import SealerSet, Transaction
from ..replies import result_error
from .errors import LedgerClientError, TxRefused
from .records import Receipt

__all__ = ["Tally", "Undecided", "Outcome"]

_UNDECODABLE = object()


@dataclass(frozen=True)
class Undecided:
    """Not decided by this answer; `sync_height`: the height whose sealer set must be followed first."""

    sync_height: int | None = None


#: a `Receipt`, the error to raise, or `Undecided`
Outcome = Union[Receipt, LedgerClientError, Undecided]


class Tally:
    """Votes for one transaction: node -> answer bytes, until f+1 match."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.votes: dict[str, bytes] = {}
        self.decoded: dict[bytes, Any] = {}
        self.not_sealers: set[str] = set()  # voters that were not sealers at the committing height

    def vote(self, node: str, key: bytes) -> None:
        """`key`: the canonical bytes of `node`'s answer."""
        self.votes[node] = key

    def decide(self, key: bytes, sealers_at: Callable[[int], SealerSet | None], latest: SealerSet) -> Outcome:
        """Whether f+1 sealers of the committing height gave answer `key`."""
        if key in self.decoded:
            res = self.decoded[key]
        else:
            try:
                res = canonical.decode(key)
            except ValueError:
                res = _UNDECODABLE
            self.decoded[key] = res
        height = res.get("height") if isinstance(res, dict) and result_error(res) is None else None
        if isinstance(height, int) and height >= 1:
            sealers = sealers_at(height)
            if sealers is None:
                return Undecided(height)  # votes stay; tallied again once the headers are verified
        else:
            sealers = latest
        agree: list[str] = []
        for n, k in self.votes.items():
            if k == key:
                if n in sealers:
                    agree.append(n)
                elif n not in self.not_sealers:
                    self.not_sealers.add(n)
        nodes = tuple(sorted(agree))
        if len(nodes) < sealers.f + 1:
            return Undecided()
        tx_id = self.tx.tx_id
        if res is _UNDECODABLE:
            return LedgerClientError(f"undecodable reply from {nodes}")
        code = result_error(res)
        if code is not None:
            return TxRefused(code, tx_id)
        if not (isinstance(res, dict) and isinstance(res.get("height"), int)):
            return LedgerClientError(f"unexpected reply {res!r}")
        return Receipt(tx_id, res["height"], res.get("index", 0), res.get("block") or b"", res.get("result"), nodes,
                       self.tx)

    def best_agreement(self) -> int:
        """The most nodes that gave one answer."""
        counts: dict[bytes, int] = {}
        for k in self.votes.values():
            counts[k] = counts.get(k, 0) + 1
        return max(counts.values(), default=0)
