"""RFC 9162 Merkle helpers used by the ledger: a thin seam over `trust.merkle`.

Block tx trees use `trust.merkle` (leaf = sha256(0x00 || tx_id)); this module
only adapts names so the rest of `ledger` has one import site.
"""

from __future__ import annotations

from typing import Sequence

from trust import merkle as _m

__all__ = ["leaf_hash", "merkle_root", "inclusion_proof", "verify_inclusion", "InclusionError"]

leaf_hash = _m.leaf_hash
InclusionError = _m.InclusionError


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 root of the given leaf hashes (sha256(b"") when empty)."""
    return _m.root(list(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    return list(_m.inclusion_proof(list(leaf_hashes), index))


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise `InclusionError` unless `proof` places `leaf` at `index` under `root`."""
    _m.verify_inclusion(leaf, index, size, list(proof), root)
