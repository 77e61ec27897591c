"""What a replica signed, persisted so that a restart never contradicts it.

`SafetyState` is the record (`Persist` effects carry it) and `may_sign`
the check made before signing another vote. These are pure values; the
replica's live copy of what it signed is `votes.Votes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..messages import PreparedCertificate

__all__ = ["Vote", "SafetyState", "may_sign"]

Vote = tuple[int, int, bytes]  # (view, height, digest)


def _vote_wire(v: Vote | None) -> Any:
    return None if v is None else [v[0], v[1], v[2]]


def _vote_from(w: Any) -> Vote | None:
    if w is None:
        return None
    if (not isinstance(w, list) or len(w) != 3 or type(w[0]) is not int or type(w[1]) is not int
            or type(w[2]) is not bytes or w[0] < 0 or w[1] < 0):
        raise ValueError("bad vote in safety state")
    return (w[0], w[1], w[2])


@dataclass(frozen=True)
class SafetyState:
    """What a replica must remember across a crash so it never contradicts what it signed.

    `view`/`changing`: the highest view it entered (and whether it was still
    changing into it, i.e. had sent VIEW-CHANGE(view) without a NEW-VIEW);
    `nv_floor`/`nv_slot`: what the NEW-VIEW that installed `view` constrains
    (no proposal at heights <= nv_floor; at nv_slot's height only its digest);
    `preprepare`/`prepare`/`commit`: the last (view, height, digest) it signed
    a PRE-PREPARE (also inside a NEW-VIEW), PREPARE and COMMIT for (blocks are
    decided one at a time, so the last of each kind is all that can still
    matter); `prepared`: its prepared certificate, reported in VIEW-CHANGEs.
    """

    view: int = 0
    changing: bool = False
    nv_floor: int = 0
    nv_slot: Vote | None = None
    preprepare: Vote | None = None
    prepare: Vote | None = None
    commit: Vote | None = None
    prepared: PreparedCertificate | None = None

    def to_wire(self) -> dict:
        return {"view": self.view, "changing": self.changing, "nv_floor": self.nv_floor,
                "nv_slot": _vote_wire(self.nv_slot), "preprepare": _vote_wire(self.preprepare),
                "prepare": _vote_wire(self.prepare), "commit": _vote_wire(self.commit),
                "prepared": None if self.prepared is None else self.prepared.to_wire()}

    @classmethod
    def from_wire(cls, w: Any) -> "SafetyState":
        if not isinstance(w, dict) or set(w) != {"view", "changing", "nv_floor", "nv_slot", "preprepare",
                                                 "prepare", "commit", "prepared"}:
            raise ValueError("bad safety state")
        if type(w["view"]) is not int or type(w["nv_floor"]) is not int or type(w["changing"]) is not bool:
            raise ValueError("bad safety state")
        return cls(w["view"], w["changing"], w["nv_floor"], _vote_from(w["nv_slot"]), _vote_from(w["preprepare"]),
                   _vote_from(w["prepare"]), _vote_from(w["commit"]),
                   None if w["prepared"] is None else PreparedCertificate.from_wire(w["prepared"]))


def may_sign(last: Vote | None, view: int, height: int, digest: bytes) -> bool:
    """False if `last` is a vote for the same (view, height) and another digest."""
    return last is None or last[0] != view or last[1] != height or last[2] == digest
