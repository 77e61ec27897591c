"""Equivocation evidence: two conflicting consensus messages signed by one sealer.

A sealer that signs two PRE-PREPAREs, PREPAREs or COMMITs for the same
``(view, height)`` with different block digests has broken PBFT: an honest
replica never does (its `SafetyState` forbids it across restarts too). The
pair of signatures is self-contained proof, checkable by anyone who knows the
chain id and the accused's did, so it can travel in a ``reputation.evidence``
transaction and be verified by every node while executing it
(`verify_evidence`). Pure: no state, no I/O.

Refusal codes (stable, in the tx result): ``BAD_EVIDENCE`` (malformed),
``NOT_CONFLICTING`` (same digest twice), ``UNKNOWN_NODE`` (not a genesis
node), ``NOT_A_SEALER`` (not a sealer of that height's epoch, or the epoch
is unknown), ``BAD_SIGNATURE`` (a signature does not verify: forged).
Replays (``EVIDENCE_REPLAYED``) are refused by `reputation`, which keeps the
offences already punished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trust import canonical
from trust.hashes import sha256

from ..values import SealerSet, Verifier, is_did
from .._consensus.events import Equivocation
from ..messages import signing_bytes
from ._app import Refused

__all__ = ["KINDS", "EquivocationEvidence", "verify_evidence", "from_equivocation"]

#: Consensus messages whose conflicting pairs prove equivocation.
KINDS = ("preprepare", "prepare", "commit")
_FIELDS = {"node", "kind", "view", "height", "digest_a", "sig_a", "digest_b", "sig_b"}


@dataclass(frozen=True)
class EquivocationEvidence(Equivocation):
    """`node` signed `kind` for (`view`, `height`) over `digest_a` and over
    `digest_b`: a replica's `consensus.Equivocation` as a transaction payload."""

    def to_payload(self) -> dict:
        """The ``reputation.evidence`` payload."""
        return {"node": self.node, "kind": self.kind, "view": self.view, "height": self.height,
                "digest_a": self.digest_a, "sig_a": self.sig_a, "digest_b": self.digest_b, "sig_b": self.sig_b}

    @classmethod
    def from_payload(cls, p: Any) -> "EquivocationEvidence":
        """Parse a payload; `Refused` ``BAD_EVIDENCE`` names what is wrong."""
        if not isinstance(p, dict) or set(p) != _FIELDS:
            raise Refused("BAD_EVIDENCE", f"evidence must have exactly the fields {sorted(_FIELDS)}")
        if not isinstance(p["node"], str) or not is_did(p["node"]):
            raise Refused("BAD_EVIDENCE", "node must be the accused's did:key id")
        if p["kind"] not in KINDS:
            raise Refused("BAD_EVIDENCE", f"kind must be one of {', '.join(KINDS)}")
        for f in ("view", "height"):
            if type(p[f]) is not int or not 0 <= p[f] < 1 << 63:
                raise Refused("BAD_EVIDENCE", f"{f} must be a non-negative integer")
        if p["height"] < 1:
            raise Refused("BAD_EVIDENCE", "height must be >= 1")
        for f in ("digest_a", "digest_b"):
            if type(p[f]) is not bytes or len(p[f]) != 32:
                raise Refused("BAD_EVIDENCE", f"{f} must be 32 bytes")
        for f in ("sig_a", "sig_b"):
            if type(p[f]) is not bytes or len(p[f]) != 64:
                raise Refused("BAD_EVIDENCE", f"{f} must be a 64-byte Ed25519 signature")
        return cls(p["node"], p["view"], p["height"], p["digest_a"], p["sig_a"], p["digest_b"], p["sig_b"],
                   p["kind"])

    def offence(self) -> str:
        """One offence per accused and (view, height) slot, whatever the kind or digests."""
        return sha256(canonical.encode(["sealstream/offence/v1", self.node, self.view, self.height])).hex()

    def signed_bytes(self, chain_id: str, digest: bytes) -> bytes:
        return signing_bytes(chain_id, self.kind,
                             {"view": self.view, "height": self.height, "digest": digest, "sender": self.node})


def verify_evidence(ev: EquivocationEvidence, chain_id: str, nodes: tuple[str, ...], sealers: SealerSet | None,
                    verify: Verifier) -> None:
    """Raise `Refused` unless `ev` proves that a sealer of `ev.height` equivocated.

    `sealers` is the set certifying `ev.height` (None: not known to the chain yet)."""
    if ev.digest_a == ev.digest_b:
        raise Refused("NOT_CONFLICTING", "both messages sign the same digest")
    if ev.node not in nodes:
        raise Refused("UNKNOWN_NODE", "the accused is not a node of this ledger")
    if sealers is None or ev.node not in sealers:
        raise Refused("NOT_A_SEALER", f"the accused was not a sealer at height {ev.height}")
    for digest, sig in ((ev.digest_a, ev.sig_a), (ev.digest_b, ev.sig_b)):
        try:
            good = verify(ev.node, ev.signed_bytes(chain_id, digest), sig)
        except ValueError:
            good = False
        if not good:
            raise Refused("BAD_SIGNATURE", f"a {ev.kind} signature does not verify for the accused")


def from_equivocation(e: Any) -> EquivocationEvidence:
    """The evidence from a replica's `consensus.Equivocation` (two signed PRE-PREPAREs, PREPAREs or COMMITs)."""
    return EquivocationEvidence(e.node, e.view, e.height, e.digest_a, e.sig_a, e.digest_b, e.sig_b, e.kind)
