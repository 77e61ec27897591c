"""Modbus TCP registers polled on a schedule (pymodbus) -> `Reading`s.

Config (``[sources.<name>]``, ``type = "modbus"``)::

    host = "plc2.plant.local"   # required
    port = 502
    unit = 1                    # the Modbus unit (device) id
    interval_s = 1.0            # one poll of every register each interval (fixed rate; a late poll
                                # skips the ticks it missed)
    timeout_s = 1.0             # one request's timeout
    reconnect_min_s = 0.5       # reconnect backoff: doubles from min to max, with jitter
    reconnect_max_s = 30

    [[sources.<name>.registers]]
    table = "holding"           # "holding" (function 3) or "input" (function 4)
    address = 0                 # 0-based register address (the PDU address: 40001 is address 0)
    type = "float32"            # int16, uint16 (1 register); int32, uint32, float32 (2); int64, uint64,
                                # float64 (4)
    word_order = "big"          # multi-register types: "big" = the first register holds the most
                                # significant word (Modbus's usual order), "little" = the last one does;
                                # bytes within a register are always big-endian
    scale = 0.1                 # value = raw * scale + offset
    offset = 0.0
    device = "press-2"
    sensor = "oil-temperature"

Modbus has no timestamps: a reading's `ts_ms` and `received_ms` are both the edge's clock when the
answer arrived. No answer in time, a refused or lost connection -> ``modbus-timeout``, state
``disconnected``, reconnect with backoff; an exception response (illegal address, device failure...) ->
``modbus-exception`` naming the code, the other registers keep being read; a NaN or infinite float ->
``modbus-bad-value``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.model import Reading, SourceContext

from .mqtt import Backoff, _known_keys, now_ms, raise_if_cancelled

__all__ = ["from_config", "ModbusSource", "RegisterMap", "decode"]

log = logging.getLogger("sealstream.edge.modbus")

# type -> (registers, struct format of the big-endian bytes)
TYPES = {"int16": (1, ">h"), "uint16": (1, ">H"), "int32": (2, ">i"), "uint32": (2, ">I"), "float32": (2, ">f"),
         "int64": (4, ">q"), "uint64": (4, ">Q"), "float64": (4, ">d")}
EXCEPTION_NAMES = {1: "IllegalFunction", 2: "IllegalDataAddress", 3: "IllegalDataValue", 4: "ServerDeviceFailure",
                   5: "Acknowledge", 6: "ServerDeviceBusy", 8: "MemoryParityError", 10: "GatewayPathUnavailable",
                   11: "GatewayTargetDeviceFailedToRespond"}


def decode(registers: list[int], type_: str, word_order: str = "big") -> float:
    """The number that `registers` (16-bit words, as read) hold as `type_`."""
    count, fmt = TYPES[type_]
    if len(registers) != count:
        raise ValueError(f"{type_} needs {count} register(s), got {len(registers)}")
    words = list(registers) if word_order == "big" else list(reversed(registers))
    return float(struct.unpack(fmt, b"".join(w.to_bytes(2, "big") for w in words))[0])


@dataclass(frozen=True)
class RegisterMap:
    table: str
    address: int
    type: str
    device: str
    sensor: str
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def count(self) -> int:
        return TYPES[self.type][0]

    def where(self) -> str:
        return f"{self.table} register {self.address} ({self.device}/{self.sensor})"


class _NoAnswer(Exception):
    pass


class ModbusSource:
    def __init__(self, name: str, host: str, port: int, unit: int, interval_s: float, timeout_s: float,
                 registers: list[RegisterMap], reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0) -> None:
        self.name = name
        self.host, self.port, self.unit = host, port, unit
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.registers = registers
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s

    async def run(self, ctx: SourceContext) -> None:
        backoff = Backoff(self.reconnect_min_s, self.reconnect_max_s)
        try:
            while True:
                ctx.state("connecting")
                # pymodbus's own reconnect is off (reconnect_delay=0): this loop owns the schedule
                client = AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0,
                                              reconnect_delay=0)
                try:
                    try:
                        connected = await asyncio.wait_for(client.connect(), self.timeout_s + 1)
                    except (asyncio.TimeoutError, OSError, ModbusException) as exc:
                        raise_if_cancelled()
                        raise _NoAnswer(f"connect: {type(exc).__name__}: {exc}") from None
                    if not connected:
                        raise _NoAnswer("connect failed (refused or unreachable)")
                    ctx.state("connected")
                    backoff.reset()
                    await self._poll_forever(ctx, client)
                except _NoAnswer as exc:
                    raise_if_cancelled()
                    ctx.state("disconnected")
                    ctx.error("modbus-timeout", f"{self.host}:{self.port} unit {self.unit}: {exc}")
                finally:
                    with contextlib.suppress(Exception):
                        client.close()
                raise_if_cancelled()
                await asyncio.sleep(backoff.next())
        finally:
            ctx.state("disconnected")

    async def _poll_forever(self, ctx: SourceContext, client: AsyncModbusTcpClient) -> None:
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while True:
            raise_if_cancelled()
            for reg in self.registers:
                await self._read(ctx, client, reg)
            tick += self.interval_s
            now = loop.time()
            if tick < now:  # late: skip the missed ticks, keep the phase
                tick += math.ceil((now - tick) / self.interval_s) * self.interval_s
            await asyncio.sleep(tick - now)

    async def _read(self, ctx: SourceContext, client: AsyncModbusTcpClient, reg: RegisterMap) -> None:
        call = client.read_holding_registers if reg.table == "holding" else client.read_input_registers
        try:
            response = await asyncio.wait_for(call(reg.address, count=reg.count, device_id=self.unit),
                                              self.timeout_s + 1)
        except (asyncio.TimeoutError, OSError, ModbusException) as exc:
            raise_if_cancelled()
            raise _NoAnswer(f"{reg.where()}: {type(exc).__name__}: {exc}") from None
        received = now_ms()
        if response.isError():
            code = getattr(response, "exception_code", 0)
            ctx.error("modbus-exception",
                      f"{reg.where()}: exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")
            return
        registers = list(response.registers)[: reg.count]
        try:
            raw = decode(registers, reg.type, reg.word_order)
        except ValueError as exc:
            ctx.error("modbus-exception", f"{reg.where()}: {exc}")
            return
        value = raw * reg.scale + reg.offset
        if not math.isfinite(value):
            ctx.error("modbus-bad-value", f"{reg.where()}: {raw!r}")
            return
        await ctx.emit(Reading(device=reg.device, sensor=reg.sensor, value=value, ts_ms=received,
                               received_ms=received))


_KEYS = {"type", "host", "port", "unit", "interval_s", "timeout_s", "reconnect_min_s", "reconnect_max_s",
         "registers"}
_REG_KEYS = {"table", "address", "type", "word_order", "scale", "offset", "device", "sensor"}


def _number(section: dict, key: str, default, where: str, *, positive: bool = True, integer: bool = False):
    value = section.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (positive and value <= 0) or \
            (not integer and not math.isfinite(value)):
        raise ValueError(f"{where}: `{key}` must be a {'positive ' if positive else ''}"
                         f"{'integer' if integer else 'number'}, not {value!r}")
    return value


def from_config(name: str, section: dict) -> ModbusSource:
    where = f"source {name!r}"
    _known_keys(section, _KEYS, where)
    host = section.get("host")
    if not isinstance(host, str) or not host:
        raise ValueError(f"{where}: `host` (the Modbus TCP device) is required")
    port = _number(section, "port", 502, where, integer=True)
    unit = _number(section, "unit", 1, where, positive=False, integer=True)
    if not 0 <= unit <= 255:
        raise ValueError(f"{where}: `unit` must be 0..255, not {unit}")
    entries = section.get("registers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: at least one [[sources.{name}.registers]] entry is required")
    regs = []
    for i, e in enumerate(entries):
        w = f"{where} registers[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{w}: must be a table")
        _known_keys(e, _REG_KEYS, w)
        table = e.get("table", "holding")
        if table not in ("holding", "input"):
            raise ValueError(f"{w}: `table` must be \"holding\" or \"input\", not {table!r}")
        address = _number(e, "address", None, w, positive=False, integer=True)
        type_ = e.get("type", "uint16")
        if type_ not in TYPES:
            raise ValueError(f"{w}: `type` must be one of {', '.join(TYPES)}, not {type_!r}")
        if not 0 <= address <= 0xFFFF - TYPES[type_][0] + 1:
            raise ValueError(f"{w}: `address` must be 0..65535 (with room for {type_}), not {address}")
        order = e.get("word_order", "big")
        if order not in ("big", "little"):
            raise ValueError(f"{w}: `word_order` must be \"big\" or \"little\", not {order!r}")
        for k in ("device", "sensor"):
            if not isinstance(e.get(k), str) or not e[k]:
                raise ValueError(f"{w}: `{k}` (text) is required")
        regs.append(RegisterMap(table=table, address=address, type=type_, word_order=order,
                                scale=float(_number(e, "scale", 1.0, w, positive=False)),
                                offset=float(_number(e, "offset", 0.0, w, positive=False)),
                                device=e["device"], sensor=e["sensor"]))
    source = ModbusSource(
        name, host, port, unit, interval_s=float(_number(section, "interval_s", 1.0, where)),
        timeout_s=float(_number(section, "timeout_s", 1.0, where)), registers=regs,
        reconnect_min_s=float(_number(section, "reconnect_min_s", 0.5, where)),
        reconnect_max_s=float(_number(section, "reconnect_max_s", 30.0, where)),
    )
    Backoff(source.reconnect_min_s, source.reconnect_max_s)
    return source
