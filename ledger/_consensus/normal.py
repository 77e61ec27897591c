"""The normal case (§4.2): PRE-PREPARE, PREPARE, COMMIT, and cutting blocks.

The primary cuts a block when `max_block_txs` requests wait or the oldest
has waited `block_time_ms` (and, with reputation, up to
`last_commit_wait_ms` for COMMITs still missing from the tip's certificate),
signs its hash and sends PRE-PREPARE. Each backup validates and executes the
proposal (`Chain.validate_block`) and sends PREPARE, carrying the primary's
pre-prepare signature so two PREPAREs for different digests prove
equivocation. Pre-prepare plus quorum-1 prepares make a replica *prepared*
(it sends COMMIT); a quorum of commits is the block's certificate. A quorum
of commits for a block the replica holds is applied even if it took no part.
Every vote is checked against what the replica signed before (`safety`) and
persisted before it leaves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from ..values import Block, BlockHash, BlockHeader, CommitCertificate, SealerSet, Transaction, epoch_of, tx_root_of
from ..messages import Commit, Prepare, PreparedCertificate, PrePrepare, preprepare_signing_bytes
from .app import Execution
from .events import CUT, Equivocation, SetTimer, timer
from .quotas import SMALL_MSG, block_cost
from .safety import may_sign
from .viewchange import MAX_FUTURE_VIEWS

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["NormalCase"]

Log = dict[tuple[int, int, bytes], dict[str, bytes]]


class NormalCase:
    def __init__(self, r: Replica) -> None:
        self.r = r
        # the log for heights above the committed one
        self.proposals: dict[tuple[int, int], PrePrepare] = {}
        self.prepares: Log = {}
        self.pp_sigs: dict[tuple[int, int, bytes], bytes] = {}
        self.commits: Log = {}
        self.sent_prepare: set[tuple[int, int]] = set()
        self.sent_commit: set[tuple[int, int]] = set()
        self.prepared: PreparedCertificate | None = None
        #: block digest -> its execution (None: invalid), until the next commit
        self.executions: dict[bytes, Execution | None] = {}
        self.cut_armed = False

    def held_entries(self) -> Iterator[tuple[str, int, int]]:
        for (v, _), pp in self.proposals.items():
            yield pp.sender, v, block_cost(pp.block)
        for d in (self.prepares, self.commits):
            for (v, _, _), sigs in d.items():
                for sender in sigs:
                    yield sender, v, SMALL_MSG

    # ------------------------------------------------------------ messages

    def hint(self, msg: PrePrepare | Prepare | Commit | None, height: int) -> None:
        """A height hint (state transfer) only from a message whose signature verifies."""
        r = self.r
        if msg is not None and msg.verify(r.chain_id, r._verify):
            r.transfer.note_height(msg.sender, height)

    def slot_ok(self, view: int, height: int, sender: str,
                msg: PrePrepare | Prepare | Commit | None = None) -> SealerSet | None:
        """Common checks of normal-case messages (§4.2): view, watermarks, sender."""
        r = self.r
        chain = r.chain
        if height <= chain.height:
            r._drop("stale_height")
            return None
        if height > r.ckpt.high_watermark:
            r._drop("out_of_watermark")
            self.hint(msg, height - 1)
            return None
        view_now = r.vc.view
        if view < view_now:
            r._drop("old_view")
            return None
        if view > view_now + MAX_FUTURE_VIEWS:
            r._drop("future_view")
            return None
        sealers = chain.sealers_at(height)
        if sealers is None:
            r._drop("unknown_epoch")
            self.hint(msg, height - 1)
            return None
        if sender not in sealers:
            r._drop("not_sealer")
            return None
        if height > chain.height + 1:
            self.hint(msg, height - 1)
        return sealers

    def on_preprepare(self, msg: PrePrepare) -> None:
        r = self.r
        sealers = self.slot_ok(msg.view, msg.height, msg.sender, msg)
        if sealers is None:
            return
        if msg.sender != sealers.primary(msg.view):
            r._drop("not_primary")
            return
        if msg.block.height != msg.height:
            r._drop("invalid_proposal")
            return
        if not r._check_sig(msg):
            return
        self.add_proposal(msg)
        self.progress()

    def add_proposal(self, msg: PrePrepare) -> None:
        key = (msg.view, msg.height)
        have = self.proposals.get(key)
        if have is not None:
            if have.digest != msg.digest:
                self.equivocation(have.sender, msg.view, msg.height, have.digest, have.sig, msg.digest, msg.sig)
            else:
                self.r._drop("duplicate")
            return
        if not self.r.quotas.hold(msg.sender, msg.view, block_cost(msg.block)):
            return
        self.proposals[key] = msg
        # prepares seen earlier may already prove a conflicting proposal
        for (v, h, d), pps in list(self.pp_sigs.items()):
            if v == msg.view and h == msg.height and d != msg.digest:
                self.equivocation(msg.sender, v, h, msg.digest, msg.sig, d, pps)
                break

    def on_prepare(self, msg: Prepare) -> None:
        r = self.r
        sealers = self.slot_ok(msg.view, msg.height, msg.sender, msg)
        if sealers is None:
            return
        primary = sealers.primary(msg.view)
        if msg.sender == primary:
            r._drop("primary_prepare")
            return
        if not r._check_sig(msg):
            return
        self.double_vote("prepare", self.prepares, msg)
        key = (msg.view, msg.height, msg.digest)
        sigs = self.prepares.get(key)
        if sigs is None or msg.sender not in sigs:
            if not r.quotas.hold(msg.sender, msg.view):
                return
            if sigs is None:
                sigs = self.prepares[key] = {}
        sigs[msg.sender] = msg.sig
        have = self.proposals.get((msg.view, msg.height))
        if key not in self.pp_sigs and r._verify(
            primary, preprepare_signing_bytes(r.chain_id, msg.view, msg.height, msg.digest, primary), msg.pp_sig
        ):
            self.pp_sigs[key] = msg.pp_sig
            if have is not None and have.digest != msg.digest:
                self.equivocation(primary, msg.view, msg.height, have.digest, have.sig, msg.digest, msg.pp_sig)
        self.progress()

    def on_commit(self, msg: Commit) -> None:
        r = self.r
        chain = r.chain
        lc = chain.last_cert
        if lc is not None and msg.height == chain.height and msg.digest == chain.last_hash and msg.view == lc.view:
            self.on_late_commit(msg)
            return
        sealers = self.slot_ok(msg.view, msg.height, msg.sender, msg)
        if sealers is None:
            return
        if not r._check_sig(msg):
            return
        self.double_vote("commit", self.commits, msg)
        key = (msg.view, msg.height, msg.digest)
        sigs = self.commits.get(key)
        if sigs is None or msg.sender not in sigs:
            if not r.quotas.hold(msg.sender, msg.view):
                return
            if sigs is None:
                sigs = self.commits[key] = {}
        sigs[msg.sender] = msg.sig
        self.progress()

    def on_late_commit(self, msg: Commit) -> None:
        """A COMMIT for the tip that arrived after its certificate formed: add it
        to `last_cert`, so the next block's `last_commit` counts this sealer too."""
        r = self.r
        chain = r.chain
        cert = chain.last_cert
        assert cert is not None
        sealers = chain.sealers_at(msg.height)
        if sealers is None or msg.sender not in sealers:
            r._drop("not_sealer")
            return
        if msg.sender in cert.signers():
            r._drop("duplicate")
            return
        if not r._check_sig(msg):
            return
        chain.last_cert = CommitCertificate(cert.height, cert.view, cert.block_hash,
                                            tuple(sorted((*cert.signatures, (msg.sender, msg.sig)))))
        self.maybe_propose()

    def double_vote(self, kind: str, log: Log, msg: Prepare | Commit) -> None:
        """Keep as evidence a validly signed vote that contradicts one `msg.sender` sent before."""
        for (v, h, d), sigs in log.items():
            if v == msg.view and h == msg.height and d != msg.digest and msg.sender in sigs:
                self.r.keep_evidence(
                    Equivocation(msg.sender, v, h, d, sigs[msg.sender], msg.digest, msg.sig, kind))
                self.r._drop("double_vote")
                return

    def equivocation(self, node: str, view: int, height: int, da: bytes, sa: bytes, db: bytes, sb: bytes) -> None:
        r = self.r
        r.keep_evidence(Equivocation(node, view, height, da, sa, db, sb))
        r._drop("equivocation")
        vc = r.vc
        if view == vc.view and not vc.changing and r.is_sealer:
            vc.start(vc.view + 1)

    # ------------------------------------------------------------ progress

    def validate(self, pp: PrePrepare, fresh: bool) -> Execution | None:
        """Check a proposal for the next height and execute it (None = invalid)."""
        if pp.digest in self.executions:
            return self.executions[pp.digest]
        ex = self.r.chain.validate_block(pp.block, fresh=fresh, view=pp.view)
        self.executions[pp.digest] = ex
        return ex

    def progress(self) -> None:
        """Advance the next height as far as the log allows (§4.2)."""
        r = self.r
        chain = r.chain
        vc = r.vc
        votes = r.votes
        while True:
            h = chain.height + 1
            # a quorum of commits for a block we hold is a certificate: apply it
            if self.commit_by_certificate(h):
                continue
            if vc.changing or not r.is_sealer:
                return
            v = vc.view
            pp = self.proposals.get((v, h))
            if pp is None:
                return
            nv_slot = vc.nv_slot
            nv = nv_slot == (v, h, pp.digest)
            if not nv and nv_slot is not None and nv_slot[0] == v and nv_slot[1] == h:
                # the NEW-VIEW of this view fixed another block here (a restarted
                # replica no longer holds that proposal, only its digest)
                r._drop("conflicts_new_view")
                return
            if h <= vc.nv_floor:
                # NEW-VIEW proved a block is committed here: only state transfer fills it
                r._drop("below_new_view_floor")
                return
            ex = self.validate(pp, fresh=not nv)
            if ex is None:
                if pp.sender != r.me:
                    r._drop("invalid_proposal")
                    vc.start(v + 1)
                return
            key = (v, h, pp.digest)
            sealers = r.sealers
            primary = sealers.primary(v)
            if v < vc.silent_below:
                return
            if r.me != primary and (v, h) not in self.sent_prepare:
                if not may_sign(votes.prepare, v, h, pp.digest):
                    r._drop("conflicting_vote")  # it prepared another block here before a restart
                    return
                self.sent_prepare.add((v, h))
                votes.prepare = (v, h, pp.digest)
                votes.persist()
                prep = r._signed(Prepare(r.me, v, h, pp.digest, pp.sig))
                self.prepares.setdefault(key, {})[r.me] = prep.sig
                r._broadcast_sealers(prep)
            prepares = {s: g for s, g in self.prepares.get(key, {}).items() if s != primary}
            if len(prepares) < sealers.quorum - 1:
                return
            if self.prepared is None or self.prepared.height != h or self.prepared.view < v:
                self.prepared = PreparedCertificate(v, pp.block, pp.sig, tuple(sorted(prepares.items())))
            if (v, h) not in self.sent_commit:
                if not may_sign(votes.commit, v, h, pp.digest):
                    r._drop("conflicting_vote")
                    return
                self.sent_commit.add((v, h))
                votes.commit = (v, h, pp.digest)
                votes.persist()  # the prepared certificate and the vote, before the COMMIT leaves
                com = r._signed(Commit(r.me, v, h, pp.digest))
                self.commits.setdefault(key, {})[r.me] = com.sig
                r._broadcast_sealers(com)
            commits = self.commits.get(key, {})
            if len(commits) < sealers.quorum:
                return
            cert = CommitCertificate(h, v, pp.digest, tuple(sorted(commits.items())))
            chain.commit(pp.block, cert, ex)

    def commit_by_certificate(self, h: int) -> bool:
        r = self.r
        chain = r.chain
        sealers = chain.sealers_at(h)
        if sealers is None:
            return False
        for (v, hh, d), sigs in list(self.commits.items()):
            if hh != h or len(sigs) < sealers.quorum:
                continue
            block = None
            for (_pv, ph), pp in self.proposals.items():
                if ph == h and pp.digest == d:
                    block = pp.block
                    break
            if block is None and self.prepared is not None and self.prepared.block.block_hash() == d:
                block = self.prepared.block
            if block is None:
                continue
            if v == r.vc.view and not r.vc.changing and (v, h) in self.sent_commit:
                continue  # the normal path commits it
            cert = CommitCertificate(h, v, BlockHash(d), tuple(sorted(sigs.items())))
            if chain.apply_certified(block, cert):
                return True
        return False

    # ------------------------------------------------------------ proposing

    def maybe_propose(self) -> None:
        """Primary: cut a block when full or when the oldest request is old enough."""
        r = self.r
        vc = r.vc
        if (not r.is_sealer or vc.changing or r.primary != r.me or vc.view < vc.silent_below
                or vc.view == vc.no_propose_view):
            return
        h = r.chain.height + 1
        mempool = r.pool.txs
        if (vc.view, h) in self.proposals or not mempool:
            return
        if vc.nv_slot is not None and vc.nv_slot[0] == vc.view and vc.nv_slot[1] >= h:
            return
        if h <= vc.nv_floor:
            return  # catch up by state transfer first
        if h > r.ckpt.high_watermark:
            return
        p = r.params
        # entries are inserted with a non-decreasing `now`, so the first is the oldest
        oldest = next(iter(mempool.values()))[1]
        wait = oldest + p.block_time_ms - r.now if len(mempool) < p.max_block_txs else 0
        wait = max(wait, self.last_commit_wait())
        if wait > 0:
            # an armed cut timer fires no later than this one would: the oldest
            # request only gets younger, and a late COMMIT re-runs this at once
            if not self.cut_armed:
                r.out.append(SetTimer(timer(CUT), wait))
                self.cut_armed = True
            return
        self.propose(h)

    def on_cut_timer(self) -> None:
        self.cut_armed = False
        self.maybe_propose()

    def last_commit_wait(self) -> int:
        """How much longer to wait for COMMITs missing from the tip's certificate,
        which the next block carries as evidence of who signed (`Params.last_commit_wait_ms`)."""
        r = self.r
        chain = r.chain
        cert = chain.last_cert
        if cert is None or r.params.last_commit_wait_ms <= 0 or r.params.sealer_count <= 0:
            return 0  # without reputation nobody counts the signers
        sealers = chain.sealers_at(chain.height)
        if sealers is None or len(cert.signatures) >= sealers.n:
            return 0
        return chain.committed_at + r.params.last_commit_wait_ms - r.now

    def propose(self, h: int) -> None:
        r = self.r
        chain = r.chain
        view = r.vc.view
        p = r.params
        sealers = r.sealers
        txs: list[Transaction] = []
        in_block: set[tuple[str, int]] = set()
        for tx, _ in list(r.pool.txs.values()):
            if len(txs) == p.max_block_txs:
                break
            if (tx.submitter, tx.nonce) in in_block:
                continue  # same nonce, other payload: at most one of them commits
            in_block.add((tx.submitter, tx.nonce))
            txs.append(tx)
        if not txs:
            return
        epoch = epoch_of(h, p.epoch_length)
        t = max(r.now, chain.last_time)
        lc = chain.last_cert if h > 1 else None
        ex = r.executor.execute(chain.context(h, t, r.me, sealers, lc), txs)
        header = BlockHeader(h, chain.last_hash, tx_root_of(txs), ex.state_root, epoch, view, r.me, t,
                             sealers.hash(), ex.next_sealers, None if lc is None else lc.cert_hash())
        block = Block(header, tuple(txs), lc)
        digest = block.block_hash()
        votes = r.votes
        if not may_sign(votes.pp, view, h, digest):
            return
        votes.pp = (view, h, digest)
        votes.persist()
        pp = r._signed(PrePrepare(r.me, view, h, block))
        self.executions[pp.digest] = ex
        self.proposals[(view, h)] = pp
        r._broadcast_sealers(pp)
        r.vc.arm_timer()
        self.progress()

    # ------------------------------------------------------------ truncation

    def gc_height(self, h: int) -> None:
        """Height `h` committed: drop the log at and below it."""
        for k in [k for k in self.proposals if k[1] <= h]:
            del self.proposals[k]
        for d2 in (self.prepares, self.commits, self.pp_sigs):
            for key in [key for key in d2 if key[1] <= h]:
                del d2[key]
        self.sent_prepare = {k for k in self.sent_prepare if k[1] > h}
        self.sent_commit = {k for k in self.sent_commit if k[1] > h}
        if self.prepared is not None and self.prepared.height <= h:
            self.prepared = None
        self.executions.clear()
        self.r.quotas.dirty = True

    def forget_views_below(self, v: int) -> None:
        """View `v` entered: old-view prepares are useless now; old-view commits and
        proposals may still complete a commit certificate, so they stay until GC."""
        for d in (self.prepares, self.pp_sigs):
            for k in [k for k in d if k[0] < v]:
                del d[k]
