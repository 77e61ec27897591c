"""Every panel query of the generated dashboards returns data from the real services.

Up for the test: the stack (Kafka, PostgreSQL, MinIO, Prometheus); a 4-node
contracts ledger (LocalCluster: node processes over TCP) with the gateway and
the devices registered; a pipeline worker subprocess that ingests, stores,
seals and anchors on that ledger; a verifier subprocess on ``iiot.anchors``;
an edge agent (`sealstream edge run`: a ticker source and a camera folder, for the Edge row);
and the device simulator, first with every fault once, then steady traffic.
One stored reading is then tampered with and its batch re-announced, so the
verifier records a failure. The nodes', the worker's and the verifier's
``/metrics`` (and the edge agent's) are registered with the stack's Prometheus under a private job
(a file_sd target file of its own, removed at the end, as `sealstream ledger up`
registers its nodes); the dashboards' ``$job`` variable is set to that job, so
only this test's processes can answer. Then each PromQL query of the JSON has
a finite sample (polled until scrapes arrive, bounded) and each SQL query
returns rows from PostgreSQL over the run's time range.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import Producer

from devices_helpers import end_offsets
from sealstream.metrics_targets import register_targets
from ledger import Params
from infra.process import Child, free_ports
from infra.ledger_cluster import LocalCluster
from panel_queries import finite_samples, panel_queries, prom_query, promql, sql, targets_up
from ledger_refusals import provoke_refusals
from pipelines._anchor_ledger import ensure_devices, ensure_gateway
from pipelines.devices import FAULTS, Factory, FaultPlan, RunConfig, Simulator, run
from pipelines.devices.kinds import KIND_INFO
from pipelines.offsets import pin_offsets
from pipelines.worker import gateway_key
from sealstream.settings import load_settings
from storage.db import open_pool
from storage.migrate import migrate
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
PARAMS = Params(max_block_txs=128, block_time_ms=20, checkpoint_interval=10, view_change_timeout_ms=800,
                status_interval_ms=300, fetch_timeout_ms=800)
GATEWAY = "gw-dash"
WAIT_S = 180.0


class _LedgerLoad(threading.Thread):
    """Token mints by the consortium admin until stopped: commits (and latencies) on every node."""

    def __init__(self, cluster: LocalCluster, account: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.account = cluster, account
        self.stop = threading.Event()

    def run(self) -> None:
        with self.cluster.client(key=self.cluster.layout.admin_key()) as admin:
            while not self.stop.is_set():
                admin.submit("tokens.mint", {"account": self.account, "amount": 1})
                self.stop.wait(0.2)


class _Proc(Child):
    """A `python -m sealstream ...` subprocess with its log and /metrics port."""

    def __init__(self, args: list[str], env: dict, log: Path) -> None:
        port = free_ports(1)[0]
        super().__init__(log.name, [sys.executable, "-m", "sealstream", *args, "--metrics-port", str(port)],
                         log_path=log, env=env, metrics_port=port)
        self.port = port

    def diagnostics(self) -> str:
        try:
            metrics = "\n".join(line for line in self.metrics().splitlines() if line.startswith("sealstream_"))
        except OSError as exc:
            metrics = f"(/metrics: {exc})"
        return f"--- {self.name} metrics:\n{metrics[-3000:]}\n--- log:\n{self.tail(2000)}"


def _drop_a_frame(host: str, port: int) -> None:
    """Half a frame header, then hang up: the node counts a `truncated` drop."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"\x00\x00")


def _wait(what: str, pred, procs: list[_Proc], deadline: float):
    while True:
        got = pred()
        if got:
            return got
        for p in procs:
            p.check()
        assert time.monotonic() < deadline, (f"timed out waiting for {what}\n"
                                             + "\n".join(p.diagnostics() for p in procs))
        time.sleep(1)


EDGE_CONFIG = """
[edge]
factory = "{factory}"
kafka_bootstrap = "{bootstrap}"
[edge.spool]
path = "spool"
[edge.group]
readings = 10
seconds = 0.5
[devices.press-1]
kind = "timeseries"
key = {{ file = "keys/press-1.key" }}
[devices.cam-1]
kind = "image"
key = {{ file = "keys/cam-1.key" }}
[sources.tick]
type = "python"
module = "ticker_source"
device = "press-1"
sensors = ["temperature"]
period_s = 0.2
bad_every = 10
[sources.cam]
type = "files"
device = "cam-1"
path = "camera"
stable_s = 0.2
poll_s = 0.1
"""


def _edge_agent(folder: Path, env: dict, bootstrap: str, run_id: str) -> _Proc:
    """`sealstream edge run` (the Edge row): a ticker (readings, a bad input every 10th) and a camera folder
    with one image, sending to the stack's Kafka (its devices are not the worker's: dead-lettered there)."""
    (folder / "camera").mkdir(parents=True)
    cfg = folder / "edge.toml"
    cfg.write_text(EDGE_CONFIG.format(factory=f"dash-edge-{run_id}", bootstrap=bootstrap))
    from kafka_principals import enrol_factory

    enrol_factory(load_settings(), f"dash-edge-{run_id}")  # its Kafka principal factory-<name> (security on)
    env = dict(env, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "edge"), str(ROOT)]))
    keygen = subprocess.run([sys.executable, "-m", "sealstream", "edge", "keygen", "--config", str(cfg)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert keygen.returncode == 0, keygen.stderr
    (folder / "camera" / "frame-1.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(256))
    return _Proc(["edge", "run", "--config", str(cfg)], env, folder.parent / "edge.log")


def test_every_panel_query_returns_data(stack, settings, tmp_path) -> None:
    migrate(settings.postgres_dsn)
    run_id = uuid.uuid4().hex[:8]
    job = f"sealstream-pipeline-dashtest-{run_id}"
    home = tmp_path / "home"
    s = load_settings(home=home, kafka_bootstrap_servers=settings.kafka_bootstrap)
    started = datetime.now(timezone.utc) - timedelta(minutes=1)
    deadline = time.monotonic() + WAIT_S
    cluster = LocalCluster(s.ledger_home, n_nodes=4, n_sealers=4, params=PARAMS, app="contracts")
    cluster.init()
    cluster.start(timeout=60)
    procs: list[_Proc] = []
    target_file = load = traffic = traffic_thread = None
    try:
        factory = f"dash-{run_id}"
        fac = Factory.ensure(s, factory, 2)
        dids = [d.did for d in fac.devices]
        gw = gateway_key(home, GATEWAY)
        with cluster.client(key=cluster.layout.admin_key()) as admin:
            ensure_gateway(admin, GATEWAY, gw.did)
            ensure_devices(admin, [(f"{factory}-{d.spec.name}", d.did) for d in fac.devices])
        load = _LedgerLoad(cluster, GATEWAY)
        load.start()

        env = dict(os.environ, SEALSTREAM_HOME=str(home), SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap,
                   SEALSTREAM_PIPELINE_GATEWAY=GATEWAY, SEALSTREAM_PIPELINE_SESSION_TIMEOUT_S="6",
                   SEALSTREAM_METRICS="1")
        worker_group = f"sealstream-pipeline-dashtest-{run_id}"
        verifier_group = f"sealstream-verifier-dashtest-{run_id}"
        # retried: on a fresh broker this is the first group, whose coordinator may still be loading
        pin_offsets(kafka_endpoint(s, "admin"), worker_group,
                    end_offsets(s, [k.topic for k in KIND_INFO.values()] + ["iiot.sealed"]))
        pin_offsets(kafka_endpoint(s, "admin"), verifier_group, end_offsets(s, ["iiot.anchors"]))
        procs.append(_Proc(["pipeline", "worker", "--app-id", worker_group, "--directory", "manifest",
                            "--factory", factory], env, tmp_path / "worker.log"))
        procs.append(_Proc(["pipeline", "verifier", "--app-id", verifier_group, "--ledger", str(cluster.root),
                            "--audit-interval", "0"], env, tmp_path / "verifier.log"))
        procs.append(_edge_agent(tmp_path / "edge", env, s.kafka_bootstrap, run_id))
        # the nodes' plain-HTTP metrics listeners (their API is HTTPS pinned to the genesis keys)
        targets = [a.metrics_target for a in cluster.addresses()] + [f"127.0.0.1:{p.port}" for p in procs]
        assert all(targets) and all(a.https for a in cluster.addresses())
        target_file = register_targets(Path(settings.home).resolve(), job, targets)
        provoke_refusals(cluster)  # a refusal of each kind the Chain-health panels show (and a drop)

        summary = run(s, RunConfig(factory, devices=2, rate=3, duration=3, seed=7,
                                   faults=FaultPlan.parse([f"{f}:1" for f in FAULTS])))
        assert summary.delivered > 0 and summary.errors == 0
        # then steady traffic while Prometheus scrapes, so rates and histograms see new observations
        traffic = Simulator(s, RunConfig(factory, devices=1, rate=1, duration=WAIT_S, seed=8))
        traffic_thread = threading.Thread(target=traffic.run, daemon=True)
        traffic_thread.start()

        # -- a verified reading of ours is altered; its batch is announced again: the verifier fails it
        with open_pool(settings.postgres_dsn) as pool, pool.connection() as conn:
            def verified():
                return conn.execute("SELECT statement_hash, row_index, batch_id FROM verified_readings "
                                    "WHERE device = ANY(%s) LIMIT 1", (dids,)).fetchone()

            statement_hash, row_index, batch_id = _wait("a verified reading", verified, procs, deadline)
            conn.execute("UPDATE readings SET value = value + 1 WHERE statement_hash = %s AND row_index = %s",
                         (statement_hash, row_index))
        producer = Producer(kafka_endpoint(s, "admin").confluent())
        producer.produce("iiot.anchors", key=batch_id.encode(), value=json.dumps({"v": 1, "batch_id": batch_id}))
        assert producer.flush(10) == 0

        prom = settings.prometheus_base_url
        _wait("scrapes of every target", lambda: targets_up(prom, job) == {t: "up" for t in targets}, procs,
              deadline)

        # -- PromQL: each query has a finite sample (rates need two scrapes, histograms new observations)
        queries = [q for q in panel_queries() if q.kind == "promql"]
        missing = {q.name: q.text for q in queries}

        def all_answered() -> bool:
            for q in queries:
                if q.name in missing and finite_samples(prom_query(prom, promql(q.text, job))):
                    del missing[q.name]
            return not missing

        try:
            _wait("every PromQL panel", all_answered, procs, deadline)
        except AssertionError as exc:
            raise AssertionError(f"panels without data: {missing}\n{exc}") from None

        # -- SQL: each query runs and returns rows over the run's time range
        end = datetime.now(timezone.utc) + timedelta(minutes=1)
        results = {}
        with open_pool(settings.postgres_dsn) as pool, pool.connection() as conn:
            def failure_recorded():
                return conn.execute("SELECT failed_step FROM batch_verdicts WHERE batch_id = %s AND verdict = "
                                    "'failed'", (batch_id,)).fetchone()

            _wait("the tampered batch's failed verdict", failure_recorded, procs, deadline)
            for q in (q for q in panel_queries() if q.kind == "sql"):
                results[q.name] = rows = conn.execute(sql(q.text, started, end)).fetchall()
                assert rows, f"{q.name}: no rows"
        failures = next(rows for name, rows in results.items() if "Latest failures" in name)
        assert batch_id in {r[1] for r in failures}
    finally:
        if traffic is not None:
            traffic.stop()
            traffic_thread.join(30)
        if load is not None:
            load.stop.set()
            load.join(15)
        for p in procs:
            p.stop(15)
        if target_file is not None:
            target_file.unlink(missing_ok=True)
        cluster.stop(timeout=5)
