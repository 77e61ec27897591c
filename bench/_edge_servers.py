"""Real servers for the edge sources, each on a free loopback port: mosquitto (Debian's, installed
through `infra.mosquitto` when missing), an asyncua OPC UA server and a pymodbus TCP server (both
in-process, in the caller's event loop), a TCP listener that never answers, and a Sparkplug B payload
builder. Used by `bench/edge.py` and by the edge tests (through tests/edge/brokers.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from infra.mosquitto import mosquitto_binary

LOOPBACK = "127.0.0.1"
START_S = 20.0  # a guard against a server that never comes up, never a timing assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_listening(port: int, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {LOOPBACK}:{port} after {START_S:.0f} s")


class Mosquitto:
    """A mosquitto broker on its own loopback port and config (anonymous, no persistence)."""

    def __init__(self, workdir: Path, port: int | None = None, *, tls: dict[str, Path] | None = None,
                 users: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
        from sealstream.settings import load_settings

        self.binary = mosquitto_binary(auto_install=load_settings().auto_install)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} {LOOPBACK}", "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice"]
        if tls is not None:  # the client must show a certificate of the same CA
            lines += [f"cafile {tls['ca']}", f"certfile {tls['server']}", f"keyfile {tls['server_key']}",
                      "require_certificate true"]
        if users:
            passwd = workdir / "passwd"
            passwd.write_text("")
            for user, password in users.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(passwd),
                                user, password], check=True, capture_output=True)
            passwd.chmod(0o644)
            lines += [f"password_file {passwd}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            # mosquitto started as root drops to its own user before reading the password file, which
            # cannot reach pytest's 0700 tmp folders; this broker listens on loopback only
            lines.append("user root")
        lines += extra  # more mosquitto.conf lines (e.g. the benchmark's max_queued_messages)
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        out = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            out.close()
        wait_listening(self.port, "mosquitto", self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@contextlib.contextmanager
def mosquitto(workdir: Path, **options):
    broker = Mosquitto(workdir, **options).start()
    try:
        yield broker
    finally:
        broker.stop()


# -- TLS material for the secured tests ------------------------------------------------------------
def make_tls(workdir: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (PEM files)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    workdir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o644)  # the broker may drop root for its own user before reading it

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("sealstream test CA")).issuer_name(name("sealstream test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    paths = {"ca": workdir / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, usage, san in [("server", ExtendedKeyUsageOID.SERVER_AUTH,
                             [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                            ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("edge-client")])]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(f"sealstream test {who}")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths[who] = workdir / f"{who}.pem"
        paths[who].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{who}_key"] = workdir / f"{who}.key"
        write_key(key, paths[f"{who}_key"])
    workdir.chmod(0o755)
    return paths


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
        self.server = None
        self.nodes: dict = {}

    async def start(self) -> "OpcUaServer":
        from asyncua import Server, ua

        server = Server()
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
        press = await server.nodes.objects.add_object(ua.NodeId("Press", idx), "Press")
        self.nodes = {}
        for name, value in self.variables.items():
            self.nodes[name] = await press.add_variable(ua.NodeId(f"Press.{name}", idx), name, float(value))
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
        self.server = None

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
        self.server = None

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
