"""The verifier on an air-gapped machine: with every service client made unimportable (as if
not installed), `verify` still reads and verifies an honest bundle, and refuses a forgery."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABSENT = ("psycopg", "psycopg_pool", "minio", "urllib3", "faust", "aiokafka", "confluent_kafka", "kafka",
          "aiohttp", "requests", "httpx", "adbc_driver_postgresql", "prometheus_client", "storage", "pipelines")

CODE = f"""
import importlib.abc, json, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {ABSENT!r}:
            raise ImportError('not installed on this machine: ' + name)
sys.meta_path.insert(0, Absent())
import verify
corpus = 'tests/vectors/forgeries/'
pin = bytes.fromhex(json.load(open(corpus + 'forgeries.json'))['genesis_hash'])
ok = verify.verify_bundle(corpus + 'honest_range.zip', trusted_genesis_hash=pin)
bad = verify.verify_bundle(corpus + 'row_reattributed.zip', trusted_genesis_hash=pin)
print(json.dumps({{"ok": ok.ok, "kind": (ok.proven or {{}}).get("kind"), "bad": bad.failed_step}}))
"""


def test_verify_runs_with_no_service_client_installed() -> None:
    p = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == '{"ok": true, "kind": "range", "bad": "row-device"}'
