"""The committed chain: applying certified blocks, committing, pushing to backups.

`Chain` holds what the replica has decided (height, tip, certificates, the
sealer set of each epoch, the tx index and nonce windows) and the checks that
tie a block to it (`validate_block`: links, epoch, time, tx root, carried
`last_commit`, nonces, execution against the header). `commit` makes a
block the tip, then lets every other part react in a fixed order (answers to
clients, view adoption, log truncation, checkpoint, backup push, state
transfer, view timer, next proposal). Each backup gets each block from one
sealer (`push_to_backups`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._nonces import NonceWindow
from ..values import Block, BlockHash, CommitCertificate, Genesis, SealerSet, epoch_of, is_epoch_end
from ..errors import CertificateError
from ..messages import CommittedBlock
from .app import BlockContext, Execution
from .events import Broadcast, CommitBlock

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["Chain"]


class Chain:
    def __init__(self, r: Replica, genesis: Genesis) -> None:
        self.r = r
        self.height = 0
        self.last_hash: BlockHash = genesis.genesis_hash()
        self.last_time = genesis.time
        self.last_cert: CommitCertificate | None = None
        self.committed_at = 0
        #: the last blocks (all of them without an archive)
        self.blocks: dict[int, tuple[Block, CommitCertificate]] = {}
        self.sealer_sets: dict[int, SealerSet] = {0: genesis.sealers}
        self.nonces = NonceWindow(genesis.params.nonce_window)
        self.tx_index: dict[bytes, tuple[int, int]] = {}
        self.results: dict[bytes, Any] = {}
        self._sealers_memo: tuple[tuple[int, int], SealerSet, bool] | None = None
        self._backups_memo: dict[tuple[str, ...], list[str]] = {}

    # ------------------------------------------------------------ reads

    def sealers_at(self, height: int) -> SealerSet | None:
        """Sealer set certifying block `height`, or None if not known yet."""
        return self.sealer_sets.get(epoch_of(max(height, 1), self.r.params.epoch_length))

    def sealers_now(self) -> tuple[SealerSet, bool]:
        """(set deciding the next block, whether this replica is in it), memoised per height and known sets
        (a sealer asks for each request it admits; the sets only grow, one per epoch)."""
        key = (self.height, len(self.sealer_sets))
        got = self._sealers_memo
        if got is None or got[0] != key:
            s = self.sealers_at(self.height + 1)
            assert s is not None
            got = self._sealers_memo = (key, s, self.r.me in s)
        return got[1], got[2]

    def block_at(self, height: int) -> tuple[Block, CommitCertificate] | None:
        got = self.blocks.get(height)
        if got is None and self.r.archive is not None:
            got = self.r.archive.get(height)
        return got

    def result_of(self, tid: bytes) -> Any:
        h, i = self.tx_index[tid]
        got = self.block_at(h)
        res = self.results.get(tid)
        return {"height": h, "index": i, "block": got[0].block_hash() if got else None, "result": res}

    # ------------------------------------------------------------ checks

    def validate_block(self, block: Block, *, fresh: bool, view: int, certified: bool = False) -> Execution | None:
        """Check `block` extends the tip and execute it (None = invalid); `fresh`: a proposal of `view`."""
        r = self.r
        h = block.header
        p = r.params
        sealers = self.sealers_at(h.height)
        if sealers is None or h.height != self.height + 1 or h.prev_hash != self.last_hash:
            return None
        if h.epoch != epoch_of(h.height, p.epoch_length) or h.sealer_set_hash != sealers.hash():
            return None
        if h.time < self.last_time:
            return None
        if fresh:
            if h.view != view or h.proposer != sealers.primary(view):
                return None
            if h.time > r.now + p.max_clock_drift_ms:
                return None
            if not block.txs or len(block.txs) > p.max_block_txs:
                return None
        if not block.tx_root_ok() or not self.last_commit_ok(block, certified):
            return None
        seen: set[bytes] = set()
        in_block: set[tuple[str, int]] = set()
        for tx in block.txs:
            if tx.tx_id in seen or tx.tx_id in self.tx_index:
                return None
            seen.add(tx.tx_id)
            if (tx.submitter, tx.nonce) in in_block or not self.nonces.fresh(tx.submitter, tx.nonce):
                return None
            in_block.add((tx.submitter, tx.nonce))
            if not certified and not tx.verify_signature(r._verify):
                return None
        ctx = self.context(h.height, h.time, h.proposer, sealers, block.last_commit)
        ex = r.executor.execute(ctx, block.txs)
        if ex.state_root != h.state_root or ex.next_sealers != h.next_sealers:
            return None
        return ex

    def context(self, h: int, t: int, proposer: str, sealers: SealerSet,
                last_commit: CommitCertificate | None) -> BlockContext:
        p = self.r.params
        return BlockContext(h, epoch_of(h, p.epoch_length), t, proposer, is_epoch_end(h, p.epoch_length), sealers,
                            self.r.genesis, self.last_hash, last_commit,
                            self.sealers_at(h - 1) if last_commit is not None else None)

    def last_commit_ok(self, block: Block, certified: bool) -> bool:
        """Block h (>= 2) carries a valid certificate of block h-1 (`Block.last_commit`).

        Only a certified block may lack it (a block committed before blocks
        carried it); one that carries it has it checked in full: 2f+1 valid
        signatures of h-1's sealers over h-1's header hash."""
        h = block.header
        lc = block.last_commit
        if not block.last_commit_ok():
            return False
        if lc is None:
            return h.height == 1 or certified
        if h.height == 1 or lc.height != h.height - 1 or lc.block_hash != h.prev_hash:
            return False
        return self.cert_verifies(lc, h.height - 1, "bad_last_commit")

    def cert_verifies(self, cert: CommitCertificate, height: int, reason: str) -> bool:
        """`cert` holds a quorum of valid signatures of `height`'s sealers (else dropped as `reason`)."""
        sealers = self.sealers_at(height)
        if sealers is None:
            return False
        try:
            cert.verify(self.r.chain_id, sealers, self.r._verify)
        except CertificateError:
            self.r._drop(reason)
            return False
        return True

    # ------------------------------------------------------------ committing

    def apply_certified(self, block: Block, cert: CommitCertificate, replay: bool = False) -> bool:
        """Apply a block that carries a commit certificate (backups, state transfer)."""
        h = block.height
        if h != self.height + 1 or cert.height != h or cert.block_hash != block.block_hash():
            return False
        if not self.cert_verifies(cert, h, "bad_certificate"):
            return False
        ex = self.r.normal.executions.get(cert.block_hash)
        if ex is None:
            ex = self.validate_block(block, fresh=False, view=cert.view, certified=True)
        if ex is None:
            self.r._drop("invalid_certified_block")
            return False
        self.commit(block, cert, ex, replay=replay)
        return True

    def commit(self, block: Block, cert: CommitCertificate, ex: Execution, replay: bool = False) -> None:
        r = self.r
        h = block.height
        hdr = block.header
        r.executor.apply(ex)
        self.height = h
        self.last_hash = block.block_hash()
        self.last_time = hdr.time
        self.last_cert = cert
        self.committed_at = r.now
        self.blocks[h] = (block, cert)
        for i, tx in enumerate(block.txs):
            self.tx_index[tx.tx_id] = (h, i)
            self.results[tx.tx_id] = ex.results[i] if i < len(ex.results) else None
            self.nonces.record(tx.submitter, tx.nonce)
        if hdr.next_sealers is not None:
            self.sealer_sets[hdr.epoch + 1] = hdr.next_sealers
            if not replay and r.me not in hdr.next_sealers and r.pool.txs:
                r.pool.hand_over(hdr.next_sealers)
        if r.archive is not None:
            for old in [k for k in self.blocks if k < h - r.params.window]:
                del self.blocks[old]
        if replay:
            return
        r.out.append(CommitBlock(block, cert, ex.results))
        r.pool.committed(block)
        vc = r.vc
        # adopt a later view proven by the certificate (a quorum is working in it)
        if cert.view > vc.view:
            vc.enter(cert.view)
        if cert.view == vc.view:
            vc.vc_count = 0
        r.normal.gc_height(h)
        sealers_h = self.sealers_at(h)
        if sealers_h is not None and r.me in sealers_h:
            if h % r.params.checkpoint_interval == 0:
                r.ckpt.take(h, sealers_h)
            self.push_to_backups(block, cert, sealers_h)
        r.transfer.committed()
        vc.restart_timer()
        r.normal.maybe_propose()

    def push_to_backups(self, block: Block, cert: CommitCertificate, sealers: SealerSet) -> None:
        """Each backup gets each block from one sealer, `(j + height) % n` for backup j.

        A block carries its certificate, so one copy is enough for safety, and
        sealers share the pushes evenly. If that sealer is faulty, the backup
        still learns of the height from the next block (pushed by another
        sealer) or from any node's Status heartbeat, and fetches the block
        (state transfer): a faulty sender delays a backup, never stalls it.
        """
        backups = self._backups_of(sealers)
        if not backups:
            return
        r = self.r
        i, n, h = sealers.index(r.me), sealers.n, block.height
        to = tuple(b for j, b in enumerate(backups) if (j + h) % n == i)
        if to:
            r.out.append(Broadcast(r._signed(CommittedBlock(r.me, block, cert)), to))

    def _backups_of(self, sealers: SealerSet) -> list[str]:
        got = self._backups_memo.get(sealers.members)
        if got is None:
            got = self._backups_memo[sealers.members] = [n for n in self.r.nodes if n not in sealers]
        return got
