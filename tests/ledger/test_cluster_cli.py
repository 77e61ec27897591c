"""`sealstream ledger init|up|status|submit|registry|anchor|down` against real node processes
(the default contracts app: submit --as, {"$hex": ...} payloads, lookups)."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.process import free_ports

from infra.ledger_cluster import LocalCluster
from sealstream.cli import cli
from trust.identity import KeyPair, save_keypair

pytestmark = pytest.mark.timeout(120)


def _free_base(n_ports: int) -> int:
    for _ in range(100):
        base = random.randrange(20_000, 60_000, 2)
        ok = True
        for p in range(base, base + n_ports):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


@pytest.mark.services  # `ledger up`: node processes
def test_cli_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _free_base(16)
    monkeypatch.setenv("SEALSTREAM_HOME", str(tmp_path))
    monkeypatch.setenv("SEALSTREAM_LEDGER_BASE_PORT", str(base))
    monkeypatch.setenv("SEALSTREAM_LEDGER_BLOCK_TIME_MS", "20")
    run = CliRunner().invoke
    try:
        r = run(cli, ["ledger", "init", "--nodes", "4", "--sealers", "4", "--json"])
        assert r.exit_code == 0, r.output
        init = json.loads(r.output)
        assert [n["p2p_port"] for n in init["nodes"]] == [base, base + 2, base + 4, base + 6]
        assert [n["client_port"] for n in init["nodes"]] == [base + 8, base + 9, base + 10, base + 11]
        assert [n["metrics_port"] for n in init["nodes"]] == [base + 12, base + 13, base + 14, base + 15]
        assert {n["metrics_host"] for n in init["nodes"]} == {"127.0.0.1"}
        assert init["tls"] is True
        home = tmp_path / "ledger"
        # one directory per node with only its own key; the admin and client keys apart; 0600 / 0700
        key_files = sorted(p.relative_to(home).as_posix() for p in home.rglob("*.key"))
        assert key_files == ["admin/admin.key", "client/client.key"] + [f"nodes/node{i}/node.key" for i in range(4)]
        assert all((home / k).stat().st_mode & 0o777 == 0o600 for k in key_files)
        assert all((home / k).parent.stat().st_mode & 0o777 == 0o700 for k in key_files)
        assert not (home / "keys").exists() and not list(home.rglob("*.tmp"))
        keys = home / "admin"
        r = run(cli, ["ledger", "init"])
        assert r.exit_code == 1 and "--force" in r.output

        r = run(cli, ["ledger", "status", "--json"])
        assert r.exit_code == 3 and {n["state"] for n in json.loads(r.output)["nodes"]} == {"stopped"}
        r = run(cli, ["ledger", "up", "--json"])
        assert r.exit_code == 0, r.output
        up = json.loads(r.output)
        assert {n["state"] for n in up["nodes"]} == {"running"}
        targets = json.loads(Path(up["prometheus_targets"]).read_text())
        assert targets[0]["labels"]["job"] == "sealstream-ledger"
        # Prometheus scrapes the plain-HTTP metrics ports; the API is HTTPS pinned to the genesis keys
        assert targets[0]["targets"] == [f"127.0.0.1:{base + 12 + i}" for i in range(4)]
        assert all(n["http"].startswith("https://") and n["metrics"] for n in up["nodes"])

        assert init["app"] == "contracts" and init["admin"].startswith("did:key:")
        assert (tmp_path / "ledger" / "contracts.json").exists()
        org_key, gw_key = KeyPair.generate(), KeyPair.generate()
        save_keypair(tmp_path / "acme.key", org_key)
        save_keypair(tmp_path / "gw.key", gw_key)

        def submit(*args: str) -> tuple[int, dict]:
            r = run(cli, ["ledger", "submit", *args, "--json"])
            return r.exit_code, json.loads(r.stdout)

        code, receipt = submit("--as", "admin", "registry.register_org",
                               json.dumps({"id": "acme", "name": "ACME", "admin": org_key.did}))
        assert code == 0, receipt
        assert receipt["height"] >= 1 and receipt["result"]["ok"] is True and receipt["confirmed_by"] >= 2
        assert receipt["submitter"] == init["admin"]
        assert submit("--as", "admin", "tokens.mint", '{"account": "acme", "amount": 10}')[0] == 0
        code, receipt = submit("--as", str(tmp_path / "acme.key"), "registry.register_gateway",
                               json.dumps({"id": "gw1", "org": "acme", "key": gw_key.did}))
        assert code == 0 and receipt["result"] == {"ok": True, "id": "gw1", "type": "gateway", "charged": 1}, receipt
        assert submit("--as", "admin", "tokens.mint", '{"account": "gw1", "amount": 5}')[0] == 0
        root = "ab" * 32
        anchor = json.dumps({"batch_id": "b-1", "root": {"$hex": root}, "tree_size": 2, "gateway": "gw1",
                             "window": [0, 1000]})
        code, anchored = submit("--as", str(tmp_path / "gw.key"), "anchors.anchor", anchor)
        assert code == 0 and anchored["result"]["batch_id"] == "b-1", anchored
        # refusals exit 1 with the code; the client key is not in the registry
        code, dup = submit("--as", str(tmp_path / "gw.key"), "anchors.anchor", anchor)
        assert code == 1 and dup["error"] == "DUPLICATE_BATCH" and dup["receipt"]["height"] > anchored["height"]
        r = run(cli, ["ledger", "submit", "registry.revoke", '{"id": "gw1"}'])
        assert r.exit_code == 1 and "--as admin" in r.output
        r = run(cli, ["ledger", "submit", "kv.put", "not json"])
        assert r.exit_code == 1 and "not JSON" in r.output
        r = run(cli, ["ledger", "submit", "anchors.anchor", '{"root": {"$hex": "xyz"}}'])
        assert r.exit_code == 1 and "not hex" in r.output
        r = run(cli, ["ledger", "submit", "--as", str(tmp_path / "nope.key"), "kv.put", "{}"])
        assert r.exit_code == 1 and "--as" in r.output

        r = run(cli, ["ledger", "anchor", "b-1", "--json"])
        assert r.exit_code == 0, r.output
        got = json.loads(r.output)
        assert got["root"] == root and (got["height"], got["index"]) == (anchored["height"], anchored["index"])
        r = run(cli, ["ledger", "anchor", "b-1"])
        assert r.exit_code == 0 and f"height {anchored['height']}" in r.output
        r = run(cli, ["ledger", "registry", "gw1", "--json"])
        assert r.exit_code == 0
        assert json.loads(r.output)["resolution"]["key"] == gw_key.did
        r = run(cli, ["ledger", "registry", "gw1", "--height", "0"])
        assert r.exit_code == 0 and "unregistered" in r.output
        r = run(cli, ["ledger", "registry", "node0"])
        assert r.exit_code == 0 and "active" in r.output
        for args in (["registry", "nobody"], ["anchor", "nothing"]):
            r = run(cli, ["ledger", *args])
            assert r.exit_code == 1 and "on any node" in r.output

        r = run(cli, ["ledger", "status", "--json"])
        assert r.exit_code == 0
        rows = json.loads(r.output)["nodes"]
        assert [n["role"] for n in rows].count("primary") == 1 and all(n["peers"] == "3/3" for n in rows)

        r = run(cli, ["ledger", "down", "--json"])
        assert r.exit_code == 0 and sorted(json.loads(r.output)["stopped"]) == [f"node{i}" for i in range(4)]

        # a key/value ledger instead (what the benchmark runs)
        r = run(cli, ["ledger", "init", "--app", "kv", "--force", "--json"])
        assert r.exit_code == 0, r.output
        kv = json.loads(r.output)
        assert kv["app"] == "kv" and kv["admin"] is None and kv["genesis_hash"] != init["genesis_hash"]
        assert not (tmp_path / "ledger" / "contracts.json").exists() and not (keys / "admin.key").exists()

        # a taken port: one sentence naming the setting
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", base + 3))
            s.listen()
            r = run(cli, ["ledger", "up"])
        assert r.exit_code == 1
        assert f"Port {base + 3}" in r.output and "SEALSTREAM_LEDGER_BASE_PORT" in r.output
    finally:
        LocalCluster(tmp_path / "ledger").stop(timeout=5)


def test_free_ports_are_distinct() -> None:
    ports = free_ports(10)
    assert len(set(ports)) == 10
