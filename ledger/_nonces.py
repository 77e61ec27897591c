"""Replay protection: a per-submitter sliding window of used nonces.

A nonce is accepted once, and only if it is above ``highest - window`` for its
submitter (like the IPsec anti-replay window, RFC 4303 §3.4.3). Clients may
have many transactions in flight and they may commit out of order; the state
per submitter stays bounded by `window`. Derived from committed blocks only,
so every replica computes the same answer.
"""

from __future__ import annotations

__all__ = ["NonceWindow"]


class NonceWindow:
    def __init__(self, window: int) -> None:
        self.window = window
        self.high: dict[str, int] = {}
        self.used: dict[str, set[int]] = {}

    def fresh(self, submitter: str, nonce: int) -> bool:
        """True iff (submitter, nonce) was never committed and is not too old."""
        high = self.high.get(submitter, -1)
        if nonce <= high - self.window:
            return False
        return nonce not in self.used.get(submitter, ())

    def record(self, submitter: str, nonce: int) -> None:
        used = self.used.setdefault(submitter, set())
        used.add(nonce)
        high = self.high.get(submitter, -1)
        if nonce > high:
            self.high[submitter] = nonce
            floor = nonce - self.window
            # prune in bulk (amortised O(1)); pruned nonces are below the floor,
            # which `fresh` rejects anyway, so when we prune changes no answer
            if len(used) > 2 * self.window:
                used.difference_update([n for n in used if n <= floor])
