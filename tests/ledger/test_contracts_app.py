"""The framework: dispatch, atomic refusals, determinism, the incremental state root and its proofs."""

from __future__ import annotations

import hashlib
import random

import pytest

from ledger import Genesis, Transaction
from ledger.contracts import (
    ContractApp,
    ContractsGenesis,
    StateProofError,
    Refused,
    recompute_root,
    verify_state_proof,
)
from ledger.contracts import _smt, anchors, registry
from ledger.errors import LedgerError
from trust import canonical

from test_contracts_helpers import ACME, ADMIN, BETA, Chain, code, default_genesis, key


def test_unknown_kind_and_non_map_payload() -> None:
    c = Chain()
    for kind in ("kv.put", "registry", "registry.", "registry.nope", "anchors.anchor.x", ""):
        assert code(c.one(ADMIN, kind, {"key": "a", "value": 1})) == "UNKNOWN_KIND"
    assert code(c.one(ADMIN, "registry.revoke", ["acme"])) == "BAD_PAYLOAD"
    assert c.roots[-1] == c.roots[0]


def test_refused_tx_writes_nothing_and_a_contract_bug_is_internal() -> None:
    def half_then_refuse(tc, p):
        tc.state.put("t/a", 1)
        raise Refused("NOPE", "refused after a write")

    def half_then_crash(tc, p):
        tc.state.put("t/b", 1)
        return {"x": 1 // p["zero"]}

    def put(tc, p):
        if p.get("delete"):
            tc.state.delete("t/" + p["k"])
        else:
            tc.state.put("t/" + p["k"], p["v"])

    app = ContractApp(default_genesis(), {"t": {"refuse": half_then_refuse, "crash": half_then_crash, "put": put}})
    c = Chain(app)
    res = c.block(c.tx(ADMIN, "t.refuse", {}), c.tx(ADMIN, "t.crash", {"zero": 0}), c.tx(ADMIN, "t.put", {"k": "c",
                                                                                                          "v": 2}))
    assert res[0] == {"ok": False, "code": "NOPE", "message": "refused after a write"}
    assert res[1] == {"ok": False, "code": "INTERNAL", "message": "t.crash: contract error ZeroDivisionError"}
    assert res[2] == {"ok": True}
    st = app.state
    assert "t/a" not in st and "t/b" not in st and st.get("t/c") == 2
    # deletes, and writes that restore a value, keep the root equal to a from-scratch one
    c.block(c.tx(ADMIN, "t.put", {"k": "c", "delete": True}), c.tx(ADMIN, "t.put", {"k": "d", "v": 1}))
    assert "t/c" not in app.state and app.state_root() == recompute_root(app.snapshot())
    before = app.state_root()
    c.block(c.tx(ADMIN, "t.put", {"k": "d", "v": 5}), c.tx(ADMIN, "t.put", {"k": "d", "v": 1}),
            c.tx(ADMIN, "t.put", {"k": "gone", "delete": True}))
    assert app.state_root() == before


def test_execute_does_not_change_the_committed_state() -> None:
    c = Chain()
    tx = c.tx(ACME, "registry.register_device", {"id": "d", "org": "acme", "key": key("d").did})
    root, snap = c.app.state_root(), c.app.snapshot()
    ex1 = c.app.execute(c.ctx(1), [tx])
    ex2 = c.app.execute(c.ctx(1), [tx])
    assert ex1.state_root == ex2.state_root != root and ex1.results == ex2.results
    assert c.app.state_root() == root and c.app.snapshot() == snap and "reg/ent/d" not in c.app.state
    c.app.apply(ex1)
    assert c.app.state_root() == ex1.state_root and c.app.state.height == 1
    with pytest.raises(LedgerError):
        c.app.apply(ex2)  # computed on the state before ex1


def test_genesis_wire_and_defaults() -> None:
    g = default_genesis()
    assert ContractsGenesis.from_wire(canonical.decode(canonical.encode(g.to_wire()))) == g
    assert ContractApp(g).state_root() == ContractApp(ContractsGenesis.from_wire(g.to_wire())).state_root()
    nodes = [key(f"n{i}").did for i in range(4)]
    lg = Genesis.create("c", nodes)
    cg = ContractsGenesis.for_ledger(lg, ADMIN.did)
    app = ContractApp(cg)
    assert [registry.resolve(app.state, f"node{i}", 0).key for i in range(4)] == nodes
    assert registry.resolve(app.state, "operator", 0).key == ADMIN.did
    assert app.state_root() == recompute_root(app.snapshot())
    for bad in ({"admin": "x"}, {"orgs": []}, {"admin": ADMIN.did, "orgs": [{"id": "a"}]}, [1],
                {"admin": ADMIN.did, "orgs": [{"id": "consortium", "name": "", "admin": ACME.did}]},
                {"admin": ADMIN.did, "orgs": [{"id": "a", "name": "", "admin": ACME.did},
                                              {"id": "b", "name": "", "admin": ACME.did}]},
                {"admin": ADMIN.did, "entities": [{"id": "e", "type": "device", "org": "none", "key": ACME.did}]}):
        with pytest.raises(LedgerError):
            ContractsGenesis.from_wire(bad)


# ---------------------------------------------------------------- random workloads


def _random_blocks(seed: int, n_blocks: int, chain: Chain) -> list[list[Transaction]]:
    """Random registry/anchor txs, valid and not, with nonces from `chain`."""
    r = random.Random(seed)
    admins = {"acme": ACME, "beta": BETA}
    ents = [f"e{i}" for i in range(12)]
    keys = [key(f"rk-{seed}-{i}") for i in range(30)]
    out = []
    for _ in range(n_blocks):
        txs = []
        for _ in range(r.randint(0, 6)):
            op = r.random()
            org = r.choice(["acme", "beta"])
            signer = r.choice([admins[org], admins[org], ADMIN, r.choice(keys)])
            if op < 0.35:
                kind = r.choice(["registry.register_device", "registry.register_gateway", "registry.register_node"])
                p = {"id": r.choice(ents), "org": org, "key": r.choice(keys).did}
            elif op < 0.5:
                kind, p = "registry.rotate_key", {"id": r.choice(ents + ["acme"]), "key": r.choice(keys).did}
            elif op < 0.58:
                kind, p = "registry.revoke", {"id": r.choice(ents + ["beta"] * (r.random() < 0.1))}
            elif op < 0.62:
                kind, p = "registry.register_org", {"id": f"o{r.randrange(4)}", "name": "o",
                                                    "admin": r.choice(keys).did}
            else:
                signer = r.choice(keys)
                kind = "anchors.anchor"
                p = {"batch_id": f"b{r.randrange(40)}", "root": hashlib.sha256(bytes([r.randrange(5)])).digest(),
                     "tree_size": r.randint(1, 99), "gateway": r.choice(ents), "window": [0, r.randint(0, 9)]}
            txs.append(chain.tx(signer, kind, p))
        out.append(txs)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_two_apps_agree_and_incremental_root_equals_recomputation(seed: int) -> None:
    a, b = Chain(), Chain()
    blocks = _random_blocks(seed, 40, a)
    codes = set()
    for txs in blocks:
        ra, rb = a.block(*txs), b.block(*txs)
        assert canonical.encode(ra) == canonical.encode(rb)
        assert a.roots[-1] == b.roots[-1]
        codes.update(code(x) for x in ra)
        assert a.app.state_root() == recompute_root(a.app.snapshot())
    assert a.app.snapshot() == b.app.snapshot()
    assert len(set(a.roots)) > 5
    assert None in codes and len(codes) >= 5  # the workload exercises successes and several refusals


def _put(tc, p):
    if "v" in p:
        tc.state.put("t/" + p["k"], p["v"])
    else:
        tc.state.delete("t/" + p["k"])


def test_root_is_independent_of_history() -> None:
    """The same final map reached through different writes, orders and block cuts: the same root."""
    r = random.Random(3)
    final = {f"k{i}": i for i in range(25)}
    roots = set()
    for _trial in range(4):
        c = Chain(ContractApp(default_genesis(), {"t": {"put": _put}}))
        ops = [{"k": f"k{i}", "v": -i} for i in range(40)] + [{"k": "never"}]  # noise, some on keys that end absent
        r.shuffle(ops)
        ops += [{"k": f"k{i}"} for i in range(25, 40)]                   # deleted again
        ops += [{"k": k, "v": v} for k, v in sorted(final.items(), key=lambda _: r.random())]
        i = 0
        while i < len(ops):
            n = r.randint(1, 9)
            c.block(*[c.tx(ADMIN, "t.put", p) for p in ops[i:i + n]])
            i += n
        assert {k: canonical.decode(v) for k, v in c.app.snapshot().items() if k.startswith("t/")} == \
            {"t/" + k: v for k, v in final.items()}
        roots.add(c.app.state_root())
    assert len(roots) == 1


def test_smt_random_updates_match_build() -> None:
    r = random.Random(7)
    tree, m = None, {}
    for _ in range(200):
        ch = {}
        for _ in range(r.randint(1, 10)):
            k = hashlib.sha256(str(r.randrange(300)).encode()).digest()
            ch[k] = None if r.random() < 0.35 else hashlib.sha256(str(r.random()).encode()).digest()
        old = tree
        old_root = _smt.root_of(old)
        tree = _smt.update(tree, ch.items())
        assert _smt.root_of(old) == old_root  # path copying: the old version is intact
        for k, v in ch.items():
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        assert _smt.root_of(tree) == _smt.root_of(_smt.build(m.items()))
    assert _smt.root_of(_smt.update(tree, [(k, None) for k in m])) == _smt.EMPTY


def test_state_proofs() -> None:
    c = Chain()
    assert code(c.one(ACME, "registry.register_gateway", {"id": "gw", "org": "acme", "key": key("gw").did})) is None
    st, root = c.app.state, c.app.state_root()
    p = st.prove("reg/ent/gw")
    verify_state_proof(root, "reg/ent/gw", p["value"], p)
    assert canonical.decode(p["value"])["type"] == "gateway"
    absent = st.prove("reg/ent/ghost")
    assert absent["value"] is None
    verify_state_proof(root, "reg/ent/ghost", None, absent)
    with pytest.raises(StateProofError):
        verify_state_proof(root, "reg/ent/gw", p["value"] + b"x", p)
    with pytest.raises(StateProofError):
        verify_state_proof(root, "reg/ent/gw", None, p)
    with pytest.raises(StateProofError):
        verify_state_proof(root, "reg/ent/ghost", p["value"], absent)
    with pytest.raises(StateProofError):
        verify_state_proof(c.roots[0], "reg/ent/gw", p["value"], p)
    with pytest.raises(StateProofError):
        verify_state_proof(root, "reg/ent/gw", p["value"], {**p, "siblings": [bytes(32)] + p["siblings"]})


def test_anchor_lookups_through_the_query_api() -> None:
    c = Chain()
    gw = key("gw")
    c.one(ACME, "registry.register_gateway", {"id": "gw", "org": "acme", "key": gw.did})
    c.one(gw, "anchors.anchor", {"batch_id": "x", "root": bytes(32), "tree_size": 1, "gateway": "gw", "window": [0, 0]})
    assert anchors.get_batch(c.app.state, "x")["height"] == 2
