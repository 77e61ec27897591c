"""The signed replies a node sends to a client.

A client submits its transactions (`messages.ClientRequests`, or one
`messages.Request`) on its own TCP connection and reads `TxReplies` frames
back on it. A frame carries the answers for every transaction of that
connection that one event settled (typically all of the client's
transactions in a block), signed once by the node's key over
``canonical.encode([MSG_TAG, chain_id, "replies", body])``: one signature per
block and connection instead of one per transaction. Each answer travels as
its canonical bytes (``body = {node, items: [[tx_id, canonical(answer)], ...]}``),
so the client compares answers byte for byte and decodes only the one that
f+1 sealers agree on, and the node encodes the body once for both the
signature and the frame. The client counts f+1 *matching* answers per
transaction from distinct sealers, so it never trusts any one connection. An
answer is what the core replied: ``{height, index, block, result}`` once
committed, or ``{"error": code}`` when refused (``replay``, ``bad-signature``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

from trust import canonical

from .values import MSG_TAG, Verifier, _need
from .errors import WireError

__all__ = ["TxReplies", "REPLIES_KIND", "result_key", "result_error"]

REPLIES_KIND = "replies"


def result_key(result: Any) -> bytes:
    """Canonical bytes of an answer: two answers *match* when these are equal
    (a `TxReplies` item already carries them)."""
    return canonical.encode(result)


def result_error(result: Any) -> str | None:
    """The refusal code of an answer, or None for a commit."""
    return result["error"] if isinstance(result, dict) and isinstance(result.get("error"), str) else None


_SIG_KEY = canonical.encode("sig")
_BODY_KEY = canonical.encode("body")
_KIND_SUFFIX = canonical.encode("kind") + canonical.encode(REPLIES_KIND)


@dataclass(frozen=True)
class TxReplies:
    """Node `node`'s answers `items` = ((tx_id, canonical bytes of the answer), ...), signed once."""

    node: str
    items: tuple[tuple[bytes, bytes], ...]
    sig: bytes = b""

    @classmethod
    def of(cls, node: str, answers: Iterable[tuple[bytes, Any]]) -> "TxReplies":
        """Unsigned replies from (tx_id, answer value) pairs."""
        return cls(node, tuple((t, canonical.encode(r)) for t, r in answers))

    def answers(self) -> list[tuple[bytes, Any]]:
        """The items with each answer decoded."""
        return [(t, canonical.decode(r)) for t, r in self.items]

    def body(self) -> dict:
        return {"node": self.node, "items": [[t, r] for t, r in self.items]}

    def body_bytes(self) -> bytes:
        got = self.__dict__.get("_body")
        if got is None:
            got = canonical.encode(self.body())
            object.__setattr__(self, "_body", got)
        return got

    def signing_bytes(self, chain_id: str) -> bytes:
        # == canonical.encode([MSG_TAG, chain_id, REPLIES_KIND, self.body()])
        return (b"\x84" + canonical.encode(MSG_TAG) + canonical.encode(chain_id)
                + canonical.encode(REPLIES_KIND) + self.body_bytes())

    def sign(self, chain_id: str, signer: Callable[[bytes], bytes]) -> "TxReplies":
        signed = replace(self, sig=signer(self.signing_bytes(chain_id)))
        object.__setattr__(signed, "_body", self.body_bytes())
        return signed

    def verify(self, chain_id: str, verify: Verifier) -> bool:
        try:
            return verify(self.node, self.signing_bytes(chain_id), self.sig)
        except ValueError:
            return False

    def encode(self) -> bytes:
        # == canonical.encode({"kind": REPLIES_KIND, "body": self.body(), "sig": self.sig});
        # map keys in canonical order: "sig" < "body" < "kind"
        return b"\xa3" + _SIG_KEY + canonical.encode(self.sig) + _BODY_KEY + self.body_bytes() + _KIND_SUFFIX

    @classmethod
    def decode(cls, data: bytes) -> "TxReplies":
        try:
            w = canonical.decode(data)
        except ValueError as exc:
            raise WireError(f"not canonical: {exc}") from None
        _need(isinstance(w, dict) and set(w) == {"kind", "body", "sig"} and w["kind"] == REPLIES_KIND
              and type(w["sig"]) is bytes, "not replies")
        b = w["body"]
        _need(isinstance(b, dict) and set(b) == {"node", "items"} and isinstance(b["node"], str)
              and isinstance(b["items"], list), "bad replies body")
        items = []
        for it in b["items"]:
            _need(isinstance(it, list) and len(it) == 2 and type(it[0]) is bytes and type(it[1]) is bytes,
                  "bad reply item")
            items.append((it[0], it[1]))
        out = cls(b["node"], tuple(items), w["sig"])
        # `data` is canonical, so the body's bytes are the slice between the "sig" and "kind" entries
        head = len(_SIG_KEY) + len(canonical.encode(w["sig"])) + 1
        if data[head:head + len(_BODY_KEY)] == _BODY_KEY and data.endswith(_KIND_SUFFIX):
            object.__setattr__(out, "_body", data[head + len(_BODY_KEY):len(data) - len(_KIND_SUFFIX)])
        return out
