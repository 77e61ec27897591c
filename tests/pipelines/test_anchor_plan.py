"""Pure rules of anchoring (`pipelines._anchor_plan`): seal parsing, batch cutting, ids, payloads."""

from __future__ import annotations

import json
import random

import pytest

from pipelines._anchor_plan import (AnchorCommit, SealError, SealedLeaf, anchor_payload, anchor_value, batch_id_for,
                                    parse_sealed, plan_batch)
from trust import merkle
from trust.hashes import sha256


def _leaves(n: int, seed: int = 0) -> list[SealedLeaf]:
    rng = random.Random(seed)
    return [SealedLeaf(sha256(bytes([i, seed])), 1_700_000_000_000 + rng.randrange(5000)) for i in range(n)]


def test_same_seals_in_any_order_or_repeated_give_the_same_batch() -> None:
    leaves = _leaves(9)
    plan = plan_batch(leaves, "gw-1")
    shuffled = leaves[::-1] + leaves[:4]  # another order, with redeliveries
    assert plan_batch(shuffled, "gw-1") == plan
    assert plan.tree_size == 9 and len(set(plan.leaves)) == 9
    assert [lf.ts_ms for lf in sorted(leaves, key=lambda lf: (lf.ts_ms, lf.statement_hash))] == sorted(
        lf.ts_ms for lf in leaves)
    assert plan.root == merkle.root(merkle.leaf_hashes(plan.leaves))
    assert (plan.window_start_ms, plan.window_end_ms) == (min(lf.ts_ms for lf in leaves),
                                                          max(lf.ts_ms for lf in leaves))
    assert plan.batch_id == batch_id_for("gw-1", plan.root) == f"gw-1-{plan.root.hex()[:32]}"


def test_other_leaves_or_gateway_give_another_id() -> None:
    leaves = _leaves(5)
    a = plan_batch(leaves, "gw-1")
    assert plan_batch(leaves[:4], "gw-1").batch_id != a.batch_id
    assert plan_batch(leaves, "gw-2").batch_id != a.batch_id
    assert plan_batch([], "gw-1") is None


def test_parse_sealed() -> None:
    h = sha256(b"x")
    value = json.dumps({"statement_hash": h.hex(), "ts": 5, "receipt": {"gateway": "did:key:z6Mk"}}).encode()
    assert parse_sealed(value) == SealedLeaf(h, 5, "did:key:z6Mk")
    for bad in (b"", b"[]", b"{}", json.dumps({"statement_hash": "00", "ts": 5}).encode(),
                json.dumps({"statement_hash": h.hex(), "ts": "5"}).encode(),
                json.dumps({"statement_hash": h.hex(), "ts": 5, "receipt": []}).encode()):
        with pytest.raises(SealError):
            parse_sealed(bad)


def test_payload_and_anchors_value_are_deterministic() -> None:
    root = sha256(b"root")
    assert anchor_payload("b", root, 3, "gw", (1, 2)) == {"batch_id": "b", "root": root, "tree_size": 3,
                                                          "gateway": "gw", "window": [1, 2]}
    commit = AnchorCommit.from_lookup({"batch_id": "b", "root": root.hex(), "tree_size": 3, "height": 7, "index": 2,
                                       "tx_id": "ab" * 32, "gateway": "gw"})
    value = anchor_value(commit, "gw", (1, 2), "manifests/b")
    assert value == anchor_value(commit, "gw", (1, 2), "manifests/b")
    assert json.loads(value) == {"v": 1, "batch_id": "b", "root": root.hex(), "tree_size": 3, "gateway": "gw",
                                 "window": [1, 2], "manifest": "manifests/b", "height": 7, "tx_index": 2,
                                 "tx_id": "ab" * 32}
