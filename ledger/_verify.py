"""A memoising Ed25519 verifier for hosts of the consensus core (and clients)."""

from __future__ import annotations

from trust.errors import IdentityError
from trust.identity import public_key_from_did, verify_signature

__all__ = ["CachedVerifier"]


class CachedVerifier:
    """Ed25519 verification with a bounded memo: a node sees the same signature
    several times (a client's request, then the block that holds it)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._memo: dict[tuple[str, bytes, bytes], bool] = {}
        self._keys: dict[str, bytes] = {}  # did -> public key (did:key decoding is not free)

    def __call__(self, did: str, message: bytes, signature: bytes) -> bool:
        key = (did, message, signature)
        got = self._memo.get(key)
        if got is None:
            pk = self._keys.get(did)
            if pk is None:
                try:
                    pk = public_key_from_did(did)
                except IdentityError:
                    return False
                if len(self._keys) < 100_000:
                    self._keys[did] = pk
            got = verify_signature(pk, message, signature)
            if len(self._memo) >= self.limit:
                self._memo.clear()
            self._memo[key] = got
        return got
