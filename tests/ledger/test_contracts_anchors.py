"""anchors: who may anchor, duplicate batches, lookups by batch id and root."""

from __future__ import annotations

import json

import pytest

from ledger.contracts import anchors
from ledger.contracts.anchors import batch_json, batches_by_root, get_batch

from test_contracts_helpers import ACME, ADMIN, BETA, Chain, code, key

GW = key("gw-1")
GW2 = key("gw-1-rotated")
ROOT = bytes(range(32))


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    assert code(c.one(ACME, "registry.register_gateway", {"id": "gw-1", "org": "acme", "key": GW.did})) is None
    assert code(c.one(ACME, "registry.register_device", {"id": "dev-1", "org": "acme",
                                                         "key": key("dev-1").did})) is None
    return c


def anchor(batch_id: str = "b-1", root: bytes = ROOT, **over) -> dict:
    return {"batch_id": batch_id, "root": root, "tree_size": 10, "gateway": "gw-1",
            "window": [1_700_000_000_000, 1_700_000_005_000], **over}


def test_anchor_and_lookups(chain: Chain) -> None:
    other = chain.tx(ACME, "registry.register_device", {"id": "dev-2", "org": "acme", "key": key("dev-2").did})
    tx = chain.tx(GW, "anchors.anchor", anchor())
    res = chain.block(other, tx)
    assert res[1] == {"ok": True, "batch_id": "b-1"}
    st = chain.app.state
    rec = get_batch(st, "b-1")
    assert rec == {"root": ROOT, "tree_size": 10, "gateway": "gw-1", "org": "acme",
                   "window": [1_700_000_000_000, 1_700_000_005_000], "submitter": GW.did,
                   "height": chain.height, "index": 1, "tx_id": tx.tx_id, "time": 1000 * chain.height}
    assert batches_by_root(st, ROOT) == [("b-1", rec)]
    assert batches_by_root(st, bytes(32)) == [] and batches_by_root(st, b"short") == []
    assert get_batch(st, "nope") is None
    view = json.loads(json.dumps(batch_json("b-1", rec)))
    assert view["root"] == ROOT.hex() and view["tx_id"] == tx.tx_id.hex() and view["index"] == 1


def test_duplicate_batch(chain: Chain) -> None:
    assert code(chain.one(GW, "anchors.anchor", anchor())) is None
    h = chain.height
    assert code(chain.one(GW, "anchors.anchor", anchor())) == "DUPLICATE_BATCH"
    assert code(chain.one(GW, "anchors.anchor", anchor(root=bytes(32)))) == "DUPLICATE_BATCH"
    assert get_batch(chain.app.state, "b-1")["height"] == h
    # duplicates within one block: the first wins
    res = chain.block(chain.tx(GW, "anchors.anchor", anchor("b-2")), chain.tx(GW, "anchors.anchor", anchor("b-2")))
    assert [code(r) for r in res] == [None, "DUPLICATE_BATCH"]
    # the same root under another batch id is kept, in commit order
    assert [b for b, _ in batches_by_root(chain.app.state, ROOT)] == ["b-1", "b-2"]


def test_who_may_anchor(chain: Chain) -> None:
    assert code(chain.one(GW, "anchors.anchor", anchor(gateway="nobody"))) == "UNKNOWN_GATEWAY"
    assert code(chain.one(key("dev-1"), "anchors.anchor", anchor(gateway="dev-1"))) == "UNKNOWN_GATEWAY"
    assert code(chain.one(ACME, "anchors.anchor", anchor())) == "FORBIDDEN"     # its org's admin is not the gateway
    assert code(chain.one(BETA, "anchors.anchor", anchor())) == "FORBIDDEN"
    assert code(chain.one(ADMIN, "anchors.anchor", anchor())) == "FORBIDDEN"
    assert code(chain.one(GW, "registry.rotate_key", {"id": "gw-1", "key": GW2.did})) is None
    assert code(chain.one(GW, "anchors.anchor", anchor())) == "FORBIDDEN"        # the rotated-away key
    assert code(chain.one(GW2, "anchors.anchor", anchor())) is None
    assert code(chain.one(ACME, "registry.revoke", {"id": "gw-1"})) is None
    assert code(chain.one(GW2, "anchors.anchor", anchor("b-2"))) == "REVOKED"


def test_org_revocation_stops_its_gateways(chain: Chain) -> None:
    assert code(chain.one(ADMIN, "registry.revoke", {"id": "acme"})) is None
    assert code(chain.one(GW, "anchors.anchor", anchor())) == "REVOKED"


def test_revocation_inside_a_block(chain: Chain) -> None:
    res = chain.block(chain.tx(GW, "anchors.anchor", anchor("b-1")),
                      chain.tx(ACME, "registry.revoke", {"id": "gw-1"}),
                      chain.tx(GW, "anchors.anchor", anchor("b-2")))
    assert [code(r) for r in res] == [None, None, "REVOKED"]
    assert get_batch(chain.app.state, "b-1")["index"] == 0 and get_batch(chain.app.state, "b-2") is None


@pytest.mark.parametrize("over", [
    {"batch_id": ""}, {"batch_id": "has space"}, {"batch_id": "x" * 129}, {"batch_id": 7},
    {"root": ROOT[:31]}, {"root": ROOT.hex()}, {"tree_size": 0}, {"tree_size": -1}, {"tree_size": "10"},
    {"gateway": "bad/id"}, {"window": [5, 4]}, {"window": [1]}, {"window": [-1, 4]}, {"window": "1-4"},
    {"extra": True},
])
def test_bad_payload(chain: Chain, over: dict) -> None:
    root = chain.app.state_root()
    assert code(chain.one(GW, "anchors.anchor", anchor(**over))) == "BAD_PAYLOAD"
    assert chain.app.state_root() == root


def test_missing_field(chain: Chain) -> None:
    p = anchor()
    del p["window"]
    assert code(chain.one(GW, "anchors.anchor", p)) == "BAD_PAYLOAD"


def test_methods() -> None:
    assert set(anchors.METHODS) == {"anchor"}
