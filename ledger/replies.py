"""The signed reply a node sends to a client for one transaction.

A client submits a `messages.Request` (sender = its submitter did) on its own
TCP connection and reads `TxReply` frames back on it. Each reply is signed by
the node's key over ``canonical.encode([MSG_TAG, chain_id, "reply", body])``,
so the client can count f+1 *matching* replies from distinct genesis nodes
without trusting any one connection. `result` is what the core answered:
``{height, index, block, result}`` once committed, or ``{"error": code}``
when refused (``replay``, ``bad-signature``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from trust import canonical

from ._types import MSG_TAG, Verifier, _need
from .errors import WireError

__all__ = ["TxReply", "REPLY_KIND"]

REPLY_KIND = "reply"


@dataclass(frozen=True)
class TxReply:
    """Node `node`'s answer `result` for transaction `tx_id`."""

    node: str
    tx_id: bytes
    result: Any
    sig: bytes = b""

    def body(self) -> dict:
        return {"node": self.node, "tx_id": self.tx_id, "result": self.result}

    def signing_bytes(self, chain_id: str) -> bytes:
        return canonical.encode([MSG_TAG, chain_id, REPLY_KIND, self.body()])

    def sign(self, chain_id: str, signer: Callable[[bytes], bytes]) -> "TxReply":
        return replace(self, sig=signer(self.signing_bytes(chain_id)))

    def verify(self, chain_id: str, verify: Verifier) -> bool:
        try:
            return verify(self.node, self.signing_bytes(chain_id), self.sig)
        except ValueError:
            return False

    def result_key(self) -> bytes:
        """Canonical bytes of the result: replies *match* when these are equal."""
        return canonical.encode(self.result)

    @property
    def error(self) -> str | None:
        r = self.result
        return r["error"] if isinstance(r, dict) and isinstance(r.get("error"), str) else None

    def encode(self) -> bytes:
        return canonical.encode({"kind": REPLY_KIND, "body": self.body(), "sig": self.sig})

    @classmethod
    def decode(cls, data: bytes) -> "TxReply":
        try:
            w = canonical.decode(data)
        except ValueError as exc:
            raise WireError(f"not canonical: {exc}") from None
        _need(isinstance(w, dict) and w.get("kind") == REPLY_KIND and type(w.get("sig")) is bytes, "not a reply")
        b = w["body"]
        _need(isinstance(b, dict) and set(b) == {"node", "tx_id", "result"}, "bad reply body")
        _need(isinstance(b["node"], str) and type(b["tx_id"]) is bytes, "bad reply body")
        return cls(b["node"], b["tx_id"], b["result"], w["sig"])
