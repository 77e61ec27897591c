"""The ledger, then PostgreSQL, are stopped under load and started again: the worker waits and retries
(an outage while checking a record is not a dead letter), no valid record is dead-lettered, and every
sent record is stored exactly once.

A PRIVATE PostgreSQL and a PRIVATE Kafka (`infra.private_stack`: the project's services on free ports with
their own data dirs; on the shared broker other tests' records reach our group too and are rightly
dead-lettered ``unknown-device``, which would hide ours) and a private 4-node contracts ledger (in
the test's home) that the worker's directory asks (``--directory ledger``, cache TTL 1 s,
``--no-anchor``); MinIO is the shared one (never stopped). Four devices produce
for ~30 s. Once records are stored, every ledger node is stopped until the worker has counted ledger
retries and stored nothing for 3 s (the directory cache expired: it waits on the ledger), then the
ledger is started again on its data; once records are stored again, PostgreSQL is stopped (``pg_ctl
stop -m fast``) until the worker has counted database retries, then started again. Afterwards: every
sent record stored once, from its own Kafka position, with its rows or blob and its object in MinIO,
sealed (repeats byte-identical); the dead-letter topic empty and the worker's dead-letter counters at 0
(checked before, during and after the outages); retries by
cause ``ledger`` and ``database``, none ``unexpected``; the worker is still up.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import pytest

from support.workers import WorkerProc

from anchor_helpers import ledger_cluster, register_factory
from devices_helpers import end_offsets
from pipelines.devices import Factory, RunConfig
from pipelines.devices.kinds import KIND_INFO
from infra.private_stack import PrivateStack
from resilience_helpers import SimRun, check_exactly_once, pin_offsets, stored_count
from sealstream.settings import load_settings
from storage.blobs import BlobStore
from storage.migrate import migrate

pytestmark = pytest.mark.services
RAW = [k.topic for k in KIND_INFO.values()]
RETRIES = "sealstream_pipeline_store_retries_total"


def _labelled(text: str, name: str, cause: str) -> float:
    prefix = f'{name}{{cause="{cause}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


def _dead_lettered(worker: WorkerProc) -> dict[str, float]:
    """reason -> dead letters produced by the worker so far (its metrics)."""
    prefix = "sealstream_pipeline_deadletters_total{"
    out = {}
    for line in worker.metrics().splitlines():
        if line.startswith(prefix) and float(line.rsplit(" ", 1)[1]) > 0:
            out[line[len(prefix):line.index("}")]] = float(line.rsplit(" ", 1)[1])
    return out


def _until(pred, timeout: float, what: str, worker: WorkerProc, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        worker.check()  # raises with the log tail if it exited
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{worker.log.read_text()[-4000:]}")
        time.sleep(interval)


def test_ledger_then_postgres_outage_dead_letters_nothing_and_loses_nothing(stack, settings, tmp_path: Path) -> None:
    # Not under pytest's tmp_path: every pytest session (others run beside us) makes /tmp/pytest-of-<user>
    # 0700 again, and PostgreSQL runs as its own OS user when we are root, so it needs a path it can reach.
    ps = PrivateStack(Path(tempfile.mkdtemp(prefix="ss-test-pg-")), base=settings, kafka=True, postgres=True)
    ps.__enter__()  # started (or closed again when a service fails to start)
    cluster = worker = sim = None
    try:
        migrate(ps.settings.postgres_dsn)
        s = load_settings(home=tmp_path / "home", kafka_bootstrap_servers=ps.settings.kafka_bootstrap,
                          minio_endpoint=settings.minio_address, pg_dsn=ps.settings.postgres_dsn)
        cluster = ledger_cluster(Path(s.home) / "ledger")
        name = f"lp-{uuid.uuid4().hex[:6]}"
        kinds = ("timeseries", "image")
        factory = Factory.ensure(s, name, 2, kinds=kinds)
        dids = sorted(d.did for d in factory.devices)
        register_factory(cluster, factory)
        app_id = f"sealstream-pipeline-test-lp-{uuid.uuid4().hex[:8]}"
        pin_offsets(s, app_id, end_offsets(s, RAW))
        sealed_start = end_offsets(s, ["iiot.sealed"])
        dlq_start = end_offsets(s, ["iiot.deadletter"])
        worker = WorkerProc.ledger(s, app_id, f"gw-{name}", tmp_path / "worker.log",
                            extra_env={"SEALSTREAM_PG_DSN": s.postgres_dsn,
                                       "SEALSTREAM_MINIO_ENDPOINT": s.minio_address},
                            args=("--no-anchor",))
        sim = SimRun(s, RunConfig(name, devices=2, rate=3, duration=30, kinds=kinds, seed=14))
        _until(lambda: stored_count(s, dids) > 0, 90, "first records stored", worker)

        assert _dead_lettered(worker) == {}, "dead letters before any outage"

        # -- the ledger: every node stopped; the worker waits on the directory
        cluster.stop(timeout=10)
        _until(lambda: _labelled(worker.metrics(), RETRIES, "ledger") > 0, 60, "ledger retries", worker)
        time.sleep(1.5)  # past the directory cache's TTL (1 s): every lookup now asks the ledger
        stalled_from = stored_count(s, dids)
        time.sleep(3)
        stalled_to = stored_count(s, dids)
        assert stalled_to == stalled_from, "records were stored while no ledger node was up"
        assert _dead_lettered(worker) == {}
        cluster.start(timeout=60)
        _until(lambda: stored_count(s, dids) > stalled_to, 90, "records stored after the ledger came back", worker)

        # -- PostgreSQL stopped; the worker waits on the database
        ps.stop("postgres")
        assert ps.pid("postgres") is None, "private PostgreSQL still running"
        _until(lambda: _labelled(worker.metrics(), RETRIES, "database") > 0, 60, "database retries", worker)
        time.sleep(3)
        assert _dead_lettered(worker) == {}
        ps.start("postgres")

        sent = sim.join(timeout=120)
        assert sent and all(r.error is None for r in sent)
        want = len(sent)
        _until(lambda: stored_count(s, dids) >= want, 180, f"all {want} records stored", worker, interval=1.0)
        text = worker.metrics()
        by_cause = {c: _labelled(text, RETRIES, c) for c in ("ledger", "database", "unexpected")}
        print(f"sent {want}; stalled at {stalled_to} while the ledger was down; retries {by_cause}")
        outcome = check_exactly_once(s, sent, sealed_start, dlq_start, BlobStore.from_settings(s),
                                     lambda key: key.decode("ascii", "replace") in dids)
        assert outcome.stored == want
        dlq = end_offsets(s, ["iiot.deadletter"])
        assert set(dlq.values()) == {0}, f"records were dead-lettered: {dlq}"
        assert _dead_lettered(worker) == {}
        assert by_cause["ledger"] > 0 and by_cause["database"] > 0
        assert by_cause["unexpected"] == 0, "an outage was not recognised as one (see the worker log)"
        worker.check()
    finally:
        if sim is not None:
            sim.stop()
        if worker is not None:
            worker.kill()
        if cluster is not None:
            cluster.stop(timeout=5)
        ps.close()
