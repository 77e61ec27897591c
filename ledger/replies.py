"""The signed replies a node sends to a client.

A client submits a `messages.Request` (sender = its submitter did) on its own
TCP connection and reads `TxReplies` frames back on it. A frame carries the
answers for every transaction of that connection that one event settled
(typically all of the client's transactions in a block), signed once by the
node's key over ``canonical.encode([MSG_TAG, chain_id, "replies", body])``:
one signature per block and connection instead of one per transaction. The
client counts f+1 *matching* answers per transaction from distinct sealers,
so it never trusts any one connection. An answer is what the core replied:
``{height, index, block, result}`` once committed, or ``{"error": code}``
when refused (``replay``, ``bad-signature``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from trust import canonical

from ._types import MSG_TAG, Verifier, _need
from .errors import WireError

__all__ = ["TxReplies", "REPLIES_KIND", "result_key", "result_error"]

REPLIES_KIND = "replies"


def result_key(result: Any) -> bytes:
    """Canonical bytes of an answer: two answers *match* when these are equal."""
    return canonical.encode(result)


def result_error(result: Any) -> str | None:
    """The refusal code of an answer, or None for a commit."""
    return result["error"] if isinstance(result, dict) and isinstance(result.get("error"), str) else None


@dataclass(frozen=True)
class TxReplies:
    """Node `node`'s answers `items` = ((tx_id, result), ...), signed once."""

    node: str
    items: tuple[tuple[bytes, Any], ...]
    sig: bytes = b""

    def body(self) -> dict:
        return {"node": self.node, "items": [[t, r] for t, r in self.items]}

    def signing_bytes(self, chain_id: str) -> bytes:
        return canonical.encode([MSG_TAG, chain_id, REPLIES_KIND, self.body()])

    def sign(self, chain_id: str, signer: Callable[[bytes], bytes]) -> "TxReplies":
        return replace(self, sig=signer(self.signing_bytes(chain_id)))

    def verify(self, chain_id: str, verify: Verifier) -> bool:
        try:
            return verify(self.node, self.signing_bytes(chain_id), self.sig)
        except ValueError:
            return False

    def encode(self) -> bytes:
        return canonical.encode({"kind": REPLIES_KIND, "body": self.body(), "sig": self.sig})

    @classmethod
    def decode(cls, data: bytes) -> "TxReplies":
        try:
            w = canonical.decode(data)
        except ValueError as exc:
            raise WireError(f"not canonical: {exc}") from None
        _need(isinstance(w, dict) and w.get("kind") == REPLIES_KIND and type(w.get("sig")) is bytes, "not replies")
        b = w["body"]
        _need(isinstance(b, dict) and set(b) == {"node", "items"} and isinstance(b["node"], str)
              and isinstance(b["items"], list), "bad replies body")
        items = []
        for it in b["items"]:
            _need(isinstance(it, list) and len(it) == 2 and type(it[0]) is bytes, "bad reply item")
            items.append((it[0], it[1]))
        return cls(b["node"], tuple(items), w["sig"])
