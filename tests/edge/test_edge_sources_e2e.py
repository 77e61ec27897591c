"""The edge agent end to end with real protocol sources: a Sparkplug B edge node on a real mosquitto
(NBIRTH/DBIRTH/DDATA by alias, one malformed payload, a rebirth with new aliases, a DDATA with an
alias of the old session), an asyncua OPC UA server whose node values change and a pymodbus server
whose registers change, all read by `sealstream edge run` (a subprocess) into a private Kafka, a
pipeline worker and a 4-node contracts ledger.

Afterwards: every value the servers produced is a stored reading of its device, every statement on
Kafka verifies under its device, is stored once, sealed (it has a receipt) and anchored, `sealstream
verify range` proves each device's window, the malformed Sparkplug payload and the stale alias are
counted by reason (in /metrics and in the status file), and OPC UA and Modbus values written after
the malformed payload arrived too (one source's bad input does not stop the others).

In the same running agent: an OPC UA node deleted from the server while subscribed
(``opcua-node-gone``) and a second Modbus source whose device hangs (a TCP listener that accepts and
never answers: ``modbus-timeout``, again at every reconnect) are each logged with their reason and
counted in /metrics and the status file, while the OPC UA node that remains and the other Modbus
device keep flowing (values written afterwards are stored readings).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiomqtt
import pytest

from edge.simulators import LOOPBACK, LoopThread, ModbusServer, OpcUaServer, SilentServer, sparkplug_payload
from infra.mosquitto import mosquitto
from devices_helpers import end_offsets, read_range
from edge.sources.sparkplug_b_pb import DataType
from infra.process import free_ports
from infra.private_stack import PrivateStack
from support.workers import WorkerProc
from resilience_helpers import Anchoring, wait_stored
from storage.db import open_pool
from support.edge import EdgeAgent
from test_edge_e2e import Good, _cli
from trust.statement import from_kafka_headers, verify_statement
from kafka_principals import enrol_factory

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GUARD_S = 60.0  # a guard against a hung test, never a timing assertion

CONFIG = """
[edge]
factory = "{factory}"
metrics_port = {port}
kafka_bootstrap = "{bootstrap}"
[edge.spool]
path = "spool"
[edge.group]
readings = 20
seconds = 0.3
[devices.spb-node]
kind = "timeseries"
key = {{ file = "keys/spb-node.key" }}
sensors = ["temperature"]
[devices.spb-plc]
kind = "timeseries"
key = {{ file = "keys/spb-plc.key" }}
[devices.opc-1]
kind = "timeseries"
key = {{ file = "keys/opc-1.key" }}
sensors = ["temperature", "pressure"]
[devices.mb-1]
kind = "timeseries"
key = {{ file = "keys/mb-1.key" }}
sensors = ["level", "flow"]
[devices.mb-hang]
kind = "timeseries"
key = {{ file = "keys/mb-hang.key" }}

[sources.spb]
type = "sparkplug"
host = "{mqtt_host}"
port = {mqtt_port}
group = "plant1"
reconnect_min_s = 0.2
reconnect_max_s = 1
[[sources.spb.metrics]]
node = "press1"
metric = "Temperature"
device = "spb-node"
sensor = "temperature"
[[sources.spb.metrics]]
node = "press1"
sparkplug_device = "plc1"
metric = "*"
device = "spb-plc"

[sources.plc]
type = "opcua"
endpoint = "{opc_endpoint}"
publishing_interval_ms = 100
node_check_s = 1
reconnect_min_s = 0.2
reconnect_max_s = 1
[[sources.plc.nodes]]
node_id = "ns=2;s=Press.Temperature"
device = "opc-1"
sensor = "temperature"
[[sources.plc.nodes]]
node_id = "ns=2;s=Press.Pressure"
device = "opc-1"
sensor = "pressure"

[sources.mb]
type = "modbus"
host = "{mb_host}"
port = {mb_port}
unit = 1
interval_s = 0.2
timeout_s = 1.0
reconnect_min_s = 0.2
reconnect_max_s = 1
[[sources.mb.registers]]
table = "holding"
address = 0
type = "int16"
scale = 0.5
device = "mb-1"
sensor = "level"
[[sources.mb.registers]]
table = "input"
address = 2
type = "uint32"
device = "mb-1"
sensor = "flow"

[sources.mbhang]
type = "modbus"
host = "{mb_host}"
port = {hang_port}
unit = 1
interval_s = 0.2
timeout_s = 0.5
reconnect_min_s = 0.2
reconnect_max_s = 1
[[sources.mbhang.registers]]
table = "holding"
address = 0
type = "int16"
device = "mb-hang"
sensor = "level"
"""


NODE = "spBv1.0/plant1/{}/press1"
DEV = "spBv1.0/plant1/{}/press1/plc1"


def _sparkplug_script(t0: int) -> tuple[list[tuple[str, bytes]], set[tuple[str, str, float, int]]]:
    """What the simulated edge node publishes, and the readings (device, sensor, value, ts_ms) it means."""
    D = DataType
    script = [
        (NODE.format("NBIRTH"), sparkplug_payload(0, [
            dict(name="bdSeq", datatype=D.Int64, long_value=1),
            dict(name="Node Control/Rebirth", datatype=D.Boolean, boolean_value=False),
            dict(name="Temperature", alias=1, datatype=D.Double, timestamp=t0 + 1, double_value=20.5),
            dict(name="Unmapped", alias=2, datatype=D.Double, double_value=99.0)], t0)),
        (NODE.format("NDATA"), sparkplug_payload(1, [dict(alias=1, timestamp=t0 + 2, double_value=21.0)], t0 + 2)),
        (DEV.format("DBIRTH"), sparkplug_payload(2, [
            dict(name="Speed", alias=10, datatype=D.Float, timestamp=t0 + 3, float_value=1.5)], t0 + 3)),
        (DEV.format("DDATA"), sparkplug_payload(3, [dict(alias=10, timestamp=t0 + 4, float_value=2.5)], t0 + 4)),
        (NODE.format("NDATA"), b"\xff\xff\xff this is not a Sparkplug B payload"),
        # a new session of the node (as after its reconnect): new bdSeq, new aliases; its device is reborn
        (NODE.format("NBIRTH"), sparkplug_payload(0, [
            dict(name="bdSeq", datatype=D.Int64, long_value=2),
            dict(name="Temperature", alias=5, datatype=D.Double, timestamp=t0 + 5, double_value=23.0)], t0 + 5)),
        (DEV.format("DBIRTH"), sparkplug_payload(1, [
            dict(name="Speed", alias=12, datatype=D.Float, timestamp=t0 + 6, float_value=3.0)], t0 + 6)),
        (NODE.format("NDATA"), sparkplug_payload(2, [dict(alias=5, timestamp=t0 + 7, double_value=24.0)], t0 + 7)),
        # alias 10 was the old session's: unknown now; alias 12 is read
        (DEV.format("DDATA"), sparkplug_payload(3, [dict(alias=10, timestamp=t0 + 8, float_value=9.0),
                                           dict(alias=12, timestamp=t0 + 9, float_value=4.5)], t0 + 8)),
    ]
    expected = {("spb-node", "temperature", 20.5, t0 + 1), ("spb-node", "temperature", 21.0, t0 + 2),
                ("spb-plc", "Speed", 1.5, t0 + 3), ("spb-plc", "Speed", 2.5, t0 + 4),
                ("spb-node", "temperature", 23.0, t0 + 5), ("spb-plc", "Speed", 3.0, t0 + 6),
                ("spb-node", "temperature", 24.0, t0 + 7), ("spb-plc", "Speed", 4.5, t0 + 9)}
    return script, expected


async def _publish(host: str, port: int, script: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(host, port, identifier=f"press1-{uuid.uuid4().hex[:6]}") as client:
        for topic, payload in script:
            await client.publish(topic, payload, qos=1)


def _labelled(page: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in page.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_protocol_sources_to_the_ledger(stack, settings, tmp_path: Path) -> None:
    loop = LoopThread()
    opc = OpcUaServer({"Temperature": 10.0, "Pressure": 1.0})
    mb = ModbusServer()
    hung = SilentServer()  # accepts Modbus TCP connections, never answers
    with PrivateStack(tmp_path / "private", base=settings, kafka=True) as ps, \
            mosquitto(tmp_path / "mosquitto") as broker:
        s = ps.settings
        loop.run(opc.start())
        loop.run(mb.set("holding", 0, [24]))  # level 12.0
        loop.run(mb.set("input", 2, [0, 1000]))  # flow 1000
        loop.run(mb.start())
        loop.run(hung.start())
        factory = f"edgep-{uuid.uuid4().hex[:8]}"
        gateway = f"gw-{factory}"
        anchoring = Anchoring(s, gateway)
        enrol_factory(s, factory)  # its Kafka principal factory-<name> (security on)
        home = tmp_path / "edge"
        home.mkdir()
        port = free_ports(1)[0]
        cfg = home / "edge.toml"
        cfg.write_text(CONFIG.format(factory=factory, port=port, bootstrap=s.kafka_bootstrap, mqtt_host=broker.host,
                                     mqtt_port=broker.port, opc_endpoint=opc.endpoint, mb_host=LOOPBACK,
                                     mb_port=mb.port, hang_port=hung.port))
        env = dict(os.environ, SEALSTREAM_HOME=str(s.home), SEALSTREAM_PG_DSN=s.postgres_dsn,
                   SEALSTREAM_MINIO_ENDPOINT=s.minio_address, SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap,
                   PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), SEALSTREAM_LOG_LEVEL="WARNING")
        keys = {d["device"]: d["did"] for d in _cli(env, "edge", "keygen", "--config", str(cfg))["devices"]}
        assert _cli(env, "edge", "check-config", "--config", str(cfg))["problems"] == []
        assert _cli(env, "edge", "register", "--config", str(cfg))["registered"] == 5
        man = Path(s.home) / "devices" / factory
        man.mkdir(parents=True)
        (man / "devices.json").write_text(json.dumps({"v": 1, "factory": factory, "devices": [
            {"did": did, "kind": "timeseries", "name": name, "sensors": [],
             "key_file": str(home / "keys" / f"{name}.key")}
            for name, did in keys.items()]}))
        worker = WorkerProc.manifest(s, f"sealstream-pipeline-test-edgep-{uuid.uuid4().hex[:8]}", factory,
                            tmp_path / "worker.log", gateway)
        agent = EdgeAgent(cfg, env, tmp_path / "edge.log", port)
        expected: set[tuple[str, str, float, int | None]] = set()

        def page() -> str:
            agent.metric("sealstream_edge_readings_total")  # waits for /metrics
            import urllib.request

            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

        def readings(source: str) -> float:
            return _labelled(page(), "sealstream_edge_readings_total", source=source)

        def connected(source: str) -> bool:
            return _labelled(page(), "sealstream_edge_source_state", source=source, state="connected") == 1

        def opc_write(name: str, value: float) -> None:
            before = readings("plc")
            loop.run(opc.write(name, value))
            agent.wait(lambda: readings("plc") > before, GUARD_S, f"OPC UA {name}={value} read")
            expected.add(("opc-1", name.lower(), value, None))

        def mb_set(table: str, address: int, words: list[int], reading: tuple[str, float]) -> None:
            loop.run(mb.set(table, address, words))
            before = readings("mb")
            # two polls after the write: at least one of them read the new value
            agent.wait(lambda: readings("mb") >= before + 4, GUARD_S, f"Modbus {table}[{address}] polled")
            expected.add(("mb-1", *reading, None))

        try:
            for src in ("spb", "plc", "mb"):
                agent.wait(lambda src=src: connected(src), GUARD_S, f"source {src} connected")
            expected |= {("opc-1", "temperature", 10.0, None), ("opc-1", "pressure", 1.0, None),
                         ("mb-1", "level", 12.0, None), ("mb-1", "flow", 1000.0, None)}
            agent.wait(lambda: readings("plc") >= 2, GUARD_S, "the OPC UA initial values")
            opc_write("Temperature", 11.25)
            opc_write("Pressure", 2.5)
            mb_set("holding", 0, [65535 - 9], ("level", -5.0))  # int16 -10 * 0.5
            # -- Sparkplug: births, data by alias, the malformed payload, the rebirth with new aliases
            t0 = int(time.time() * 1000)
            script, spb_expected = _sparkplug_script(t0)
            loop.run(_publish(broker.host, broker.port, script))
            agent.wait(lambda: readings("spb") >= len(spb_expected), GUARD_S, "every Sparkplug value read")
            agent.wait(lambda: _labelled(page(), "sealstream_edge_source_errors_total", source="spb",
                                         reason="sparkplug-unknown-alias") >= 1, GUARD_S, "the stale alias counted")
            expected |= set(spb_expected)
            # -- after the bad input the other sources still flow
            opc_write("Temperature", 12.75)
            mb_set("input", 2, [1, 2], ("flow", 65538.0))
            assert connected("spb") and connected("plc") and connected("mb")
            errors = page()
            assert _labelled(errors, "sealstream_edge_source_errors_total", source="spb",
                             reason="malformed-sparkplug") == 1
            assert _labelled(errors, "sealstream_edge_source_errors_total", source="spb",
                             reason="sparkplug-unknown-alias") == 1
            assert _labelled(errors, "sealstream_edge_source_errors_total", source="plc") == 0
            assert _labelled(errors, "sealstream_edge_source_errors_total", source="mb") == 0
            assert _labelled(errors, "sealstream_edge_source_restarts_total") == 0
            assert readings("spb") == len(spb_expected)
            # -- an OPC UA node that disappears and a Modbus device that hangs, in this same agent: each
            # logged and counted with its reason, while the remaining node and the other device flow
            loop.run(opc.delete("Pressure"))
            agent.wait(lambda: _labelled(page(), "sealstream_edge_source_errors_total", source="plc",
                                         reason="opcua-node-gone") >= 1, GUARD_S, "the deleted node counted")
            agent.wait(lambda: _labelled(page(), "sealstream_edge_source_errors_total", source="mbhang",
                                         reason="modbus-timeout") >= 2, GUARD_S, "the hung device counted")
            opc_write("Temperature", 13.5)
            mb_set("holding", 0, [30], ("level", 15.0))
            bad = page()
            assert _labelled(bad, "sealstream_edge_source_errors_total", source="plc") == 1  # once, not per check
            assert _labelled(bad, "sealstream_edge_readings_total", source="mbhang") == 0
            assert connected("plc") and connected("mb")  # (mbhang: TCP accepts, so it flips connected/disconnected)
            assert _labelled(bad, "sealstream_edge_source_restarts_total") == 0  # nothing crashed
            text = agent.log.read_text()
            assert "source=plc reason=opcua-node-gone" in text and "Press.Pressure" in text
            assert "source=mbhang reason=modbus-timeout" in text
            # -- every produced value a stored reading of its device (then the agent stops: what its last
            # flush spools stays in the spool for its next run)
            names = {did: name for name, did in keys.items()}

            def stored_rows() -> list[tuple]:
                with open_pool(s.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
                    return conn.execute("SELECT device, sensor, value, (extract(epoch FROM time) * 1000)::bigint "
                                        "FROM readings WHERE device = ANY(%s)", (list(keys.values()),)).fetchall()

            def missing() -> list[tuple]:
                stored = {(names[d], sensor, round(v, 6), ts) for d, sensor, v, ts in stored_rows()}
                untimed = {(dev, sensor, v) for dev, sensor, v, _ in stored}
                return [(dev, sensor, value, ts) for dev, sensor, value, ts in sorted(expected, key=str)
                        if ((dev, sensor, round(value, 6)) not in untimed if ts is None
                            else (dev, sensor, round(value, 6), ts) not in stored)]

            deadline = time.monotonic() + 180
            while left := missing():
                assert time.monotonic() < deadline and worker.alive(), (left, worker.tail())
                time.sleep(1)
            agent.stop_ok()
            status = json.loads((home / "spool" / "status.json").read_text())
            assert status["sources"]["spb"]["errors"] == {"malformed-sparkplug": 1, "sparkplug-unknown-alias": 1}
            assert status["sources"]["plc"]["errors"] == {"opcua-node-gone": 1}
            assert status["sources"]["mb"]["errors"] == {}
            assert set(status["sources"]["mbhang"]["errors"]) == {"modbus-timeout"}
            assert status["sources"]["mbhang"]["readings"] == 0
            assert status["spool"]["rejected"] == 0

            # -- Kafka: every record verifies under its device (signed), is stored once and sealed
            records = read_range(s, {}, end_offsets(s, ["iiot.timeseries.raw"]), timeout=60)
            good: dict[str, Good] = {}
            by_dev: dict[str, list] = {}
            for r in records:
                stmt, sig = from_kafka_headers(r.headers)
                assert verify_statement(stmt, sig), stmt
                assert stmt.payload_sha256 == hashlib.sha256(r.value).digest()
                assert r.key == stmt.device.encode()
                by_dev.setdefault(stmt.device, []).append(stmt)
                good[stmt.hash().hex()] = Good(stmt.hash().hex(), stmt.device)
            assert set(by_dev) == set(keys.values()) - {keys["mb-hang"]}  # the hung device never answered
            assert len(good) == len(records), "a message reached Kafka twice without a crash"
            wait_stored(s, list(good.values()), [worker], timeout=180)
            with open_pool(s.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
                st = conn.execute("SELECT encode(statement_hash, 'hex'), receipt_signature IS NOT NULL "
                                  "FROM statements WHERE device = ANY(%s)", (list(keys.values()),)).fetchall()
            assert {h for h, _ in st} == set(good) and len(st) == len(good)
            assert all(sealed for _, sealed in st), "a statement has no receipt"
            rows = stored_rows()
            stored = {(names[d], sensor, round(v, 6), ts) for d, sensor, v, ts in rows}
            untimed = {(dev, sensor, v) for dev, sensor, v, _ in stored}
            assert not missing()
            assert not any(dev.startswith("spb") and v in (9.0, 99.0) for dev, _, v in untimed)
            assert sum(1 for dev, *_ in stored if dev.startswith("spb")) == len(spb_expected)
            # -- anchored, and verify range proves each device's window
            from test_anchor_e2e import _all_anchored

            with open_pool(s.postgres_dsn, max_size=1) as pool:
                deadline = time.monotonic() + 180
                while not (batches := _all_anchored(pool, list(good))):
                    assert time.monotonic() < deadline and worker.alive(), worker.tail()
                    time.sleep(1)
            for did, stmts in by_dev.items():
                lo = datetime.fromtimestamp(min(st.ts for st in stmts) / 1000, timezone.utc) - timedelta(seconds=5)
                hi = datetime.fromtimestamp(max(st.ts for st in stmts) / 1000, timezone.utc) + timedelta(seconds=5)
                p = subprocess.run([sys.executable, "-m", "sealstream", "verify", "range", "--device", did,
                                    "--from", lo.isoformat(), "--to", hi.isoformat(), "--ledger",
                                    str(anchoring.cluster.root), "--json"], cwd=ROOT, env=env, capture_output=True,
                                   text=True, timeout=300)
                assert p.stdout.strip(), (names[did], p.stderr[-3000:])
                doc = json.loads(p.stdout)
                assert p.returncode == 0 and doc["ok"], (names[did], p.stdout[-3000:], p.stderr[-2000:])
            print(f"{len(good)} statements, {len(rows)} readings, {len(batches)} batches; "
                  f"per device {[(names[d], len(v)) for d, v in by_dev.items()]}")
        finally:
            agent.kill()
            worker.kill()
            anchoring.close()
            loop.run(opc.stop())
            loop.run(mb.stop())
            loop.run(hung.stop())
            loop.close()
