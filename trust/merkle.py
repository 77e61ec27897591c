"""RFC 9162 Merkle trees: hashes, roots, inclusion and consistency proofs.

Hashing (RFC 9162 §2.1.1): ``MTH({}) = SHA-256()``, leaf hash
``SHA-256(0x00 || d)``, node hash ``SHA-256(0x01 || left || right)``; a tree
of n > 1 leaves splits at k, the largest power of two smaller than n.

Such a tree is the same as the "left-balanced" tree built level by level: the
*complete* subtrees (perfect, 2**j leaves, aligned) are shared by every tree
size that contains them, and a tree of size n is the right fold of the
popcount(n) complete subtrees ("peaks") that tile [0, n).  `MerkleTree` stores
the complete nodes level by level (level j holds n >> j nodes), so roots at any
size and proofs cost O(log n) lookups; `CompactRange` keeps only the peaks so a
batch can be extended leaf by leaf without rehashing.

Indexes are 0-based; every function checks ``0 <= index < size`` explicitly.
Proof elements are ordered from the leaf up, as in RFC 9162 §2.1.3.1/§2.1.4.1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .hashes import HASH_SIZE, LeafHash, NodeHash, RootHash
from .errors import ConsistencyError, InclusionError, ProofError

__all__ = [
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "leaf_hashes",
    "root",
    "inclusion_proof",
    "consistency_proof",
    "root_from_inclusion_proof",
    "verify_inclusion",
    "verify_consistency",
    "InclusionVerifier",
    "MerkleTree",
    "CompactRange",
    "TreeHead",
    "InclusionError",
    "ConsistencyError",
    "ProofError",
]

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_HASH_LEN_SET = {HASH_SIZE}

#: Root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT: RootHash = RootHash(_sha256(b"").digest())


def leaf_hash(data: bytes) -> LeafHash:
    """``SHA-256(0x00 || data)`` (RFC 9162 §2.1.1)."""
    return LeafHash(_sha256(_LEAF_PREFIX + data).digest())


def node_hash(left: bytes, right: bytes) -> NodeHash:
    """``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1)."""
    return NodeHash(_sha256(_NODE_PREFIX + left + right).digest())


def leaf_hashes(entries: Iterable[bytes]) -> list[LeafHash]:
    """Leaf hashes of many entries (one pass, no per-item function call)."""
    sha, p = _sha256, _LEAF_PREFIX
    return [sha(p + d).digest() for d in entries]  # type: ignore[misc]


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    if hashes and set(map(len, hashes)) != {HASH_SIZE}:
        raise ProofError(f"every {what} must be {HASH_SIZE} bytes")


def _parents(level: Sequence[bytes], start: int = 0) -> list[bytes]:
    """Parents of the pairs (start, start+1), (start+2, start+3), ... of `level`."""
    sha, p = _sha256, _NODE_PREFIX
    it = iter(level[start:] if start else level)
    return [sha(p + a + b).digest() for a, b in zip(it, it)]


def _fold(peaks: Sequence[bytes]) -> bytes:
    """Right fold of subtree roots listed left to right: H(p0, H(p1, ...))."""
    acc = peaks[-1]
    sha, p = _sha256, _NODE_PREFIX
    for i in range(len(peaks) - 2, -1, -1):
        acc = sha(p + peaks[i] + acc).digest()
    return acc


def root(leaf_hashes: Sequence[bytes]) -> RootHash:
    """MTH of the tree whose leaves have these hashes (RFC 9162 §2.1.1).

    Built level by level, keeping only the current level, with the odd last
    node of each level set aside as a peak.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    _check_hashes(leaf_hashes, "leaf hash")
    level: Sequence[bytes] = leaf_hashes
    peaks_low_first = []
    while len(level) > 1:
        if len(level) & 1:
            peaks_low_first.append(level[-1])
        level = _parents(level)
    peaks_low_first.append(level[0])
    peaks_low_first.reverse()
    return RootHash(_fold(peaks_low_first))


def _check_size(size: int, what: str = "size") -> None:
    if type(size) is not int or size < 0:
        raise ProofError(f"{what} must be a non-negative int, got {size!r}")


class MerkleTree:
    """An append-only RFC 9162 tree over stored leaf hashes.

    Keeps every complete node, level by level, so that `root_at`,
    `inclusion_proof` and `consistency_proof` work for *any* size up to
    `size` without rehashing.  `extend` adds leaves and hashes only the new
    complete nodes.  Memory: about 2n hashes.
    """

    __slots__ = ("_levels", "_edge_cache")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._edge_cache: dict[tuple[int, int], bytes] = {}
        self.extend(leaf_hashes)

    @classmethod
    def from_entries(cls, entries: Iterable[bytes]) -> "MerkleTree":
        """Tree over the leaf hashes of raw entries."""
        return cls(leaf_hashes(entries))

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def __len__(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> LeafHash:
        """Stored leaf hash at `index`."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} out of range for size {self.size}")
        return LeafHash(self._levels[0][index])

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash; O(1) amortised hashing."""
        self.extend((leaf_hash,))

    def extend(self, hashes: Iterable[bytes]) -> None:
        """Add leaf hashes; hashes each new complete node exactly once."""
        new = hashes if isinstance(hashes, (list, tuple)) else list(hashes)
        if not new:
            return
        _check_hashes(new, "leaf hash")
        self._edge_cache.clear()
        levels = self._levels
        levels[0].extend(new)
        j = 0
        while len(levels[j]) > 1:
            if j + 1 == len(levels):
                levels.append([])
            parent = levels[j + 1]
            start = 2 * len(parent)
            if start + 1 < len(levels[j]):
                parent.extend(_parents(levels[j], start))
            j += 1

    def _range_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range that is a subtree of an RFC 9162 tree."""
        n = hi - lo
        if n & (n - 1) == 0:  # complete subtree: one lookup
            j = n.bit_length() - 1
            return self._levels[j][lo >> j]
        key = (lo, hi)
        cached = self._edge_cache.get(key)
        if cached is not None:
            return cached
        peaks = []
        levels = self._levels
        while lo < hi:
            j = (hi - lo).bit_length() - 1
            peaks.append(levels[j][lo >> j])
            lo += 1 << j
        value = _fold(peaks)
        if len(self._edge_cache) > 4096:
            self._edge_cache.clear()
        self._edge_cache[key] = value
        return value

    def root(self) -> RootHash:
        """Root of the whole tree."""
        return self.root_at(self.size)

    def root_at(self, size: int) -> RootHash:
        """Root of the first `size` leaves (any 0 <= size <= self.size)."""
        _check_size(size)
        if size > self.size:
            raise ProofError(f"size {size} exceeds the tree size {self.size}")
        if size == 0:
            return EMPTY_ROOT
        return RootHash(self._range_hash(0, size))

    def head(self) -> "TreeHead":
        return TreeHead(self.size, self.root())

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1)."""
        if size is None:
            size = self.size
        _check_size(size)
        _check_size(index, "index")
        if size > self.size:
            raise ProofError(f"size {size} exceeds the tree size {self.size}")
        if not index < size:
            raise ProofError(f"index {index} must be < size {size}")
        # Walk up the level view of the tree (RFC 9162 §2.1.3.1 bottom-up):
        # at level j the sibling of our node is either a stored complete
        # node, the partial right-edge node (folded), or absent (our node is
        # the last one and is promoted unchanged).
        path = []
        levels = self._levels
        j = 0
        while (size - 1) >> j:
            s = (index >> j) ^ 1
            start = s << j
            if start < size:
                if start + (1 << j) <= size:
                    path.append(levels[j][s])
                else:
                    path.append(self._range_hash(start, size))
            j += 1
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Proof that the tree of `old_size` is a prefix of `new_size` (RFC 9162 §2.1.4.1).

        Empty when old_size is 0 or equals new_size.
        """
        if new_size is None:
            new_size = self.size
        _check_size(old_size, "old_size")
        _check_size(new_size, "new_size")
        if new_size > self.size:
            raise ProofError(f"new_size {new_size} exceeds the tree size {self.size}")
        if old_size > new_size:
            raise ProofError(f"old_size {old_size} must be <= new_size {new_size}")
        if old_size == 0 or old_size == new_size:
            return []
        proof = []
        rh = self._range_hash
        lo, hi, m, complete = 0, new_size, old_size, True
        while True:
            n = hi - lo
            if m == n:
                if not complete:
                    proof.append(rh(lo, hi))
                break
            k = 1 << ((n - 1).bit_length() - 1)
            if m <= k:
                proof.append(rh(lo + k, hi))
                hi = lo + k
            else:
                proof.append(rh(lo, lo + k))
                lo += k
                m -= k
                complete = False
        proof.reverse()
        return proof


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, size: int | None = None
) -> list[bytes]:
    """Audit path for leaf `index` of the tree over `leaf_hashes[:size]`.

    Builds the tree (O(size) hashes); use `MerkleTree` for many proofs.
    """
    if size is None:
        size = len(leaf_hashes)
    _check_size(size)
    if size > len(leaf_hashes):
        raise ProofError(f"size {size} exceeds the {len(leaf_hashes)} leaf hashes given")
    return MerkleTree(leaf_hashes[:size]).inclusion_proof(index, size)


def consistency_proof(
    leaf_hashes: Sequence[bytes], old_size: int, new_size: int | None = None
) -> list[bytes]:
    """Consistency proof between two sizes of the tree over `leaf_hashes`."""
    if new_size is None:
        new_size = len(leaf_hashes)
    _check_size(new_size, "new_size")
    if new_size > len(leaf_hashes):
        raise ProofError(f"new_size {new_size} exceeds the {len(leaf_hashes)} leaf hashes given")
    return MerkleTree(leaf_hashes[:new_size]).consistency_proof(old_size, new_size)


def _check_proof(proof: Sequence[bytes], exc: type[ProofError]) -> None:
    for h in proof:
        if type(h) is not bytes or len(h) != HASH_SIZE:
            raise exc(f"proof element is not a {HASH_SIZE}-byte hash")


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> RootHash:
    """The root implied by an audit path (RFC 9162 §2.1.3.2 steps 1-7).

    Raises `InclusionError` when the path has the wrong length for
    (index, size) or `index >= size`.
    """
    if type(index) is not int or type(size) is not int or index < 0 or size < 0:
        raise InclusionError(f"index and size must be non-negative ints, got {index!r}, {size!r}")
    if not index < size:
        raise InclusionError(f"index {index} must be < size {size}")
    if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
        raise InclusionError(f"leaf hash must be {HASH_SIZE} bytes")
    if proof and set(map(len, proof)) != _HASH_LEN_SET:
        raise InclusionError(f"every proof element must be a {HASH_SIZE}-byte hash")
    fn, sn = index, size - 1
    r = leaf_hash
    sha, p = _sha256, _NODE_PREFIX
    try:
        for h in proof:
            if sn == 0:
                raise InclusionError("audit path is too long")
            if fn & 1 or fn == sn:
                r = sha(p + h + r).digest()
                if not fn & 1:
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
            else:
                r = sha(p + r + h).digest()
            fn >>= 1
            sn >>= 1
    except TypeError:
        raise InclusionError("proof elements must be bytes") from None
    if sn != 0:
        raise InclusionError("audit path is too short")
    return RootHash(r)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree (size, root).

    RFC 9162 §2.1.3.2.  Returns None on success, raises `InclusionError`.
    """
    if type(root) is not bytes or len(root) != HASH_SIZE:
        raise InclusionError(f"root must be {HASH_SIZE} bytes")
    if root_from_inclusion_proof(leaf_hash, index, size, proof) != root:
        raise InclusionError(f"audit path for leaf {index} of {size} does not lead to the root")


class InclusionVerifier:
    """Verifies many inclusion proofs against one tree head, sharing work.

    Same verdicts as `verify_inclusion` (the property tests check this), but
    nodes already proven to lead to the root are remembered by position:
    a later proof that reaches such a node with the same hash *and* whose
    remaining path equals the proven one is accepted there without rehashing
    the path to the root; a different hash at a proven position fails at
    once.  Proof elements are split per RFC 9162 §2.1.3.2 into the part
    inside the complete subtree (bits of the index) and the right border.
    Meant for a verifier that checks a whole batch.
    """

    __slots__ = ("size", "root", "_nodes", "_max_nodes")

    def __init__(self, size: int, root: bytes, *, max_nodes: int = 1 << 20) -> None:
        if type(size) is not int or size < 1:
            raise InclusionError(f"size must be a positive int, got {size!r}")
        if type(root) is not bytes or len(root) != HASH_SIZE:
            raise InclusionError(f"root must be {HASH_SIZE} bytes")
        self.size = size
        self.root = root
        self._nodes: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}
        self._max_nodes = max_nodes

    def verify(self, leaf_hash: bytes, index: int, proof: Sequence[bytes]) -> None:
        """Raise `InclusionError` unless `leaf_hash` is leaf `index`."""
        size = self.size
        if type(index) is not int or not 0 <= index < size:
            raise InclusionError(f"index {index!r} must be an int in [0, {size})")
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            raise InclusionError(f"leaf hash must be {HASH_SIZE} bytes")
        inner = (index ^ (size - 1)).bit_length()
        if len(proof) != inner + bin(index >> inner).count("1"):
            raise InclusionError(f"audit path for leaf {index} of {size} has the wrong length")
        if proof and set(map(len, proof)) != _HASH_LEN_SET:
            raise InclusionError(f"every proof element must be a {HASH_SIZE}-byte hash")
        nodes = self._nodes
        sha, p = _sha256, _NODE_PREFIX
        r = leaf_hash
        seen: list[tuple[int, bytes]] = []
        try:
            for i in range(inner):
                h = proof[i]
                if index >> i & 1:
                    r = sha(p + h + r).digest()
                else:
                    r = sha(p + r + h).digest()
                key = ((index >> (i + 1)) << 7) | (i + 1)
                known = nodes.get(key)
                if known is not None:
                    if known[0] == r and tuple(proof[i + 1 :]) == known[1][i + 1 :]:
                        self._remember(seen, proof)  # proven too, via this node
                        return
                    raise InclusionError(f"audit path for leaf {index} of {size} does not lead to the root")
                seen.append((key, r))
            for h in proof[inner:]:
                r = sha(p + h + r).digest()
        except TypeError:
            raise InclusionError("proof elements must be bytes") from None
        if r != self.root:
            raise InclusionError(f"audit path for leaf {index} of {size} does not lead to the root")
        self._remember(seen, proof)

    def _remember(self, seen: list[tuple[int, bytes]], proof: Sequence[bytes]) -> None:
        nodes = self._nodes
        if seen and len(nodes) + len(seen) <= self._max_nodes:
            stored = tuple(proof)
            for key, value in seen:
                nodes[key] = (value, stored)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 §2.1.4.2, extended for the trivial cases: old_size == new_size
    needs an empty proof and equal roots; old_size == 0 needs an empty proof
    and ``old_root == EMPTY_ROOT``.  Raises `ConsistencyError`.
    """
    for s in (old_size, new_size):
        if type(s) is not int or s < 0:
            raise ConsistencyError(f"sizes must be non-negative ints, got {s!r}")
    for r in (old_root, new_root):
        if type(r) is not bytes or len(r) != HASH_SIZE:
            raise ConsistencyError(f"roots must be {HASH_SIZE} bytes")
    _check_proof(proof, ConsistencyError)
    if old_size > new_size:
        raise ConsistencyError(f"old_size {old_size} > new_size {new_size}")
    if old_size == new_size:
        if proof:
            raise ConsistencyError("proof must be empty for equal sizes")
        if old_root != new_root:
            raise ConsistencyError("roots differ for equal sizes")
        return
    if old_size == 0:
        if proof:
            raise ConsistencyError("proof must be empty from the empty tree")
        if old_root != EMPTY_ROOT:
            raise ConsistencyError("the root of the empty tree is SHA-256('')")
        return
    # RFC 9162 §2.1.4.2, 0 < old_size < new_size.
    if not proof:
        raise ConsistencyError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    sha, p = _sha256, _NODE_PREFIX
    for c in path[1:]:
        if sn == 0:
            raise ConsistencyError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = sha(p + c + fr).digest()
            sr = sha(p + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha(p + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ConsistencyError("consistency proof is too short")
    if fr != old_root:
        raise ConsistencyError("proof does not lead to the old root")
    if sr != new_root:
        raise ConsistencyError("proof does not lead to the new root")


class CompactRange:
    """The peaks of a growing tree: O(log n) memory, O(1) amortised append.

    ``peaks`` are the roots of the complete subtrees tiling [0, size), left to
    right (one per set bit of `size`, largest first), so ``root()`` equals
    `root` over all appended leaf hashes.  Save ``(size, peaks)`` to resume a
    batch later with `CompactRange.from_state`.
    """

    __slots__ = ("_size", "_peaks")

    def __init__(self) -> None:
        self._size = 0
        self._peaks: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, peaks: Sequence[bytes]) -> "CompactRange":
        _check_size(size)
        if len(peaks) != bin(size).count("1"):
            raise ProofError(f"a range of size {size} has {bin(size).count('1')} peaks, got {len(peaks)}")
        _check_hashes(list(peaks), "peak")
        cr = cls()
        cr._size = size
        cr._peaks = list(peaks)
        return cr

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def peaks(self) -> tuple[bytes, ...]:
        return tuple(self._peaks)

    def copy(self) -> "CompactRange":
        return CompactRange.from_state(self._size, self._peaks)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash, merging equal-sized peaks (carry propagation)."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            raise ProofError(f"leaf hash must be {HASH_SIZE} bytes")
        peaks = self._peaks
        h = leaf_hash
        s = self._size
        sha, p = _sha256, _NODE_PREFIX
        while s & 1:
            h = sha(p + peaks.pop() + h).digest()
            s >>= 1
        peaks.append(h)
        self._size += 1

    def extend(self, hashes: Iterable[bytes]) -> None:
        for h in hashes:
            self.append(h)

    def root(self) -> RootHash:
        """Root of the tree over every leaf appended so far."""
        if not self._peaks:
            return EMPTY_ROOT
        return RootHash(_fold(self._peaks))

    def head(self) -> "TreeHead":
        return TreeHead(self._size, self.root())


@dataclass(frozen=True)
class TreeHead:
    """A tree size and its root hash (RFC 9162 §4.10 without the signature)."""

    size: int
    root: RootHash

    def __post_init__(self) -> None:
        _check_size(self.size)
        if type(self.root) is not bytes or len(self.root) != HASH_SIZE:
            raise ProofError(f"root must be {HASH_SIZE} bytes")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise ProofError("the root of the empty tree is SHA-256('')")

    def verify_inclusion(self, leaf_hash: bytes, index: int, proof: Sequence[bytes]) -> None:
        verify_inclusion(leaf_hash, index, self.size, proof, self.root)

    def verify_consistency(self, newer: "TreeHead", proof: Sequence[bytes]) -> None:
        """Check that `newer` extends this head."""
        verify_consistency(self.size, newer.size, self.root, newer.root, proof)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root.hex()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TreeHead":
        try:
            if set(d) != {"size", "root"} or not isinstance(d["root"], str):
                raise ValueError("want exactly the keys size and root")
            return cls(d["size"], RootHash(bytes.fromhex(d["root"])))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ProofError(f"malformed tree head: {exc}") from None
