"""The Modbus source against a real pymodbus TCP server on loopback: typed, scaled registers of both
tables and word orders, values that change, an exception response, the server stopped and restarted,
and a device that accepts connections but never answers."""

from __future__ import annotations

import asyncio

from edge.simulators import ModbusServer, SilentServer
from edge.sources import modbus
from sources_helpers import RecordingContext, running

REGISTERS = [
    {"table": "holding", "address": 0, "type": "int16", "scale": 0.5, "device": "press-2", "sensor": "temp"},
    {"table": "holding", "address": 1, "type": "uint16", "device": "press-2", "sensor": "count"},
    {"table": "holding", "address": 2, "type": "int32", "device": "press-2", "sensor": "position"},
    {"table": "holding", "address": 4, "type": "uint32", "word_order": "little", "device": "press-2",
     "sensor": "cycles"},
    {"table": "holding", "address": 50, "type": "uint16", "device": "press-2", "sensor": "beyond"},
    {"table": "input", "address": 0, "type": "float32", "scale": 2.0, "offset": 1.0, "device": "press-2",
     "sensor": "flow"},
    {"table": "input", "address": 2, "type": "float32", "word_order": "little", "device": "press-2",
     "sensor": "level"},
]
SENSORS = ["temp", "count", "position", "cycles", "flow", "level"]  # "beyond" is an exception response


def _config(port: int, **extra) -> dict:
    return {"type": "modbus", "host": "127.0.0.1", "port": port, "unit": 1, "interval_s": 0.05, "timeout_s": 0.5,
            "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "registers": REGISTERS, **extra}


async def _initial(server: ModbusServer) -> None:
    await server.set("holding", 0, [0xFFF6])            # int16 -10 -> * 0.5 = -5.0
    await server.set("holding", 1, [65535])             # uint16
    await server.set("holding", 2, [0xFFFF, 0xFFFE])    # int32 -2, most significant word first
    await server.set("holding", 4, [0x0001, 0x0002])    # uint32 0x00020001, least significant word first
    await server.set("input", 0, [0x4148, 0x0000])      # float32 12.5 -> * 2 + 1 = 26.0
    await server.set("input", 2, [0x0000, 0xBF40])      # float32 -0.75, word-swapped


def _changes(ctx: RecordingContext, sensor: str) -> list[float]:
    """The successive distinct values of `sensor`."""
    out: list[float] = []
    for r in ctx.readings:
        if r.sensor == sensor and (not out or out[-1] != r.value):
            out.append(r.value)
    return out


def test_registers_changes_exceptions_and_a_stopped_server():
    async def main():
        server = ModbusServer()
        await _initial(server)
        await server.start()
        ctx = RecordingContext()
        try:
            async with running(modbus.from_config("plc2", _config(server.port)), ctx):
                await ctx.wait_for("one full poll", lambda: len(ctx.readings) >= len(SENSORS))
                await server.set("holding", 0, [0x0015])  # 21 -> 10.5
                await server.set("input", 0, [0xC000, 0x0000])  # -2.0 -> -3.0
                await ctx.wait_for("the new values", lambda: -3.0 in _changes(ctx, "flow")
                                   and 10.5 in _changes(ctx, "temp"))
                await server.stop()
                await ctx.wait_for("the timeout", lambda: "modbus-timeout" in ctx.reasons())
                await server.set("holding", 1, [7])
                await server.start()
                await ctx.wait_state("connected", 2)
                await ctx.wait_for("a poll after the restart", lambda: 7.0 in _changes(ctx, "count")
                                   and ctx.errors[-1][0] == "modbus-exception")
        finally:
            await server.stop()
        return ctx

    ctx = asyncio.run(main())
    first = [(r.device, r.sensor, r.value) for r in ctx.readings[:len(SENSORS)]]
    assert first == [("press-2", "temp", -5.0), ("press-2", "count", 65535.0), ("press-2", "position", -2.0),
                     ("press-2", "cycles", float(0x00020001)), ("press-2", "flow", 26.0),
                     ("press-2", "level", -0.75)]
    assert all(r.ts_ms == r.received_ms for r in ctx.readings)
    assert _changes(ctx, "temp") == [-5.0, 10.5]
    assert _changes(ctx, "flow") == [26.0, -3.0]
    assert _changes(ctx, "count") == [65535.0, 7.0]
    assert {r.sensor for r in ctx.readings} == set(SENSORS)
    reasons = ctx.reasons()
    assert set(reasons) == {"modbus-exception", "modbus-timeout"}
    exceptions = [d for r, d in ctx.errors if r == "modbus-exception"]
    assert all("holding register 50" in d and "exception 2 (IllegalDataAddress)" in d for d in exceptions)
    # one exception per poll, polls before and after the outage
    first_timeout = next(i for i, (r, _) in enumerate(ctx.errors) if r == "modbus-timeout")
    assert 0 < first_timeout < len(ctx.errors) - 1
    assert ctx.states[:2] == ["connecting", "connected"] and "disconnected" in ctx.states[2:]
    assert ctx.states.count("connected") == 2 and ctx.states[-1] == "disconnected"


def test_a_device_that_never_answers():
    async def main():
        silent = await SilentServer().start()
        ctx = RecordingContext()
        try:
            async with running(modbus.from_config("hung", _config(silent.port, timeout_s=0.2)), ctx):
                await ctx.wait_for("two timeouts", lambda: len(ctx.errors) >= 2)
        finally:
            await silent.stop()
        return ctx

    ctx = asyncio.run(main())
    assert ctx.readings == []
    assert {r for r, _ in ctx.errors} == {"modbus-timeout"}
    assert "holding register 0 (press-2/temp)" in ctx.errors[0][1]
    assert ctx.states[:3] == ["connecting", "connected", "disconnected"]


def test_decode_types_and_word_orders():
    d = modbus.decode
    assert d([0xFFFF], "int16") == -1.0 and d([0xFFFF], "uint16") == 65535.0
    assert d([0x0001, 0x0000], "uint32") == 65536.0 and d([0x0001, 0x0000], "uint32", "little") == 1.0
    assert d([0x4148, 0x0000], "float32") == 12.5 and d([0x0000, 0x4148], "float32", "little") == 12.5
    assert d([0x8000, 0, 0, 0], "int64") == float(-(2**63))
    assert d([0x3FF8, 0, 0, 0], "float64") == 1.5 and d([0, 0, 0, 0x3FF8], "float64", "little") == 1.5


def test_config_errors_name_the_key():
    base = {"type": "modbus", "host": "127.0.0.1", "registers": [{"address": 0, "device": "d", "sensor": "s"}]}
    reg = base["registers"][0]
    for bad, needle in [
        ({**base, "host": ""}, "host"),
        ({**base, "registers": []}, "registers"),
        ({**base, "registers": [{**reg, "type": "int8"}]}, "type"),
        ({**base, "registers": [{**reg, "table": "coils"}]}, "table"),
        ({**base, "registers": [{**reg, "address": 65535, "type": "float32"}]}, "address"),
        ({**base, "registers": [{**reg, "word_order": "middle"}]}, "word_order"),
        ({**base, "registers": [{"device": "d", "sensor": "s"}]}, "address"),
        ({**base, "interval_s": 0}, "interval_s"),
        ({**base, "unit": 300}, "unit"),
        ({**base, "registers": [{**reg, "scale": "x"}]}, "scale"),
    ]:
        try:
            modbus.from_config("s", bad)
        except ValueError as exc:
            assert needle in str(exc), (needle, exc)
        else:
            raise AssertionError(f"accepted {bad}")
