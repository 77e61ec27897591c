"""The Sparkplug B source against a real mosquitto, with a Sparkplug B edge node published from the test:
birth, data by alias, device birth/data, a malformed payload and topic, a seq gap (-> rebirth request),
a rebirth with new aliases, a stale and a current death."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiomqtt
from google.protobuf import descriptor_pb2

from infra.mosquitto import mosquitto
from edge.sources import sparkplug
from edge.sources.sparkplug_b_pb import FILE_DESCRIPTOR, DataType, Payload
from sources_helpers import WAIT_S, RecordingContext, running

PROTO_DIR = Path(sparkplug.__file__).parent
T0 = 1_700_000_000_000  # payload timestamps T0 + n, metric timestamps T0 + 100 + n


def test_embedded_descriptor_is_the_proto_compiled(tmp_path):
    out = tmp_path / "spb.desc"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}",
                    "sparkplug_b.proto"], check=True, capture_output=True)
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert compiled == FILE_DESCRIPTOR


def test_wire_format_matches_the_spec_field_numbers():
    # Payload{timestamp=1: 5, metrics=2: [Metric{name=1: "a", alias=2: 1, datatype=4: 10,
    #         double_value=13: 1.5}], seq=3: 3}
    wire = bytes.fromhex("0805" "1210" "0a0161" "1001" "200a" "69000000000000f83f" "1803")
    p = Payload.FromString(wire)
    assert (p.timestamp, p.seq, p.metrics[0].name, p.metrics[0].alias, p.metrics[0].datatype,
            p.metrics[0].double_value) == (5, 3, "a", 1, DataType.Double, 1.5)


def _metric(p, *, name=None, alias=None, dt=None, ts=None, **value):
    m = p.metrics.add()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    if dt is not None:
        m.datatype = dt
    if ts is not None:
        m.timestamp = ts
    for field, v in value.items():
        setattr(m, field, v)
    return m


def _payload(seq=None, ts=None, metrics=()):
    p = Payload()
    if ts is not None:
        p.timestamp = ts
    if seq is not None:
        p.seq = seq
    for m in metrics:
        _metric(p, **m)
    return p.SerializeToString()


NODE = "spBv1.0/plant1/{}/press1"
DEV = "spBv1.0/plant1/{}/press1/plc1"


def _script() -> list[tuple[str, bytes]]:
    D = DataType
    return [
        (NODE.format("NBIRTH"), _payload(seq=0, ts=T0, metrics=[
            dict(name="bdSeq", dt=D.Int64, long_value=7),
            dict(name="Node Control/Rebirth", dt=D.Boolean, boolean_value=False),
            dict(name="Temperature", alias=1, dt=D.Double, ts=T0 + 100, double_value=20.5),
            dict(name="Pressure", alias=2, dt=D.Int32, int_value=2**32 - 5),  # -5, 32-bit two's complement
            dict(name="Running", alias=3, dt=D.Boolean, boolean_value=True),
            dict(name="Label", alias=4, dt=D.String, string_value="line one"),
            dict(name="Level", alias=7, dt=D.Int8, int_value=253),  # -3 as Tahu's Python encodes Int8
            dict(name="Unmapped", alias=8, dt=D.Double, double_value=1.0),
        ])),
        (NODE.format("NDATA"), _payload(seq=1, ts=T0 + 1, metrics=[
            dict(alias=1, ts=T0 + 101, double_value=21.0), dict(alias=2, int_value=2**32 - 7)])),
        (DEV.format("DBIRTH"), _payload(seq=2, ts=T0 + 2, metrics=[
            dict(name="Device Control/Rebirth", dt=D.Boolean, boolean_value=False),
            dict(name="Speed", alias=10, dt=D.Float, float_value=1.5),
            dict(name="Mode", alias=11, dt=D.String, string_value="auto"),  # "*" skips non-numeric silently
        ])),
        (DEV.format("DDATA"), _payload(seq=3, ts=T0 + 3, metrics=[dict(alias=10, float_value=2.5)])),
        (DEV.format("DDATA"), _payload(seq=4, ts=T0 + 4, metrics=[
            dict(alias=99, float_value=9.0), dict(alias=10, ts=T0 + 104, float_value=3.5)])),
        (NODE.format("NDATA"), b"\xff\xff\xff not protobuf"),
        ("spBv1.0/plant1/NDATA", _payload(seq=5, metrics=[dict(alias=1, double_value=0.0)])),
        (NODE.format("NDATA"), _payload(seq=6, ts=T0 + 6, metrics=[dict(alias=1, double_value=22.0)])),  # gap: 5 lost
        # the node's new session (say after a reconnect): new bdSeq, new aliases
        (NODE.format("NBIRTH"), _payload(seq=0, ts=T0 + 7, metrics=[
            dict(name="bdSeq", dt=D.Int64, long_value=8),
            dict(name="Temperature", alias=5, dt=D.Double, double_value=23.0),
            dict(name="Pressure", alias=6, dt=D.Int32, int_value=0),
        ])),
        (NODE.format("NDATA"), _payload(seq=1, ts=T0 + 8, metrics=[
            dict(alias=5, double_value=24.0), dict(alias=1, double_value=9.9)])),
        (DEV.format("DDATA"), _payload(seq=2, ts=T0 + 9, metrics=[dict(alias=10, float_value=4.5)])),  # not reborn
        (NODE.format("NDEATH"), _payload(metrics=[dict(name="bdSeq", dt=D.Int64, long_value=7)])),  # stale Will
        (NODE.format("NDATA"), _payload(seq=3, ts=T0 + 10, metrics=[dict(alias=6, int_value=1)])),
        (NODE.format("NDEATH"), _payload(metrics=[dict(name="bdSeq", dt=D.Int64, long_value=8)])),
        (NODE.format("NDATA"), _payload(seq=4, ts=T0 + 11, metrics=[dict(alias=5, double_value=25.0)])),
    ]


EXPECTED_READINGS = [
    ("press-1", "temperature", 20.5, T0 + 100),
    ("press-1", "pressure", -5.0, T0),
    ("press-1", "running", 1.0, T0),
    ("press-1", "level", -3.0, T0),
    ("press-1", "temperature", 21.0, T0 + 101),
    ("press-1", "pressure", -7.0, T0 + 1),
    ("press-1-plc", "Speed", 1.5, T0 + 2),
    ("press-1-plc", "Speed", 2.5, T0 + 3),
    ("press-1-plc", "Speed", 3.5, T0 + 104),
    ("press-1", "temperature", 22.0, T0 + 6),
    ("press-1", "temperature", 23.0, T0 + 7),
    ("press-1", "pressure", 0.0, T0 + 7),
    ("press-1", "temperature", 24.0, T0 + 8),
    ("press-1", "pressure", 1.0, T0 + 10),
]

EXPECTED_ERRORS = [
    "sparkplug-non-numeric",    # Label, mapped by name, is a String
    "sparkplug-unknown-alias",  # alias 99
    "malformed-sparkplug",      # garbage payload
    "malformed-sparkplug",      # topic without an edge node
    "sparkplug-seq-gap",        # seq 6 after 4
    "sparkplug-unknown-alias",  # alias 1 belonged to the previous birth
    "sparkplug-no-birth",       # DDATA of a device not born in the new session
    "sparkplug-no-birth",       # NDATA after the current session's NDEATH
]


def _config(broker) -> dict:
    return {
        "type": "sparkplug", "host": broker.host, "port": broker.port, "group": "plant1", "qos": 1,
        "host_id": "sealstream-test", "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
        "metrics": [
            {"node": "press1", "metric": "Temperature", "device": "press-1", "sensor": "temperature"},
            {"node": "press1", "metric": "Pressure", "device": "press-1", "sensor": "pressure"},
            {"node": "press1", "metric": "Running", "device": "press-1", "sensor": "running"},
            {"node": "press1", "metric": "Label", "device": "press-1", "sensor": "label"},
            {"node": "press1", "metric": "Level", "device": "press-1", "sensor": "level"},
            {"node": "press1", "sparkplug_device": "plc1", "metric": "*", "device": "press-1-plc"},
        ],
    }


def test_sparkplug_session(tmp_path):
    async def main():
        with mosquitto(tmp_path / "mqtt") as broker:
            source = sparkplug.from_config("line1", _config(broker))
            ctx = RecordingContext()
            async with running(source, ctx), aiomqtt.Client(broker.host, broker.port, identifier="press1") as node:
                await node.subscribe("spBv1.0/plant1/NCMD/#", qos=1)
                await node.subscribe("spBv1.0/STATE/#", qos=1)
                await ctx.wait_state("connected")
                for topic, data in _script():
                    await node.publish(topic, data, qos=1)
                await ctx.wait_for("the last error", lambda: len(ctx.errors) >= len(EXPECTED_ERRORS))
                commands, states = [], []
                async with asyncio.timeout(WAIT_S):
                    async for msg in node.messages:
                        if str(msg.topic).startswith("spBv1.0/STATE/"):
                            states.append((str(msg.topic), msg.payload))
                        else:
                            commands.append((str(msg.topic), Payload.FromString(msg.payload)))
                        if len(commands) == 3 and states:
                            break
            return ctx, commands, states

    ctx, commands, states = asyncio.run(main())
    assert ctx.values() == EXPECTED_READINGS
    assert all(r.received_ms >= T0 for r in ctx.readings)
    assert [r for r, _ in ctx.errors] == EXPECTED_ERRORS, ctx.errors
    assert "expected 5" in ctx.errors[4][1]
    # one rebirth request per session that needs one: the gap, the unborn device, the dead node
    assert [t for t, _ in commands] == ["spBv1.0/plant1/NCMD/press1"] * 3
    for _, p in commands:
        assert [(m.name, m.datatype, m.boolean_value) for m in p.metrics] == [
            ("Node Control/Rebirth", DataType.Boolean, True)]
    assert states[0][0] == "spBv1.0/STATE/sealstream-test" and b'"online": true' in states[0][1]
    assert ctx.states[:2] == ["connecting", "connected"] and ctx.states[-1] == "disconnected"


def test_broker_restart_reconnects_and_every_node_is_reborn(tmp_path):
    async def main():
        with mosquitto(tmp_path / "mqtt") as broker:
            source = sparkplug.from_config("line1", _config(broker))
            ctx = RecordingContext()
            async with running(source, ctx):
                await ctx.wait_state("connected")
                async with aiomqtt.Client(broker.host, broker.port) as node:
                    await node.publish(NODE.format("NBIRTH"), _payload(seq=0, ts=T0, metrics=[
                        dict(name="bdSeq", dt=DataType.Int64, long_value=1),
                        dict(name="Temperature", alias=1, dt=DataType.Double, double_value=1.0)]), qos=1)
                await ctx.wait_for("the birth", lambda: len(ctx.readings) == 1)
                broker.stop()
                await ctx.wait_state("disconnected")
                broker.start()
                await ctx.wait_state("connected", 2)
                async with aiomqtt.Client(broker.host, broker.port) as node:
                    await node.subscribe("spBv1.0/plant1/NCMD/#", qos=1)
                    # data from before the restart's session: the new session has no birth for it
                    await node.publish(NODE.format("NDATA"), _payload(seq=1, ts=T0 + 1, metrics=[
                        dict(alias=1, double_value=2.0)]), qos=1)
                    async with asyncio.timeout(WAIT_S):
                        async for msg in node.messages:  # noqa: B007 - the first one, read below
                            break
                    await node.publish(NODE.format("NBIRTH"), _payload(seq=0, ts=T0 + 2, metrics=[
                        dict(name="bdSeq", dt=DataType.Int64, long_value=2),
                        dict(name="Temperature", alias=1, dt=DataType.Double, double_value=3.0)]), qos=1)
                    await ctx.wait_for("the rebirth", lambda: len(ctx.readings) == 2)
            return ctx, str(msg.topic)

    ctx, ncmd_topic = asyncio.run(main())
    assert ctx.values() == [("press-1", "temperature", 1.0, T0), ("press-1", "temperature", 3.0, T0 + 2)]
    assert ncmd_topic == "spBv1.0/plant1/NCMD/press1"
    reasons = [r for r, _ in ctx.errors]
    assert "sparkplug-no-birth" in reasons and set(reasons) <= {"mqtt-connection", "sparkplug-no-birth"}
    assert reasons.count("sparkplug-no-birth") == 1


def test_config_errors_name_the_key():
    base = {"type": "sparkplug", "host": "127.0.0.1", "group": "plant1",
            "metrics": [{"node": "n", "metric": "m", "device": "d"}]}
    for bad, needle in [
        ({**base, "metrics": []}, "metrics"),
        ({**base, "group": "a/b"}, "group"),
        ({**base, "colour": "red"}, "colour"),
        ({**base, "metrics": [{"node": "n", "metric": "*", "device": "d", "sensor": "s"}]}, "sensor"),
        ({**base, "metrics": [{"metric": "m", "device": "d"}]}, "node"),
        ({**base, "qos": 3}, "qos"),
    ]:
        try:
            sparkplug.from_config("s", bad)
        except ValueError as exc:
            assert needle in str(exc), (needle, exc)
        else:
            raise AssertionError(f"accepted {bad}")
