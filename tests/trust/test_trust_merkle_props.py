"""Property tests: trust.merkle against the naive recursive RFC 9162 reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust import merkle
from trust.merkle import (
    CompactRange,
    ConsistencyError,
    InclusionError,
    MerkleTree,
    verify_consistency,
    verify_inclusion,
)

from _trust_ref import ref_consistency, ref_leaf, ref_mth, ref_path

entries = st.lists(st.binary(max_size=12), min_size=0, max_size=70)
nonempty = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


@settings(max_examples=60, deadline=None)
@given(entries)
def test_root_matches_reference(data):
    hashes = [ref_leaf(d) for d in data]
    assert merkle.leaf_hashes(data) == hashes
    want = ref_mth(hashes)
    assert merkle.root(hashes) == want
    assert MerkleTree(hashes).root() == want


@settings(max_examples=40, deadline=None)
@given(nonempty)
def test_every_leaf_verifies_and_matches_reference(data):
    hashes = [ref_leaf(d) for d in data]
    tree = MerkleTree(hashes)
    root = tree.root()
    for i, lh in enumerate(hashes):
        proof = tree.inclusion_proof(i)
        assert proof == ref_path(i, hashes)
        verify_inclusion(lh, i, len(hashes), proof, root)


@settings(max_examples=40, deadline=None)
@given(nonempty, st.data())
def test_inclusion_at_earlier_sizes(data, draw):
    hashes = [ref_leaf(d) for d in data]
    tree = MerkleTree(hashes)
    size = draw.draw(st.integers(1, len(hashes)))
    index = draw.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index, size)
    assert proof == ref_path(index, hashes[:size])
    assert proof == merkle.inclusion_proof(hashes, index, size)
    verify_inclusion(hashes[index], index, size, proof, ref_mth(hashes[:size]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=0, max_size=40))
def test_consistency_between_any_two_sizes(data):
    hashes = [ref_leaf(d) for d in data]
    tree = MerkleTree(hashes)
    roots = [ref_mth(hashes[:s]) for s in range(len(hashes) + 1)]
    for n in range(len(hashes) + 1):
        for m in range(n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == ref_consistency(m, hashes[:n])
            verify_consistency(m, n, roots[m], roots[n], proof)


@settings(max_examples=60, deadline=None)
@given(entries, st.lists(st.integers(1, 9), max_size=12))
def test_compact_range_and_extend_equal_full_recompute(data, chunks):
    hashes = [ref_leaf(d) for d in data]
    cr = CompactRange()
    tree = MerkleTree()
    pos = 0
    for c in chunks + [len(hashes)]:
        part = hashes[pos : pos + c]
        pos += len(part)
        for lh in part:
            cr.append(lh)
            assert cr.root() == ref_mth(hashes[: cr.size])
        tree.extend(part)
        assert tree.size == pos
        assert tree.root() == ref_mth(hashes[:pos])
        assert len(cr.peaks) == bin(pos).count("1")
    assert cr.root() == tree.root() == merkle.root(hashes)
    assert [tree.root_at(s) for s in range(len(hashes) + 1)] == [
        ref_mth(hashes[:s]) for s in range(len(hashes) + 1)
    ]


@settings(max_examples=80, deadline=None)
@given(nonempty, st.data())
def test_any_tampered_proof_byte_is_detected(data, draw):
    hashes = [ref_leaf(d) for d in data]
    if len(hashes) < 2:
        hashes.append(ref_leaf(b"second"))
    tree = MerkleTree(hashes)
    index = draw.draw(st.integers(0, len(hashes) - 1))
    proof = tree.inclusion_proof(index)
    elem = draw.draw(st.integers(0, len(proof) - 1))
    byte = draw.draw(st.integers(0, 31))
    bit = draw.draw(st.integers(0, 7))
    bad = list(proof)
    b = bytearray(bad[elem])
    b[byte] ^= 1 << bit
    bad[elem] = bytes(b)
    with pytest.raises(InclusionError):
        verify_inclusion(hashes[index], index, len(hashes), bad, tree.root())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=4), min_size=3, max_size=40), st.data())
def test_any_tampered_consistency_byte_is_detected(data, draw):
    hashes = [ref_leaf(d) for d in data]
    tree = MerkleTree(hashes)
    n = draw.draw(st.integers(2, len(hashes)))
    m = draw.draw(st.integers(1, n - 1))
    proof = tree.consistency_proof(m, n)
    elem = draw.draw(st.integers(0, len(proof) - 1))
    byte = draw.draw(st.integers(0, 31))
    bad = list(proof)
    b = bytearray(bad[elem])
    b[byte] ^= 0x80
    bad[elem] = bytes(b)
    with pytest.raises(ConsistencyError):
        verify_consistency(m, n, tree.root_at(m), tree.root_at(n), bad)


def test_sizes_up_to_300_against_reference():
    hashes = [ref_leaf(str(i).encode()) for i in range(300)]
    tree = MerkleTree(hashes)
    for size in range(301):
        assert tree.root_at(size) == ref_mth(hashes[:size])
    for size in (1, 2, 3, 7, 8, 9, 63, 64, 65, 255, 256, 257, 300):
        root = tree.root_at(size)
        for index in range(size):
            verify_inclusion(hashes[index], index, size, tree.inclusion_proof(index, size), root)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=6), min_size=1, max_size=70), st.data())
def test_batch_verifier_agrees_with_verify_inclusion(data, draw):
    hashes = [ref_leaf(d) for d in data]
    tree = MerkleTree(hashes)
    n = len(hashes)
    verifier = merkle.InclusionVerifier(n, tree.root())
    for _ in range(30):
        index = draw.draw(st.integers(0, n - 1))
        proof = tree.inclusion_proof(index)
        if proof and draw.draw(st.booleans()):
            e = draw.draw(st.integers(0, len(proof) - 1))
            b = bytearray(proof[e])
            b[draw.draw(st.integers(0, 31))] ^= 1 << draw.draw(st.integers(0, 7))
            proof[e] = bytes(b)
        claimed = draw.draw(st.sampled_from([index, (index + 1) % n, index]))
        try:
            verify_inclusion(hashes[index], claimed, n, proof, tree.root())
            want = True
        except InclusionError:
            want = False
        try:
            verifier.verify(hashes[index], claimed, proof)
            got = True
        except InclusionError:
            got = False
        assert got == want
