"""Per-sender flood limits: what one sealer can make a replica buffer.

Within the view and watermark bounds a sealer could still send PREPAREs or
COMMITs for any number of digests, or proposals, VIEW-CHANGEs and
checkpoints carrying big blocks. `SenderQuotas` counts the log entries
buffered per (sender, view) (checkpoints in one bucket of their own) and
refuses one that would exceed `max_msgs` or `max_bytes` (dropped as
``sender_quota``). After the log is truncated the parts that hold entries
mark the accounts dirty, and they are recounted from what is actually held
(`entries`: the (sender, view, cost) of every buffered entry).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from ..values import Block
from ..messages import ViewChange

__all__ = ["MAX_HELD_BYTES", "SMALL_MSG", "CHECKPOINTS", "block_cost", "vc_cost", "SenderQuotas"]

#: flood limits: most bytes of log entries buffered per (sender, view); the
#: message limit is `Replica.max_held_msgs` (4 L + 16 by default)
MAX_HELD_BYTES = 32 * 1024 * 1024
SMALL_MSG = 200
CHECKPOINTS = -1  # the (sender, view) bucket of checkpoints, which have no view


def block_cost(block: Block) -> int:
    return 256 + sum(len(tx.raw) for tx in block.txs)


def vc_cost(vc: ViewChange) -> int:
    return SMALL_MSG + (0 if vc.prepared is None else block_cost(vc.prepared.block)) + (
        0 if vc.cert is None else 100 * len(vc.cert.signatures))


Entries = Callable[[], Iterable[tuple[str, int, int]]]


class SenderQuotas:
    """Accounts of buffered log entries per (sender, view): [count, bytes]."""

    def __init__(self, me: str, drops: Counter[str], entries: Entries, max_msgs: int,
                 max_bytes: int = MAX_HELD_BYTES) -> None:
        self.me = me
        self.drops = drops
        self.entries = entries
        self.max_msgs = max_msgs
        self.max_bytes = max_bytes
        self.held: dict[tuple[str, int], list[int]] = {}
        #: the log was truncated: recount before the next `hold`
        self.dirty = False

    def hold(self, sender: str, view: int, cost: int = SMALL_MSG) -> bool:
        """Account one more buffered log entry of `sender` in `view`; False (dropped
        as ``sender_quota``) once it would exceed `max_msgs` or `max_bytes`."""
        if self.dirty:
            self.recount()
        key = (sender, view)
        got = self.held.get(key)
        if got is None:
            got = self.held[key] = [0, 0]
        if got[0] >= self.max_msgs or got[1] + cost > self.max_bytes:
            self.drops["sender_quota"] += 1
            return False
        got[0] += 1
        got[1] += cost
        return True

    def recount(self) -> None:
        """Recompute the per-(sender, view) accounts after the log was truncated."""
        held: dict[tuple[str, int], list[int]] = {}
        me = self.me
        for sender, view, cost in self.entries():
            if sender != me:
                got = held.get((sender, view))
                if got is None:
                    got = held[(sender, view)] = [0, 0]
                got[0] += 1
                got[1] += cost
        self.held = held
        self.dirty = False
