"""What this replica signed so far, and persisting it before it signs more.

`Votes` keeps the last (view, height, digest) it signed a PRE-PREPARE,
PREPARE and COMMIT for, emits `Persist(SafetyState)` when the record changed
(merged with a `Persist` just before it: nothing was sent in between), and
rebuilds the replica from a persisted record on restart. The view and
NEW-VIEW fields belong to `viewchange.Views` and the prepared certificate to
`normal.NormalCase`; `Votes` reads them to build the record and writes them
back on restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import Persist
from .safety import SafetyState, Vote

if TYPE_CHECKING:
    from ..consensus import Replica

__all__ = ["Votes"]


class Votes:
    """The last (view, height, digest) signed per kind, and what was last persisted."""

    def __init__(self, r: Replica) -> None:
        self.r = r
        self.pp: Vote | None = None
        self.prepare: Vote | None = None
        self.commit: Vote | None = None
        self.persisted: SafetyState | None = None
        #: rebuilt from a persisted `SafetyState`
        self.restored = False

    def state(self) -> SafetyState:
        """What `Persist` records now."""
        vc = self.r.vc
        return SafetyState(vc.view, vc.changing, vc.nv_floor, vc.nv_slot, self.pp, self.prepare, self.commit,
                           self.r.normal.prepared)

    def persist(self) -> None:
        """Emit `Persist` if the safety state changed; it precedes every send that relies on it."""
        p = self.persisted
        vc = self.r.vc
        if (p is not None and p.view == vc.view and p.changing == vc.changing and p.nv_floor == vc.nv_floor
                and p.nv_slot == vc.nv_slot and p.preprepare == self.pp and p.prepare == self.prepare
                and p.commit == self.commit and p.prepared is self.r.normal.prepared):
            return
        st = self.state()
        self.persisted = st
        out = self.r.out
        if out and isinstance(out[-1], Persist):
            out[-1] = Persist(st)  # nothing was sent in between: one write suffices
        else:
            out.append(Persist(st))

    def restore(self, s: SafetyState) -> None:
        """Rejoin after a crash from the persisted `SafetyState` (see `Replica`)."""
        r = self.r
        vc = r.vc
        last_cert = r.chain.last_cert
        cert_view = 0 if last_cert is None else last_cert.view
        if cert_view > s.view:
            # entered a later view through a certificate and crashed before
            # persisting it: nothing was signed in that view
            vc.view = cert_view
        else:
            vc.view = s.view
            vc.changing = s.changing and r.is_sealer
            if not vc.changing:
                vc.nv_floor, vc.nv_slot = s.nv_floor, s.nv_slot
        self.pp, self.prepare, self.commit = s.preprepare, s.prepare, s.commit
        if s.prepared is not None and s.prepared.height == r.chain.height + 1:
            r.normal.prepared = s.prepared
        # it may have proposed (or sent a NEW-VIEW) in this view: never again
        vc.no_propose_view = vc.view
        self.restored = True
        self.persisted = s
