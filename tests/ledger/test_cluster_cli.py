"""`sealstream ledger init|up|status|submit|down` against real node processes."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cluster import LocalCluster, free_ports
from sealstream.cli import cli

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


def test_cli_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _free_base(8)
    monkeypatch.setenv("SEALSTREAM_HOME", str(tmp_path))
    monkeypatch.setenv("SEALSTREAM_LEDGER_BASE_PORT", str(base))
    monkeypatch.setenv("SEALSTREAM_LEDGER_BLOCK_TIME_MS", "20")
    run = CliRunner().invoke
    try:
        r = run(cli, ["ledger", "init", "--nodes", "4", "--sealers", "4", "--json"])
        assert r.exit_code == 0, r.output
        init = json.loads(r.output)
        assert [n["p2p_port"] for n in init["nodes"]] == [base, base + 2, base + 4, base + 6]
        keys = tmp_path / "ledger" / "keys"
        assert all((p.stat().st_mode & 0o777) == 0o600 for p in keys.iterdir())
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
        assert targets[0]["targets"] == [f"127.0.0.1:{base + 2 * i + 1}" for i in range(4)]

        r = run(cli, ["ledger", "submit", "kv.put", '{"key": "a", "value": 1}', "--json"])
        assert r.exit_code == 0, r.output
        receipt = json.loads(r.output)
        assert receipt["height"] >= 1 and receipt["result"] == {"ok": True} and receipt["confirmed_by"] >= 2
        r = run(cli, ["ledger", "submit", "kv.put", "not json"])
        assert r.exit_code == 1 and "not JSON" in r.output

        r = run(cli, ["ledger", "status", "--json"])
        assert r.exit_code == 0
        rows = json.loads(r.output)["nodes"]
        assert [n["role"] for n in rows].count("primary") == 1 and all(n["peers"] == "3/3" for n in rows)

        r = run(cli, ["ledger", "down", "--json"])
        assert r.exit_code == 0 and sorted(json.loads(r.output)["stopped"]) == [f"node{i}" for i in range(4)]

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
