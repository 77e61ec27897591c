"""What the client returns: receipts of submits, and records read over HTTP (unverified
unless a method says otherwise)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..values import Transaction
from ..light_client import TxProof

__all__ = ["Receipt", "StateProof", "StateProofs", "TxRecord"]


@dataclass(frozen=True)
class Receipt:
    """Proof-of-commit as seen by the client: f+1 sealers signed the same result."""

    tx_id: bytes
    height: int
    index: int
    block_hash: bytes
    result: Any
    nodes: tuple[str, ...]
    tx: Transaction | None = field(default=None, compare=False, repr=False)

    @property
    def refusal(self) -> tuple[str, str] | None:
        """``(code, message)`` when a contract refused the tx (``{"ok": false, ...}``;
        the tx is committed all the same, its nonce used), else None."""
        r = self.result
        if isinstance(r, dict) and r.get("ok") is False:
            return str(r.get("code", "")), str(r.get("message", ""))
        return None


@dataclass(frozen=True)
class StateProof:
    """A contracts state value with its proof as served by `/state/proof` (not yet verified)."""

    key: str
    value: bytes | None  # canonical bytes, None when absent
    height: int
    header_hash: bytes | None
    proof: dict


@dataclass(frozen=True)
class StateProofs:
    """Several state values proven at one height, as served by `/state/proofs` (not yet verified)."""

    height: int
    header_hash: bytes | None
    proofs: tuple[StateProof, ...]


@dataclass(frozen=True)
class TxRecord:
    """A committed transaction as served by `/tx/{id}`."""

    tx: Transaction
    height: int
    index: int
    result: Any
    proof: TxProof
