"""Regenerate tests/vectors/evidence_bundle_v1.zip: a real evidence bundle (needs the stack).

    .venv/bin/python tests/vectors/generate_bundle.py

Starts a private 4-node contracts ledger (temporary directory, free ports) and
a throwaway PostgreSQL database, stores and anchors one batch (2 time series
of 12 rows, 1 image) of a registered device with `pipelines.anchor.Anchorer`,
exports the batch bundle, and prints the genesis hash the unit tests pin
(also written to evidence_bundle_v1.json).  tests/verify/test_bundle_unit.py
corrupts copies of it in memory.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (ROOT, ROOT / "tests" / "pipelines", ROOT / "tests" / "verify"):
    sys.path.insert(0, str(p))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from anchor_helpers import ledger_cluster  # noqa: E402
from verify.bundle import write_bundle  # noqa: E402
from sealstream.settings import load_settings  # noqa: E402
from storage import migrate, open_pool  # noqa: E402
from verify_helpers import Dataset  # noqa: E402


def main() -> None:
    s = load_settings()
    name = f"ss_vector_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(s.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(s.postgres_dsn, dbname=name)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = ledger_cluster(Path(tmp) / "ledger")
        try:
            migrate(dsn)
            pool = open_pool(dsn, max_size=2)
            d = Dataset(s, cluster, pool)
            _, key = d.device()
            batch, records = d.batch(key, n_ts=2, n_img=1, rows=12)
            ev = d.collector().batch(batch.batch_id)
            index = write_bundle(ev, HERE / "evidence_bundle_v1.zip")
            meta = {"genesis_hash": index["genesis_hash"], "batch_id": batch.batch_id,
                    "records": len(ev.records), "rows": ev.rows.num_rows}
            (HERE / "evidence_bundle_v1.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            print(json.dumps(meta))
            d.close()
            pool.close()
        finally:
            cluster.stop(timeout=5)
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
