"""Hash value types and the one hash function of the evidence chain.

All hashes are SHA-256 digests (32 bytes).  The NewTypes carry no runtime
cost; they document which digest is which, so that a `PayloadDigest` is never
passed where a `LeafHash` is expected (RFC 9162 §2.1.1 leaf hashes are *not*
plain digests of the data: they are domain-separated with a 0x00 prefix).
"""

from __future__ import annotations

import hashlib
from typing import NewType

__all__ = [
    "HASH_SIZE",
    "LeafHash",
    "NodeHash",
    "RootHash",
    "StatementHash",
    "PayloadDigest",
    "sha256",
    "is_hash",
]

HASH_SIZE = 32

#: SHA-256(0x00 || leaf data), RFC 9162 §2.1.1.
LeafHash = NewType("LeafHash", bytes)
#: SHA-256(0x01 || left || right), RFC 9162 §2.1.1.
NodeHash = NewType("NodeHash", bytes)
#: Merkle Tree Hash of a whole tree (MTH(D[n]), RFC 9162 §2.1.1).
RootHash = NewType("RootHash", bytes)
#: SHA-256 of a statement's canonical bytes; the Merkle leaf *data*.
StatementHash = NewType("StatementHash", bytes)
#: SHA-256 of the raw payload bytes, as carried in a statement.
PayloadDigest = NewType("PayloadDigest", bytes)

_sha256 = hashlib.sha256


def sha256(data: bytes) -> bytes:
    """Plain SHA-256 of `data` (32 bytes)."""
    return _sha256(data).digest()


def is_hash(value: object) -> bool:
    """True when `value` is a 32-byte `bytes` object."""
    return type(value) is bytes and len(value) == HASH_SIZE
