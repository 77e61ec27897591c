"""State transfer: catching up on blocks a replica missed.

Evidence that the replica is behind (a Status heartbeat, a message for a
later height, a stable checkpoint, a commit certificate or a NEW-VIEW above
its height) goes to `note_height`. The replica then asks one peer at a time
for `FetchBlocks(from, to)` in batches of `fetch_batch`, moving on after
`fetch_timeout_ms`, and applies each block only once its certificate
verifies and re-execution gives its state root (`Chain.apply_certified`).
Backups also apply the `CommittedBlock` pushes of sealers here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import Blocks, CommittedBlock, FetchBlocks, Status
from .events import FETCH, CancelTimer, Send, SetTimer, timer

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["StateTransfer"]


class StateTransfer:
    def __init__(self, r: Replica) -> None:
        self.r = r
        #: the highest height each peer was seen at (above ours)
        self.peer_heights: dict[str, int] = {}
        #: (peer, target height) of the fetch under way
        self.fetching: tuple[str, int] | None = None
        #: (height, since): when a backup first saw a peer one block ahead of `height`
        self.behind_since: tuple[int, int] | None = None
        self.rr = 0

    def note_height(self, peer: str, height: int) -> None:
        r = self.r
        mine = r.chain.height
        if height <= mine:
            return
        if height > self.peer_heights.get(peer, 0):
            self.peer_heights[peer] = height
        if self.fetching is None:
            if height == mine + 1 and not r.is_sealer:
                # a backup one block behind: that block's push is most likely on its way (a Status
                # often overtakes it). Fetching at once cost both sides the block twice, so wait one
                # status interval; a later Status (every node sends them) fetches it if still missing.
                since = self.behind_since
                if since is None or since[0] != mine:
                    self.behind_since = (mine, r.now)
                    return
                if r.now - since[1] < r.params.status_interval_ms:
                    return
            self.fetch_next()

    def fetch_next(self, exclude: str | None = None) -> None:
        r = self.r
        mine = r.chain.height
        cands = sorted(p for p, h in self.peer_heights.items() if h > mine and p != exclude)
        if not cands:
            cands = sorted(p for p, h in self.peer_heights.items() if h > mine)
        if not cands:
            return
        peer = cands[self.rr % len(cands)]
        self.rr += 1
        target = self.peer_heights[peer]
        to = min(target, mine + r.params.fetch_batch)
        self.fetching = (peer, target)
        r.out.append(Send(peer, r._signed(FetchBlocks(r.me, mine + 1, to))))
        r.out.append(SetTimer(timer(FETCH), r.params.fetch_timeout_ms))

    def on_timer(self) -> None:
        """The fetch timed out: forget the peer's height unless still above ours, try another."""
        if self.fetching is not None:
            peer, _ = self.fetching
            self.fetching = None
            if self.peer_heights.get(peer, 0) <= self.r.chain.height:
                self.peer_heights.pop(peer, None)
            self.fetch_next(exclude=peer)

    def committed(self) -> None:
        """A block committed: the fetch under way is done once its target is reached."""
        if self.fetching is not None and self.r.chain.height >= self.fetching[1]:
            self.fetching = None
            self.r.out.append(CancelTimer(timer(FETCH)))

    def on_status(self, msg: Status) -> None:
        r = self.r
        if not r._check_sig(msg):
            return
        if not r.fresh.fresh("status", msg.sender, (msg.height, msg.view, msg.stable),
                             r.params.status_interval_ms // 2):
            return
        if msg.height > r.chain.height:
            self.note_height(msg.sender, msg.height)
        r.vc.on_status(msg)

    def on_fetch(self, msg: FetchBlocks) -> None:
        r = self.r
        if not r._check_sig(msg):
            return
        if not r.fresh.fresh("fetch", msg.sender, (msg.from_height, msg.to_height),
                             r.params.fetch_timeout_ms // 2):
            return
        hi = min(msg.to_height, r.chain.height, msg.from_height + r.params.fetch_batch - 1)
        entries = []
        for h in range(max(1, msg.from_height), hi + 1):
            got = r.chain.block_at(h)
            if got is None:
                break
            entries.append(got)
        if entries:
            r.out.append(Send(msg.sender, r._signed(Blocks(r.me, tuple(entries)))))
        else:
            r._drop("fetch_unavailable")

    def on_blocks(self, msg: Blocks) -> None:
        r = self.r
        chain = r.chain
        if not r._check_sig(msg):
            return
        applied = 0
        for block, cert in msg.entries:
            if block.height <= chain.height:
                continue
            if not chain.apply_certified(block, cert):
                r._drop("bad_block")
                break
            applied += 1
        if applied:
            r.normal.progress()
        if self.fetching is not None and self.fetching[0] == msg.sender:
            peer, target = self.fetching
            self.fetching = None
            r.out.append(CancelTimer(timer(FETCH)))
            if applied and chain.height < target:
                self.peer_heights[peer] = target
                self.fetch_next()
            elif chain.height < max(self.peer_heights.values(), default=0):
                self.fetch_next(exclude=peer if not applied else None)

    def on_committed_block(self, msg: CommittedBlock) -> None:
        r = self.r
        h = msg.block.height
        if h <= r.chain.height:
            r._drop("stale_height")
            return
        if h > r.chain.height + 1:
            if r._check_sig(msg):  # a height hint only from a verified message
                self.note_height(msg.sender, h)
            return
        if not r._check_sig(msg):
            return
        if r.chain.apply_certified(msg.block, msg.cert):
            r.normal.progress()
        else:
            r._drop("bad_block")
