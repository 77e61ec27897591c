"""Benchmark `sealstream verify range` (rows/s) beside the Merkle root-building rate.

    .venv/bin/python bench/verify.py [--rows 1000000] [--payloads 10] [--repeats 3] [--json]

Setup (not timed, ~30 s for a million rows): a private 4-node contracts
ledger (temporary directory, free ports), a throwaway PostgreSQL database
(migrated, dropped at the end), one registered device and gateway.  The
dataset is synthetic but correctly signed and anchored: `--payloads` Arrow
payloads of rows/payloads readings each, signed statements with gateway
receipts, payloads archived in MinIO, readings bulk-COPied straight into
``readings`` (the writer's idempotent INSERT path is not what is measured),
one batch anchored by `pipelines.anchor.Anchorer`.

Measured, interleaved per repeat so machine load hits both alike:

* verify range: `Collector.range` (readings COPY -> Arrow, statements,
  payloads from MinIO, manifest, ANCHOR tx, state proofs, headers) plus
  `chain.verify` (light client from genesis, records, every row against its
  signed payload) over the device's whole window;
* baseline, as in bench/merkle.py: ``trust.merkle.root(leaf_hashes)`` over
  as many leaves as there are rows.

Prints medians, the ratio (target: verify range >= 50% of the root-building
rate) and where verify's time goes (collect vs pure verification).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests" / "pipelines"):
    sys.path.insert(0, str(_p))

import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from trust import merkle  # noqa: E402

T0 = datetime(2032, 1, 1, tzinfo=timezone.utc)
ARROW = "application/vnd.apache.arrow.stream"
SENSORS = ["temperature", "vibration", "pressure", "current"]


def _payload(first_ms: int, rows: int, seed: int) -> tuple[bytes, pa.Table]:
    """An Arrow IPC payload of `rows` readings, 10 ms apart from `first_ms`."""
    import random

    rng = random.Random(seed)
    ts = pa.array(range(first_ms, first_ms + 10 * rows, 10), pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    sensor = pa.DictionaryArray.from_arrays(pa.array([i % 4 for i in range(rows)], pa.int8()), pa.array(SENSORS))
    values = pa.array([rng.gauss(20.0, 2.0) for _ in range(rows)], pa.float64())
    table = pa.table({"ts": ts, "sensor": sensor, "value": values})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes(), table


def _copy_readings(pool, device: str, statement_hash: bytes, table: pa.Table) -> None:
    """Bulk COPY one payload's rows straight into ``readings`` (setup only)."""
    n = table.num_rows
    csv_table = pa.table({
        "time": table.column("ts").cast(pa.timestamp("us", tz="UTC")),
        "device": pa.array([device] * n),
        "sensor": table.column("sensor").cast(pa.string()),
        "value": table.column("value"),
        "statement_hash": pa.array(["\\x" + statement_hash.hex()] * n),
        "row_index": pa.array(range(n), pa.int32()),
    })
    sink = pa.BufferOutputStream()
    pacsv.write_csv(csv_table, sink, pacsv.WriteOptions(include_header=False))
    with pool.connection() as conn, conn.transaction():
        with conn.cursor().copy("COPY readings (time, device, sensor, value, statement_hash, row_index) "
                                "FROM STDIN (FORMAT csv)") as cp:
            cp.write(memoryview(sink.getvalue()))


def _setup(settings, rows: int, payloads: int, tmp: Path):
    """A started ledger, a migrated database and the anchored dataset; stopped/dropped on failure."""
    from anchor_helpers import ledger_cluster

    name = f"ss_bench_verify_{uuid.uuid4().hex[:8]}"
    admin_dsn = make_conninfo(settings.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(settings.postgres_dsn, dbname=name)
    cluster = ledger_cluster(tmp / "ledger")
    try:
        return _fill(settings, rows, payloads, cluster, dsn, admin_dsn, name)
    except BaseException:
        cluster.stop(timeout=5)  # never leave node processes behind a failed setup
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        raise


def _fill(settings, rows: int, payloads: int, cluster, dsn: str, admin_dsn: str, name: str):
    from anchor_helpers import admin_client, register_gateway
    from pipelines.anchor import Anchorer
    from storage import StatementRecord, migrate, open_pool
    from storage.blobs import BlobStore
    from storage.readers import Reader
    from storage.writers import Writer
    from trust.identity import KeyPair
    from trust.receipt import seal_receipt
    from trust.statement import Statement, sign_statement

    migrate(dsn)
    pool = open_pool(dsn, max_size=4)
    blobs = BlobStore.from_settings(settings)
    writer, reader = Writer(pool), Reader(pool)
    dev, gw = KeyPair.generate(), KeyPair.generate()
    gw_name = f"gw-bench-{uuid.uuid4().hex[:6]}"
    with admin_client(cluster) as admin:
        r = admin.submit("registry.register_device", {"id": f"dev-{uuid.uuid4().hex[:8]}", "org": "operator",
                                                      "key": dev.did})
        assert r.refusal is None, r.refusal
    register_gateway(cluster, gw_name, gw)
    per = rows // payloads
    t0_ms = (T0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    days = set()
    records, hashes = [], []
    for i in range(payloads):
        n = per if i < payloads - 1 else rows - per * (payloads - 1)
        first = t0_ms + i * per * 10
        data, table = _payload(first, n, i)
        st = Statement.for_payload(dev.did, i, first + 10 * (n - 1), "timeseries", ARROW, data)
        loc = blobs.put_raw(data, ARROW)
        records.append(StatementRecord(st, sign_statement(st, dev), receipt=seal_receipt(st.hash(), loc, gw),
                                       sealed_at=datetime.now(timezone.utc)))
        hashes.append(st.hash())
        for ms in (first, first + 10 * (n - 1)):
            days.add((datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).date())
        writer.write_statements([records[-1]])
        writer.ensure_partitions(sorted(days))
        _copy_readings(pool, dev.did, st.hash(), table)
    client = cluster.client(key=gw)
    anchorer = Anchorer(writer, reader, blobs, client, gw_name, max_leaves=10_000)
    (batch,) = anchorer.anchor_statements(hashes)
    end = T0 + timedelta(milliseconds=10 * rows + 1000)

    def cleanup() -> None:
        client.close()
        pool.close()
        cluster.stop(timeout=5)
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    return cluster, pool, blobs, reader, dev.did, end, batch, cleanup


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="readings in the verified range")
    ap.add_argument("--payloads", type=int, default=10, help="signed Arrow payloads they come in")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)

    from verify import chain
    from pipelines.collect import Collector
    from sealstream.settings import load_settings
    from storage.verification import VerificationStore

    settings = load_settings()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cluster, pool, blobs, reader, device, end, batch, cleanup = _setup(settings, args.rows, args.payloads,
                                                                           Path(tmp))
        setup_s = time.perf_counter() - started
        try:
            pin = cluster.layout.genesis().genesis_hash()
            entries = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(args.rows)]
            leaf_hashes = merkle.leaf_hashes(entries)
            samples: dict[str, list[float]] = {"verify": [], "collect": [], "check": [], "merkle": []}
            with cluster.client() as client:
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    merkle.root(leaf_hashes)
                    samples["merkle"].append(time.perf_counter() - t)
                    col = Collector(VerificationStore(pool), reader, blobs, client)
                    t = time.perf_counter()
                    ev = col.range(device, T0 - timedelta(seconds=1), end)
                    t1 = time.perf_counter()
                    report = chain.verify(ev, trusted_genesis_hash=pin)
                    t2 = time.perf_counter()
                    if not report.ok or report.counts["rows"] != args.rows:
                        raise SystemExit(f"verify range did not verify {args.rows} rows: {report.to_json()}")
                    samples["collect"].append(t1 - t)
                    samples["check"].append(t2 - t1)
                    samples["verify"].append(t2 - t)
        finally:
            cleanup()
    med = {k: statistics.median(v) for k, v in samples.items()}
    verify_rate = args.rows / med["verify"]
    merkle_rate = args.rows / med["merkle"]
    ratio = verify_rate / merkle_rate
    doc = {
        "rows": args.rows, "payloads": args.payloads, "repeats": args.repeats,
        "verify_range_rows_per_s": round(verify_rate), "merkle_root_leaves_per_s": round(merkle_rate),
        "ratio": round(ratio, 3), "target": 0.5, "meets_target": ratio >= 0.5,
        "median_seconds": {k: round(v, 4) for k, v in med.items()},
        "samples_seconds": {k: [round(x, 4) for x in v] for k, v in samples.items()},
        "setup_seconds": round(setup_s, 1), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"verify range over {args.rows:,} rows in {args.payloads} signed payloads "
              f"(median of {args.repeats}; setup {setup_s:.0f} s, not timed)")
        print(f"  verify range          {verify_rate:>12,.0f} rows/s   ({med['verify']:.3f} s: collect "
              f"{med['collect']:.3f} s + verify {med['check']:.3f} s)")
        print(f"  merkle root (baseline){merkle_rate:>12,.0f} leaves/s ({med['merkle']:.3f} s)")
        print(f"  ratio                 {ratio:>12.2f}   (target >= 0.50: {'met' if ratio >= 0.5 else 'MISSED'})")
        print(f"  load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
