"""Real servers for the edge sources' tests, each on a free loopback port: mosquitto (Debian's, installed
through `infra.mosquitto` when missing), an asyncua OPC UA server and a pymodbus TCP server (both
in-process, in the test's event loop)."""

from __future__ import annotations

import contextlib
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

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        from sealstream.settings import load_settings

        self.binary = mosquitto_binary(auto_install=load_settings().auto_install)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
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
def mosquitto(workdir: Path):
    broker = Mosquitto(workdir).start()
    try:
        yield broker
    finally:
        broker.stop()
