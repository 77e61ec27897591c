"""RFC 6962/9162 vectors (transparency-dev/merkle data) and the corruption matrix."""

from __future__ import annotations

import pytest

from trust import merkle
from trust.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ConsistencyError,
    InclusionError,
    MerkleTree,
    ProofError,
    TreeHead,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

from _trust_ref import load, ref_consistency, ref_path

V = load("rfc9162_merkle.json")
LEAVES = [bytes.fromhex(x) for x in V["leaf_inputs"]]
LEAF_HASHES = merkle.leaf_hashes(LEAVES)
ROOTS = [bytes.fromhex(x) for x in V["roots_by_size"]]
NODES = [[bytes.fromhex(x) for x in level] for level in V["node_hashes_by_level"]]
SOME_HASH = bytes.fromhex(V["some_hash"])


def dh(xs):
    return [bytes.fromhex(x) for x in xs]


# --- roots and node hashes ---------------------------------------------------


def test_empty_root_is_sha256_of_nothing():
    assert EMPTY_ROOT.hex() == V["empty_tree_root"]
    assert merkle.root([]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_roots_for_0_to_8_leaves(size):
    assert merkle.root(LEAF_HASHES[:size]) == ROOTS[size]
    assert MerkleTree(LEAF_HASHES).root_at(size) == ROOTS[size]
    assert MerkleTree(LEAF_HASHES[:size]).root() == ROOTS[size]
    cr = CompactRange()
    cr.extend(LEAF_HASHES[:size])
    assert cr.root() == ROOTS[size]


def test_leaf_hashes_are_level_zero():
    assert LEAF_HASHES == NODES[0]
    assert merkle.leaf_hash(LEAVES[1]) == NODES[0][1]
    assert merkle.node_hash(NODES[0][0], NODES[0][1]) == NODES[1][0]


@pytest.mark.parametrize("size", range(9))
def test_compact_range_peaks_match_vectors(size):
    cr = CompactRange()
    cr.extend(LEAF_HASHES[:size])
    want = [NODES[lvl][idx] for lvl, idx in V["compact_range_peaks_by_size"][size]]
    assert list(cr.peaks) == want
    assert cr.size == size


# --- known proofs --------------------------------------------------------------


@pytest.mark.parametrize("case", V["inclusion_proofs"], ids=lambda c: f"{c['index']}/{c['size']}")
def test_inclusion_vectors(case):
    i, n, proof = case["index"], case["size"], dh(case["proof"])
    assert inclusion_proof(LEAF_HASHES, i, n) == proof
    assert MerkleTree(LEAF_HASHES).inclusion_proof(i, n) == proof
    verify_inclusion(LEAF_HASHES[i], i, n, proof, ROOTS[n])
    assert merkle.root_from_inclusion_proof(LEAF_HASHES[i], i, n, proof) == ROOTS[n]


@pytest.mark.parametrize("case", V["consistency_proofs"], ids=lambda c: f"{c['old_size']}-{c['new_size']}")
def test_consistency_vectors(case):
    m, n, proof = case["old_size"], case["new_size"], dh(case["proof"])
    assert consistency_proof(LEAF_HASHES, m, n) == proof
    assert MerkleTree(LEAF_HASHES).consistency_proof(m, n) == proof
    verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


# --- the corruption matrix -----------------------------------------------------


def flipped(proof, i, byte, bit):
    out = list(proof)
    b = bytearray(out[i])
    b[byte] ^= 1 << bit
    out[i] = bytes(b)
    return out


def inclusion_probes(index, size, proof, root, leaf):
    yield "index-1", (leaf, index - 1, size, proof, root)
    yield "index+1", (leaf, index + 1, size, proof, root)
    yield "index^2", (leaf, index ^ 2, size, proof, root)
    yield "size*2", (leaf, index, size * 2, proof, root)
    yield "size/2", (leaf, index, size // 2, proof, root)
    yield "wrong leaf", (merkle.leaf_hash(b"WrongLeaf"), index, size, proof, root)
    yield "short leaf", (b"WrongLeaf", index, size, proof, root)
    yield "empty root", (leaf, index, size, proof, EMPTY_ROOT)
    yield "random root", (leaf, index, size, proof, SOME_HASH)
    yield "wrong-length root", (leaf, index, size, proof, root[:31])
    yield "trailing garbage", (leaf, index, size, proof + [b""], root)
    yield "trailing root", (leaf, index, size, proof + [root], root)
    yield "trailing leaf", (leaf, index, size, proof + [leaf], root)
    yield "preceding garbage", (leaf, index, size, [b""] + proof, root)
    yield "preceding root", (leaf, index, size, [root] + proof, root)
    yield "preceding leaf", (leaf, index, size, [leaf] + proof, root)
    for i in range(len(proof)):
        for byte, bit in ((0, 3), (0, 0), (31, 7), (16, 4)):
            yield f"proof[{i}] byte {byte} bit {bit}", (leaf, index, size, flipped(proof, i, byte, bit), root)
        yield f"proof[{i}] removed", (leaf, index, size, proof[:i] + proof[i + 1 :], root)
        yield f"proof[{i}] duplicated", (leaf, index, size, proof[: i + 1] + proof[i:], root)
        yield f"proof[{i}] truncated", (leaf, index, size, proof[:i] + [proof[i][:31]] + proof[i + 1 :], root)
    if len(proof) > 1:
        yield "inserted component", (leaf, index, size, [proof[0], SOME_HASH] + proof[1:], root)
        yield "swapped components", (leaf, index, size, [proof[1], proof[0]] + proof[2:], root)
        yield "reversed", (leaf, index, size, proof[::-1], root)


def all_valid_inclusion_proofs():
    """Every (index, size) of the 8-leaf golden tree, plus the vectors."""
    tree = MerkleTree(LEAF_HASHES)
    for size in range(1, 9):
        for index in range(size):
            yield index, size, tree.inclusion_proof(index, size)


def test_every_golden_inclusion_proof_matches_reference_and_verifies():
    n = 0
    for index, size, proof in all_valid_inclusion_proofs():
        assert proof == ref_path(index, LEAF_HASHES[:size])
        verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size])
        n += 1
    assert n == 36


def test_inclusion_corruption_matrix_every_probe_fails():
    checked = 0
    for index, size, proof in all_valid_inclusion_proofs():
        root = ROOTS[size]
        leaf = LEAF_HASHES[index]
        for desc, args in inclusion_probes(index, size, proof, root, leaf):
            with pytest.raises(InclusionError):
                verify_inclusion(*args)
                pytest.fail(f"probe {desc!r} verified for leaf {index} of {size}")
            checked += 1
    assert checked > 500


def consistency_probes(m, n, r1, r2, proof):
    yield "old-1", (m - 1, n, r1, r2, proof)
    yield "old+1", (m + 1, n, r1, r2, proof)
    yield "old^2", (m ^ 2, n, r1, r2, proof)
    yield "new*2", (m, n * 2, r1, r2, proof)
    yield "new/2", (m, n // 2, r1, r2, proof)
    yield "wrong old root", (m, n, SOME_HASH, r2, proof)
    yield "wrong new root", (m, n, r1, SOME_HASH, proof)
    yield "empty old root", (m, n, EMPTY_ROOT, r2, proof)
    yield "swapped roots", (m, n, r2, r1, proof)
    yield "empty proof", (m, n, r1, r2, [])
    yield "trailing garbage", (m, n, r1, r2, proof + [b""])
    yield "trailing old root", (m, n, r1, r2, proof + [r1])
    yield "trailing new root", (m, n, r1, r2, proof + [r2])
    yield "preceding garbage", (m, n, r1, r2, [b""] + proof)
    yield "preceding old root", (m, n, r1, r2, [r1] + proof)
    yield "preceding new root", (m, n, r1, r2, [r2] + proof)
    yield "preceding proof[0]", (m, n, r1, r2, [proof[0]] + proof)
    for i in range(len(proof)):
        for byte, bit in ((0, 4), (0, 0), (31, 7)):
            yield f"proof[{i}] byte {byte} bit {bit}", (m, n, r1, r2, flipped(proof, i, byte, bit))
        yield f"proof[{i}] removed", (m, n, r1, r2, proof[:i] + proof[i + 1 :])
        yield f"proof[{i}] duplicated", (m, n, r1, r2, proof[: i + 1] + proof[i:])
    if len(proof) > 1:
        yield "swapped components", (m, n, r1, r2, [proof[1], proof[0]] + proof[2:])


def test_every_golden_consistency_proof_matches_reference_and_verifies():
    tree = MerkleTree(LEAF_HASHES)
    for n in range(0, 9):
        for m in range(0, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == ref_consistency(m, LEAF_HASHES[:n])
            verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def test_consistency_corruption_matrix_every_probe_fails():
    tree = MerkleTree(LEAF_HASHES)
    checked = 0
    for n in range(2, 9):
        for m in range(1, n):
            proof = tree.consistency_proof(m, n)
            assert proof
            for desc, args in consistency_probes(m, n, ROOTS[m], ROOTS[n], proof):
                with pytest.raises(ConsistencyError):
                    verify_consistency(*args)
                    pytest.fail(f"probe {desc!r} verified for {m} -> {n}")
                checked += 1
    assert checked > 500


# --- trivial and edge cases -------------------------------------------------------


def test_single_leaf_tree():
    leaf = merkle.leaf_hash(b"data")
    verify_inclusion(leaf, 0, 1, [], leaf)
    with pytest.raises(InclusionError):
        verify_inclusion(leaf, 0, 1, [], b"")
    with pytest.raises(InclusionError):
        verify_inclusion(b"", 0, 1, [], leaf)


@pytest.mark.parametrize("index,size", [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 4), (8, 8)])
def test_inclusion_index_must_be_below_size(index, size):
    with pytest.raises(InclusionError):
        verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    if index >= 0 and size <= 8:
        with pytest.raises(ProofError):
            inclusion_proof(LEAF_HASHES, index, size)


def test_consistency_trivial_cases():
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    bad = [
        (0, 0, EMPTY_ROOT, SOME_HASH, []),  # roots differ at equal sizes
        (3, 3, ROOTS[3], ROOTS[4], []),
        (0, 5, SOME_HASH, ROOTS[5], []),  # old root of size 0 must be the empty root
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # proof must be empty
        (0, 1, EMPTY_ROOT, ROOTS[1], [EMPTY_ROOT]),
        (1, 1, ROOTS[1], ROOTS[1], [EMPTY_ROOT]),
        (1, 0, ROOTS[1], EMPTY_ROOT, []),  # time travel
        (2, 1, ROOTS[2], ROOTS[1], []),
        (1, 2, ROOTS[1], ROOTS[2], []),  # empty proof
        (-1, 2, ROOTS[1], ROOTS[2], []),
    ]
    for args in bad:
        with pytest.raises(ConsistencyError):
            verify_consistency(*args)


def test_consistency_proof_generation_bounds():
    tree = MerkleTree(LEAF_HASHES)
    with pytest.raises(ProofError):
        tree.consistency_proof(6, 3)
    with pytest.raises(ProofError):
        tree.consistency_proof(1, 9)
    assert tree.consistency_proof(0, 3) == []


def test_tree_head():
    head = MerkleTree(LEAF_HASHES[:6]).head()
    assert head == TreeHead(6, ROOTS[6])
    assert TreeHead.from_dict(head.to_dict()) == head
    newer = TreeHead(8, ROOTS[8])
    head.verify_consistency(newer, MerkleTree(LEAF_HASHES).consistency_proof(6, 8))
    head.verify_inclusion(LEAF_HASHES[5], 5, MerkleTree(LEAF_HASHES).inclusion_proof(5, 6))
    with pytest.raises(ProofError):
        TreeHead(0, SOME_HASH)
    with pytest.raises(ProofError):
        TreeHead(1, b"short")
    with pytest.raises(ProofError):
        TreeHead.from_dict({"size": 1, "root": "zz"})


def test_root_rejects_wrong_length_leaf_hashes():
    with pytest.raises(ProofError):
        merkle.root([b"x" * 31, b"y" * 33])
    with pytest.raises(ProofError):
        MerkleTree([b"x"])
    with pytest.raises(ProofError):
        CompactRange().append(b"x")


def test_compact_range_from_state_resumes():
    cr = CompactRange()
    cr.extend(LEAF_HASHES[:5])
    resumed = CompactRange.from_state(cr.size, cr.peaks)
    resumed.extend(LEAF_HASHES[5:])
    assert resumed.root() == ROOTS[8]
    assert cr.root() == ROOTS[5]  # the original is unaffected
    with pytest.raises(ProofError):
        CompactRange.from_state(5, cr.peaks[:1])


def test_batch_verifier_corruption_matrix():
    """InclusionVerifier gives the same verdicts, also after nodes are cached."""
    tree = MerkleTree(LEAF_HASHES)
    for size in range(1, 9):
        verifier = merkle.InclusionVerifier(size, ROOTS[size])
        for _round in range(2):  # second round: every upper node is cached
            for index in range(size):
                proof = tree.inclusion_proof(index, size)
                verifier.verify(LEAF_HASHES[index], index, proof)
                for desc, (leaf, i, n, pr, root) in inclusion_probes(index, size, proof, ROOTS[size],
                                                                     LEAF_HASHES[index]):
                    v = verifier if (n, root) == (size, ROOTS[size]) else None
                    if v is None:
                        continue  # size/root probes are covered by verify_inclusion
                    with pytest.raises(InclusionError):
                        v.verify(leaf, i, pr)
                        pytest.fail(f"batch verifier accepted {desc!r} for {index} of {size}")
