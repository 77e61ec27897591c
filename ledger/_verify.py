"""A memoising Ed25519 verifier for hosts of the consensus core (and clients)."""

from __future__ import annotations

from trust.errors import IdentityError
from trust.identity import public_key_from_did, verify_signature

__all__ = ["CachedVerifier"]


class CachedVerifier:
    """Ed25519 verification with a bounded memo: a node sees the same signature
    several times (a client's request, then the block that holds it)."""

    def __init__(self, limit: int = 200_000, max_bytes: int = 64 * 1024 * 1024, max_entry: int = 64 * 1024) -> None:
        self.limit = limit
        #: only valid signatures are remembered, and at most `max_bytes` of signed inputs (none
        #: above `max_entry`): a flood of bad or large signatures costs verifications, not memory
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self._bytes = 0
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
            n = len(message)
            if got and n <= self.max_entry:
                if len(self._memo) >= self.limit or self._bytes + n > self.max_bytes:
                    self._memo.clear()
                    self._bytes = 0
                self._memo[key] = got
                self._bytes += n
        return got
