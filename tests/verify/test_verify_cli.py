"""`sealstream verify ...`, `evidence export|verify` and `export --verified` as a user runs them
(subprocesses on the real services); a bundle verifies with every service unreachable and
sockets disabled in the verifying process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from verify_helpers import T0

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


def _env(dataset, **extra: str) -> dict:
    env = dict(os.environ)
    env.update({"SEALSTREAM_PG_DSN": dataset.pool.conninfo, "SEALSTREAM_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def _cli(dataset, *args: str, env: dict | None = None) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "sealstream", *args, "--json"]
    p = subprocess.run(cmd, cwd=ROOT, env=env or _env(dataset), capture_output=True, text=True, timeout=120)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from {args}: {p.stdout!r} {p.stderr!r}") from None
    return p.returncode, doc


def test_verify_commands_exit_codes_and_steps(dataset, tmp_path) -> None:
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=1, rows=20)
    ledger = str(dataset.cluster.root)
    code, doc = _cli(dataset, "verify", "batch", batch.batch_id, "--ledger", ledger)
    assert code == 0 and doc["ok"] and doc["genesis_pinned"], doc
    img = records[-1]
    local = tmp_path / "img.jpg"
    local.write_bytes(img.payload)
    for args in (["blob", img.statement.payload_sha256.hex()], ["blob", str(local)],
                 ["row", "readings", f"{records[0].hash.hex()}:4"],
                 ["range", "--device", key.did, "--from", (T0 - timedelta(seconds=5)).isoformat(),
                  "--to", (T0 + timedelta(seconds=5)).isoformat()]):
        code, doc = _cli(dataset, "verify", *args, "--ledger", ledger)
        assert code == 0 and doc["ok"], (args, doc)
    # a local file that is not the signed payload (same name, other bytes) fails at payload-hash... it is not
    # even found by digest: nothing to verify (exit 2)
    local.write_bytes(img.payload + b"x")
    code, doc = _cli(dataset, "verify", "blob", str(local), "--ledger", ledger)
    assert code == 2 and not doc["ok"]
    # tamper a reading: exit 1, the step and the evidence named
    with dataset.pool.connection() as conn:
        conn.execute("UPDATE readings SET sensor = 'forged' WHERE statement_hash = %s AND row_index = 4",
                     (records[0].hash,))
    code, doc = _cli(dataset, "verify", "row", "readings", f"{records[0].hash.hex()}:4", "--ledger", ledger)
    assert code == 1 and doc["failed_step"] == "row-value", doc
    assert doc["failures"][0]["evidence"]["rows"][0]["stored"]["sensor"] == "forged"
    # a wrong trust anchor: the genesis step fails
    code, doc = _cli(dataset, "verify", "batch", batch.batch_id, "--ledger", ledger, "--genesis-hash", "00" * 32)
    assert code == 1 and doc["failed_step"] == "genesis", doc


_NO_NETWORK = """
import socket, sys
def _refuse(*a, **k):
    raise OSError("network disabled for this test")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
sys.argv = ["sealstream"] + sys.argv[1:]
from sealstream.cli import main
main()
"""


def test_bundle_export_then_verify_offline(dataset, tmp_path) -> None:
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=1, rows=20)
    ledger = str(dataset.cluster.root)
    out = tmp_path / "batch.zip"
    code, doc = _cli(dataset, "evidence", "export", "batch", batch.batch_id, "-o", str(out), "--ledger", ledger)
    assert code == 0 and doc["records"] == 3 and doc["rows"] == 40, doc
    genesis_hash = doc["genesis_hash"]
    closed = _env(dataset, SEALSTREAM_PG_DSN="postgresql://x:y@127.0.0.1:1/none", SEALSTREAM_MINIO_PORT="1",
                  SEALSTREAM_KAFKA_PORT="1", SEALSTREAM_LEDGER_BASE_PORT="2", SEALSTREAM_HOME=str(tmp_path / "empty"))
    cmd = [sys.executable, "-c", _NO_NETWORK, "evidence", "verify", str(out), "--genesis-hash", genesis_hash, "--json"]
    p = subprocess.run(cmd, cwd=ROOT, env=closed, capture_output=True, text=True, timeout=120)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["ok"] and doc["counts"]["rows"] == 40, (doc, p.stderr)
    # the same bundle against another trust anchor fails at genesis, still offline
    cmd[-3] = "--genesis-hash"
    cmd[-2] = "11" * 32
    p = subprocess.run(cmd, cwd=ROOT, env=closed, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and json.loads(p.stdout)["failed_step"] == "genesis"
    # other subjects export too
    for args in (["blob", records[-1].statement.payload_sha256.hex()],
                 ["row", "readings", f"{records[0].hash.hex()}:3"],
                 ["range", "--device", key.did, "--from", (T0 - timedelta(seconds=5)).isoformat(),
                  "--to", (T0 + timedelta(seconds=5)).isoformat()]):
        path = tmp_path / f"{args[0]}.zip"
        code, doc = _cli(dataset, "evidence", "export", *args, "-o", str(path), "--ledger", ledger)
        assert code == 0, doc
        code, doc = _cli(dataset, "evidence", "verify", str(path), "--genesis-hash", genesis_hash, env=closed)
        assert code == 0 and doc["ok"], (args, doc)
