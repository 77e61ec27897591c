"""audit on a real 4-node cluster over TCP: rules deployed and events raised
identically on every node, org isolation as committed refusals, `/events`
followed with proofs and across a node stop (no gap, no repeat), a node stopped
while a follower streams from it ends the stream promptly, and the CLI
(`ledger events`, `ledger audit rules|rule`, `ledger tokens balance|history|mint|allocate|fees`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.client import AsyncLedgerClient, Receipt
from infra.ledger_cluster import LocalCluster
from ledger.events import AuditEvent, Tip
from sealstream.cli import cli
from trust.identity import KeyPair, save_keypair

from cluster_checks import wait_converged

pytestmark = pytest.mark.timeout(180)


def _ok(r: Receipt) -> dict:
    assert r.refusal is None, r.result
    return r.result


def _events(c: LocalCluster, node: str, query: str = "") -> list[dict]:
    status, body = c.http_get(node, "/events" + query)
    assert status == 200
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert lines[-1]["type"] == "end"
    return lines


def test_audit_on_four_nodes(make_cluster: Callable[..., LocalCluster], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    c = make_cluster(4, 4, app="contracts")
    (tmp_path / "ledger").symlink_to(c.root)  # the CLI reads $SEALSTREAM_HOME/ledger
    _scenario(c, tmp_path, monkeypatch)


def _scenario(c: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = c.layout.admin_key()
    acme_admin, beta_admin, gw = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    out: dict = {}

    async def setup() -> None:
        def client(key: KeyPair) -> AsyncLedgerClient:
            return AsyncLedgerClient.from_layout(c.root, key=key)

        async with client(admin) as A, client(acme_admin) as acme, client(beta_admin) as beta, client(gw) as G:
            for org, k in (("acme", acme_admin), ("beta", beta_admin)):
                _ok(await A.submit("registry.register_org", {"id": org, "name": org.upper(), "admin": k.did}))
                _ok(await A.submit("tokens.mint", {"account": org, "amount": 50}))
            _ok(await acme.submit("registry.register_gateway", {"id": "gw1", "org": "acme", "key": gw.did}))
            _ok(await acme.submit("tokens.allocate", {"from": "acme", "to": "gw1", "amount": 20}))
            _ok(await acme.submit("audit.deploy_rule", {"id": "sp", "org": "acme", "kind": "range",
                                                        "param": "setpoint", "min": 0, "max": 100}))
            _ok(await A.submit("audit.deploy_rule", {"id": "logins", "org": "*", "kind": "rate", "max": 1,
                                                     "match": {"op": "login"}, "severity": "critical"}))
            # org isolation: beta's admin can neither deploy in acme, nor retire or redefine acme's rule
            for kind, p in (("audit.deploy_rule", {"id": "b", "org": "acme", "kind": "rate", "max": 1}),
                            ("audit.retire_rule", {"id": "sp"}),
                            ("audit.deploy_rule", {"id": "sp", "org": "beta", "kind": "rate", "max": 1}),
                            ("audit.deploy_rule", {"id": "x", "org": "*", "kind": "rate", "max": 1})):
                r = await beta.submit(kind, p)
                assert r.refusal is not None and r.refusal[0] == "FORBIDDEN", r.result
            # beta's admin may not record acme's operations either
            r = await beta.submit("audit.record", {"org": "acme", "operator": "x", "system": "s", "op": "login"})
            assert r.refusal[0] == "FORBIDDEN"
            res = await asyncio.gather(*(G.submit("audit.record", {
                "org": "acme", "operator": f"op{i}", "system": "oven", "op": "config",
                "params": {"setpoint": 50 + 40 * i}}) for i in range(3)))
            assert sorted(len(_ok(r)["events"]) for r in res) == [0, 0, 1]          # 130 is out of range
            out["first"] = [_ok(await G.submit("audit.record", {"org": "acme", "operator": "eve", "system": "hmi",
                                                                "op": "login"})) for _ in range(2)]

            # follow with proofs: new events arrive verified, and the stream survives node0 stopping
            got: list = []

            async def follow() -> None:
                async for item in A.events(0, follow=True, verify=True, tips=True, retry_s=0.2):
                    got.append(item)
                    if isinstance(item, AuditEvent) and item.seq == 5:
                        return

            task = asyncio.create_task(follow())
            await _until(lambda: any(isinstance(x, Tip) and x.verified for x in got))
            _ok(await G.submit("audit.record", {"org": "acme", "operator": "eve", "system": "hmi", "op": "login"}))
            await _until(lambda: any(isinstance(x, AuditEvent) and x.seq == 2 for x in got))
            c.stop(["node0"], timeout=5)   # the node the stream reads from
            for _ in range(3):
                _ok(await G.submit("audit.record", {"org": "acme", "operator": "eve", "system": "hmi", "op": "login"}))
            await asyncio.wait_for(task, 30)
            out["followed"] = got

    asyncio.run(setup())
    c.start(["node0"], timeout=30)
    assert [len(r["events"]) for r in out["first"]] == [0, 1]
    evs = [x for x in out["followed"] if isinstance(x, AuditEvent)]
    assert [e.seq for e in evs] == list(range(6)), "no gap and no repeat across the node change"
    assert all(e.verified_at is not None and e.verified_at >= e.height for e in evs)
    assert [e.rule for e in evs] == ["sp"] + ["logins"] * 5
    assert evs[1].severity == "critical" and evs[1].rule_org == "*" and evs[1].org == "acme"

    # every running node serves the same events and rules
    live = c.names[1:]
    lines = _events(c, live[0])
    assert [x["seq"] for x in lines[:-1]] == list(range(6))
    for n in live[1:]:
        assert _events(c, n)[:-1] == lines[:-1]
    h3 = lines[3]["height"]
    assert [x["seq"] for x in _events(c, live[1], f"?from_height={h3}")[:-1]] == [e.seq for e in evs if e.height >= h3]
    assert [x["seq"] for x in _events(c, live[2], "?after=4")[:-1]] == [5]
    rules = [json.loads(c.http_get(n, "/audit/rules")[1])["rules"] for n in live]
    assert rules[0] == rules[1] == rules[2] and [r["id"] for r in rules[0]] == ["logins", "sp"]
    st, body = c.http_get(live[0], "/audit/rules/sp")
    assert st == 200 and json.loads(body)["versions"][0]["max"] == 100
    assert c.http_get(live[0], "/audit/rules/nope")[0] == 404

    # a node stopped while a follower streams from it stops promptly (the stream ends, no 60 s wait)
    _follower_does_not_block_shutdown(c, live[0])

    # the CLI, from $SEALSTREAM_HOME/ledger (lookups read the first node that answers: let the restarted catch up)
    wait_converged(c, c.names)
    monkeypatch.setenv("SEALSTREAM_HOME", str(tmp_path))
    run = CliRunner().invoke
    r = run(cli, ["ledger", "events", "--json", "--node", live[1]])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["seq"] for x in r.stdout.splitlines()] == list(range(6))
    r = run(cli, ["ledger", "events", "--after", "3", "--verify", "--node", live[1]])
    assert r.exit_code == 0, r.output
    assert "proven at" in r.stdout and "logins" in r.stdout and r.stdout.count("seq ") == 2
    r = run(cli, ["ledger", "audit", "rules", "--org", "acme", "--json"])
    assert r.exit_code == 0 and [x["id"] for x in json.loads(r.stdout)["rules"]] == ["sp"]
    r = run(cli, ["ledger", "audit", "rule", "logins"])
    assert r.exit_code == 0 and "v1 deployed" in r.stdout
    assert run(cli, ["ledger", "audit", "rule", "nope"]).exit_code == 1
    r = run(cli, ["ledger", "tokens", "balance", "gw1", "--json"])
    assert r.exit_code == 0, r.output
    bal = json.loads(r.stdout)
    assert bal["balance"] == 20 - 9 and bal["charges"] == 9             # 9 recorded operations, 1 token each
    r = run(cli, ["ledger", "tokens", "history", "gw1", "--limit", "5", "--json"])
    hist = json.loads(r.stdout)
    assert [e["kind"] for e in hist["consumption"]] == ["audit.record"] * 5 and hist["next"] == 4
    assert hist["consumption"][0]["submitter"] == gw.did
    save_keypair(tmp_path / "acme.key", acme_admin)
    assert run(cli, ["ledger", "tokens", "mint", "gw1", "5", "--json"]).exit_code == 0
    r = run(cli, ["ledger", "tokens", "allocate", "acme", "gw1", "2", "--as", str(tmp_path / "acme.key"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["result"]["balance"] == 11 + 5 + 2
    r = run(cli, ["ledger", "tokens", "allocate", "acme", "gw1", "1000", "--as", str(tmp_path / "acme.key"),
                  "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"] == "INSUFFICIENT_BALANCE"
    r = run(cli, ["ledger", "tokens", "mint", "gw1", "5", "--as", str(tmp_path / "acme.key"), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"] == "FORBIDDEN"
    r = run(cli, ["ledger", "tokens", "fees", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["fees"]["*"] == 1


def _follower_does_not_block_shutdown(c: LocalCluster, node: str) -> None:
    import http.client

    a = next(x for x in c.addresses() if x.name == node)
    ctx = c.pins().context(a)  # HTTPS pinned to the node's genesis key
    assert ctx is not None
    conn = http.client.HTTPSConnection(a.host, a.http_port, timeout=30, context=ctx)
    conn.request("GET", "/events?follow=1")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.readline())["type"] == "event"
    # SIGTERM, SIGKILL after 20 s: aiohttp alone would wait 60 s for the handler, so be killed mid-stream
    c.stop([node], timeout=20)
    assert c.pid(node) is None
    rest = resp.read()     # a clean end of the chunked body: the handler finished (IncompleteRead otherwise)
    conn.close()
    assert all(json.loads(x)["type"] in ("event", "tip") for x in rest.splitlines())
    c.start([node], timeout=30)


async def _until(cond, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
