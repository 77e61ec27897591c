"""Stand-ins for a plant's devices, each on a free loopback port, run in the caller's event loop: an
OPC UA server (asyncua) with a ``Press`` object of float variables, a Modbus TCP server (pymodbus),
a TCP listener that never answers (a hung device), a Sparkplug B payload builder and an event loop
in a thread of its own. For trying the edge agent against real protocol servers, and what its
tests and `bench/edge.py` use (the MQTT broker is `infra.mosquitto`)."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK", "START_S", "OPCUA_NS", "LoopThread", "ModbusServer", "OpcUaServer", "SilentServer",
           "free_port", "opcua_certificate", "sparkplug_payload", "wait_listening"]

LOOPBACK = "127.0.0.1"
START_S = 20.0  # a guard against a server that never comes up, never a timing assertion


def free_port() -> int:
    """A TCP port on the loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, what: str) -> None:
    """Return once something accepts connections on the loopback `port`; RuntimeError after `START_S`."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {LOOPBACK}:{port} after {START_S:.0f} s")


# -- OPC UA -------------------------------------------------------------------------------------------
OPCUA_NS = "urn:sealstream:test:plant"


class OpcUaServer:
    """An asyncua server in the test's event loop: an object ``Press`` with float variables whose node ids
    are ``ns=2;s=Press.<name>``; `start`/`stop` may be called again (a restart keeps port and node ids)."""

    def __init__(self, variables: dict[str, float], *, port: int | None = None, security: dict | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"opc.tcp://{LOOPBACK}:{self.port}/sealstream/"
        self.variables = dict(variables)
        self.security = security  # {"certificate": path, "private_key": path}: Basic256Sha256 only
        self.server: Any = None  # asyncua.Server while started
        self.nodes: dict[str, Any] = {}

    async def start(self) -> "OpcUaServer":
        from asyncua import Server, ua

        server: Any = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("sealstream test PLC")
        if self.security:
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                        ua.SecurityPolicyType.Basic256Sha256_Sign])
            await server.load_certificate(str(self.security["certificate"]))
            await server.load_private_key(str(self.security["private_key"]))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(OPCUA_NS)
        assert idx == 2, idx
        nid: Any = ua.NodeId  # asyncua's stubs want its own String/Int16 wrappers; str and int are what it takes
        press = await server.nodes.objects.add_object(nid("Press", idx), "Press")
        self.nodes = {}
        for name, value in self.variables.items():
            self.nodes[name] = await press.add_variable(nid(f"Press.{name}", idx), name, float(value))
        await server.start()
        self.server = server
        wait_listening(self.port, "the OPC UA server")
        return self

    async def write(self, name: str, value: float, source_ts=None, server_ts=None) -> None:
        from asyncua import ua

        self.variables[name] = value
        dv = ua.DataValue(ua.Variant(float(value), ua.VariantType.Double), SourceTimestamp=source_ts,
                          ServerTimestamp=server_ts)
        await self.server.write_attribute_value(self.nodes[name].nodeid, dv)

    async def delete(self, name: str) -> None:
        await self.server.delete_nodes([self.nodes.pop(name)])
        del self.variables[name]

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


async def opcua_certificate(workdir: Path, app_uri: str, *, server: bool) -> tuple[Path, Path]:
    """A self-signed application instance certificate (DER) and key (PEM) for `app_uri`."""
    from asyncua.crypto import cert_gen
    from cryptography.x509.oid import ExtendedKeyUsageOID

    workdir.mkdir(parents=True, exist_ok=True)
    stem = "server" if server else "client"
    key, cert = workdir / f"{stem}.pem", workdir / f"{stem}.der"
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    await cert_gen.setup_self_signed_certificate(key, cert, app_uri, "localhost", usage, {})
    return cert, key


# -- Modbus TCP ---------------------------------------------------------------------------------------
class ModbusServer:
    """A pymodbus TCP server in the test's event loop, unit 1, holding and input registers 0..19 (reading
    past them is an IllegalDataAddress exception); `start`/`stop` may be called again on the same port."""

    SIZE = 20

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.holding = [0] * self.SIZE
        self.input = [0] * self.SIZE
        self.server: Any = None  # ModbusTcpServer while started

    async def start(self) -> "ModbusServer":
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator.simdata import DataType, SimData
        from pymodbus.simulator.simdevice import SimDevice

        def bits():
            return [SimData(0, values=[False] * 16, datatype=DataType.BITS)]

        device = SimDevice(id=1, simdata=(bits(), bits(),
                                          [SimData(0, values=list(self.holding), datatype=DataType.REGISTERS)],
                                          [SimData(0, values=list(self.input), datatype=DataType.REGISTERS)]))
        self.server = ModbusTcpServer(device, address=(LOOPBACK, self.port))
        await self.server.serve_forever(background=True)
        return self

    async def set(self, table: str, address: int, words: list[int]) -> None:
        store = self.holding if table == "holding" else self.input
        store[address:address + len(words)] = words
        if self.server is not None:
            await self.server.async_setValues(1, 3 if table == "holding" else 4, address, words)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


class SilentServer:
    """A TCP listener that accepts connections and never answers (a hung device)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: Any = None  # asyncio.Server while started

    async def start(self) -> "SilentServer":
        import asyncio

        async def swallow(reader, writer):
            try:
                while await reader.read(1024):
                    pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(swallow, LOOPBACK, self.port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


# -- Sparkplug B ----------------------------------------------------------------------------------------
def sparkplug_payload(seq: int | None, metrics: list[dict], ts: int) -> bytes:
    """A Sparkplug B payload (the edge's own compiled schema): `metrics` are field -> value dicts
    (``name``, ``alias``, ``datatype``, ``timestamp``, ``double_value``, ...)."""
    from edge.sources.sparkplug_b_pb import Payload

    p = Payload()
    p.timestamp = ts
    if seq is not None:
        p.seq = seq
    for spec in metrics:
        m = p.metrics.add()
        for name, v in spec.items():
            setattr(m, name, v)
    return p.SerializeToString()


class LoopThread:
    """An event loop in a thread of its own: servers and publishers live in it while the caller's
    thread runs the edge agent (or a subprocess waits)."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60.0):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
