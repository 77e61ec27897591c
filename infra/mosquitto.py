"""The mosquitto MQTT broker (Debian's ``mosquitto``) for the edge agent's MQTT and Sparkplug B sources:
the binary, installed with apt when missing (idempotent), and a private broker on its own loopback
port and config (`Mosquitto`, `mosquitto`), optionally with TLS from a throw-away CA (`make_tls`) and
passwords. What the edge tests and `bench/edge.py` run; the stack itself runs no MQTT broker."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import MissingToolError, ServiceFailedError
from ._tools import apt_install
from .process import Child, free_ports, port_is_free, wait_until

__all__ = ["LOOPBACK", "Mosquitto", "make_tls", "mosquitto", "mosquitto_binary"]

LOOPBACK = "127.0.0.1"
_START_S = 20.0  # a guard against a broker that never comes up

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def _find() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _CANDIDATES if Path(p).is_file()), None)


def mosquitto_binary(*, auto_install: bool = True) -> str:
    """Path of the mosquitto broker; installs the Debian package when missing and allowed
    (``auto_install`` is ``settings.auto_install``), else raises :class:`MissingToolError` with the fix."""
    found = _find()
    if found:
        return found
    apt_install(["mosquitto"], service="mosquitto", auto_install=auto_install)
    found = _find()
    if found is None:
        raise MissingToolError("the Debian mosquitto package was installed but the mosquitto binary is "
                               "still missing; check `dpkg -L mosquitto`.", service="mosquitto")
    return found


class Mosquitto:
    """A mosquitto broker on its own loopback port and config (anonymous, no persistence)."""

    def __init__(self, workdir: Path, port: int | None = None, *, tls: dict[str, Path] | None = None,
                 users: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
        from sealstream.settings import load_settings

        self.binary = mosquitto_binary(auto_install=load_settings().auto_install)
        self.host = LOOPBACK
        self.port = port or free_ports(1)[0]
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
        self.child: Child | None = None

    def start(self) -> Mosquitto:
        """Start the broker and wait until it listens (`ServiceFailedError` when it exits or never does)."""
        self.child = child = Child("mosquitto", [self.binary, "-c", str(self.conf)], log_path=self.log, cwd=None)

        def listening() -> bool:
            child.check()
            return not port_is_free(LOOPBACK, self.port)

        if not wait_until(listening, _START_S, 0.05, fatal=(ServiceFailedError,)):
            child.stop(5)
            raise ServiceFailedError(f"mosquitto is not listening on {LOOPBACK}:{self.port} after {_START_S:.0f} s "
                                     f"(log: {self.log})", service="mosquitto")
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; `start` may be called again (same port and config)."""
        if self.child is not None:
            self.child.stop(10)
        self.child = None


@contextlib.contextmanager
def mosquitto(workdir: Path, **options: Any) -> Iterator[Mosquitto]:
    """A started `Mosquitto` (see its options), stopped on exit."""
    broker = Mosquitto(workdir, **options).start()
    try:
        yield broker
    finally:
        broker.stop()


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

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
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
    sans: list[tuple[str, x509.ObjectIdentifier, list[x509.GeneralName]]] = [
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("edge-client")])]
    for who, usage, san in sans:
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
