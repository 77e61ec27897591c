"""Replay filter for the signed messages a node answers with work: `Status`, `FetchBlocks`
and the VIEW-CHANGE of a late replica (each can make a node send NEW-VIEW or up to
`fetch_batch` blocks).

The rule, per sender and kind, applied after the signature verified: a message is
fresh if its *mark* (``(height, view, stable)`` of a Status, ``(from, to)`` of a
fetch, ``(new_view, height)`` of a view change: what an honest sender only ever
raises) is above the last accepted one, or if `gap` ms (half the interval at which
an honest sender repeats itself) have passed since. Anything else is dropped and
counted as ``replay_<kind>``: a replayed message, old or current, costs its
receiver at most what the sender itself would by repeating it. A sender whose
marks went down (its store was wiped) is served again after `gap`. The clock is
the replica's (`Tick`), so the simulator stays deterministic; senders are
genesis nodes only (`Replica._on_message`), so the table is bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["Freshness"]


class Freshness:
    def __init__(self, r: Replica) -> None:
        self.r = r
        #: (kind, sender) -> (mark, when accepted)
        self.last: dict[tuple[str, str], tuple[tuple[int, ...], int]] = {}

    def fresh(self, kind: str, sender: str, mark: tuple[int, ...], gap_ms: int) -> bool:
        r = self.r
        key = (kind, sender)
        got = self.last.get(key)
        if got is not None and mark <= got[0] and r.now - got[1] < gap_ms:
            r._drop(f"replay_{kind}")
            return False
        self.last[key] = (mark, r.now)
        return True
