"""A memoising Ed25519 verifier for hosts of the consensus core (and clients)."""

from __future__ import annotations

from trust.identity import verify_signature

__all__ = ["CachedVerifier"]


class CachedVerifier:
    """Ed25519 verification with a bounded memo: a node sees the same signature
    several times (a client's request, then the block that holds it)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._memo: dict[tuple[str, bytes, bytes], bool] = {}

    def __call__(self, did: str, message: bytes, signature: bytes) -> bool:
        key = (did, message, signature)
        got = self._memo.get(key)
        if got is None:
            got = verify_signature(did, message, signature)
            if len(self._memo) >= self.limit:
                self._memo.clear()
            self._memo[key] = got
        return got
