"""Seeded randomness that depends only on (seed, device, seq, purpose): stateless, so any payload can be regenerated."""

from __future__ import annotations

import hashlib
import random

__all__ = ["rng_for"]


def rng_for(seed: int, *parts: object) -> random.Random:
    """A `random.Random` whose stream is fixed by `seed` and `parts` (e.g. device name, seq)."""
    text = "|".join(str(p) for p in (seed, *parts)).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha256(text).digest()[:16], "big"))
