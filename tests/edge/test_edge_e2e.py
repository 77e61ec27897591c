"""The edge agent end to end, on real services: a time-series source (the in-test `acking_source`,
which logs every reading the agent acknowledged) and a camera folder, through `sealstream edge run`
(a subprocess), a PRIVATE Kafka (stopped 60 s while the sources keep producing, then started), a
pipeline worker, a 4-node contracts ledger. Then the agent is SIGKILLed while messages are spooled,
and restarted.

Afterwards: every message spooled is stored exactly once (per device the stored seqs are
contiguous: no message lost; each statement once), Kafka holds them in seq order per device, every
camera file is stored once and moved to done/, every dead letter is a `replay` copy of a stored
statement (the resend after a crash, harmless), a deliberate re-send of a delivered message is
dead-lettered as a replay and stored once, everything is anchored, and `sealstream verify range`
proves each device's window. Per READING (PostgreSQL's readings, in seq and row order): every
reading acknowledged before, during and after the outage is stored exactly once, none twice, per
sensor in emit order and contiguous within each agent run (at most the one reading in flight at the
SIGKILL stored without its acknowledgement logged).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from devices_helpers import end_offsets, read_range
from durable_helpers import acked
from edge.sdk import EdgeMessage, Producer
from infra.process import free_ports
from infra.private_stack import PrivateStack
from support.workers import WorkerProc
from resilience_helpers import Anchoring, wait_stored
from storage.db import open_pool
from trust.statement import Statement, from_kafka_headers
from kafka_principals import enrol_factory
from sealstream._kafka_config import factory_principal, kafka_endpoint
from support.edge import EdgeAgent

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RAW = ["iiot.timeseries.raw", "iiot.images.raw", "iiot.video.raw"]


@dataclass(frozen=True)
class Good:
    statement_hash: str
    device: str


CONFIG = """
[edge]
factory = "{factory}"
metrics_port = {port}
kafka_bootstrap = "{bootstrap}"
[edge.spool]
path = "spool"
[edge.group]
readings = 20
seconds = 0.5
[devices.press-1]
kind = "timeseries"
key = {{ file = "keys/press-1.key" }}
sensors = ["temperature", "pressure"]
[devices.cam-1]
kind = "image"
key = {{ file = "keys/cam-1.key" }}
[sources.tick]
type = "python"
module = "acking_source"
device = "press-1"
sensors = ["temperature", "pressure"]
period_s = 0.05
start = {start}
ack_log = "{ack_log}"
[sources.cam]
type = "files"
device = "cam-1"
path = "camera"
stable_s = 0.3
poll_s = 0.1
"""


def _cli(env: dict, *args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "sealstream", *args, "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return json.loads(p.stdout)


def _images(folder: Path, tag: str, n: int) -> None:
    for i in range(n):
        (folder / f"{tag}-{i}.jpg").write_bytes(b"\xff\xd8\xff" + f"{tag}-{i}".encode() + os.urandom(64))


OUTAGE_S = 60.0  # how long Kafka is away (a sleep while the sources produce, not a timing assert)


def test_edge_outage_kill_and_verified(stack, settings, tmp_path: Path) -> None:
    with PrivateStack(tmp_path / "private", base=settings, kafka=True) as ps:
        s = ps.settings
        factory = f"edge-{uuid.uuid4().hex[:8]}"
        gateway = f"gw-{factory}"
        anchoring = Anchoring(s, gateway)
        enrol_factory(s, factory)  # its Kafka principal factory-<name> (security on)
        home = tmp_path / "edge"
        (home / "camera").mkdir(parents=True)
        port = free_ports(1)[0]
        cfg = home / "edge.toml"
        acks = [tmp_path / "acked-0.log", tmp_path / "acked-1.log"]  # one per agent run
        starts = (0, 100_000)  # the values of each run's readings count up from here
        cfg.write_text(CONFIG.format(factory=factory, port=port, bootstrap=s.kafka_bootstrap, start=starts[0],
                                     ack_log=acks[0]))
        env = dict(os.environ, SEALSTREAM_HOME=str(s.home), SEALSTREAM_PG_DSN=s.postgres_dsn,
                   SEALSTREAM_MINIO_ENDPOINT=s.minio_address, SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap,
                   PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), SEALSTREAM_LOG_LEVEL="WARNING")
        keys = {d["device"]: d["did"] for d in _cli(env, "edge", "keygen", "--config", str(cfg))["devices"]}
        reg = _cli(env, "edge", "register", "--config", str(cfg))
        assert reg["registered"] == 2
        # the worker trusts these devices through a manifest (its ledger directory is not what is tested)
        man = Path(s.home) / "devices" / factory
        man.mkdir(parents=True)
        (man / "devices.json").write_text(json.dumps({"v": 1, "factory": factory, "devices": [
            {"did": keys["press-1"], "kind": "timeseries", "name": "press-1", "sensors": [],
             "key_file": str(home / "keys" / "press-1.key")},
            {"did": keys["cam-1"], "kind": "image", "name": "cam-1", "sensors": [],
             "key_file": str(home / "keys" / "cam-1.key")}]}))
        worker = WorkerProc.manifest(s, f"sealstream-pipeline-test-edge-{uuid.uuid4().hex[:8]}", factory,
                            tmp_path / "worker.log", gateway)
        agent = EdgeAgent(cfg, env, tmp_path / "edge.log", port)
        try:
            _images(home / "camera", "before", 3)
            worker.wait_ingesting()
            # -- Kafka away 60 s (the outage) while the sources produce; at its end the agent is SIGKILLed
            # with the outage's messages spooled (and in librdkafka's queue), then both come back
            ps.stop("kafka")
            acked_at_stop = len(acked(acks[0]))
            _images(home / "camera", "outage", 3)
            time.sleep(OUTAGE_S)
            spooled_in_outage = agent.metric("sealstream_edge_spool_messages")
            agent.kill()
            acked_in_outage = len(acked(acks[0])) - acked_at_stop
            assert acked_in_outage > 0  # the source kept producing while Kafka was away
            db = sqlite3.connect(home / "spool" / "spool.db")
            held = [Statement.from_bytes(bytes(r[0])).hash().hex()
                    for r in db.execute("SELECT statement FROM messages")]
            db.close()
            assert len(held) >= spooled_in_outage > 0
            _images(home / "camera", "after", 3)
            ps.start("kafka")
            cfg.write_text(CONFIG.format(factory=factory, port=port, bootstrap=s.kafka_bootstrap, start=starts[1],
                                         ack_log=acks[1]))
            agent = EdgeAgent(cfg, env, tmp_path / "edge2.log", port)
            agent.wait(lambda: agent.metric("sealstream_edge_spool_messages") < 5, 120, "the spool drained")
            agent.wait(lambda: agent.metric("sealstream_edge_sent_total") >= 10, 60, "sending after the restart")
            agent.wait(lambda: not list((home / "camera").glob("*.jpg")), 60, "every camera file taken")
            agent.stop_ok()

            # -- what Kafka holds: per device in seq order (first copies), duplicates only as identical copies
            records = read_range(s, {}, end_offsets(s, RAW), timeout=60)
            by_dev: dict[str, list] = {}
            for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
                stmt, _ = from_kafka_headers(r.headers)
                assert any(k == "ss-edge-received-ms" for k, _ in r.headers)
                by_dev.setdefault(stmt.device, []).append((stmt, r))
            assert set(by_dev) == set(keys.values())
            good: dict[str, Good] = {}
            for did, items in by_dev.items():
                first_seqs, seen = [], set()
                for stmt, _r in items:
                    h = stmt.hash().hex()
                    if h not in seen:
                        seen.add(h)
                        first_seqs.append(stmt.seq)
                        good[h] = Good(h, did)
                assert first_seqs == sorted(first_seqs), f"order of {did} broken"
                assert first_seqs == list(range(first_seqs[0], first_seqs[0] + len(first_seqs))), "a seq gap"
            copies = len(records) - len(good)
            assert set(held) <= set(good), "a message spooled at the kill never reached Kafka"
            assert spooled_in_outage > 0
            wait_stored(s, list(good.values()), [worker], timeout=180)
            with open_pool(s.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
                rows = conn.execute("SELECT device, seq FROM statements WHERE device = ANY(%s) ORDER BY device, seq",
                                    (list(keys.values()),)).fetchall()
                n_img = conn.execute("SELECT count(*) FROM blobs b JOIN statements s USING (statement_hash) "
                                     "WHERE s.device = %s", (keys["cam-1"],)).fetchone()[0]
            assert len(rows) == len(good) == len(set(rows))  # each statement stored exactly once
            assert n_img == 9 and len(list((home / "camera" / "done").glob("*.jpg"))) == 9
            # -- per reading: each acknowledged one stored once, in emit order per sensor, none twice
            with open_pool(s.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
                stored = [(str(sensor), int(v)) for sensor, v in conn.execute(
                    "SELECT r.sensor, r.value FROM readings r JOIN statements st USING (statement_hash) "
                    "WHERE st.device = %s ORDER BY st.seq, r.row_index", (keys["press-1"],)).fetchall()]
            acknowledged = [r for log in acks for r in acked(log)]
            assert len(stored) == len(set(stored)), "a reading stored twice"
            missing = set(acknowledged) - set(stored)
            assert not missing, f"{len(missing)} acknowledged readings not stored, e.g. {sorted(missing)[:5]}"
            assert len(set(stored) - set(acknowledged)) <= 1  # the one in flight at the SIGKILL, if any
            for sensor in ("temperature", "pressure"):
                values = [v for x, v in stored if x == sensor]
                assert values == sorted(values), f"{sensor}: stored out of emit order"
                for start in starts:
                    run = [v for v in values if start <= v < start + 100_000]
                    assert run == list(range(start, start + len(run))), f"{sensor}: a reading lost in run {start}"
            # -- every dead letter is a replay copy (the resend window after the SIGKILL); show one on purpose
            dlq_before = read_range(s, {}, end_offsets(s, ["iiot.deadletter"]), timeout=30)
            assert all(dict(d.headers)["ss-dlq-reason"] == b"replay" for d in dlq_before)
            stmt, rec = by_dev[keys["press-1"]][0]
            with Producer(kafka_endpoint(s, factory_principal(factory))) as p:
                p.produce(EdgeMessage(rec.topic, rec.key, rec.value, tuple(rec.headers), stmt, rec.timestamp_ms))
            deadline = time.monotonic() + 90
            while len(read_range(s, {}, end_offsets(s, ["iiot.deadletter"]), timeout=30)) <= len(dlq_before):
                assert time.monotonic() < deadline, worker.tail()
                time.sleep(1)
            dlq = read_range(s, {}, end_offsets(s, ["iiot.deadletter"]), timeout=30)
            assert all(dict(d.headers)["ss-dlq-reason"] == b"replay" for d in dlq)
            with open_pool(s.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
                assert conn.execute("SELECT count(*) FROM statements WHERE statement_hash = %s",
                                    (stmt.hash(),)).fetchone()[0] == 1
            # -- anchored, and verify range proves each device's window
            # (every leaf in an anchored batch; the proofs are verify range's. Not Anchoring.check: its
            # once-on-iiot.anchors assertion fails after a broker stop -- an anchor-agent issue, reported)
            from test_anchor_e2e import _all_anchored

            with open_pool(s.postgres_dsn, max_size=1) as pool:
                deadline = time.monotonic() + 180
                while not (batches := _all_anchored(pool, list(good))):
                    assert time.monotonic() < deadline and worker.alive(), worker.tail()
                    time.sleep(1)
            for did, items in by_dev.items():
                ts = [st.ts for st, _ in items]
                lo = datetime.fromtimestamp(min(ts) / 1000, timezone.utc) - timedelta(seconds=5)
                hi = datetime.fromtimestamp(max(ts) / 1000, timezone.utc) + timedelta(seconds=5)
                p = subprocess.run([sys.executable, "-m", "sealstream", "verify", "range", "--device", did,
                                    "--from", lo.isoformat(), "--to", hi.isoformat(), "--ledger",
                                    str(anchoring.cluster.root), "--json"], cwd=ROOT, env=env, capture_output=True,
                                   text=True, timeout=300)
                assert p.stdout.strip(), (did, p.stderr[-3000:])
                doc = json.loads(p.stdout)
                assert p.returncode == 0 and doc["ok"], (did, p.stdout[-3000:], p.stderr[-2000:])
            print(f"{len(good)} statements ({n_img} images), {len(stored)} readings ({acked_in_outage} acknowledged "
                  f"during the outage), {copies} Kafka copies after the SIGKILL, "
                  f"{len(held)} held in the spool at the kill, {spooled_in_outage:.0f} spooled during the outage, "
                  f"{len(batches)} batches, {len(dlq)} replay dead letters")
        finally:
            agent.kill()
            worker.kill()
            anchoring.close()
