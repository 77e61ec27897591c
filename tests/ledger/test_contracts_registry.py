"""registry: every rule and refusal code, org isolation, key resolution as of heights."""

from __future__ import annotations

import json

import pytest

from ledger.contracts import registry
from ledger.contracts.registry import entity_json, resolve, resolve_key

from test_contracts_helpers import ACME, ADMIN, BETA, NODE0, Chain, code, key

DEV = key("press-07")
DEV2 = key("press-07-rotated")
DEV3 = key("press-07-third")
GW = key("gw-1")


@pytest.fixture
def chain() -> Chain:
    return Chain()


def reg_device(c: Chain, signer=ACME, eid="press-07", org="acme", k=DEV) -> dict:
    return c.one(signer, "registry.register_device", {"id": eid, "org": org, "key": k.did})


def test_genesis_state(chain: Chain) -> None:
    st = chain.app.state
    assert registry.get_entity(st, "consortium")["keys"][0][0] == ADMIN.did
    assert resolve(st, "acme", 0).key == ACME.did
    assert resolve(st, "node0", 0).to_json()["status"] == "active"
    assert resolve_key(st, NODE0.did, 0).id == "node0"
    assert [i for i, _ in registry.entities(st, org="acme")] == ["acme", "node0"]
    assert [i for i, _ in registry.entities(st, type="org")] == ["acme", "beta"]


def test_register_org(chain: Chain) -> None:
    gamma = key("gamma-admin")
    p = {"id": "gamma", "name": "Gamma", "admin": gamma.did}
    assert code(chain.one(ACME, "registry.register_org", p)) == "FORBIDDEN"
    assert code(chain.one(ADMIN, "registry.register_org", p)) is None
    assert code(chain.one(ADMIN, "registry.register_org", p)) == "ALREADY_EXISTS"
    assert code(chain.one(ADMIN, "registry.register_org", {**p, "id": "delta"})) == "KEY_IN_USE"
    assert code(chain.one(ADMIN, "registry.register_org", {**p, "id": "delta", "admin": ACME.did})) == "KEY_IN_USE"
    # the new org's admin registers its own devices
    assert code(reg_device(chain, gamma, "g-1", "gamma", key("g-1"))) is None
    assert resolve(chain.app.state, "gamma", chain.height).key == gamma.did


@pytest.mark.parametrize("payload", [
    {"id": "x", "name": "X"},                                           # missing admin
    {"id": "x", "name": "X", "admin": "did:key:nope"},                  # bad did
    {"id": "bad id", "name": "X", "admin": key("x").did},               # bad id
    {"id": "x/y", "name": "X", "admin": key("x").did},                  # bad id
    {"id": "x", "name": "X" * 200, "admin": key("x").did},              # name too long
    {"id": "x", "name": "X", "admin": key("x").did, "extra": 1},        # unknown field
])
def test_register_org_bad_payload(chain: Chain, payload: dict) -> None:
    root = chain.app.state_root()
    assert code(chain.one(ADMIN, "registry.register_org", payload)) == "BAD_PAYLOAD"
    assert chain.app.state_root() == root


@pytest.mark.parametrize("kind", ["registry.register_device", "registry.register_gateway", "registry.register_node"])
def test_register_entities(chain: Chain, kind: str) -> None:
    k = key(kind)
    p = {"id": "e1", "org": "acme", "key": k.did, "name": "first"}
    assert code(chain.one(BETA, kind, p)) == "FORBIDDEN"          # another org's admin
    assert code(chain.one(ADMIN, kind, p)) == "FORBIDDEN"         # the consortium admin is not acme's admin
    assert code(chain.one(k, kind, p)) == "FORBIDDEN"
    assert code(chain.one(ACME, kind, {**p, "org": "nowhere"})) == "NOT_FOUND"
    assert code(chain.one(ACME, kind, {**p, "org": "node0"})) == "NOT_FOUND"    # not an org
    assert code(chain.one(ACME, kind, {**p, "key": NODE0.did})) == "KEY_IN_USE"
    assert code(chain.one(ACME, kind, {**p, "key": ADMIN.did})) == "KEY_IN_USE"
    assert code(chain.one(ACME, kind, {**p, "id": "node0"})) == "ALREADY_EXISTS"
    assert code(chain.one(ACME, kind, p)) is None
    rec = registry.get_entity(chain.app.state, "e1")
    assert rec["type"] == kind.rsplit("_", 1)[1] and rec["org"] == "acme" and rec["name"] == "first"
    assert rec["registered"] == [chain.height, 0]
    assert json.loads(json.dumps(entity_json("e1", rec)))["key"] == k.did


def test_org_isolation(chain: Chain) -> None:
    assert code(reg_device(chain)) is None
    # beta's admin can touch nothing of acme's
    assert code(chain.one(BETA, "registry.rotate_key", {"id": "press-07", "key": key("evil").did})) == "FORBIDDEN"
    assert code(chain.one(BETA, "registry.revoke", {"id": "press-07"})) == "FORBIDDEN"
    assert code(chain.one(BETA, "registry.rotate_key", {"id": "node0", "key": key("evil").did})) == "FORBIDDEN"
    assert code(chain.one(BETA, "registry.rotate_key", {"id": "acme", "key": key("evil").did})) == "FORBIDDEN"
    assert code(chain.one(BETA, "registry.revoke", {"id": "acme"})) == "FORBIDDEN"
    assert code(reg_device(chain, BETA, "b-1", "acme", key("b-1"))) == "FORBIDDEN"
    # nor can a device manage a sibling
    assert code(reg_device(chain, ACME, "press-08", "acme", key("press-08"))) is None
    assert code(chain.one(DEV, "registry.revoke", {"id": "press-08"})) == "FORBIDDEN"
    assert resolve(chain.app.state, "press-07", chain.height).status == "active"
    assert resolve(chain.app.state, "press-08", chain.height).status == "active"


def test_rotate_key(chain: Chain) -> None:
    assert code(reg_device(chain)) is None
    assert code(chain.one(ACME, "registry.rotate_key", {"id": "nobody", "key": DEV2.did})) == "NOT_FOUND"
    assert code(chain.one(ACME, "registry.rotate_key", {"id": "press-07", "key": DEV.did})) == "KEY_IN_USE"
    assert code(chain.one(ACME, "registry.rotate_key", {"id": "press-07", "key": DEV2.did})) is None  # by its admin
    assert code(chain.one(DEV, "registry.rotate_key", {"id": "press-07", "key": DEV3.did})) == "FORBIDDEN"  # old key
    assert code(chain.one(DEV2, "registry.rotate_key", {"id": "press-07", "key": DEV3.did})) is None  # by itself
    assert code(chain.one(DEV3, "registry.rotate_key", {"id": "press-07",
                                                        "key": DEV.did})) == "KEY_IN_USE"  # never reused
    assert registry.get_entity(chain.app.state, "press-07")["keys"][-1][0] == DEV3.did


def test_rotate_org_and_consortium_keys(chain: Chain) -> None:
    acme2, admin2 = key("acme-admin-2"), key("consortium-admin-2")
    assert code(chain.one(ACME, "registry.rotate_key", {"id": "acme", "key": acme2.did})) is None
    assert code(reg_device(chain, ACME)) == "FORBIDDEN"
    assert code(reg_device(chain, acme2)) is None
    # the consortium admin may rotate an org admin's key (lost key); an org admin not the consortium's
    acme3 = key("acme-admin-3")
    assert code(chain.one(ADMIN, "registry.rotate_key", {"id": "acme", "key": acme3.did})) is None
    assert code(chain.one(acme3, "registry.rotate_key", {"id": "consortium", "key": admin2.did})) == "FORBIDDEN"
    assert code(chain.one(ADMIN, "registry.rotate_key", {"id": "consortium", "key": ACME.did})) == "KEY_IN_USE"
    assert code(chain.one(ADMIN, "registry.rotate_key", {"id": "consortium", "key": admin2.did})) is None
    p = {"id": "gamma", "name": "G", "admin": key("gamma").did}
    assert code(chain.one(ADMIN, "registry.register_org", p)) == "FORBIDDEN"
    assert code(chain.one(admin2, "registry.register_org", p)) is None
    assert code(chain.one(admin2, "registry.revoke", {"id": "consortium"})) == "FORBIDDEN"


def test_revoke(chain: Chain) -> None:
    assert code(reg_device(chain)) is None
    assert code(chain.one(ACME, "registry.revoke", {"id": "nobody"})) == "NOT_FOUND"
    assert code(chain.one(ACME, "registry.revoke", {"id": "press-07", "reason": "x" * 300})) == "BAD_PAYLOAD"
    assert code(chain.one(ACME, "registry.revoke", {"id": "press-07", "reason": "stolen"})) is None
    h = chain.height
    assert code(chain.one(ACME, "registry.revoke", {"id": "press-07"})) == "REVOKED"
    assert code(chain.one(ACME, "registry.rotate_key", {"id": "press-07", "key": DEV2.did})) == "REVOKED"
    rec = registry.get_entity(chain.app.state, "press-07")
    assert rec["revoked"] == [h, 0] and rec["reason"] == "stolen"
    # an entity may revoke itself (compromise), the consortium admin may revoke any entity
    assert code(reg_device(chain, ACME, "d2", "acme", key("d2"))) is None
    assert code(chain.one(key("d2"), "registry.revoke", {"id": "d2"})) is None
    assert code(reg_device(chain, ACME, "d3", "acme", key("d3"))) is None
    assert code(chain.one(ADMIN, "registry.revoke", {"id": "d3"})) is None


def test_revoke_org(chain: Chain) -> None:
    assert code(reg_device(chain)) is None
    h_dev = chain.height
    assert code(chain.one(ACME, "registry.revoke", {"id": "acme"})) == "FORBIDDEN"
    assert code(chain.one(ADMIN, "registry.revoke", {"id": "acme"})) is None
    h = chain.height
    assert code(reg_device(chain, ACME, "d9", "acme", key("d9"))) == "ORG_REVOKED"
    assert code(chain.one(ACME, "registry.revoke", {"id": "press-07"})) == "ORG_REVOKED"
    assert code(chain.one(DEV, "registry.rotate_key", {"id": "press-07", "key": DEV2.did})) == "ORG_REVOKED"
    assert code(chain.one(ACME, "registry.rotate_key", {"id": "acme", "key": key("a9").did})) == "REVOKED"
    st = chain.app.state
    # the org's entities resolve as revoked from the org's revocation on, not before
    assert resolve(st, "press-07", h - 1).status == "active"
    assert resolve(st, "press-07", h_dev).status == "active"
    r = resolve(st, "press-07", h)
    assert (r.status, r.key, r.revoked) == ("revoked", DEV.did, (h, 0))
    assert resolve(st, "node0", h).status == "revoked"
    assert resolve(st, "beta", h).status == "active"


def test_resolution_as_of_heights(chain: Chain) -> None:
    chain.block()  # height 1: empty
    assert code(reg_device(chain)) is None                      # height 2
    chain.block()                                               # height 3
    assert code(chain.one(DEV, "registry.rotate_key", {"id": "press-07", "key": DEV2.did})) is None  # 4
    chain.block()                                               # 5
    assert code(chain.one(ACME, "registry.revoke", {"id": "press-07"})) is None  # 6
    chain.block()                                               # 7
    st = chain.app.state
    want = {0: (None, "unregistered"), 1: (None, "unregistered"), 2: (DEV.did, "active"), 3: (DEV.did, "active"),
            4: (DEV2.did, "active"), 5: (DEV2.did, "active"), 6: (DEV2.did, "revoked"), 7: (DEV2.did, "revoked"),
            100: (DEV2.did, "revoked")}
    for h, (k, status) in want.items():
        r = resolve(st, "press-07", h)
        assert (r.key, r.status, r.valid) == (k, status, status == "active"), h
        if k is not None:
            assert r.public_key == (DEV if k == DEV.did else DEV2).public_key
        json.dumps(r.to_json())
    assert resolve(st, "ghost", 5).status == "unknown"
    # by key: the old key verifies only before the rotation
    assert resolve_key(st, DEV.did, 3).valid
    assert resolve_key(st, DEV.did, 4).status == "not_current"
    r = resolve_key(st, DEV2.did, 3)
    assert (r.status, r.key, r.valid) == ("not_current", DEV.did, False)
    assert resolve_key(st, DEV2.did, 5).valid
    assert resolve_key(st, DEV2.did, 6).status == "revoked"
    assert resolve_key(st, key("nobody").did, 5) is None


def test_resolution_within_a_block(chain: Chain) -> None:
    """A change takes effect at its (height, tx index); `index` asks about the block's middle."""
    assert code(reg_device(chain)) is None
    res = chain.block(chain.tx(ACME, "registry.register_device", {"id": "d2", "org": "acme", "key": key("d2").did}),
                      chain.tx(ACME, "registry.revoke", {"id": "press-07"}),
                      chain.tx(ACME, "registry.rotate_key", {"id": "d2", "key": key("d2b").did}))
    assert [code(r) for r in res] == [None, None, None]
    h, st = chain.height, chain.app.state
    assert resolve(st, "press-07", h, index=1).status == "active"   # as tx 1 saw it
    assert resolve(st, "press-07", h, index=2).status == "revoked"
    assert resolve(st, "press-07", h).status == "revoked"
    assert resolve(st, "d2", h, index=0).status == "unregistered"
    assert resolve(st, "d2", h, index=1).key == key("d2").did
    assert resolve(st, "d2", h, index=2).key == key("d2").did
    assert resolve(st, "d2", h, index=3).key == key("d2b").did


def test_later_tx_in_block_sees_earlier_writes(chain: Chain) -> None:
    res = chain.block(chain.tx(ACME, "registry.register_device", {"id": "d", "org": "acme", "key": DEV.did}),
                      chain.tx(ACME, "registry.register_device", {"id": "d", "org": "acme", "key": DEV2.did}),
                      chain.tx(ACME, "registry.register_device", {"id": "e", "org": "acme", "key": DEV.did}))
    assert [code(r) for r in res] == [None, "ALREADY_EXISTS", "KEY_IN_USE"]
