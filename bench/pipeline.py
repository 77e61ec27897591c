"""Benchmark the trusted pipeline against an untrusted baseline on the same load, in one run.

    .venv/bin/python bench/pipeline.py [--devices 2] [--messages 300] [--repeats 3]
                                       [--latency-seconds 8] [--latency-rate 1]
                                       [--metrics on|off] [--profile] [--json]
    .venv/bin/python bench/pipeline.py --confidential [--recipients 1] [--device-rounds 5] ...
                                       [--security on|off|both]

Kafka: by default a private broker (the project's infra.Kafka on free ports in
the benchmark's home), so a drained range holds only the benchmark's records
and the trusted worker never dead-letters other runs' records on the shared
topics (--kafka shared uses the stack's broker). PostgreSQL and MinIO are the
stack's (throwaway databases and buckets).

Throughput (drain): a fresh factory's fixed, bounded message set (the
simulator, all three kinds, no faults) is preloaded into the raw topics once;
then each consumer drains exactly that range from a fresh consumer group
pinned at its start, into its own throwaway PostgreSQL database and MinIO
bucket:
  * trusted: `sealstream pipeline worker` (checks, hashing, MinIO archive,
    statements/readings/blobs, gateway seal to iiot.sealed, and with --anchor,
    the default, its anchor agent: batches anchored on a 4-node contracts ledger
    the benchmark starts in its home, gateway registered and funded);
  * baseline: bench/_pipeline_baseline.py, the same aiokafka -> MinIO ->
    PostgreSQL COPY path with no signature check, hashing, sealing or anchoring.
A drain's rate counts from the first record done to the last (the records done
after the first one's batch -- more than FIRST_BATCH_MS after it -- over that
span), so process start-up, group join and the first batch are not timed: trusted
"done" = the seal's Kafka timestamp (produced after every write), baseline
"done" = clock time at the end of its transaction. Repeats alternate which
consumer goes first; medians are quoted, with the ratio trusted/baseline
(target >= 0.8).

With anchoring the trusted drain also reports the rate from the first record
done to the last statement's batch anchored (``batches.anchored_at``).

Latency (live): each consumer runs while the simulator produces at a paced
rate well under capacity; device-to-stored = done time - the statement's
device timestamp, device-to-anchored = its batch's ``anchored_at`` - the
device timestamp; p50/p99 over the paced records.

--profile samples the trusted worker with py-spy during one extra drain (not
timed) and prints where its active time goes. --metrics off runs the worker
with SEALSTREAM_METRICS=0 (Settings.metrics, when the installed code has it).
Everything it creates (home, databases, buckets, consumer groups' work) is
removed at the end unless --keep.

--confidential (issue 18) replaces the trusted/baseline comparison by a confidential stream
against the same load in plaintext, both through the trusted worker in the same run (records/s
ratio, target >= 0.85), and measures the device-side cost per message of encryption and wrapping
for 1, 3 and 10 recipients against signing alone: bench/_pipeline_confidential.py.

--security on|off runs the whole report with the services' security on or off
(issue 17), every service private to the run: a broker with TLS listeners,
certificate principals and ACLs, or PLAINTEXT; a MinIO with TLS, a user per job
and object lock, or plain HTTP and its root user; a PostgreSQL with hostssl,
verify-full and a role per job, or plaintext and one role (the worker as
``pipeline``, the baseline too, the preload as its factory). The private
4-node ledger keeps its TLS links in both modes (issue 16 measures those).
--security both runs --repeats rounds of one repeat each way, interleaved
(the order alternates), and adds the ratio of the trusted worker's median
records/s with security on over off (target >= 0.9). Needs --kafka private.
Without it: Kafka as the settings say, the stack's MinIO and PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from bench._pipeline_kafka import SealFollower, end_offsets, pin_offsets  # noqa: E402
from bench._pipeline_profile import profile_summary  # noqa: E402
from sealstream._kafka_config import kafka_endpoint, kafka_secured  # noqa: E402
from sealstream.topics import RAW as RAW_TOPICS, SEALED  # noqa: E402

ROOT = _HERE.parent
RAW = list(RAW_TOPICS)
TARGET_RATIO = 0.8
PROFILE_HZ = 100
#: records done within this many ms of the first one count as its batch: their work preceded the timed span
FIRST_BATCH_MS = 10
GATEWAY = "bench-gw"


# -- the load ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Load:
    """The preloaded message set: where it is, what it holds."""

    start: dict
    end: dict
    factory: str
    devices: list[str]
    messages: int
    by_kind: dict
    blob_bytes: int
    positions: list[tuple[str, int, int]]


def _preload(s: Any, factory: str, devices_per_kind: int, messages: int, seed: int) -> Load:
    from pipelines.devices import Factory, RunConfig, read_sent_log, run

    fac = Factory.ensure(s, factory, devices_per_kind)
    if kafka_secured(s):  # its devices produce as factory-<name>: certificate and produce-only ACLs
        from infra import Stack

        Stack(s).ensure_factory(factory)
    start = end_offsets(kafka_endpoint(s, "admin"), RAW)
    summary = run(s, RunConfig(factory, devices=devices_per_kind, rate=0, count=messages, seed=seed))
    sent = list(read_sent_log(Path(summary.sent_log), summary.run_id))
    if summary.errors or any(r.error for r in sent):
        raise SystemExit(f"preload failed: {summary.first_error}")
    end = end_offsets(kafka_endpoint(s, "admin"), RAW)
    by_kind: dict[str, int] = {}
    for r in sent:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    blob = sum(r.size for r in sent if r.kind != "timeseries")
    return Load(start, end, factory, [d.did for d in fac.devices], len(sent), by_kind, blob,
                [(r.topic, r.partition, r.offset) for r in sent])


# -- throwaway stores --------------------------------------------------------------------------
def _fresh_db(s: Any, tag: str) -> str:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from storage import migrate

    name = f"ss_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(make_conninfo(s.postgres_dsn, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(s.postgres_dsn, dbname=name)
    migrate(dsn)
    return dsn


def _drop_db(s: Any, dsn: str) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(make_conninfo(s.postgres_dsn, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _bench_minio_user(s: Any, bucket: str) -> dict[str, str]:
    """With MinIO secured, the trusted worker signs as a user of this run with the pipeline job's
    policy (`infra.minio.policy`: put and get, no delete) on its own bucket, made here by the root
    user (the job may not make buckets); without object lock, so the run's clean-up can drop it.
    Returns the worker's environment for it (user prefix, secret, no lock)."""
    import secrets

    from infra.minio import policy
    from storage.blobs import minio_client

    mc = minio_client(s, "admin")
    if not mc.bucket_exists(bucket):
        mc.make_bucket(bucket)
    prefix = f"{bucket}-"
    secret = secrets.token_urlsafe(24)
    admin = _minio_admin(s)
    admin.policy_add(prefix + "pipeline", policy=policy("pipeline", bucket))
    admin.user_add(prefix + "pipeline", secret)
    admin.policy_set(prefix + "pipeline", user=prefix + "pipeline")
    _bench_users.append(prefix + "pipeline")
    return {"SEALSTREAM_MINIO_USER_PREFIX": prefix, "SEALSTREAM_MINIO_PIPELINE_SECRET": secret,
            "SEALSTREAM_MINIO_OBJECT_LOCK": "0"}


#: MinIO users (and their policies, of the same name) made by `_bench_minio_user`, removed at clean-up
_bench_users: list[str] = []


def _minio_admin(s: Any) -> Any:
    from infra.minio import MinIO

    return MinIO(s, s.stack_dir.resolve()).admin()


def _drop_bench_users(s: Any) -> None:
    if not _bench_users:
        return
    admin = _minio_admin(s)
    while _bench_users:
        name = _bench_users.pop()
        admin.user_remove(name)
        admin.policy_remove(name)


def _drop_bucket(s: Any, bucket: str) -> None:
    from minio.deleteobjects import DeleteObject

    from storage.blobs import minio_client

    mc = minio_client(s, "admin")
    if not mc.bucket_exists(bucket):
        return
    objs = [DeleteObject(o.object_name) for o in mc.list_objects(bucket, recursive=True)]
    for err in mc.remove_objects(bucket, objs):
        print(f"warning: {err}", file=sys.stderr)
    mc.remove_bucket(bucket)


def _query(dsn: str, q: str, params: tuple = ()) -> Any:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(q, params).fetchone()


# -- the two consumers -------------------------------------------------------------------------
def _free_port() -> int:
    from infra.process import free_ports

    return free_ports(1)[0]


def _metrics_supported() -> bool:
    from sealstream.settings import Settings

    return "metrics" in Settings.model_fields


class Consumer:
    """One consumer process (trusted worker or baseline) on its own group, database and bucket."""

    #: (database name, bucket) of every consumer of the current report, dropped unless --keep
    created: list[tuple[str, str]] = []

    def __init__(self, kind: str, s: Any, load: Load, home: Path, metrics: str, log: Path,
                 start: Optional[dict] = None, anchor: bool = False, anchor_process: str = "inline") -> None:
        self.kind, self.s, self.load = kind, s, load
        self.group = f"sealstream-pipeline-bench-{kind}-{uuid.uuid4().hex[:8]}"
        self.dsn = _fresh_db(s, kind[0])
        self.bucket = f"ss-bench-{kind}-{uuid.uuid4().hex[:8]}"
        from psycopg.conninfo import conninfo_to_dict

        Consumer.created.append((conninfo_to_dict(self.dsn)["dbname"], self.bucket))
        self.sealed_start = end_offsets(kafka_endpoint(s, "admin"), [SEALED])
        # iiot.sealed too: the anchor agent reads it in the same group, and must not start at the
        # shared topic's beginning (other runs' seals)
        pin_offsets(kafka_endpoint(s, "admin"), self.group,
                    {**(start if start is not None else load.start), **self.sealed_start})
        env = dict(os.environ, SEALSTREAM_HOME=str(home), SEALSTREAM_PG_DSN=self.dsn,
                   SEALSTREAM_MINIO_BUCKET=self.bucket, SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap,
                   SEALSTREAM_MINIO_ENDPOINT=s.minio_address, SEALSTREAM_SECURITY="1" if s.security else "0",
                   SEALSTREAM_PIPELINE_GATEWAY=GATEWAY)
        env["SEALSTREAM_STACK_HOME"] = str(s.stack_dir)  # the stack's CA and secrets (security on)
        if s.security and kind == "trusted":
            env.update(_bench_minio_user(s, self.bucket))
        if s.kafka_security is not None:  # --security: the consumers reach Kafka as the bench's settings say
            env["SEALSTREAM_KAFKA_SECURITY"] = "1" if s.kafka_security else "0"
        if metrics != "default" and _metrics_supported():
            env["SEALSTREAM_METRICS"] = "1" if metrics == "on" else "0"
        if kind == "trusted":
            port = _free_port() if metrics != "off" else 0
            argv = [sys.executable, "-m", "sealstream", "pipeline", "worker", "--app-id", self.group,
                    "--directory", "manifest", "--factory", load.factory, "--metrics-port", str(port),
                    "--loglevel", "warn"]
            if (not anchor or anchor_process == "separate") and _worker_has_anchor_flag():
                argv.append("--no-anchor")
        else:
            from bench._pipeline_baseline import ensure_schema

            ensure_schema(self.dsn)
            argv = [sys.executable, str(_HERE / "_pipeline_baseline.py"), "--group", self.group, "--dsn", self.dsn,
                    "--bucket", self.bucket]
        from infra.process import Child

        self.log = log
        self.children = [Child(f"{kind} consumer", argv, log_path=log, env=env, cwd=ROOT)]  # then the anchor agent
        if kind == "trusted" and anchor and anchor_process == "separate":
            group = f"{self.group}-anchor"  # its own group: it reads only iiot.sealed
            pin_offsets(kafka_endpoint(s, "admin"), group, self.sealed_start)
            self.children.append(Child("anchor agent", [sys.executable, "-m", "sealstream", "pipeline", "worker",
                                                        "--anchor-only", "--app-id", group, "--metrics-port", "0",
                                                        "--loglevel", "warn"], log_path=log, env=env, cwd=ROOT))
        self.follower = SealFollower(kafka_endpoint(s, "admin"), self.sealed_start, set(load.devices)) \
            if kind == "trusted" else None
        self.anchor = anchor and kind == "trusted"

    @property
    def pid(self) -> int:
        return self.children[0].pid

    def done_times(self, positions: Optional[list] = None) -> dict[Any, tuple[int, int]]:
        """Records done so far: key -> (device ts ms, done ms). Trusted: by statement hash; baseline: by position."""
        if self.follower is not None:
            self.follower.poll(0.3)
            return {h: (x.device_ts_ms, x.sealed_ms) for h, x in self.follower.seen.items()}
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT kafka_topic, kafka_partition, kafka_offset, (extract(epoch FROM ts) * 1000)::bigint, "
                "(extract(epoch FROM done_at) * 1000)::bigint FROM baseline.records WHERE device = ANY(%s)",
                (self.load.devices,)).fetchall()
        return {(t, p, o): (ts, done) for t, p, o, ts, done in rows}

    def wait(self, n: int, timeout: float) -> dict[Any, tuple[int, int]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.done_times()
            if len(got) >= n:
                return got
            if not self.children[0].alive():
                raise SystemExit(f"{self.kind} consumer exited {self.children[0].returncode}:\n"
                                 + self.log.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.kind} consumer: {len(got)} of {n} records done after {timeout:.0f} s; "
                                 f"log {self.log}")
            time.sleep(0.3)

    def anchored(self) -> dict[str, int]:
        """Statement hash -> anchored_at (ms) of its batch, for the statements already anchored."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT encode(l.statement_hash, 'hex'), (extract(epoch FROM b.anchored_at) * 1000)::bigint "
                "FROM batch_leaves l JOIN batches b USING (batch_id) WHERE b.anchor_state = 'anchored'").fetchall()
        return dict(rows)

    def wait_anchored(self, hashes: list[str], timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.anchored()
            if all(h in got for h in hashes):
                return got
            dead = not all(c.alive() for c in self.children)
            if dead or time.monotonic() > deadline:
                raise SystemExit(f"trusted worker: {sum(h in got for h in hashes)} of {len(hashes)} statements "
                                 f"anchored (exit code {self.children[0].returncode}); log {self.log}")
            time.sleep(0.5)

    def counts(self) -> dict[str, int]:
        """Rows this consumer wrote for the load's devices (a completeness check, both must agree)."""
        if self.kind == "trusted":
            recs = _query(self.dsn, "SELECT count(*) FROM statements WHERE device = ANY(%s)", (self.load.devices,))
            rows = _query(self.dsn, "SELECT count(*) FROM readings WHERE device = ANY(%s)", (self.load.devices,))
        else:
            recs = _query(self.dsn, "SELECT count(*) FROM baseline.records WHERE device = ANY(%s)",
                          (self.load.devices,))
            rows = _query(self.dsn, "SELECT count(*) FROM baseline.readings WHERE device = ANY(%s)",
                          (self.load.devices,))
        return {"records": recs[0], "readings": rows[0]}

    def close(self, keep: bool = False) -> None:
        from infra.process import stop_all

        stop_all(self.children, timeout=20)
        if self.follower is not None:
            self.follower.close()
        if not keep:
            _drop_db(self.s, self.dsn)
            _drop_bucket(self.s, self.bucket)
            _drop_bench_users(self.s)


_ANCHOR_FLAG: list[bool] = []


def _worker_has_anchor_flag() -> bool:
    """True when `pipeline worker` has --no-anchor (A1's anchor agent); asked once."""
    if not _ANCHOR_FLAG:
        out = subprocess.run([sys.executable, "-m", "sealstream", "pipeline", "worker", "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60).stdout
        _ANCHOR_FLAG.append("--no-anchor" in out)
    return _ANCHOR_FLAG[0]


# -- figures -----------------------------------------------------------------------------------
@dataclass
class Drain:
    consumer: str
    repeat: int
    records: int
    readings: int
    seconds: float
    records_per_s: float
    readings_per_s: float
    blob_mb_per_s: float
    anchored_per_s: Optional[float] = None
    anchoring_per_s: Optional[float] = None
    extra: dict = field(default_factory=dict)


def _drain(kind: str, s: Any, load: Load, home: Path, args: argparse.Namespace, repeat: int,
           profile_out: Optional[Path] = None) -> tuple[Drain, Optional[dict]]:
    c = Consumer(kind, s, load, home, args.metrics, home / f"{kind}-{repeat}.log", anchor=args.anchor,
                 anchor_process=args.anchor_process)
    spy = None
    try:
        if profile_out is not None:  # attach once records flow: start-up (imports, group join) is not profiled
            c.wait(1, args.timeout)
            spy = subprocess.Popen([_py_spy(), "record", "--pid", str(c.pid), "--rate", str(PROFILE_HZ), "--idle",
                                    "--format", "raw", "--output", str(profile_out), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            spy_started = time.monotonic()
        done = c.wait(load.messages, args.timeout)
        counts = c.counts()
        if counts["records"] != load.messages:
            raise SystemExit(f"{kind}: {counts['records']} records stored, {load.messages} sent")
        times = [d for _, d in done.values()]
        span = max(1e-3, (max(times) - min(times)) / 1000.0)
        n = load.messages
        # the records done with the first one (its batch, within FIRST_BATCH_MS) did their work before the span
        after_first = n - sum(1 for t in times if t <= min(times) + FIRST_BATCH_MS)
        after_first = max(1, after_first)
        frac = after_first / n
        drain = Drain(kind, repeat, n, counts["readings"], round(span, 3), after_first / span,
                      counts["readings"] * frac / span, load.blob_bytes * frac / span / 1e6)
        if c.follower is not None:
            drain.extra["repeated_seals"] = c.follower.repeats
        if c.anchor:  # end to end: from the first record done to the last statement's batch anchored
            anchored = c.wait_anchored(list(done), args.timeout)
            last = max(anchored[h] for h in done)
            drain.anchored_per_s = after_first / max(1e-3, (last - min(times)) / 1000.0)
            # steady state: the records anchored after the first batch's commit, over first -> last commit
            # (no window wait at either end: a rate of anchoring, not a latency)
            first = min(anchored[h] for h in done)
            later = sum(1 for h in done if anchored[h] > first + FIRST_BATCH_MS)
            if later and last > first:
                drain.anchoring_per_s = later / ((last - first) / 1000.0)
        prof = None
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
            prof = profile_summary(profile_out, time.monotonic() - spy_started, PROFILE_HZ) \
                if profile_out.exists() else {
                "error": (spy.stderr.read() or b"").decode(errors="replace")[-500:]}
        return drain, prof
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        c.close(args.keep)


def _py_spy() -> str:
    """The py-spy binary: on PATH, else beside this interpreter (a venv not activated)."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install 'py-spy>=0.4,<0.5'")
    return found


def _pct(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(q * (len(v) - 1))))], 1)


def _latency(kind: str, s: Any, load: Load, home: Path, args: argparse.Namespace) -> dict:
    """Live run: consumer up first (warm-up records stored), then a paced load; device-to-done p50/p99."""
    from pipelines.devices import RunConfig, read_sent_log, run

    here = end_offsets(kafka_endpoint(s, "admin"), RAW)
    c = Consumer(kind, s, load, home, args.metrics, home / f"{kind}-latency.log", start=here, anchor=args.anchor,
                 anchor_process=args.anchor_process)
    try:
        def paced(seconds: float, rate: float, count: Optional[int] = None) -> list:
            summary = run(s, RunConfig(load.factory, devices=args.devices, rate=rate, duration=seconds, count=count,
                                       seed=99))
            return list(read_sent_log(Path(summary.sent_log), summary.run_id))

        warm = paced(30, 0, count=3 * len(RAW))
        c.wait(len(warm), args.timeout)
        sent = paced(args.latency_seconds, args.latency_rate)
        done = c.wait(len(warm) + len(sent), args.timeout)
        rate = round(len(sent) / args.latency_seconds, 1)
        if kind == "trusted":
            lat = [done[r.statement_hash][1] - r.ts for r in sent]
        else:
            lat = [done[(r.topic, r.partition, r.offset)][1] - r.ts for r in sent]
        out = {"device_to_stored": {"n": len(lat), "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
                                    "rate_per_s": rate}}
        if c.anchor:
            anchored = c.wait_anchored([r.statement_hash for r in sent], args.timeout)
            alat = [anchored[r.statement_hash] - r.ts for r in sent]
            out["device_to_anchored"] = {"n": len(alat), "p50_ms": _pct(alat, 0.5), "p99_ms": _pct(alat, 0.99),
                                         "rate_per_s": rate}
        elif kind == "trusted":
            out["device_to_anchored"] = None
        return out
    finally:
        c.close(args.keep)


def _median(drains: list[Drain], attr: str) -> Optional[float]:
    vals = [getattr(d, attr) for d in drains]
    return round(statistics.median(vals), 2) if vals else None


def build_report(args: argparse.Namespace) -> dict:
    from sealstream.settings import load_settings

    base = load_settings()
    full = getattr(args, "security", None) in ("on", "off")
    if full:  # this mode's settings for every service (fresh: no DSN cached for the other mode)
        on = args.security == "on"
        base = load_settings(security=on, kafka_security=on, stack_home=base.stack_dir.resolve())
    home = Path(tempfile.mkdtemp(prefix="ss-bench-pipeline-"))
    private = None
    ledger = None
    Consumer.created = []
    load_before = os.getloadavg()
    try:
        if args.kafka == "private":
            from infra.private_stack import PrivateStack

            # --security on|off: Kafka, MinIO and PostgreSQL all private, each secured or not with the
            # mode (the stack's own MinIO and PostgreSQL stay secured whatever the mode)
            private = PrivateStack(home / "private", base=base, kafka=True, minio=full, postgres=full).__enter__()
        src = private.settings if private is not None else base
        s = load_settings(home=home, kafka_bootstrap_servers=src.kafka_bootstrap, pg_dsn=src.postgres_dsn,
                          minio_endpoint=src.minio_address, security=base.security,
                          kafka_security=base.kafka_security, stack_home=base.stack_dir.resolve())
        ledger = _start_ledger(home) if args.anchor else None
        load = _preload(s, f"bench-{uuid.uuid4().hex[:8]}", args.devices, args.messages, args.seed)
        drains: list[Drain] = []
        for r in range(args.repeats):
            order = ["trusted", "baseline"] if r % 2 == 0 else ["baseline", "trusted"]
            for kind in order:
                d, _ = _drain(kind, s, load, home, args, r)
                drains.append(d)
                _say(args, f"repeat {r + 1}/{args.repeats} {kind:8s} {d.records_per_s:8.1f} rec/s "
                           f"{d.readings_per_s:10.0f} readings/s {d.blob_mb_per_s:6.2f} blob MB/s ({d.seconds} s)")
        trusted = [d for d in drains if d.consumer == "trusted"]
        baseline = [d for d in drains if d.consumer == "baseline"]
        readings = {d.readings for d in drains}
        figures = {name: {k: _median(ds, k) for k in ("records_per_s", "readings_per_s", "blob_mb_per_s", "seconds")}
                   for name, ds in (("trusted", trusted), ("baseline", baseline))}
        per_repeat = [t.records_per_s / b.records_per_s for t, b in zip(trusted, baseline)]
        ratio = round(figures["trusted"]["records_per_s"] / figures["baseline"]["records_per_s"], 3)
        anchored_ratio = None
        if args.anchor:
            figures["trusted"]["anchored_per_s"] = _median(trusted, "anchored_per_s")
            anchored_ratio = round(figures["trusted"]["anchored_per_s"] / figures["baseline"]["records_per_s"], 3)
            rates = [d.anchoring_per_s for d in trusted if d.anchoring_per_s is not None]
            figures["trusted"]["anchoring_per_s"] = round(statistics.median(rates), 2) if rates else None
        profile = None
        if args.profile:  # before the live runs: those add records of the same devices after the preload
            _, profile = _drain("trusted", s, load, home, args, -1, profile_out=home / "trusted.pyspy.txt")
        latency = {}
        if args.latency_seconds > 0:
            for kind in ("trusted", "baseline"):
                latency[kind] = _latency(kind, s, load, home, args)
                _say(args, f"latency {kind:8s} {latency[kind]}")
        return {
            "load": {"messages": load.messages, "by_kind": load.by_kind, "devices": len(load.devices),
                     "readings": sorted(readings), "blob_bytes": load.blob_bytes},
            "repeats": args.repeats,
            "runs": [d.__dict__ for d in drains],
            "trusted": figures["trusted"], "baseline": figures["baseline"],
            "ratio": {"records_per_s": ratio, "per_repeat": [round(x, 3) for x in per_repeat],
                      "anchored_over_baseline": anchored_ratio},
            "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
            "latency": latency,
            "metrics": args.metrics if _metrics_supported() else "unsupported",
            "anchoring": bool(args.anchor),
            "anchor_process": args.anchor_process if args.anchor else None,
            "batch": int(os.environ.get("SEALSTREAM_PIPELINE_BATCH_MAX_RECORDS") or 0) or "default",
            "kafka": args.kafka,
            "kafka_security": kafka_secured(s),
            "security": {"mode": getattr(args, "security", None), "services_secured": bool(s.security),
                         "private": sorted(private.services) if private is not None else []},
            "profile": profile,
            "created": {"databases": [d for d, _ in Consumer.created], "buckets": [b for _, b in Consumer.created],
                        "kept": bool(args.keep)},
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()]},
        }
    finally:
        if ledger is not None:
            ledger.stop(timeout=5)
        if private is not None:
            private.close()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


SECURITY_TARGET = 0.9


def build_security_report(args: argparse.Namespace) -> dict:
    """`build_report` with the services' security on and off, interleaved: `args.repeats` rounds, each
    one report of one repeat per mode (own private Kafka, MinIO, PostgreSQL, ledger and preload; the
    order alternates), so
    the machine's load hits both alike. The ratio is of the trusted worker's median records/s on/off
    (and the baseline's, which pays the same TLS to Kafka, MinIO and PostgreSQL); per round too."""
    reports: dict[str, list[dict]] = {"on": [], "off": []}
    for r in range(args.repeats):
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            _say(args, f"-- round {r + 1}/{args.repeats}: security {mode} (Kafka, MinIO, PostgreSQL)")
            reports[mode].append(build_report(argparse.Namespace(**{**vars(args), "security": mode, "repeats": 1})))

    def med(mode: str, who: str) -> float:
        return statistics.median(rep[who]["records_per_s"] for rep in reports[mode])

    ratio = round(med("on", "trusted") / med("off", "trusted"), 3)
    per_round = [round(a["trusted"]["records_per_s"] / b["trusted"]["records_per_s"], 3)
                 for a, b in zip(reports["on"], reports["off"])]
    return {"security": reports,
            "median_records_per_s": {m: {w: round(med(m, w), 1) for w in ("trusted", "baseline")} for m in reports},
            "ratio_on_over_off": {"trusted": ratio,
                                  "baseline": round(med("on", "baseline") / med("off", "baseline"), 3),
                                  "trusted_per_round": per_round},
            "target_ratio": SECURITY_TARGET, "target_met": ratio >= SECURITY_TARGET}


def format_security_report(rep: dict) -> str:
    lines = []
    for mode in ("on", "off"):
        for i, r in enumerate(rep["security"][mode]):
            lines += [f"== security {mode}, round {i + 1}", format_report(r)]
    m, r = rep["median_records_per_s"], rep["ratio_on_over_off"]
    lines.append(f"median records/s, security on: trusted {m['on']['trusted']}, baseline {m['on']['baseline']}; "
                 f"off: trusted {m['off']['trusted']}, baseline {m['off']['baseline']}")
    lines.append(f"records/s with security on / off: trusted {r['trusted']:.2f} (per round "
                 f"{r['trusted_per_round']}), baseline {r['baseline']:.2f}; target >= {rep['target_ratio']}: "
                 f"{'met' if rep['target_met'] else 'MISSED'}")
    return "\n".join(lines)


def _start_ledger(home: Path) -> Any:
    """A 4-node contracts ledger in ``<home>/ledger`` (where the worker looks) with the bench gateway
    registered and funded, so the trusted worker anchors; stop it with ``.stop()``."""
    from ledger import Params
    from infra.ledger_cluster import LocalCluster
    from pipelines._anchor_ledger import ensure_gateway
    from pipelines.worker import gateway_key

    cluster = LocalCluster(home / "ledger", n_nodes=4, n_sealers=4, app="contracts",
                           params=Params(max_block_txs=128, block_time_ms=20, checkpoint_interval=10,
                                         view_change_timeout_ms=800, status_interval_ms=300, fetch_timeout_ms=800))
    cluster.init()
    cluster.start(timeout=60)
    try:
        with cluster.client(key=cluster.layout.admin_key()) as admin:
            ensure_gateway(admin, GATEWAY, gateway_key(home, GATEWAY).did, fund=10_000_000)
    except BaseException:
        cluster.stop(timeout=5)
        raise
    return cluster


def _say(args: argparse.Namespace, msg: str) -> None:
    """Progress on stderr (stdout carries the report)."""
    print(msg, file=sys.stderr, flush=True)


def format_report(rep: dict) -> str:
    ld = rep["load"]
    lines = [f"load: {ld['messages']} messages {ld['by_kind']} from {ld['devices']} devices; "
             f"{'/'.join(map(str, ld['readings']))} readings; {ld['blob_bytes'] / 1e6:.2f} MB of blobs",
             f"medians of {rep['repeats']} drain(s) each:",
             f"{'':10s}{'records/s':>12s}{'readings/s':>14s}{'blob MB/s':>12s}{'drain s':>10s}"]
    for name in ("trusted", "baseline"):
        f = rep[name]
        lines.append(f"{name:10s}{f['records_per_s']:12.1f}{f['readings_per_s']:14.0f}"
                     f"{f['blob_mb_per_s']:12.2f}{f['seconds']:10.2f}")
    r = rep["ratio"]
    if rep["trusted"].get("anchored_per_s") is not None:
        lines.append(f"trusted, first record stored -> last batch anchored: {rep['trusted']['anchored_per_s']:.1f} "
                     f"records/s ({r['anchored_over_baseline']:.2f}x the baseline's rate; includes the last "
                     f"window's wait)")
    if rep["trusted"].get("anchoring_per_s") is not None:
        lines.append(f"trusted, steady anchoring (first batch anchored -> last): "
                     f"{rep['trusted']['anchoring_per_s']:.1f} records/s")
    lines.append(f"ratio trusted/baseline (records stored and sealed): {r['records_per_s']:.2f} "
                 f"(per repeat {r['per_repeat']}); target >= {rep['target_ratio']}: "
                 f"{'met' if rep['target_met'] else 'MISSED'}")
    for name, lat in rep["latency"].items():
        for what, v in lat.items():
            if v is None:
                lines.append(f"latency {name} {what}: not measured (--no-anchor)")
            else:
                lines.append(f"latency {name} {what}: p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms "
                             f"({v['n']} records at {v['rate_per_s']}/s)")
    sec = rep.get("security") or {}
    secured = "on" if sec.get("services_secured") else "off"
    where = f" (private {', '.join(sec['private'])})" if sec.get("private") else ""
    lines.append(f"kafka: {rep['kafka']}; security: {secured}{where}; metrics: {rep['metrics']}; "
                 f"anchoring: {'on' if rep['anchoring'] else 'off'}; "
                 f"load average before {rep['load_average']['before']} after {rep['load_average']['after']}")
    prof = rep.get("profile")
    if prof:
        if "error" in prof:
            lines.append(f"profile: py-spy failed: {prof['error']}")
        else:
            lines.append(f"profile of the trusted worker, wall clock ({prof['samples']} samples, py-spy --idle):")
            lines.append("  threads doing store work at once (batch threads + archive PUT threads), on average: "
                         f"{prof['store_concurrency']}")
            lines.append("  inside process() (per-record blocking work, in threads):")
            lines.extend(f"  {share:5.1f}%  {name}" for name, share in prof["store"])
            lines.append("  event-loop thread (Faust, aiokafka, agents):")
            lines.extend(f"  {share:5.1f}%  {name}" for name, share in prof["event_loop"])
            lines.append("  top self time outside idle waits:")
            lines.extend(f"  {share:5.1f}%  {name}" for name, share in prof["self"])
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=2, help="devices per kind (default 2)")
    p.add_argument("--messages", type=int, default=300, help="preloaded messages, all kinds (default 300)")
    p.add_argument("--repeats", type=int, default=3, help="drains per consumer; medians quoted (default 3)")
    p.add_argument("--latency-seconds", type=float, default=8.0, help="paced live run per consumer, 0 = skip")
    p.add_argument("--latency-rate", type=float, default=1.0, help="messages/s per device in the live run")
    p.add_argument("--metrics", choices=["on", "off", "default"], default="default",
                   help="worker metrics switch (SEALSTREAM_METRICS); default: the environment's")
    p.add_argument("--profile", action="store_true", help="py-spy the trusted worker in one extra drain")
    p.add_argument("--kafka", choices=["private", "shared"], default="private",
                   help="private (default): a broker of our own on free ports (infra.Kafka), so drains see only "
                        "the benchmark's records and its dead letters never reach others; shared: the stack's")
    p.add_argument("--anchor", action=argparse.BooleanOptionalAction, default=True,
                   help="start a 4-node ledger so the trusted worker anchors (default; --no-anchor: seal only)")
    p.add_argument("--anchor-process", choices=["inline", "separate"], default="inline",
                   help="inline (default): the worker's own anchor agent; separate: a --no-anchor worker beside "
                        "an --anchor-only process (its own consumer group)")
    p.add_argument("--batch", type=int, default=0,
                   help="records per batch for both consumers (SEALSTREAM_PIPELINE_BATCH_MAX_RECORDS; "
                        "1 = one record at a time; default: the setting, 50)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a drain may take before giving up")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the databases, buckets and home")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--security", choices=["on", "off", "both"], default=None,
                   help="security of Kafka, MinIO and PostgreSQL (TLS, principals, ACLs, roles) on, off, or both "
                        "interleaved with the on/off ratio; every service private to the run (default: as "
                        "the settings say)")
    p.add_argument("--confidential", action="store_true",
                   help="a confidential stream vs the same load in plaintext, and the device-side cost of "
                        "encryption (bench/_pipeline_confidential.py)")
    p.add_argument("--recipients", type=int, default=1, help="with --confidential: recipients per message")
    p.add_argument("--device-rounds", type=int, default=5, help="with --confidential: rounds of the device-side "
                                                                "measurement (medians)")
    args = p.parse_args(argv)
    if args.confidential and (args.recipients < 1 or args.device_rounds < 1):
        p.error("--recipients >= 1, --device-rounds >= 1")
    if args.security is not None and args.kafka != "private":
        p.error("--security needs --kafka private (the broker is started with or without it)")
    if args.messages < 2 or args.repeats < 1 or args.devices < 1:
        p.error("--messages >= 2, --repeats >= 1, --devices >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: consumers, ledger, databases and buckets are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.batch:  # both consumers inherit it: the same batching freedom on each side
        os.environ["SEALSTREAM_PIPELINE_BATCH_MAX_RECORDS"] = str(args.batch)
    if args.confidential:
        from bench._pipeline_confidential import build_confidential_report, format_confidential_report

        rep = build_confidential_report(args)
        print(json.dumps(rep, indent=2, default=str) if args.json else format_confidential_report(rep))
        return
    if args.security == "both":
        rep = build_security_report(args)
        print(json.dumps(rep, indent=2, default=str) if args.json else format_security_report(rep))
        return
    rep = build_report(args)
    print(json.dumps(rep, indent=2, default=str) if args.json else format_report(rep))


if __name__ == "__main__":
    main()
