"""The plain MQTT source against a real mosquitto: JSON field paths, plain numbers, topic captures,
timestamps, bad payloads, a broker restart, and a TLS listener with a client certificate and a password."""

from __future__ import annotations

import asyncio

import aiomqtt

from infra.mosquitto import make_tls, mosquitto
from edge.sources import mqtt
from sources_helpers import RecordingContext, running

TS = 1_700_000_000_123


def _config(broker, **extra) -> dict:
    return {
        "type": "mqtt", "host": broker.host, "port": broker.port, "qos": 1,
        "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
        "topics": [
            {"topic": "plant/line1/+/temperature", "device": "press-{1}", "sensor": "temperature",
             "value_path": "data.value", "timestamp_path": "ts"},
            {"topic": "plant/line1/pressure", "device": "press-a", "sensor": "pressure", "format": "number"},
            {"topic": "plant/line2/#", "device": "line2", "sensor": "{1}", "value_path": "readings.0.v",
             "timestamp_path": "t", "timestamp_unit": "s"},
        ],
        **extra,
    }


MESSAGES = [
    ("plant/line1/a/temperature", b'{"data": {"value": 21.5}, "ts": 1700000000123}'),
    ("plant/line1/b/temperature", b'{"data": {"value": 7}, "ts": "2023-11-14T22:13:20.456Z"}'),
    ("plant/line1/a/temperature", b'{"data": {"value": true}, "ts": 1700000000200}'),
    ("plant/line1/a/temperature", b"not json"),
    ("plant/line1/a/temperature", b'{"data": {"v": 1}, "ts": 1}'),
    ("plant/line1/a/temperature", b'{"data": {"value": "hot"}, "ts": 1}'),
    ("plant/line1/a/temperature", b'{"data": {"value": 1.0}}'),
    ("plant/line1/a/humidity", b'{"data": {"value": 50}, "ts": 1}'),  # no filter matches: not read
    ("plant/line1/pressure", b" 42.25\n"),
    ("plant/line1/pressure", b"\xff\xfe"),
    ("plant/line2/oven/zone3", b'{"readings": [{"v": -1.5}], "t": 1700000000.5}'),
]

EXPECTED = [
    ("press-a", "temperature", 21.5, TS),
    ("press-b", "temperature", 7.0, 1_700_000_000_456),
    ("press-a", "temperature", 1.0, 1_700_000_000_200),
    # pressure: the edge's receive time (checked below)
    ("line2", "oven/zone3", -1.5, 1_700_000_000_500),
]


def test_topics_values_and_bad_payloads(tmp_path):
    async def main():
        with mosquitto(tmp_path / "mqtt") as broker:
            ctx = RecordingContext()
            async with running(mqtt.from_config("plant", _config(broker)), ctx), \
                    aiomqtt.Client(broker.host, broker.port) as pub:
                await ctx.wait_state("connected")
                for topic, data in MESSAGES:
                    await pub.publish(topic, data, qos=1)
                await ctx.wait_for("every message", lambda: len(ctx.readings) + len(ctx.errors) >= 10)
            return ctx

    ctx = asyncio.run(main())
    pressure = [r for r in ctx.readings if r.sensor == "pressure"]
    assert [(r.device, r.value) for r in pressure] == [("press-a", 42.25)]
    assert pressure[0].ts_ms == pressure[0].received_ms
    assert [v for v in ctx.values() if v[1] != "pressure"] == EXPECTED
    assert [r for r, _ in ctx.errors] == ["mqtt-bad-payload"] * 5
    details = [d for _, d in ctx.errors]
    assert "not JSON" in details[0] and "data.value" in details[1] and "not a finite number" in details[2]
    assert "no timestamp field 'ts'" in details[3] and "UTF-8" in details[4]


def test_broker_restart_reconnects(tmp_path):
    async def main():
        with mosquitto(tmp_path / "mqtt") as broker:
            ctx = RecordingContext()
            async with running(mqtt.from_config("plant", _config(broker)), ctx):
                await ctx.wait_state("connected")
                async with aiomqtt.Client(broker.host, broker.port) as pub:
                    await pub.publish("plant/line1/pressure", b"1", qos=1)
                await ctx.wait_for("the first reading", lambda: len(ctx.readings) == 1)
                broker.stop()
                await ctx.wait_for("a failed reconnect", lambda: ctx.states.count("connecting") >= 3)
                broker.start()
                await ctx.wait_state("connected", 2)
                async with aiomqtt.Client(broker.host, broker.port) as pub:
                    await pub.publish("plant/line1/pressure", b"2", qos=1)
                await ctx.wait_for("the second reading", lambda: len(ctx.readings) == 2)
            return ctx

    ctx = asyncio.run(main())
    assert [r.value for r in ctx.readings] == [1.0, 2.0]
    assert set(ctx.reasons()) == {"mqtt-connection"} and ctx.reasons()["mqtt-connection"] >= 2
    assert ctx.states[:3] == ["connecting", "connected", "disconnected"]
    assert ctx.states[-1] == "disconnected" and ctx.states.count("connected") == 2


def test_tls_client_certificate_and_password(tmp_path):
    tls = make_tls(tmp_path / "tls")
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret-for-test\n")

    async def main():
        with mosquitto(tmp_path / "mqtt", tls=tls, users={"edge": "s3cret-for-test"}) as broker:
            good = _config(broker, tls=True, ca_file=str(tls["ca"]), cert_file=str(tls["client"]),
                           key_file=str(tls["client_key"]), username="edge", password_file=str(secret))
            wrong = {**good, "password": "wrong"}
            del wrong["password_file"]
            ok_ctx, bad_ctx = RecordingContext(), RecordingContext()
            async with running(mqtt.from_config("plant", good), ok_ctx), \
                    running(mqtt.from_config("bad", wrong), bad_ctx):
                await ok_ctx.wait_state("connected")
                await bad_ctx.wait_for("a refused login", lambda: len(bad_ctx.errors) >= 2)
                ssl_ctx = mqtt.BrokerOptions.from_section("pub", good).tls_context()
                async with aiomqtt.Client(broker.host, broker.port, username="edge", password="s3cret-for-test",
                                          tls_context=ssl_ctx) as pub:
                    await pub.publish("plant/line1/pressure", b"3.5", qos=1)
                await ok_ctx.wait_for("the reading", lambda: len(ok_ctx.readings) == 1)
            return ok_ctx, bad_ctx

    ok_ctx, bad_ctx = asyncio.run(main())
    assert [(r.device, r.sensor, r.value) for r in ok_ctx.readings] == [("press-a", "pressure", 3.5)]
    assert ok_ctx.errors == []
    assert "connected" not in bad_ctx.states and set(bad_ctx.reasons()) == {"mqtt-connection"}
    assert not any("wrong" in d or "s3cret" in d for _, d in bad_ctx.errors)


def test_options_keep_the_password_out_of_repr(tmp_path):
    secret = tmp_path / "p"
    secret.write_text("hunter2\n")
    opts = mqtt.BrokerOptions.from_section("s", {"host": "h", "username": "u", "password_file": str(secret)})
    assert opts.password == "hunter2" and "hunter2" not in repr(opts)


def test_topic_captures():
    cap = mqtt.topic_captures
    assert cap("a/+/c", "a/b/c") == ["b"]
    assert cap("a/#", "a/b/c") == ["b/c"]
    assert cap("a/#", "a") == [""]
    assert cap("a/+", "a/b/c") is None and cap("a/b", "a/c") is None
    assert cap("+/x", "$SYS/x") is None


def test_config_errors_name_the_key():
    base = {"type": "mqtt", "host": "127.0.0.1", "topics": [{"topic": "a/+", "device": "d", "sensor": "s"}]}
    for bad, needle in [
        ({**base, "host": ""}, "host"),
        ({**base, "topics": []}, "topics"),
        ({**base, "topics": [{"topic": "a/#/b", "device": "d", "sensor": "s"}]}, "topic filter"),
        ({**base, "topics": [{"topic": "a/+", "device": "d-{2}", "sensor": "s"}]}, "capture"),
        ({**base, "topics": [{"topic": "a", "device": "d", "sensor": "s", "format": "xml"}]}, "format"),
        ({**base, "port": "1883"}, "port"),
        ({**base, "ca_file": "/x"}, "tls = true"),
        ({**base, "password": "p", "password_file": "/x"}, "not both"),
        ({**base, "password_file": "/nonexistent/p"}, "password_file"),
        ({**base, "reconnect_min_s": 0}, "reconnect"),
    ]:
        try:
            mqtt.from_config("s", bad)
        except ValueError as exc:
            assert needle in str(exc), (needle, exc)
        else:
            raise AssertionError(f"accepted {bad}")
