"""A persistent, compacted sparse Merkle tree: the contracts' state root.

The tree commits to a map ``key hash (32 bytes) -> value hash (32 bytes)``.
Its root depends only on that map (never on the order of updates), it is
updated incrementally (a block hashes only the paths of the keys it changed),
and it proves membership and non-membership.

Definition (the one Diem/Aptos use for their "Jellyfish" tree, binary form):

* the full tree has depth 256; a key's path is the bits of its key hash,
  most significant bit of byte 0 first (0 = left);
* an empty subtree hashes to ``EMPTY`` (32 zero bytes);
* a subtree holding exactly one entry is replaced by that entry's leaf,
  wherever the subtree starts: ``leaf = sha256(0x00 || key_hash || value_hash)``;
* any other subtree is an internal node: ``sha256(0x01 || left || right)``.

So the shape is a function of the key set alone, and `root(entries)` from
scratch equals the root reached by any sequence of `update` calls that ends
with the same entries (the contracts' tests check exactly that).

Nodes are immutable tuples (``None`` = empty, ``(hash, key_hash, value_hash)``
= leaf, ``(hash, left, right)`` = internal) and `update` copies only the
changed paths, so a speculative execution shares everything else with the
committed tree and "not changing the committed state" costs nothing.
Expected depth is about log2(n) + 1; a block of c changed keys costs about
c * (log2(n) + 2) SHA-256 calls, each internal node on a shared path hashed
once per block.
"""

from __future__ import annotations

from hashlib import sha256 as _sha256
from typing import Iterable, Optional, Sequence, Union

__all__ = ["EMPTY", "Node", "leaf_hash", "root_of", "build", "update", "prove", "verify_proof", "StateProofError"]

EMPTY = bytes(32)
_LEAF = b"\x00"
_NODE = b"\x01"

Node = Optional[tuple]


class StateProofError(ValueError):
    """A state proof does not match the claimed root, key or value."""


def leaf_hash(key_hash: bytes, value_hash: bytes) -> bytes:
    return _sha256(_LEAF + key_hash + value_hash).digest()


def _bit(k: bytes, depth: int) -> int:
    return (k[depth >> 3] >> (7 - (depth & 7))) & 1


def _hash(node: Node) -> bytes:
    return EMPTY if node is None else node[0]


def _is_leaf(node: Node) -> bool:
    return node is not None and len(node) == 3 and type(node[1]) is bytes


def _leaf(k: bytes, v: bytes) -> tuple:
    return (leaf_hash(k, v), k, v)


def _join(left: Node, right: Node) -> Node:
    """The subtree with these two children, compacted."""
    if left is None:
        if right is None or _is_leaf(right):
            return right
    elif right is None and _is_leaf(left):
        return left
    return (_sha256(_NODE + _hash(left) + _hash(right)).digest(), left, right)


def _build(depth: int, items: Sequence[tuple[bytes, bytes]]) -> Node:
    """Subtree at `depth` of `items` (sorted by key hash, all sharing the path so far)."""
    n = len(items)
    if n == 0:
        return None
    if n == 1:
        return _leaf(*items[0])
    split = _split(items, depth)
    return _join(_build(depth + 1, items[:split]), _build(depth + 1, items[split:]))


def _split(items: Sequence[tuple], depth: int) -> int:
    """Index of the first item whose bit at `depth` is 1 (items sorted by key hash)."""
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        if _bit(items[mid][0], depth):
            hi = mid
        else:
            lo = mid + 1
    return lo


def build(entries: Iterable[tuple[bytes, bytes]]) -> Node:
    """The tree of `entries` ((key hash, value hash) pairs, distinct keys), from scratch."""
    return _build(0, sorted(entries))


def root_of(node: Node) -> bytes:
    return _hash(node)


def _update(node: Node, depth: int, items: Sequence[tuple[bytes, Optional[bytes]]]) -> Node:
    if node is None:
        return _build(depth, [(k, v) for k, v in items if v is not None])
    if _is_leaf(node):
        k0 = node[1]
        live = [(k, v) for k, v in items if v is not None]
        if all(k != k0 for k, _ in items):
            live.append((k0, node[2]))
            live.sort()
        elif len(live) == 1 and live[0] == (k0, node[2]):
            return node
        return _build(depth, live)
    split = _split(items, depth)
    left, right = node[1], node[2]
    if split:
        left = _update(left, depth + 1, items[:split])
    if split < len(items):
        right = _update(right, depth + 1, items[split:])
    if left is node[1] and right is node[2]:
        return node
    return _join(left, right)


def update(node: Node, changes: Iterable[tuple[bytes, Optional[bytes]]]) -> Node:
    """A new tree: `node` with each (key hash, value hash | None = delete) applied.

    `node` itself is left untouched (path copying)."""
    items = sorted(dict(changes).items())
    if not items:
        return node
    return _update(node, 0, items)


def prove(node: Node, key_hash: bytes) -> dict:
    """Proof for `key_hash`: siblings from the root down, and the subtree it ends in.

    ``{"siblings": [hash, ...], "leaf": None | [key_hash, value_hash]}``: the
    walk stops at an empty subtree (`leaf` None) or at a leaf, which is the
    key's own entry (membership) or another key sharing the path (non-membership).
    """
    siblings: list[bytes] = []
    depth = 0
    while node is not None and not _is_leaf(node):
        if _bit(key_hash, depth):
            siblings.append(_hash(node[1]))
            node = node[2]
        else:
            siblings.append(_hash(node[2]))
            node = node[1]
        depth += 1
    return {"siblings": siblings, "leaf": None if node is None else [node[1], node[2]]}


def verify_proof(root: bytes, key_hash: bytes, value_hash: Union[bytes, None], proof: dict) -> None:
    """Raise `StateProofError` unless `proof` shows `key_hash -> value_hash` under `root`.

    `value_hash` None checks non-membership."""
    try:
        siblings = list(proof["siblings"])
        leaf = proof["leaf"]
    except (KeyError, TypeError):
        raise StateProofError("malformed state proof") from None
    if len(siblings) > 256 or not all(type(s) is bytes and len(s) == 32 for s in siblings):
        raise StateProofError("malformed state proof siblings")
    depth = len(siblings)
    if leaf is None:
        if value_hash is not None:
            raise StateProofError("proof ends in an empty subtree: the key is absent")
        h = EMPTY
    else:
        if not (isinstance(leaf, (list, tuple)) and len(leaf) == 2
                and all(type(x) is bytes and len(x) == 32 for x in leaf)):
            raise StateProofError("malformed state proof leaf")
        k0, v0 = leaf
        if any(_bit(k0, d) != _bit(key_hash, d) for d in range(depth)):
            raise StateProofError("the proof's leaf is not on the key's path")
        if value_hash is None:
            if k0 == key_hash:
                raise StateProofError("the key is present")
        elif k0 != key_hash or v0 != value_hash:
            raise StateProofError("the proof's leaf is another key or value")
        h = leaf_hash(k0, v0)
    for d in range(depth - 1, -1, -1):
        s = siblings[d]
        h = _sha256(_NODE + (s + h if _bit(key_hash, d) else h + s)).digest()
    if h != root:
        raise StateProofError("state proof does not lead to the root")
