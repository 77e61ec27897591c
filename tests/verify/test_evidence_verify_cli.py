"""`sealstream evidence verify` as a user runs it (a subprocess, no services): a trust anchor is
required, --insecure-unpinned says so, every bundle that does not read exits 2 with its reason
(never a traceback), and a zip bomb is refused with the process's memory bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "vectors" / "forgeries"
DOC = json.loads((CORPUS / "forgeries.json").read_text())
PIN = DOC["genesis_hash"]
_MEASURED = """
import resource, runpy, sys
sys.argv = ['sealstream'] + sys.argv[1:]
try:
    runpy.run_module('sealstream', run_name='__main__')
finally:
    sys.stderr.write('maxrss_kib=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _run(*args: str, env: dict | None = None) -> tuple[int, dict, str]:
    e = dict(os.environ, SEALSTREAM_HOME=str(ROOT / ".sealstream"), **(env or {}))
    p = subprocess.run([sys.executable, "-c", _MEASURED, "evidence", "verify", *args, "--json"], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout), p.stderr


def test_a_trust_anchor_is_required() -> None:
    code, doc, _ = _run(str(CORPUS / "honest_batch.zip"))
    assert code == 2 and doc["ok"] is False and doc["error_code"] == "no-trust-anchor"
    assert "--genesis-hash" in doc["error"]
    code, doc, _ = _run(str(CORPUS / "honest_batch.zip"), "--insecure-unpinned")
    assert code == 0 and doc["ok"] and doc["pinned"] is False and doc["genesis_pinned"] is False
    code, doc, _ = _run(str(CORPUS / "honest_batch.zip"), "--genesis-hash", PIN)
    assert code == 0 and doc["ok"] and doc["pinned"] is True
    assert doc["subject"]["kind"] == "batch" and doc["subject"]["leaves"] >= 1  # the subject as proven


@pytest.mark.parametrize("vector", [v for v in DOC["vectors"] if v["reason"]], ids=lambda v: v["file"])
def test_a_bundle_that_does_not_read_exits_2_with_its_reason(vector: dict) -> None:
    env = {f"SEALSTREAM_BUNDLE_{k.upper()}": str(v) for k, v in vector.get("limits", {}).items()}
    code, doc, err = _run(str(CORPUS / vector["file"]), "--genesis-hash", PIN, env=env)
    assert code == 2 and doc["error_code"] == "bundle" and doc["reason"] == vector["reason"], doc
    if vector["file"] == "zip_inflates_past_limit.zip":  # 64 MiB member refused before inflating
        rss_kib = int(err.rsplit("maxrss_kib=", 1)[1].split()[0])
        assert rss_kib < 48 * 1024 + _baseline_kib(), rss_kib


def _baseline_kib() -> int:
    p = subprocess.run([sys.executable, "-c", _MEASURED, "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    return int(p.stderr.rsplit("maxrss_kib=", 1)[1].split()[0])


def test_a_forgery_exits_1_and_states_nothing_as_proven() -> None:
    code, doc, _ = _run(str(CORPUS / "receipt_other_gateway.zip"), "--genesis-hash", PIN)
    assert code == 1 and doc["failed_step"] == "receipt-gateway" and doc["subject"] is None
    assert doc["claimed_subject"]["kind"] == "batch"
