"""Shared helpers for the trust tests: vector loading and a naive reference.

The reference follows RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 literally
(recursive, split at the largest power of two smaller than n), independent of
trust.merkle's level-by-level implementation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(d: bytes) -> bytes:
    return h(b"\x00" + d)


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaf_hashes: list[bytes]) -> bytes:
    n = len(leaf_hashes)
    if n == 0:
        return h(b"")
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return h(b"\x01" + ref_mth(leaf_hashes[:k]) + ref_mth(leaf_hashes[k:]))


def ref_path(m: int, leaf_hashes: list[bytes]) -> list[bytes]:
    n = len(leaf_hashes)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return ref_path(m, leaf_hashes[:k]) + [ref_mth(leaf_hashes[k:])]
    return ref_path(m - k, leaf_hashes[k:]) + [ref_mth(leaf_hashes[:k])]


def _subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = _split(n)
    if m <= k:
        return _subproof(m, leaves[:k], b) + [ref_mth(leaves[k:])]
    return _subproof(m - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def ref_consistency(m: int, leaf_hashes: list[bytes]) -> list[bytes]:
    if m == 0 or m == len(leaf_hashes):
        return []
    return _subproof(m, leaf_hashes, True)
