"""Benchmark `sealstream verify range` in two dataset shapes, each beside its own baseline.

    .venv/bin/python bench/verify.py [--shape large|realistic|both] [--rows 1000000] [--repeats 3] [--json]
    .venv/bin/python bench/verify.py --shape realistic --rows 20000 --repeats 1     # a quick run
    .venv/bin/python bench/verify.py --shape realistic --profile /tmp/verify.prof    # + cProfile of verify

Shapes (each `--rows` readings of one device, over its whole window):

* ``large``: `--payloads` (10) signed Arrow payloads of rows/payloads readings
  each, one anchored batch: a shape no device produces, where the per-row
  work dominates.  Baseline: ``trust.merkle.root(leaf_hashes)`` over as many
  leaves as there are rows (as in bench/merkle.py); target >= 0.5 of it.
* ``realistic``: statements the size the simulator sends
  (`pipelines.devices.timeseries.timeseries_batch` with its defaults: 10
  readings per sensor, 4 sensors, 40 rows, ~1.5 KB; `--rows-per-statement`
  overrides), one per second of device time, anchored in batches of
  ``pipeline_anchor_max_leaves`` (512) as the pipeline cuts them.  Baseline:
  the Ed25519 bound for that many statements, 2 verifications per statement
  (the device signature and the gateway's receipt), timed in the same run
  with the verifier's own call (`trust.identity.verify_signature`, PyNaCl) on
  the dataset's own statements and receipts, one process (the verifier uses
  one core); target: verify range >= 0.5 of the bound.

Setup (not timed): a private 4-node contracts ledger (temporary directory,
free ports), a throwaway PostgreSQL database (migrated, dropped at the end),
one registered device per shape and one gateway.  Everything is correctly
signed and anchored: signed statements with gateway receipts, payloads
archived in MinIO, readings bulk-COPied straight into ``readings`` (the
writer's idempotent INSERT path is not what is measured), batches anchored by
`pipelines.anchor.Anchorer`.  The realistic shape at 1M rows is 25,000
statements: a few minutes of setup here (mostly MinIO PUTs and signing).

Measured, interleaved per repeat so machine load hits both alike: verify
range = `Collector.range` (readings COPY -> Arrow, statements, payloads from
MinIO, manifests, ANCHOR txs, state proofs, headers) + `chain.verify` (light
client from genesis, records, every row against its signed payload), split
into collect and verify; and the shape's baseline.  Prints medians, rows/s,
statements/s, the ratios (of verify range and of the pure verification alone)
and the machine's load average.  Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from trust import merkle  # noqa: E402

T0 = datetime(2032, 1, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ARROW = "application/vnd.apache.arrow.stream"
SENSORS = ["temperature", "vibration", "pressure", "current"]
SHAPES = ("large", "realistic")
_BOUND_SAMPLE = 2000  # statements whose 2 signatures are timed per repeat for the Ed25519 bound


def _ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def _payload(first_ms: int, rows: int, seed: int) -> tuple[bytes, pa.Table]:
    """An Arrow IPC payload of `rows` readings, 10 ms apart from `first_ms` (the large shape)."""
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


def simulator_rows_per_statement() -> int:
    """Rows of one simulator time-series statement (its generator's defaults)."""
    from pipelines.devices.timeseries import read_timeseries, timeseries_batch

    return read_timeseries(timeseries_batch(0, "probe", 0, _ms(T0))).num_rows


def _copy_readings(pool, device: str, parts: list[tuple[bytes, pa.Table]]) -> None:
    """Bulk COPY payloads' rows straight into ``readings`` (setup only), one transaction."""
    tables = []
    for statement_hash, table in parts:
        n = table.num_rows
        tables.append(pa.table({
            "time": table.column("ts").cast(pa.timestamp("us", tz="UTC")),
            "device": pa.array([device] * n),
            "sensor": table.column("sensor").cast(pa.string()),
            "value": table.column("value"),
            "statement_hash": pa.array(["\\x" + statement_hash.hex()] * n),
            "row_index": pa.array(range(n), pa.int32()),
        }))
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.concat_tables(tables), sink, pacsv.WriteOptions(include_header=False))
    with pool.connection() as conn, conn.transaction():
        with conn.cursor().copy("COPY readings (time, device, sensor, value, statement_hash, row_index) "
                                "FROM STDIN (FORMAT csv)") as cp:
            cp.write(memoryview(sink.getvalue()))


class _Env:
    """A started ledger, a migrated throwaway database, MinIO, one gateway; `close` undoes it."""

    def __init__(self, settings, tmp: Path) -> None:
        from infra.ledger_cluster import QUICK_PARAMS, LocalCluster

        self.settings = settings
        self.name = f"ss_bench_verify_{uuid.uuid4().hex[:8]}"
        self.admin_dsn = make_conninfo(settings.postgres_dsn, dbname="postgres")
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.dsn = make_conninfo(settings.postgres_dsn, dbname=self.name)
        self.cluster = self.pool = self.client = None
        try:
            self.cluster = LocalCluster(tmp / "ledger", n_nodes=4, n_sealers=4, params=QUICK_PARAMS, app="contracts")
            self.cluster.init()
            self.cluster.start(timeout=60)
            self._open()
        except BaseException:
            self.close()  # never leave node processes or a database behind a failed setup
            raise

    def _open(self) -> None:
        from pipelines._anchor_ledger import ensure_gateway
        from storage import migrate, open_pool
        from storage.blobs import BlobStore
        from storage.readers import Reader
        from storage.writers import Writer
        from trust.identity import KeyPair

        migrate(self.dsn)
        self.pool = open_pool(self.dsn, max_size=4)
        self.blobs = BlobStore.from_settings(self.settings)
        self.writer, self.reader = Writer(self.pool), Reader(self.pool)
        self.gw = KeyPair.generate()
        self.gw_name = f"gw-bench-{uuid.uuid4().hex[:6]}"
        with self.cluster.client(key=self.cluster.layout.admin_key()) as admin:
            ensure_gateway(admin, self.gw_name, self.gw.did, fund=100_000)
        self.client = self.cluster.client(key=self.gw)

    def device(self):
        from trust.identity import KeyPair

        dev = KeyPair.generate()
        with self.cluster.client(key=self.cluster.layout.admin_key()) as admin:
            r = admin.submit("registry.register_device", {"id": f"dev-{uuid.uuid4().hex[:8]}", "org": "operator",
                                                          "key": dev.did})
            assert r.refusal is None, r.refusal
        return dev

    def store(self, dev, items: list[tuple[int, int, bytes, pa.Table]], max_leaves: int) -> dict:
        """Sign, seal, archive, store and anchor `items` = (seq, ts_ms, payload, table); a summary."""
        from pipelines.anchor import Anchorer, SealedLeaf
        from storage import StatementRecord
        from storage.records import payload_copy
        from trust.hashes import StatementHash
        from trust.receipt import seal_receipt
        from trust.statement import Statement, sign_statement

        with ThreadPoolExecutor(4) as ex:  # PUTs overlap; nothing here is timed
            locs = list(ex.map(lambda it: self.blobs.put_raw(it[2], ARROW), items))
        records, sigs, days = [], [], set()
        now = datetime.now(timezone.utc)
        for (seq, ts_ms, data, table), loc in zip(items, locs):
            st = Statement.for_payload(dev.did, seq, ts_ms, "timeseries", ARROW, data)
            sig = sign_statement(st, dev)
            receipt = seal_receipt(st.hash(), loc, self.gw)
            # as the worker stores it: a small time series keeps its payload copy beside the statement
            records.append(StatementRecord(st, sig, receipt=receipt, sealed_at=now, payload=payload_copy(st, data)))
            if len(sigs) < _BOUND_SAMPLE:
                sigs.append((dev.did, st.signing_bytes(), sig, self.gw.did, receipt))
            t = table.column("ts").cast(pa.int64())
            for ms in (t[0].as_py(), t[len(t) - 1].as_py()):
                days.add((EPOCH + timedelta(milliseconds=ms)).date())
        for i in range(0, len(records), 5000):
            self.writer.write_statements(records[i:i + 5000])
        self.writer.ensure_partitions(sorted(days))
        for i in range(0, len(items), 2000):
            _copy_readings(self.pool, dev.did, [(r.hash, it[3]) for r, it in zip(records[i:i + 2000],
                                                                                   items[i:i + 2000])])
        anchorer = Anchorer(self.writer, self.reader, self.blobs, self.client, self.gw_name, max_leaves=max_leaves)
        anchorer.add(SealedLeaf(StatementHash(r.hash), r.statement.ts) for r in records)
        batches = []
        for _ in range(20):
            got = anchorer.anchor_pending()
            batches += got
            if not got:
                break
        anchored = sum(b.tree_size for b in batches if b.anchor_state == "anchored")
        if anchored != len(records):
            raise SystemExit(f"setup anchored {anchored} of {len(records)} statements")
        return {"statements": len(records), "batches": len(batches), "signatures": sigs}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.pool is not None:
            self.pool.close()
        if self.cluster is not None:
            self.cluster.stop(timeout=5)
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


def _dataset(env: _Env, shape: str, rows: int, payloads: int, rps: int, max_leaves: int, start: datetime) -> dict:
    """One shape's device and anchored data, from `start`; what the measurement needs."""
    dev = env.device()
    first_ms = _ms(start)
    items = []
    if shape == "large":
        per = rows // payloads
        for i in range(payloads):
            n = per if i < payloads - 1 else rows - per * (payloads - 1)
            first = first_ms + i * per * 10
            data, table = _payload(first, n, i)
            items.append((i, first + 10 * (n - 1), data, table))
        end = start + timedelta(milliseconds=10 * rows + 1000)
    else:
        from pipelines.devices.timeseries import read_timeseries, timeseries_batch

        name = f"bench-{uuid.uuid4().hex[:6]}"
        per_sensor, n = rps // len(SENSORS), rows // rps
        for i in range(n):  # one statement per second of device time, as a device at 1 Hz sends them
            ts = first_ms + i * 1000 + 900
            data = timeseries_batch(7, name, i, ts, rows_per_sensor=per_sensor)
            items.append((i, ts, data, read_timeseries(data)))
        end = start + timedelta(seconds=n + 2)
    info = env.store(dev, items, max_leaves)
    info.update(device=dev.did, start=start - timedelta(seconds=1), end=end,
                rows=sum(it[3].num_rows for it in items))
    return info


def _bound_seconds(sigs: list) -> float:
    """Seconds per statement of its two Ed25519 verifications (device signature, receipt), with the
    verifier's own call."""
    from trust.identity import verify_signature

    pairs = [(dev, msg, sig, gw, r.signed_bytes(), r.signature) for dev, msg, sig, gw, r in sigs]
    t = time.perf_counter()
    for dev, msg, sig, gw, rmsg, rsig in pairs:
        if not (verify_signature(dev, msg, sig) and verify_signature(gw, rmsg, rsig)):
            raise SystemExit("a bench signature does not verify")
    return (time.perf_counter() - t) / len(pairs)


def _profile_top(prof: cProfile.Profile, n: int = 18) -> list[dict]:
    st = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}:{fn}", "calls": nc, "tottime_s": round(tt, 4),
                     "cumtime_s": round(ct, 4)})
    return sorted(rows, key=lambda r: -r["tottime_s"])[:n]


def build_report(args: argparse.Namespace) -> dict:
    from verify import chain
    from pipelines.collect import Collector
    from sealstream.settings import load_settings
    from storage.verification import VerificationStore

    settings = load_settings()
    shapes = SHAPES if args.shape == "both" else (args.shape,)
    rps = args.rows_per_statement or simulator_rows_per_statement()
    max_leaves = args.max_leaves or settings.pipeline_anchor_max_leaves
    load_before = os.getloadavg()
    doc: dict = {"rows_requested": args.rows, "repeats": args.repeats, "shapes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        env = _Env(settings, Path(tmp))
        try:
            data = {}
            for k, shape in enumerate(shapes):
                t = time.perf_counter()
                data[shape] = _dataset(env, shape, args.rows, args.payloads, rps,
                                       10_000 if shape == "large" else max_leaves, T0 + timedelta(days=2 * k))
                data[shape]["setup_s"] = time.perf_counter() - t
            pin = env.cluster.layout.genesis().genesis_hash()
            leaf_hashes = None
            if "large" in shapes:
                n = data["large"]["rows"]
                leaf_hashes = merkle.leaf_hashes([hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)])
            samples = {s: {"verify": [], "collect": [], "check": [], "baseline": []} for s in shapes}
            sig_s: list[float] = []
            profiles = {}
            with env.cluster.client() as client:

                def one(shape: str, prof=None, prof_collect=None) -> None:
                    d = data[shape]
                    col = Collector(VerificationStore(env.pool), env.reader, env.blobs, client)
                    t = time.perf_counter()
                    if prof_collect is not None:
                        prof_collect.enable()
                    ev = col.range(d["device"], d["start"], d["end"])
                    if prof_collect is not None:
                        prof_collect.disable()
                    t1 = time.perf_counter()
                    if prof is not None:
                        prof.enable()
                    report = chain.verify(ev, trusted_genesis_hash=pin)
                    if prof is not None:
                        prof.disable()
                    t2 = time.perf_counter()
                    if not report.ok or report.counts["rows"] != d["rows"] \
                            or report.counts["records"] != d["statements"]:
                        raise SystemExit(f"verify range ({shape}) did not verify {d['rows']} rows: "
                                         f"{json.dumps(report.to_json())[:2000]}")
                    if prof is None:
                        samples[shape]["collect"].append(t1 - t)
                        samples[shape]["check"].append(t2 - t1)
                        samples[shape]["verify"].append(t2 - t)

                for _ in range(args.repeats):
                    for shape in shapes:
                        if shape == "large":
                            t = time.perf_counter()
                            merkle.root(leaf_hashes)
                            samples[shape]["baseline"].append(time.perf_counter() - t)
                        else:
                            per = _bound_seconds(data[shape]["signatures"])
                            sig_s.append(per)
                            samples[shape]["baseline"].append(per * data[shape]["statements"])
                        one(shape)
                if args.profile and "realistic" in shapes:
                    prof, prof_collect = cProfile.Profile(), cProfile.Profile()
                    one("realistic", prof, prof_collect)
                    prof.dump_stats(args.profile)
                    profiles["realistic_verify"] = _profile_top(prof)
                    profiles["realistic_collect"] = _profile_top(prof_collect, 12)
        finally:
            env.close()
    for shape in shapes:
        d, s = data[shape], samples[shape]
        med = {k: statistics.median(v) for k, v in s.items()}
        out = {
            "rows": d["rows"], "statements": d["statements"], "batches": d["batches"],
            "rows_per_statement": round(d["rows"] / d["statements"], 1),
            "verify_range_rows_per_s": round(d["rows"] / med["verify"]),
            "verify_range_statements_per_s": round(d["statements"] / med["verify"]),
            "verify_only_statements_per_s": round(d["statements"] / med["check"]),
            "median_seconds": {k: round(v, 4) for k, v in med.items()},
            "samples_seconds": {k: [round(x, 4) for x in v] for k, v in s.items()},
            "setup_seconds": round(d["setup_s"], 1),
        }
        if shape == "large":
            out["baseline"] = "merkle root over as many leaves as rows"
            out["merkle_root_leaves_per_s"] = round(d["rows"] / med["baseline"])
        else:
            out["baseline"] = "Ed25519 bound: 2 verifications per statement (trust.identity.verify_signature)"
            out["ed25519_verifications_per_s"] = round(2 * d["statements"] / med["baseline"])
            out["bound_statements_per_s"] = round(d["statements"] / med["baseline"])
            out["bound_rows_per_s"] = round(d["rows"] / med["baseline"])
        out["ratio"] = round(med["baseline"] / med["verify"], 3)
        out["ratio_verify_only"] = round(med["baseline"] / med["check"], 3)
        out["target"] = 0.5
        out["meets_target"] = out["ratio"] >= 0.5
        doc["shapes"][shape] = out
    doc["profile"] = profiles or None
    doc["loadavg_before"], doc["loadavg_after"] = list(load_before), list(os.getloadavg())
    return doc


def format_report(doc: dict) -> str:
    lines = []
    for shape, r in doc["shapes"].items():
        med = r["median_seconds"]
        lines.append(f"{shape}: {r['rows']:,} rows in {r['statements']:,} statements of ~{r['rows_per_statement']} "
                     f"rows, {r['batches']} batch(es) (median of {doc['repeats']}; setup {r['setup_seconds']:.0f} s, "
                     "not timed)")
        lines.append(f"  verify range        {r['verify_range_rows_per_s']:>12,} rows/s  "
                     f"{r['verify_range_statements_per_s']:>9,} statements/s  ({med['verify']:.3f} s: collect "
                     f"{med['collect']:.3f} s + verify {med['check']:.3f} s)")
        if shape == "large":
            lines.append(f"  merkle root         {r['merkle_root_leaves_per_s']:>12,} leaves/s "
                         f"({med['baseline']:.3f} s)")
        else:
            lines.append(f"  Ed25519 bound       {r['bound_rows_per_s']:>12,} rows/s  "
                         f"{r['bound_statements_per_s']:>9,} statements/s  "
                         f"({med['baseline']:.3f} s: {r['ed25519_verifications_per_s']:,} "
                         "verifications/s, 2 per statement, one process)")
        lines.append(f"  ratio               {r['ratio']:>12.2f}   (target >= 0.50: "
                     f"{'met' if r['meets_target'] else 'MISSED'}); verify alone {r['ratio_verify_only']:.2f}")
    if doc.get("profile"):
        lines.append("cProfile of chain.verify, realistic shape (top by own time):")
        for p in doc["profile"]["realistic_verify"]:
            lines.append(f"  {p['tottime_s']:>8.3f} s {p['cumtime_s']:>8.3f} s {p['calls']:>9,}  {p['function']}")
        lines.append("cProfile of Collector.range, realistic shape (its calling thread; top by own time):")
        for p in doc["profile"]["realistic_collect"]:
            lines.append(f"  {p['tottime_s']:>8.3f} s {p['cumtime_s']:>8.3f} s {p['calls']:>9,}  {p['function']}")
    lines.append(f"load average before/after: {doc['loadavg_before'][0]:.2f} / {doc['loadavg_after'][0]:.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=("large", "realistic", "both"), default="both")
    ap.add_argument("--rows", type=int, default=1_000_000, help="readings in each verified range")
    ap.add_argument("--payloads", type=int, default=10, help="large shape: signed Arrow payloads the rows come in")
    ap.add_argument("--rows-per-statement", type=int, default=0,
                    help="realistic shape: rows per statement, a multiple of 4 (default: the simulator's, 40)")
    ap.add_argument("--max-leaves", type=int, default=0,
                    help="realistic shape: statements per anchored batch (default: pipeline_anchor_max_leaves)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", metavar="PATH", help="also cProfile one verify range of the realistic shape "
                    "(chain.verify, saved to PATH, and the collection)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)
    if args.rows_per_statement % len(SENSORS):
        ap.error("--rows-per-statement must be a multiple of 4 (readings per sensor x 4 sensors)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc = build_report(args)
    print(json.dumps(doc, indent=2, default=str) if args.json else format_report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
