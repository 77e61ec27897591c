"""The secret watch of the test run (tests/secret_scan.py) finds what it must: a check that can fail."""

from __future__ import annotations

import json
from pathlib import Path

from secret_scan import SecretScan

from infra.pki import StackPKI, client_spec
from sealstream._security import new_secret


def test_the_watch_finds_every_kind_of_secret_and_names_only_its_file(tmp_path: Path) -> None:
    password = new_secret(tmp_path, "pg_password")
    StackPKI(tmp_path, env={}).ensure([client_spec("pipeline")])
    pem = (tmp_path / "pki" / "client-pipeline.key").read_text()
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "gateway-0.key").write_text(json.dumps({"v": 1, "seed": "ab" * 32}))
    scan = SecretScan(tmp_path)
    scan.check("clean", "nothing to see: postgresql://writer:***@127.0.0.1/db")
    assert scan.findings == []
    scan.check("a DSN", f"postgresql://writer:{password}@127.0.0.1/db")
    scan.check("a PEM dump", pem)
    scan.check("a seed", b"seed=" + b"ab" * 32)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker.log").write_text(f"connecting with {password}\n")
    scan.check_files()
    origins = sorted({o for _, o in scan.findings})
    assert origins == ["gateway/gateway-0.key", "pki/client-pipeline.key", "secrets/pg_password"]
    assert password not in scan.report() and "ab" * 32 not in scan.report()
    assert any("worker.log" in where for where, _ in scan.findings)
