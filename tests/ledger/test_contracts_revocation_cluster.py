"""Revocation on a real 4-node cluster, end to end with `trust` statements: a
device's statements anchored before its revocation still verify as of their
anchor height (asked after the revocation, on every node, and from proven
state), while statements it signs afterwards, anchored later, fail at the
device-key step; token exhaustion refuses the gateway's next anchor."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest

from ledger.client import AsyncLedgerClient, Receipt, TxRefused
from infra.ledger_cluster import LocalCluster
from ledger.contracts import registry
from trust import canonical
from trust.errors import DeviceKeyError
from trust.identity import KeyPair
from trust.merkle import MerkleTree
from trust.receipt import AnchorRef, seal_receipt
from trust.statement import Statement, sign_statement
from trust.verify import check_device_key, check_record

from cluster_checks import wait_converged

pytestmark = pytest.mark.timeout(120)


def _ok(r: Receipt) -> Receipt:
    assert r.refusal is None, r.result
    return r


def _batch(dev: KeyPair, gw: KeyPair, first_seq: int, n: int) -> tuple[list[dict], MerkleTree]:
    """n signed statements of `dev`, sealed by `gw`, and the tree over their hashes."""
    records = []
    for seq in range(first_seq, first_seq + n):
        payload = hashlib.sha256(f"reading-{seq}".encode()).digest() * 4
        stmt = Statement.for_payload(dev.did, seq, 1_700_000_000_000 + seq, "timeseries",
                                     "application/vnd.apache.arrow.stream", payload)
        records.append({"payload": payload, "statement": stmt, "sig": sign_statement(stmt, dev),
                        "receipt": seal_receipt(stmt.hash(), f"raw/{hashlib.sha256(payload).hexdigest()}", gw)})
    tree = MerkleTree.from_entries([r["statement"].hash() for r in records])
    return records, tree


def test_revocation_as_of_height_with_statements(make_cluster: Callable[..., LocalCluster]) -> None:
    asyncio.run(_scenario(make_cluster(4, 4, app="contracts")))


async def _scenario(c: LocalCluster) -> None:
    admin = c.layout.admin_key()
    acme, gw, dev = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()

    def client(key: KeyPair) -> AsyncLedgerClient:
        return AsyncLedgerClient.from_layout(c.root, key=key)

    async with client(admin) as A, client(acme) as Org, client(gw) as G:
        _ok(await A.submit("registry.register_org", {"id": "acme", "name": "ACME", "admin": acme.did}))
        _ok(await A.submit("tokens.mint", {"account": "acme", "amount": 10}))
        _ok(await Org.submit("registry.register_gateway", {"id": "gw1", "org": "acme", "key": gw.did}))
        _ok(await Org.submit("registry.register_device", {"id": "press-7", "org": "acme", "key": dev.did}))
        _ok(await Org.submit("tokens.allocate", {"from": "acme", "to": "gw1", "amount": 2}))

        async def anchor(batch_id: str, tree: MerkleTree) -> Receipt:
            return await G.submit("anchors.anchor", {"batch_id": batch_id, "root": tree.root(),
                                                     "tree_size": tree.size, "gateway": "gw1", "window": [0, 1]})

        before, tree1 = _batch(dev, gw, 1, 3)
        a1 = _ok(await anchor("b-1", tree1))
        revoke = _ok(await Org.submit("registry.revoke", {"id": "press-7", "reason": "stolen"}))
        after, tree2 = _batch(dev, gw, 4, 2)          # the device keeps signing with its old key
        a2 = _ok(await anchor("b-2", tree2))
        assert a1.height < revoke.height <= a2.height

        # token exhaustion: the gateway's allocation (2) paid for two anchors; the third is refused
        # at admission (issue 16: answered at once, never ordered)
        _, tree3 = _batch(dev, gw, 6, 1)
        with pytest.raises(TxRefused) as refused:
            await anchor("b-3", tree3)
        assert refused.value.code == "INSUFFICIENT_QUOTA"
        assert await G.get_anchor("b-3") is None

        async def verify(records: list[dict], tree: MerkleTree, batch_id: str, node: str) -> list[str | None]:
            """Each record verified as of its anchor's (height, index): None, or the failed step."""
            anc = await A.get_anchor(batch_id, node=node)
            h, i = anc["height"], anc["index"]
            gw_res = (await A.resolve_key(gw.did, h, i, node=node))["resolution"]
            out = []
            for k, rec in enumerate(records):
                ref = AnchorRef(batch_id, k, anc["tree_size"], bytes.fromhex(anc["root"]), h, i)
                res = (await A.resolve_key(rec["statement"].device, h, i, node=node))["resolution"]
                try:
                    key = check_device_key(rec["statement"].device, res["status"], res["key"])
                    check_record(rec["payload"], rec["statement"], rec["sig"], rec["receipt"], ref,
                                 tree.inclusion_proof(k, tree.size), device_key=key,
                                 gateway_key=check_device_key(gw.did, gw_res["status"], gw_res["key"]),
                                 root=bytes.fromhex(anc["root"]))
                    out.append(None)
                except DeviceKeyError as exc:
                    out.append(exc.step)
            return out

        wait_converged(c, c.names, min_height=a2.height)
        for node in c.names:
            assert await verify(before, tree1, "b-1", node) == [None, None, None]
            assert await verify(after, tree2, "b-2", node) == ["device-key"] * 2

        # the same answers from proven state: the device's and its org's records, proven against
        # light-client-verified headers, resolved locally as of each anchor's position
        proven = {}
        for key in (registry.ent_key("press-7"), registry.ent_key("acme")):
            value, _header = await A.verified_state(key)
            proven[key] = canonical.decode(value)
        r1 = registry.resolve(proven, "press-7", a1.height, a1.index)
        r2 = registry.resolve(proven, "press-7", a2.height, a2.index)
        assert (r1.status, r1.key) == ("active", dev.did)
        assert r2.status == "revoked" and r2.revoked == (revoke.height, revoke.index)
