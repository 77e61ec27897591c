"""The contracts on a real 4-node cluster over TCP: registry, anchors, refusals,
resolution as of a height, state proofs against light-client-verified headers.

The nodes run `ContractApp` (the layout's ``contracts.json``, whose hash the
genesis names); the consortium admin is the layout's ``keys/admin.key``. Every
submitter pays the default fee per tx (`tokens`), so the admin mints quota to
the orgs it registers and an org admin allocates some to its gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

import pytest

from cluster_checks import wait_converged
from ledger import LightClient
from ledger.client import AsyncLedgerClient, LedgerClientError, Receipt
from infra.ledger_cluster import LocalCluster
from ledger.contracts import StateProofError, verify_state_proof
from ledger.layout import LayoutError
from trust import canonical
from trust.identity import KeyPair

pytestmark = pytest.mark.timeout(120)


def _ok(r: Receipt) -> Receipt:
    assert r.refusal is None and r.result["ok"] is True, r.result
    assert len(r.nodes) >= 2  # f+1 matching signed replies
    return r


def _refused(r: Receipt, code: str) -> None:
    assert r.refusal is not None and r.refusal[0] == code, r.result
    assert r.result == {"ok": False, "code": code, "message": r.refusal[1]}
    assert len(r.nodes) >= 2


def _get(c: LocalCluster, node: str, path: str) -> tuple[int, dict]:
    status, body = c.http_get(node, path)
    return status, json.loads(body)


def test_contracts_on_four_nodes(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(4, 4, app="contracts")
    names = c.names
    assert c.layout.app() == "contracts" and c.status("node0")["app"] == "contracts"  # type: ignore[index]
    admin = c.layout.admin_key()
    acme_admin, globex_admin, gw, dev = (KeyPair.generate() for _ in range(4))
    root = os.urandom(32)
    out: dict = {}

    async def scenario() -> None:
        def client(key: KeyPair) -> AsyncLedgerClient:
            return AsyncLedgerClient.from_layout(c.root, key=key)

        async with client(admin) as A, client(acme_admin) as acme, client(globex_admin) as globex, \
                client(gw) as G:
            # the consortium admin registers two orgs with their admins, and gives them quota
            await asyncio.gather(
                A.submit("registry.register_org", {"id": "acme", "name": "ACME", "admin": acme_admin.did}),
                A.submit("registry.register_org", {"id": "globex", "name": "Globex", "admin": globex_admin.did}))
            for org in ("acme", "globex"):
                _ok(await A.submit("tokens.mint", {"account": org, "amount": 100}))
            # acme's admin registers a gateway and a device
            _ok(await acme.submit("registry.register_gateway", {"id": "gw1", "org": "acme", "key": gw.did}))
            reg_dev = _ok(await acme.submit("registry.register_device",
                                            {"id": "dev1", "org": "acme", "key": dev.did, "name": "press 1"}))
            # globex's admin cannot touch them: FORBIDDEN, committed as a refusal, nothing changes
            _refused(await globex.submit("registry.revoke", {"id": "dev1"}), "FORBIDDEN")
            _refused(await globex.submit("registry.rotate_key", {"id": "gw1", "key": KeyPair.generate().did}),
                     "FORBIDDEN")
            _refused(await globex.submit("registry.register_device",
                                         {"id": "dev2", "org": "acme", "key": KeyPair.generate().did}),
                     "FORBIDDEN")
            assert (await A.resolve("dev2")) is None
            got = await A.resolve("dev1")
            assert got is not None and got["resolution"]["status"] == "active"
            assert got["entity"]["registered"] == {"height": reg_dev.height, "index": reg_dev.index}

            # the gateway anchors a batch; the same batch id again is refused
            _ok(await acme.submit("tokens.allocate", {"from": "acme", "to": "gw1", "amount": 10}))
            batch = {"batch_id": "acme/line-1/0001", "root": root, "tree_size": 3, "gateway": "gw1",
                     "window": [1_700_000_000_000, 1_700_000_060_000]}
            anchored = _ok(await G.submit("anchors.anchor", batch))
            assert anchored.result["batch_id"] == batch["batch_id"]
            _refused(await G.submit("anchors.anchor", {**batch, "root": os.urandom(32)}), "DUPLICATE_BATCH")
            # acme's admin revokes the device at height r
            revoked = _ok(await acme.submit("registry.revoke", {"id": "dev1", "reason": "lost"}))

            # client conveniences (any node that has it)
            a = await G.get_anchor(batch["batch_id"])
            assert a is not None and (a["height"], a["index"]) == (anchored.height, anchored.index)
            assert await G.get_anchor("no-such-batch") is None
            by_root = await G.anchors_by_root(root)
            assert [b["batch_id"] for b in by_root] == [batch["batch_id"]]
            assert await G.anchors_by_root(b"\0" * 32) == []

            out.update(anchored=anchored, revoked=revoked, batch=batch, dev_reg=reg_dev)

    asyncio.run(scenario())
    anchored, revoked, batch = out["anchored"], out["revoked"], out["batch"]
    h = wait_converged(c, names, min_height=revoked.height)

    # a state proof, checked against a header the client verified from genesis
    with c.client(key=admin) as cl:
        value, header = cl.verified_state("anc/batch/" + batch["batch_id"], node="node2")
        assert value is not None and canonical.decode(value)["root"] == root
        assert header.height == h
        absent, _ = cl.verified_state("reg/ent/dev2", node="node1")
        assert absent is None

    # /anchors/{id} and /anchors/root/{hex}: the same record on every node, with its commit position
    from urllib.parse import quote

    views = []
    for n in names:
        status, v = _get(c, n, "/anchors/" + quote(batch["batch_id"], safe=""))
        assert status == 200, v
        assert (v["height"], v["index"], v["tx_id"]) == (anchored.height, anchored.index, anchored.tx_id.hex())
        assert v["root"] == root.hex() and v["gateway"] == "gw1" and v["org"] == "acme"
        status, r = _get(c, n, f"/anchors/root/{root.hex()}")
        assert status == 200 and r["batches"] == [{k: x for k, x in v.items() if k != "state_height"}]
        views.append(v)
    assert all(v == views[0] for v in views)
    # the tx index agrees with the block store: /tx/{id}
    status, tx = _get(c, "node3", f"/tx/{anchored.tx_id.hex()}")
    assert status == 200 and (tx["height"], tx["index"]) == (anchored.height, anchored.index)

    # revoked at height r: r-1 still resolves the old key as valid, r says revoked (every node)
    r = revoked.height
    dev_did = json.loads(c.http_get("node0", "/registry/dev1")[1])["entity"]["key"]
    for n in names:
        status, before = _get(c, n, f"/registry/dev1?height={r - 1}")
        assert status == 200
        assert before["resolution"]["status"] == "active" and before["resolution"]["valid"] is True
        assert before["resolution"]["key"] == dev_did
        status, after = _get(c, n, f"/registry/dev1?height={r}")
        assert after["resolution"]["status"] == "revoked" and after["resolution"]["key"] == dev_did
        assert after["entity"]["revoked"] == {"height": r, "index": revoked.index}
        assert after["entity"]["reason"] == "lost"
        _, k_before = _get(c, n, f"/registry/key/{dev_did}?height={r - 1}")
        _, k_after = _get(c, n, f"/registry/key/{dev_did}?height={r}")
        assert k_before["resolution"]["valid"] is True and k_after["resolution"]["valid"] is False
        # as the revoking tx saw it (index), it was still active
        _, inside = _get(c, n, f"/registry/dev1?height={r}&index={revoked.index}")
        assert inside["resolution"]["status"] == "active"

    # the raw /state/proof route, verified by hand against light-client-verified headers
    status, sp = _get(c, "node1", "/state/proof?key=reg/ent/dev1")
    assert status == 200 and sp["height"] >= r
    proof = canonical.decode(bytes.fromhex(sp["canonical"]["proof"]))
    lc = LightClient.from_genesis(c.layout.genesis())
    with c.client() as cl:
        lc.add_chain(cl.get_headers(1, sp["height"], node="node3"))
    header = lc.headers[sp["height"]]
    assert header.header_hash().hex() == sp["header_hash"] and header.state_root.hex() == sp["state_root"]
    value = bytes.fromhex(sp["value"])
    verify_state_proof(header.state_root, "reg/ent/dev1", value, proof)
    assert canonical.decode(value)["revoked"] == [r, revoked.index]
    with pytest.raises(StateProofError):
        verify_state_proof(header.state_root, "reg/ent/dev1", value + b"\0", proof)
    with pytest.raises(StateProofError):
        verify_state_proof(header.state_root, "reg/ent/dev1", None, proof)

    # all nodes report the same state root at the same height, the one in that header
    h = wait_converged(c, names, min_height=h)
    sts = {n: c.status(n) for n in names}
    assert {(s["height"], s["state_root"]) for s in sts.values()} == {(h, sts["node0"]["state_root"])}  # type: ignore
    with c.client() as cl:
        assert cl.get_headers(h, h, node="node2")[0][0].state_root.hex() == sts["node0"]["state_root"]  # type: ignore

    # a restarted node rebuilds the contract state by replaying its blocks: the same root
    c.restart("node3")
    assert wait_converged(c, names, min_height=h) == h
    st3 = c.status("node3")
    assert st3 is not None and st3["state_root"] == sts["node0"]["state_root"]  # type: ignore[index]
    assert _get(c, "node3", "/registry/dev1")[1]["resolution"]["status"] == "revoked"

    # tokens: acme paid 1 per registry tx (gateway, device, revoke; the refused ones nothing)
    _, acct = _get(c, "node1", "/tokens/accounts/acme")
    assert (acct["balance"], acct["charges"], acct["spent"]) == (100 - 10 - 3, 3, 3), acct
    assert [e["kind"] for e in acct["consumption"]] == ["registry.register_gateway", "registry.register_device",
                                                        "registry.revoke"]
    assert acct["consumption"][-1]["height"] == r and acct["next"] is None
    _, page = _get(c, "node2", "/tokens/accounts/acme?limit=1")
    assert len(page["consumption"]) == 1 and page["next"] == 0
    _, fees = _get(c, "node3", "/tokens/fees")
    assert fees["fees"]["anchors.anchor"] == 1 and fees["supply"]["consumed"] >= 5
    _, accts = _get(c, "node0", "/tokens/accounts")
    assert {"acme", "globex", "gw1"} <= {a["account"] for a in accts["accounts"]}
    assert _get(c, "node0", "/tokens/accounts/nobody")[0] == 404

    # unknown ids: 404 with a JSON error; bad input: 400; a height ahead: 503
    for path in ("/registry/nobody", f"/registry/key/{KeyPair.generate().did}", "/anchors/nothing"):
        status, body = _get(c, "node0", path)
        assert status == 404 and body["error"] == "not-found" and body["message"], (path, body)
    status, body = _get(c, "node0", f"/anchors/root/{'00' * 32}")
    assert status == 404 and body["error"] == "not-found"
    assert _get(c, "node0", "/state/proof")[0] == 400
    assert _get(c, "node0", "/registry/dev1?height=x")[0] == 400
    status, body = _get(c, "node0", f"/registry/dev1?height={h + 1000}")
    assert status == 503 and body["error"] == "behind"


def test_nodes_refuse_a_contracts_genesis_that_does_not_match(tmp_path) -> None:
    from ledger.node import Node

    cl = LocalCluster(tmp_path / "ledger", n_nodes=4, n_sealers=4)
    layout = cl.init()
    g = layout.genesis()
    assert g.app.startswith("contracts:") and layout.contracts_genesis() is not None
    wire = json.loads(layout.contracts_path.read_text())
    wire["orgs"][0]["name"] = "someone else"
    layout.contracts_path.write_text(json.dumps(wire))
    with pytest.raises(LayoutError, match="does not match the genesis"):
        Node(layout, "node1")
    layout.contracts_path.unlink()
    with pytest.raises(LayoutError, match="is missing"):
        Node(layout, "node1")
    # the process: exit code 2 and one log line saying why
    cl.start(["node2"], wait=False)
    import time

    for _ in range(100):
        if cl.pid("node2") is None:
            break
        time.sleep(0.1)
    assert cl.pid("node2") is None
    assert "contracts.json is missing" in layout.log_path("node2").read_text()


def test_kv_ledgers_answer_contract_routes_with_no_contracts(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(4, 4)  # app "kv"
    assert c.layout.app() == "kv" and c.layout.contracts_genesis() is None
    assert not c.layout.admin_key_path.exists()
    status, body = _get(c, "node0", "/registry/node0")
    assert status == 404 and body["error"] == "no-contracts"

    async def lookup() -> None:
        async with c.aclient() as cl:
            with pytest.raises(LedgerClientError):
                await cl.get_anchor("x")

    asyncio.run(lookup())
