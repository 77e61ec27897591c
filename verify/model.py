"""Frozen values: everything a verifier needs for some records, and its verdict.

An `Evidence` is self-contained: records (payload, statement, signature,
receipt, leaf index, inclusion proof), the manifests of their batches, the
rows a database claims for them, and the ledger half (genesis, headers with
commit certificates, each batch's ANCHOR transaction with its tx proof, and
registry/anchors state values with state proofs).  `collect` fills one from
the services, `bundle` from a zip; `chain.verify` checks it with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ledger.values import BlockHeader, CommitCertificate, Genesis
from ledger.light_client import TxProof

__all__ = [
    "SUBJECT_KINDS",
    "StateValue",
    "AnchorTx",
    "LedgerEvidence",
    "BatchEvidence",
    "RecordEvidence",
    "Evidence",
    "Failure",
    "Report",
]

#: What a verification is about: one blob, one row, a device's time range, a batch.
SUBJECT_KINDS = ("blob", "row", "range", "batch")


@dataclass(frozen=True)
class StateValue:
    """A contracts state value (canonical bytes, None = absent) with its proof at `height`."""

    key: str
    value: Optional[bytes]
    height: int
    proof: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class AnchorTx:
    """The ANCHOR transaction of a batch (canonical tx bytes) and its RFC 9162 proof in its block."""

    batch_id: str
    tx: bytes
    proof: TxProof


@dataclass(frozen=True)
class LedgerEvidence:
    """The ledger half: genesis, certified headers 1..n, anchors and state values."""

    genesis: Genesis
    headers: tuple[tuple[BlockHeader, CommitCertificate], ...]
    anchors: tuple[AnchorTx, ...] = ()
    state: tuple[StateValue, ...] = ()

    def anchor(self, batch_id: str) -> Optional[AnchorTx]:
        return next((a for a in self.anchors if a.batch_id == batch_id), None)


@dataclass(frozen=True)
class BatchEvidence:
    """A batch id and the bytes of its manifest object (None: the object is missing)."""

    batch_id: str
    manifest: Optional[bytes]


@dataclass(frozen=True)
class RecordEvidence:
    """One signed record: canonical statement, device signature, seal receipt
    (canonical bytes), payload (None: missing) and where it sits in its batch."""

    statement: bytes
    signature: bytes
    receipt: Optional[bytes]
    payload: Optional[bytes]
    batch_id: Optional[str]
    leaf_index: Optional[int]
    proof: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Evidence:
    """What one verification checks.

    ``subject``: the *claimed* subject, ``{"kind": blob|row|range|batch, ...}``
    (`verify.subject`: parsed strictly; the verdict says what was proven).
    ``rows``: the stored time-series rows under test as an Arrow table with
    the columns of `rows.ROW_SCHEMA` (None when the subject has no rows).
    Which signed rows must be stored follows from the subject
    (`subject.window_of`), never from the evidence.
    """

    subject: dict[str, Any]
    ledger: LedgerEvidence
    batches: tuple[BatchEvidence, ...]
    records: tuple[RecordEvidence, ...]
    rows: Any = None


@dataclass(frozen=True)
class Failure:
    """One broken link: the step (`trust.errors.CHAIN_STEPS`), why, and the evidence concerned."""

    step: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "message": self.message, "evidence": self.evidence}


@dataclass(frozen=True)
class Report:
    """The verdict: the claimed subject, steps that passed, failures (first = the one to
    show), counts; `proven` is the subject as the verified content shows it (None unless ok);
    `pinned` is False when no trust anchor was given (``--insecure-unpinned``)."""

    subject: dict[str, Any]
    passed: tuple[str, ...]
    failures: tuple[Failure, ...]
    counts: dict[str, Any]
    genesis_hash: str = ""
    ledger_height: int = 0
    pinned: bool = True
    proven: Optional[dict[str, Any]] = None
    #: records of the subject whose content was erased (``policy.erase`` proven on chain):
    #: ``{statement_hash, height, index, device}``; their ciphertext and every proof still check
    erased: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        """Every proof checks and covers the subject (also when its content is erased)."""
        return not self.failures and self.proven is not None

    @property
    def outcome(self) -> str:
        """``verified``, ``erased`` (every proof checks; some records' content is destroyed: see
        `erased`) or ``failed``."""
        return "failed" if not self.ok else "erased" if self.erased else "verified"

    @property
    def failed_step(self) -> Optional[str]:
        return self.failures[0].step if self.failures else None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "outcome": self.outcome,
            "erased": [dict(e) for e in self.erased],
            "subject": self.proven,
            "claimed_subject": self.subject,
            "failed_step": self.failed_step,
            "passed": list(self.passed),
            "failures": [f.to_json() for f in self.failures],
            "counts": self.counts,
            "genesis_hash": self.genesis_hash,
            "ledger_height": self.ledger_height,
            "pinned": self.pinned,
        }
