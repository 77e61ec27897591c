"""View change (§4.4, §4.5.2): VIEW-CHANGE, NEW-VIEW and the view timer.

A sealer with pending work runs a timer; on expiry, on an invalid proposal or
on proof of equivocation it sends VIEW-CHANGE(v+1) with its highest commit
certificate and its prepared certificate for the next height. The new
primary collects a quorum and sends NEW-VIEW, re-proposing the highest-view
prepared block at `max_c + 1` (`select`); no proposal of the new view is
accepted at or below `max_c` (`nv_floor`). A replica that sees f+1
VIEW-CHANGEs for higher views joins the smallest; the timer for view w
starts once a quorum of VIEW-CHANGE(w) is in and doubles with each
consecutive view change. Late replicas are sent the NEW-VIEW that installed
the current view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

from ..values import SealerSet
from ..errors import CertificateError
from ..messages import NewView, PreparedCertificate, PrePrepare, Status, ViewChange
from .events import VIEW, CancelTimer, Send, SetTimer, timer
from .quotas import vc_cost
from .safety import may_sign

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["Views", "MAX_FUTURE_VIEWS"]

MAX_FUTURE_VIEWS = 64


class Views:
    def __init__(self, r: Replica) -> None:
        self.r = r
        self.view = 0
        #: sent VIEW-CHANGE(view), no NEW-VIEW for it yet
        self.changing = False
        #: consecutive view changes (the timer doubles with each)
        self.vc_count = 0
        #: views below this one are sat out (a restart from a store without `SafetyState`)
        self.silent_below = 0
        self.no_propose_view = -1  # the view a restarted replica rejoined: it proposes nothing in it
        self.view_changes: dict[int, dict[str, ViewChange]] = {}
        self.new_view_msg: NewView | None = None
        self.nv_slot: tuple[int, int, bytes] | None = None
        self.nv_floor = 0  # heights <= this were committed before the current view
        self.sent_new_view: set[int] = set()
        self.timer: tuple | None = None
        #: view changes this replica started (a metric)
        self.view_change_count = 0

    def held_entries(self) -> Iterator[tuple[str, int, int]]:
        for v, vcs in self.view_changes.items():
            for sender, vc in vcs.items():
                yield sender, v, vc_cost(vc)

    # ------------------------------------------------------------ the timer

    def timeout(self) -> int:
        p = self.r.params
        return min(p.max_view_change_timeout_ms, p.view_change_timeout_ms * (2 ** min(self.vc_count, 30)))

    def arm_timer(self) -> None:
        if self.r.is_sealer and not self.changing and self.timer is None:
            self.timer = timer(VIEW, self.view)
            self.r.out.append(SetTimer(self.timer, self.timeout()))

    def restart_timer(self) -> None:
        if self.changing:
            return
        r = self.r
        if self.timer is not None:
            r.out.append(CancelTimer(self.timer))
            self.timer = None
        if r.pool.txs or (self.view, r.chain.height + 1) in r.normal.proposals:
            self.arm_timer()

    def on_timer(self, tid: tuple) -> None:
        if tid != self.timer:
            return
        self.timer = None
        if tid[1] == self.view:
            self.start(self.view + 1)

    # ------------------------------------------------------------ VIEW-CHANGE

    def start(self, new_view: int) -> None:
        """Send VIEW-CHANGE(new_view) (a sealer's timer expired, or it saw cause)."""
        if new_view <= self.view and (self.changing or new_view < self.view):
            return
        if new_view == self.view and not self.changing:
            return
        r = self.r
        if not r.is_sealer:
            return
        if self.timer is not None:
            r.out.append(CancelTimer(self.timer))
            self.timer = None
        self.view = new_view
        self.changing = True
        self.vc_count += 1
        self.view_change_count += 1
        self.nv_slot = None
        r.votes.persist()  # a restart must not send anything in the views it left
        vc = self.own_view_change(new_view)
        self.view_changes.setdefault(new_view, {})[r.me] = vc
        r._broadcast_sealers(vc)
        self.quorum_check(new_view)
        self.try_new_view(new_view)

    def resume(self) -> None:
        """At start: restarted while changing into `view`, say so again (same prepared
        certificate, a commit certificate at least as high; the status tick re-sends it)."""
        r = self.r
        if self.changing and r.me not in self.view_changes.get(self.view, {}):
            self.view_changes.setdefault(self.view, {})[r.me] = self.own_view_change(self.view)
            self.quorum_check(self.view)

    def own_view_change(self, new_view: int) -> ViewChange:
        r = self.r
        prepared = r.normal.prepared
        if prepared is not None and prepared.height != r.chain.height + 1:
            prepared = None
        return r._signed(ViewChange(r.me, new_view, r.chain.last_cert, prepared))

    def quorum_check(self, v: int) -> None:
        """Start the timer for view v once a quorum of VIEW-CHANGE(v) is in (§4.5.2)."""
        if not self.changing or self.view != v or self.timer is not None:
            return
        if len(self.view_changes.get(v, {})) >= self.r.sealers.quorum:
            self.timer = timer(VIEW, v)
            self.r.out.append(SetTimer(self.timer, self.timeout()))

    def valid_view_change(self, vc: ViewChange, sealers: SealerSet) -> bool:
        r = self.r
        chain = r.chain
        if vc.sender not in sealers or not vc.verify(r.chain_id, r._verify):
            return False
        if vc.cert is not None:
            known = chain.blocks.get(vc.cert.height)
            if known is not None and known[1] == vc.cert:
                pass
            else:
                cs = chain.sealers_at(vc.cert.height)
                if cs is None:
                    return False
                try:
                    vc.cert.verify(r.chain_id, cs, r._verify)
                except CertificateError:
                    return False
        if vc.prepared is not None:
            ps = chain.sealers_at(vc.prepared.height)
            if vc.prepared.height != vc.height + 1 or ps is None or vc.prepared.view >= vc.new_view:
                return False
            try:
                vc.prepared.verify(r.chain_id, ps, r._verify)
            except CertificateError:
                return False
        return True

    def on_view_change(self, msg: ViewChange) -> None:
        r = self.r
        sealers = r.sealers
        if msg.sender not in sealers:
            r._drop("not_sealer")
            return
        if msg.new_view < self.view or (msg.new_view == self.view and not self.changing):
            # a late replica: help it with the NEW-VIEW that installed our view
            if (self.new_view_msg is not None and not self.changing and r._check_sig(msg)
                    and r.fresh.fresh("viewchange", msg.sender, (msg.new_view, msg.height),
                                      r.params.status_interval_ms // 2)):
                r.out.append(Send(msg.sender, self.new_view_msg))
            else:
                r._drop("old_view")
            return
        if msg.new_view > self.view + MAX_FUTURE_VIEWS:
            r._drop("future_view")
            return
        if msg.sender in self.view_changes.get(msg.new_view, {}):
            r._drop("duplicate")
            return
        if not self.valid_view_change(msg, sealers):
            r._drop("bad_view_change")
            return
        if not r.quotas.hold(msg.sender, msg.new_view, vc_cost(msg)):
            return
        self.view_changes.setdefault(msg.new_view, {})[msg.sender] = msg
        if msg.height > r.chain.height:
            r.transfer.note_height(msg.sender, msg.height)
        # f+1 replicas want a later view: join the smallest of them (§4.5.2)
        higher: dict[str, int] = {}
        for v, vcs in self.view_changes.items():
            if v > self.view or (v == self.view and not self.changing):
                for s in vcs:
                    higher[s] = min(v, higher.get(s, v))
        if len(higher) >= sealers.f + 1 and r.is_sealer:
            target: int | None = sorted(higher.values())[-(sealers.f + 1)]
            assert target is not None
            target = min(v for v in higher.values() if v >= target) if target > self.view else None
            if target is not None and target > self.view:
                self.start(target)
        self.quorum_check(self.view)
        self.try_new_view(msg.new_view)

    # ------------------------------------------------------------ NEW-VIEW

    @staticmethod
    def select(vcs: Iterable[ViewChange]) -> tuple[int, PreparedCertificate | None, ViewChange]:
        """Highest committed height and highest-view prepared block above it."""
        vcs = list(vcs)
        top = max(vcs, key=lambda v: (v.height, v.sender))
        best: PreparedCertificate | None = None
        for vc in vcs:
            p = vc.prepared
            if p is not None and p.height == top.height + 1:
                if best is None or p.view > best.view or (
                    p.view == best.view and p.block.block_hash() < best.block.block_hash()
                ):
                    best = p
        return top.height, best, top

    def try_new_view(self, v: int) -> None:
        if v != self.view or not self.changing or v in self.sent_new_view or v == self.no_propose_view:
            return
        r = self.r
        sealers = r.sealers
        if sealers.primary(v) != r.me:
            return
        vcs = self.view_changes.get(v, {})
        if len(vcs) < sealers.quorum:
            return
        chosen = tuple(vcs[s] for s in sorted(vcs)[: len(vcs)])
        _, best, _ = self.select(chosen)
        pp = None
        if best is not None:
            digest = best.block.block_hash()
            votes = r.votes
            if not may_sign(votes.pp, v, best.height, digest):
                return
            votes.pp = (v, best.height, digest)
            votes.persist()
            pp = r._signed(PrePrepare(r.me, v, best.height, best.block))
        nv = r._signed(NewView(r.me, v, chosen, pp))
        self.sent_new_view.add(v)
        r._broadcast_sealers(nv)
        self.install_new_view(nv, pp)

    def on_new_view(self, msg: NewView) -> None:
        r = self.r
        sealers = r.sealers
        if msg.view < self.view or (msg.view == self.view and not self.changing):
            r._drop("old_view")
            return
        if msg.sender != sealers.primary(msg.view):
            r._drop("not_primary")
            return
        if not r._check_sig(msg):
            return
        senders = set()
        for vc in msg.view_changes:
            if vc.new_view != msg.view or vc.sender in senders or not self.valid_view_change(vc, sealers):
                r._drop("bad_new_view")
                return
            senders.add(vc.sender)
        if len(senders) < sealers.quorum:
            r._drop("bad_new_view")
            return
        _, best, _ = self.select(msg.view_changes)
        pp = msg.preprepare
        if best is None:
            if pp is not None:
                r._drop("bad_new_view")
                return
        else:
            if (pp is None or pp.digest != best.block.block_hash() or pp.view != msg.view
                    or pp.height != best.height or pp.sender != msg.sender
                    or not pp.verify(r.chain_id, r._verify)):
                r._drop("bad_new_view")
                return
        self.install_new_view(msg, pp)

    def install_new_view(self, msg: NewView, pp: PrePrepare | None) -> None:
        r = self.r
        v = msg.view
        self.enter(v, persist=False)
        self.new_view_msg = msg
        max_c, best, top = self.select(msg.view_changes)
        self.nv_floor = max_c
        if max_c > r.chain.height:
            r.transfer.note_height(top.sender, max_c)
        if pp is not None:
            self.nv_slot = (v, pp.height, pp.digest)
            if pp.height > r.chain.height:
                r.normal.proposals[(v, pp.height)] = pp
        r.votes.persist()
        self.restart_timer()
        r.normal.progress()
        r.normal.maybe_propose()

    def enter(self, v: int, persist: bool = True) -> None:
        r = self.r
        if self.timer is not None:
            r.out.append(CancelTimer(self.timer))
            self.timer = None
        if v != self.view:
            self.nv_slot = None
            self.nv_floor = 0
            self.new_view_msg = None
        self.view = v
        self.changing = False
        for k in [k for k in self.view_changes if k <= v]:
            del self.view_changes[k]
        r.normal.forget_views_below(v)
        r.quotas.dirty = True
        if persist:
            r.votes.persist()
        self.restart_timer()

    # ------------------------------------------------------------ late replicas

    def retransmit(self) -> None:
        """Status tick: re-send this sealer's VIEW-CHANGE while the change is under way."""
        if self.changing:
            mine = self.view_changes.get(self.view, {}).get(self.r.me)
            if mine is not None:
                self.r._broadcast_sealers(mine)

    def on_status(self, msg: Status) -> None:
        """The primary sends its NEW-VIEW to a sealer whose Status shows an older view."""
        r = self.r
        if (msg.view < self.view and not self.changing and self.new_view_msg is not None
                and r.primary == r.me and msg.sender in r.sealers):
            r.out.append(Send(msg.sender, self.new_view_msg))
