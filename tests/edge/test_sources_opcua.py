"""The OPC UA source against a real asyncua server on loopback: values that change (source timestamp, else
server timestamp), a node deleted while subscribed and one missing from the start, a server restart,
and a Basic256Sha256 SignAndEncrypt channel with certificates."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from edge.simulators import OpcUaServer, opcua_certificate
from edge.sources import opcua
from sources_helpers import RecordingContext, running

T1 = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
T1_MS = 1_704_164_645_678
T2 = datetime(2024, 1, 2, 3, 4, 6, tzinfo=timezone.utc)
T2_MS = T1_MS + 322
T3 = datetime(2024, 1, 2, 3, 4, 7, tzinfo=timezone.utc)
T3_MS = T2_MS + 1000


def _config(server: OpcUaServer, **extra) -> dict:
    return {
        "type": "opcua", "endpoint": server.endpoint, "publishing_interval_ms": 50, "sampling_interval_ms": 10,
        "watchdog_s": 0.2, "node_check_s": 0.2, "timeout_s": 2, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
        "nodes": [
            {"node_id": "ns=2;s=Press.Temperature", "device": "press-1", "sensor": "temperature"},
            {"node_id": "ns=2;s=Press.Pressure", "device": "press-1", "sensor": "pressure"},
            {"node_id": "ns=2;s=Press.Missing", "device": "press-1", "sensor": "missing"},
        ],
        **extra,
    }


# asyncua's server calls its async datachange callback without awaiting it when a node is deleted (so it
# never notifies the monitored item: the source's periodic existence check finds the node gone instead)
@pytest.mark.filterwarnings("ignore:coroutine 'MonitoredItemService.datachange_callback' was never awaited")
def test_values_a_node_that_disappears_and_a_restart():
    async def main():
        server = await OpcUaServer({"Temperature": 20.0, "Pressure": 1.0}).start()
        ctx = RecordingContext()
        try:
            async with running(opcua.from_config("plc1", _config(server)), ctx):
                await ctx.wait_state("connected")
                # the initial values: 2 readings (the server's timestamps) and the missing node
                await ctx.wait_for("initial values", lambda: len(ctx.readings) == 2 and ctx.errors)
                initial = {r.sensor: r for r in ctx.readings}
                await server.write("Temperature", 21.5, source_ts=T1, server_ts=T2)
                await ctx.wait_for("21.5", lambda: len(ctx.readings) == 3)
                await server.write("Pressure", 2.25, source_ts=None, server_ts=T2)
                await ctx.wait_for("2.25", lambda: len(ctx.readings) == 4)
                await server.delete("Pressure")
                await ctx.wait_for("the node gone", lambda: len(ctx.errors) == 2)
                await server.write("Temperature", 22.0, source_ts=T3, server_ts=T3)
                await ctx.wait_for("22.0 after the deletion", lambda: len(ctx.readings) == 5)

                await server.stop()
                await ctx.wait_state("disconnected")
                server.variables = {"Temperature": 22.0, "Pressure": 5.0}  # the restarted PLC has it again
                await server.start()
                await ctx.wait_state("connected", 2)
                await ctx.wait_for("values after the restart", lambda: len(ctx.readings) == 7)
                await server.write("Temperature", 23.0, source_ts=T3, server_ts=T3)
                await ctx.wait_for("23.0", lambda: len(ctx.readings) == 8)
        finally:
            await server.stop()
        return ctx, initial

    ctx, initial = asyncio.run(main())
    r = ctx.readings
    assert [(x.device, x.sensor, x.value) for x in r[:2]] == [("press-1", "temperature", 20.0),
                                                              ("press-1", "pressure", 1.0)] or \
        [(x.device, x.sensor, x.value) for x in r[:2]] == [("press-1", "pressure", 1.0),
                                                           ("press-1", "temperature", 20.0)]
    for x in initial.values():  # no source timestamp on the initial values: the server's
        assert x.ts_ms > T3_MS
    assert ctx.values()[2:5] == [
        ("press-1", "temperature", 21.5, T1_MS),   # the source timestamp
        ("press-1", "pressure", 2.25, T2_MS),      # no source timestamp: the server timestamp
        ("press-1", "temperature", 22.0, T3_MS),   # still flowing after Pressure was deleted
    ]
    after = sorted(ctx.values()[5:7])  # after the restart: Temperature and Pressure (back) are reported once
    assert [(d, s, v) for d, s, v, _ in after] == [("press-1", "pressure", 5.0), ("press-1", "temperature", 22.0)]
    assert ctx.values()[7] == ("press-1", "temperature", 23.0, T3_MS)
    reasons = [reason for reason, _ in ctx.errors]
    assert reasons[:2] == ["opcua-node-gone", "opcua-node-gone"]
    assert "Press.Missing" in ctx.errors[0][1] and "Press.Pressure" in ctx.errors[1][1]
    assert "BadNodeIdUnknown" in ctx.errors[1][1]
    # the restart: the link's errors, then Missing is still missing
    assert set(reasons[2:]) == {"opcua-connection", "opcua-node-gone"} and reasons[-1] == "opcua-node-gone"
    assert "Press.Missing" in ctx.errors[-1][1]
    assert all(x.received_ms > 0 for x in r)


def test_basic256sha256_sign_and_encrypt(tmp_path):
    client_uri = "urn:sealstream:test:edge"

    async def main():
        server_cert, server_key = await opcua_certificate(tmp_path / "server", "urn:sealstream:test:plc",
                                                          server=True)
        client_cert, client_key = await opcua_certificate(tmp_path / "client", client_uri, server=False)
        server = OpcUaServer({"Temperature": 20.0}, security={"certificate": server_cert, "private_key": server_key})
        ctx, plain_ctx = RecordingContext(), RecordingContext()
        try:
            await server.start()
            await server.server.set_application_uri("urn:sealstream:test:plc")
            secured = opcua.from_config("plc1", _config(
                server, security_policy="Basic256Sha256", security_mode="SignAndEncrypt",
                certificate=str(client_cert), private_key=str(client_key), server_certificate=str(server_cert),
                application_uri=client_uri, nodes=[{"node_id": "ns=2;s=Press.Temperature", "device": "press-1",
                                                    "sensor": "temperature"}]))
            plain = opcua.from_config("plain", _config(server, nodes=[
                {"node_id": "ns=2;s=Press.Temperature", "device": "press-1", "sensor": "temperature"}]))
            async with running(secured, ctx), running(plain, plain_ctx):
                await ctx.wait_state("connected")
                await ctx.wait_for("the initial value", lambda: len(ctx.readings) == 1)
                await server.write("Temperature", 24.5, source_ts=T1, server_ts=T1)
                await ctx.wait_for("24.5", lambda: len(ctx.readings) == 2)
                await plain_ctx.wait_for("the refused insecure client", lambda: len(plain_ctx.errors) >= 2)
        finally:
            await server.stop()
        return ctx, plain_ctx

    ctx, plain_ctx = asyncio.run(main())
    assert ctx.values()[1] == ("press-1", "temperature", 24.5, T1_MS)
    assert ctx.errors == []
    # a server that offers only Basic256Sha256 refuses the None policy: the source reports it and retries
    assert "connected" not in plain_ctx.states and set(plain_ctx.reasons()) == {"opcua-connection"}
    assert plain_ctx.readings == []


def test_config_errors_name_the_key(tmp_path):
    base = {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840/",
            "nodes": [{"node_id": "ns=2;s=A", "device": "d", "sensor": "s"}]}
    for bad, needle in [
        ({**base, "endpoint": "http://x"}, "endpoint"),
        ({**base, "security_policy": "Basic128Rsa15"}, "security_policy"),
        ({**base, "security_policy": "Basic256Sha256", "security_mode": "Sign"}, "certificate"),
        ({**base, "security_policy": "Basic256Sha256"}, "security_mode"),
        ({**base, "security_mode": "Sign"}, "security_policy"),
        ({**base, "security_policy": "Basic256Sha256", "security_mode": "Sign", "certificate": str(tmp_path / "c"),
          "private_key": str(tmp_path / "k")}, "readable file"),
        ({**base, "nodes": [{"node_id": "nonsense", "device": "d", "sensor": "s"}]}, "node id"),
        ({**base, "nodes": base["nodes"] * 2}, "twice"),
        ({**base, "publishing_interval_ms": 0}, "publishing_interval_ms"),
    ]:
        try:
            opcua.from_config("s", bad)
        except ValueError as exc:
            assert needle in str(exc), (needle, exc)
        else:
            raise AssertionError(f"accepted {bad}")
