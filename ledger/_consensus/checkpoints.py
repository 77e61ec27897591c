"""Checkpoints (§4.3): CHECKPOINT every K blocks, stable checkpoints, watermarks.

After each block whose height is a multiple of K a sealer signs
CHECKPOINT(h, block hash); a quorum of matching ones is a stable
`CheckpointCertificate` and truncates the checkpoint log below it. The low
watermark also follows the committed height (a commit certificate proves
what a stable checkpoint does), so `low = max(stable, height rounded down
to K)` and `high = low + L`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from ..values import BlockHash, SealerSet
from ..messages import Checkpoint, CheckpointCertificate
from .events import Broadcast
from .quotas import CHECKPOINTS, SMALL_MSG

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["Checkpoints"]


class Checkpoints:
    def __init__(self, r: Replica) -> None:
        self.r = r
        #: height -> digest -> sender -> signature
        self.log: dict[int, dict[bytes, dict[str, bytes]]] = {}
        self.stable = 0
        self.stable_cert: CheckpointCertificate | None = None
        #: this sealer's latest CHECKPOINT (re-sent until stable)
        self.mine: Checkpoint | None = None

    @property
    def low_watermark(self) -> int:
        height = self.r.chain.height
        return max(self.stable, height - height % self.r.params.checkpoint_interval)

    @property
    def high_watermark(self) -> int:
        return self.low_watermark + self.r.params.window

    def held_entries(self) -> Iterator[tuple[str, int, int]]:
        for by_digest in self.log.values():
            for sigs in by_digest.values():
                for sender in sigs:
                    yield sender, CHECKPOINTS, SMALL_MSG

    def take(self, h: int, sealers: SealerSet) -> None:
        """A sealer committed checkpoint height `h`: sign and send its CHECKPOINT."""
        r = self.r
        cp = r._signed(Checkpoint(r.me, h, r.chain.last_hash))
        self.mine = cp
        self.log.setdefault(h, {}).setdefault(cp.digest, {})[r.me] = cp.sig
        to = r._others(sealers.members)
        if to:
            r.out.append(Broadcast(cp, to))
        self.check_stable(h, cp.digest)

    def on_checkpoint(self, msg: Checkpoint) -> None:
        r = self.r
        if msg.height <= self.stable:
            r._drop("stale_checkpoint")
            return
        if msg.height % r.params.checkpoint_interval or msg.height > r.chain.height + 64 * r.params.window:
            r._drop("out_of_watermark")
            return
        sealers = r.chain.sealers_at(msg.height)
        if sealers is None or msg.sender not in sealers:
            r._drop("not_sealer")
            return
        if not r._check_sig(msg):
            return
        sigs = self.log.setdefault(msg.height, {}).setdefault(msg.digest, {})
        if msg.sender not in sigs and not r.quotas.hold(msg.sender, CHECKPOINTS):
            return
        sigs[msg.sender] = msg.sig
        self.check_stable(msg.height, msg.digest)

    def check_stable(self, h: int, digest: bytes) -> None:
        r = self.r
        chain = r.chain
        sealers = chain.sealers_at(h)
        sigs = self.log.get(h, {}).get(digest, {})
        if sealers is None or len(sigs) < sealers.quorum or h <= self.stable:
            return
        mine = chain.block_at(h) if h <= chain.height else None
        if mine is not None and mine[0].block_hash() != digest:
            r._drop("checkpoint_mismatch")
            return
        self.stable = h
        self.stable_cert = CheckpointCertificate(h, BlockHash(digest), tuple(sorted(sigs.items())))
        # truncate the log below the low watermark (§4.3)
        for k in [k for k in self.log if k < h]:
            del self.log[k]
        r.quotas.dirty = True
        if h > chain.height:
            for s in sigs:
                r.transfer.note_height(s, h)

    def retransmit(self) -> None:
        """Status tick: re-send this sealer's unstable CHECKPOINT (the network may lose it)."""
        if self.mine is not None and self.mine.height > self.stable:
            self.r._broadcast_sealers(self.mine)
