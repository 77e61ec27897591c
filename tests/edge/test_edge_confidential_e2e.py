"""A confidential device on the edge (issue 18), end to end on real services.

A private Kafka and MinIO, a 4-node contracts ledger where a recipient is registered and granted
a stream, `sealstream data recipients --out` writing the recipients file the edge reads, and
`sealstream edge run` (a subprocess) with a time-series device (a sensor name carrying a unique
marker) and a camera device (images carrying it) both ``confidential = { stream, recipients }``,
through the real pipeline worker. While it runs and afterwards no file of the spool holds the
marker (bytes, hex or base64), nor any record of the raw topics (key, value, headers): they are
envelopes with a key record; the stored records open for the recipient with
`sealstream data open blob`, and the plaintext holds the marker.

The agent is SIGKILLed once while the time-series device's window is open (its readings sealed in
the spool's ``pending_sealed``, edge.pending_seal) and restarted: every reading the source saw
acknowledged, before and after the kill, is in exactly one Kafka record (opened for the recipient),
per sensor in emit order, and no spool file held the marker at the kill either."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from confidential.envelope import CONTENT_TYPE, KEYS_HEADER, key_record_of, open_envelope
from confidential.keys import RecipientKey, save_recipient_key
from devices_helpers import end_offsets, read_range
from durable_helpers import acked, count_rows
from kafka_principals import enrol_factory
from infra.process import free_ports
from infra.private_stack import PrivateStack
from support.workers import WorkerProc
from resilience_helpers import Anchoring, wait_stored
from trust.statement import from_kafka_headers
from support.edge import EdgeAgent

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RAW = ["iiot.timeseries.raw", "iiot.images.raw", "iiot.video.raw"]
MARK = "CONFEDGE" + uuid.uuid4().hex

CONFIG = """
[edge]
factory = "{factory}"
metrics_port = {port}
kafka_bootstrap = "{bootstrap}"
[edge.spool]
path = "spool"
[edge.group]
readings = 20
seconds = 600
[devices.press-1]
kind = "timeseries"
key = {{ file = "keys/press-1.key" }}
confidential = {{ stream = "{stream}", recipients = "recipients.json" }}
[devices.cam-1]
kind = "image"
key = {{ file = "keys/cam-1.key" }}
confidential = {{ stream = "{stream}", recipients = "recipients.json" }}
[sources.tick]
type = "python"
module = "acking_source"
device = "press-1"
sensors = ["setpoint-{mark}", "pressure"]
period_s = 0.02
start = {start}
ack_log = "{ack_log}"
[sources.cam]
type = "files"
device = "cam-1"
path = "camera"
stable_s = 0.3
poll_s = 0.1
"""


@dataclass(frozen=True)
class Good:
    statement_hash: str
    device: str


def _forms(marker: bytes) -> list[bytes]:
    return [marker, marker.hex().encode(), base64.b64encode(marker)[:-4]]


def _holds(data: bytes) -> bool:
    return any(f in data for f in _forms(MARK.encode()))


def _spool_clean(spool: Path) -> list[str]:
    return [str(p) for p in spool.rglob("*") if p.is_file() and _holds(p.read_bytes())]


def _cli(env: dict, *args: str) -> tuple[int, dict, str]:
    p = subprocess.run([sys.executable, "-m", "sealstream", *args, "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=180)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from {args}: {p.stdout!r} {p.stderr!r}") from None
    return p.returncode, doc, p.stdout + p.stderr


def test_confidential_edge_device_spools_and_sends_ciphertext_only(stack, settings, tmp_path: Path) -> None:
    from anchor_helpers import admin_client

    with PrivateStack(tmp_path / "private", base=settings, kafka=True, minio=True) as ps:
        s = ps.settings
        factory = f"edgec-{uuid.uuid4().hex[:8]}"
        gateway = f"gw-{factory}"
        anchoring = Anchoring(s, gateway)
        enrol_factory(s, factory)
        stream = f"line-{uuid.uuid4().hex[:6]}"
        qa = RecipientKey.generate(f"qa-{uuid.uuid4().hex[:6]}")
        qa_file = tmp_path / "qa.key"
        save_recipient_key(qa, qa_file)
        with admin_client(anchoring.cluster) as admin:
            assert admin.submit("registry.register_enc_key", {"id": qa.id, "org": "operator",
                                                              "key": qa.public.hex()}).refusal is None
            assert admin.submit("policy.grant", {"stream": stream, "recipient": qa.id}).refusal is None
        home = tmp_path / "edge"
        (home / "camera").mkdir(parents=True)
        port = free_ports(1)[0]
        cfg = home / "edge.toml"
        acks = [tmp_path / "acked-0.log", tmp_path / "acked-1.log"]  # outside the spool: they name the sensors
        starts = (0, 100_000)

        def write_config(run: int) -> None:
            cfg.write_text(CONFIG.format(factory=factory, port=port, bootstrap=s.kafka_bootstrap, stream=stream,
                                         mark=MARK, start=starts[run], ack_log=acks[run]))

        write_config(0)
        env = dict(os.environ, SEALSTREAM_HOME=str(s.home), SEALSTREAM_PG_DSN=s.postgres_dsn,
                   SEALSTREAM_MINIO_ENDPOINT=s.minio_address, SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap,
                   PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), SEALSTREAM_LOG_LEVEL="WARNING")
        rc, doc, text = _cli(env, "data", "recipients", "--stream", stream, "--out", str(home / "recipients.json"))
        assert rc == 0 and [r["id"] for r in doc["recipients"]] == [qa.id], text
        rc, keys_doc, text = _cli(env, "edge", "keygen", "--config", str(cfg))
        assert rc == 0, text
        keys = {d["device"]: d["did"] for d in keys_doc["devices"]}
        rc, _, text = _cli(env, "edge", "register", "--config", str(cfg))
        assert rc == 0, text
        man = Path(s.home) / "devices" / factory
        man.mkdir(parents=True)
        (man / "devices.json").write_text(json.dumps({"v": 1, "factory": factory, "devices": [
            {"did": keys["press-1"], "kind": "timeseries", "name": "press-1", "sensors": [],
             "key_file": str(home / "keys" / "press-1.key")},
            {"did": keys["cam-1"], "kind": "image", "name": "cam-1", "sensors": [],
             "key_file": str(home / "keys" / "cam-1.key")}]}))
        worker = WorkerProc.manifest(s, f"sealstream-pipeline-test-edgec-{uuid.uuid4().hex[:8]}", factory,
                            tmp_path / "worker.log", gateway)
        log = tmp_path / "edge.log"
        agent = EdgeAgent(cfg, env, log)
        try:
            for i in range(3):
                (home / "camera" / f"img-{i}.jpg").write_bytes(b"\xff\xd8\xff" + (MARK * 4).encode()
                                                               + os.urandom(256))
            deadline = time.monotonic() + 90
            while list((home / "camera").glob("*.jpg")) or not (home / "spool" / "spool.db").exists():
                agent.check()
                assert time.monotonic() < deadline, agent.tail()
                time.sleep(0.3)
            worker.wait_ingesting()
            deadline = time.monotonic() + 120
            while not (len(acked(acks[0])) > 60 and 5 <= len(acked(acks[0])) % 20 <= 15):  # mid-window
                agent.check()
                assert time.monotonic() < deadline, agent.tail()
                time.sleep(0.002)
            assert _spool_clean(home / "spool") == []  # while it runs (messages, pending readings, WAL)
            agent.kill()
            assert count_rows(home / "spool" / "spool.db", "pending_sealed") > 0  # the open window, sealed
            assert count_rows(home / "spool" / "spool.db", "pending_readings") == 0
            assert _spool_clean(home / "spool") == []
            write_config(1)
            agent = EdgeAgent(cfg, env, log)
            deadline = time.monotonic() + 120
            while len(acked(acks[1])) < 60:
                agent.check()
                assert time.monotonic() < deadline, agent.tail()
                time.sleep(0.05)
            assert _spool_clean(home / "spool") == []
            agent.stop_ok()
            assert _spool_clean(home / "spool") == []
            assert not _holds(log.read_bytes())

            records = read_range(s, {}, end_offsets(s, RAW), timeout=60)
            good: dict[str, Good] = {}
            by_kind: dict[str, str] = {}
            for r in records:
                assert not _holds(r.key or b"") and not _holds(r.value or b"")
                assert not any(_holds(v or b"") for _, v in r.headers)
                stmt, _ = from_kafka_headers(r.headers)
                assert stmt.content_type == CONTENT_TYPE and any(k == KEYS_HEADER for k, _ in r.headers)
                good[stmt.hash().hex()] = Good(stmt.hash().hex(), stmt.device)
                by_kind.setdefault(stmt.kind, stmt.hash().hex())
            assert {g.device for g in good.values()} == set(keys.values())
            assert set(by_kind) == {"timeseries", "image"}
            # -- per reading, across the SIGKILL: each acknowledged one in exactly one record, in emit order
            sent: list[tuple[str, int]] = []
            firsts: dict = {}  # a record resent after the kill (acked, not yet deleted) is one copy
            for r in records:
                firsts.setdefault(from_kafka_headers(r.headers)[0].hash().hex(), r)
            for r in sorted(firsts.values(), key=lambda r: from_kafka_headers(r.headers)[0].seq):
                stmt, _ = from_kafka_headers(r.headers)
                if stmt.kind != "timeseries":
                    continue
                opened = open_envelope(r.value, key_record_of(r.headers), qa.id, qa.private,
                                       device=stmt.device, seq=stmt.seq, kind="timeseries")
                t = pa.ipc.open_stream(opened.plaintext).read_all()
                sent += [(str(x), int(v)) for x, v in zip(t.column("sensor").to_pylist(),
                                                         t.column("value").to_pylist())]
            acknowledged = [r for a in acks for r in acked(a)]
            assert len(sent) == len(set(sent)), "a reading in two records"
            assert set(acknowledged) <= set(sent), "an acknowledged reading never reached Kafka"
            assert len(set(sent) - set(acknowledged)) <= 1  # the one in flight at the SIGKILL, if any
            for sensor in (f"setpoint-{MARK}", "pressure"):
                values = [v for x, v in sent if x == sensor]
                assert values == sorted(values)
                for start in starts:
                    run = [v for v in values if start <= v < start + 100_000]
                    assert run == list(range(start, start + len(run))), f"{sensor}: a gap in run {start}"
            wait_stored(s, list(good.values()), [worker], timeout=180)
            # the stored records open for the recipient (once anchored: the policy judged at its height)
            for kind, h in by_kind.items():
                out = tmp_path / f"{kind}.bin"
                deadline = time.monotonic() + 120
                while True:
                    rc, opened, text = _cli(env, "data", "open", "blob", h, "--key", str(qa_file), "--out",
                                            str(out))
                    if rc == 0 and opened.get("ok") and opened.get("anchored", True):
                        break
                    assert time.monotonic() < deadline, text
                    if out.exists():
                        out.unlink()
                    time.sleep(2)
                assert MARK.encode() in out.read_bytes(), kind
        finally:
            agent.kill()
            worker.kill()
            anchoring.close()
