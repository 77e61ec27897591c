"""Daemon processes owned by the stack: start, identify by pid file, stop, and ports.

The one place that spawns and signals long-running processes: the stack's
services (`infra.stack`), the ledger's local nodes (`infra.ledger_cluster`), the
benchmark's private stack, and (`Child`) the pipeline workers, agents and edge
runs that the demo, the benchmarks and the tests start as ``python -m sealstream``.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ._errors import PortInUseError, ServiceFailedError

__all__ = [
    "Child",
    "ChildExitedError",
    "PidFile",
    "free_ports",
    "signal_pid",
    "sealstream_command",
    "spawn",
    "stop_all",
    "port_is_free",
    "port_owner",
    "require_free_port",
    "wait_until",
]


class PidFile:
    """A pid file plus a marker that must appear in the process's command line.

    The marker (a path inside the state directory) keeps ``down`` from ever
    signalling an unrelated process that reused a stale pid.
    """

    def __init__(self, path: Path, marker: str) -> None:
        self.path = path
        self.marker = marker

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, self.path)

    def running_pid(self) -> int | None:
        """The pid if that process is alive and is ours, else None."""
        pid = self.read()
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            return None
        if state == "Z" or self.marker.encode() not in cmdline:
            return None
        return pid

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True if a process was stopped."""
        pid = self.running_pid()
        if pid is None:
            self.clear()
            return False
        signal_pid(pid, signal.SIGTERM)
        if not wait_until(lambda: self.running_pid() is None, timeout):
            signal_pid(pid, signal.SIGKILL)
            wait_until(lambda: self.running_pid() is None, 10.0)
        self.clear()
        return True


def signal_pid(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; a process that is already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running process in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free a moment ago (held together while choosing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (a wildcard listener counts too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_owner(port: int) -> str | None:
    """``"pid 123 (java)"`` for the process listening on ``port``, when /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    name = (proc / "comm").read_text().strip()
                    return f"pid {proc.name} ({name})"
        except OSError:
            continue
    return None


def require_free_port(service: str, host: str, port: int, setting: str) -> None:
    """Raise :class:`PortInUseError` with the owner and the fix when the port is taken."""
    if port_is_free(host, port):
        return
    owner = port_owner(port)
    held = f" by {owner}" if owner else ""
    raise PortInUseError(
        f"Port {port} on {host}, needed by {service}, is already in use{held}; "
        f"stop that process or set {setting} to a free port and run `sealstream stack up` again.",
        service=service,
    )


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.2,
    *,
    fatal: tuple[type[BaseException], ...] = (),
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass.

    A probe that raises counts as "not yet", except an error of a ``fatal`` type
    (say, "the process exited"), which ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except fatal:
            raise
        except Exception:  # noqa: BLE001 - a probe that fails is "not yet"
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


#: the working copy a child ``python -m sealstream`` runs in (so it imports this code)
REPO = Path(__file__).resolve().parents[1]


def sealstream_command(
    args: Sequence[str],
    *,
    home: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    metrics_port: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a child ``python -m sealstream ARGS``: our environment with
    ``env`` on top and, when given, the state directory ``home`` (made absolute: the child runs
    in the working copy) and ``--metrics-port``."""
    full = dict(os.environ)
    if home is not None:
        full["SEALSTREAM_HOME"] = str(Path(home).resolve())
    full.update(env or {})
    argv = [sys.executable, "-m", "sealstream", *args]
    if metrics_port is not None and "--metrics-port" not in args:
        argv += ["--metrics-port", str(metrics_port)]
    return argv, full


class ChildExitedError(ServiceFailedError):
    """A child process exited while it was expected to run; the message ends with its log's tail."""

    reason = "child-exited"


class Child:
    """A child process of ours: its own session, output appended to a log, stopped gently.

    What the demo, the benchmarks and the tests start (``Child.sealstream``: a pipeline
    worker, the verifier agent, an edge run). ``stop`` sends SIGTERM (a worker leaves
    its consumer group cleanly) and SIGKILL after the timeout; ``kill`` is the crash.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = REPO,
        metrics_port: int | None = None,
    ) -> None:
        self.name = name
        self.log = log_path
        self.metrics_port = metrics_port
        self.proc = spawn(argv, log_path=log_path, env=env, cwd=cwd)

    @classmethod
    def sealstream(
        cls,
        name: str,
        args: Sequence[str],
        *,
        log_path: Path,
        home: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> Child:
        """``python -m sealstream ARGS`` (see `sealstream_command`)."""
        argv, full = sealstream_command(args, home=home, env=env, metrics_port=metrics_port)
        return cls(name, argv, log_path=log_path, env=full, metrics_port=metrics_port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of the child's log (empty when it wrote nothing yet)."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def check(self) -> None:
        """Raise :class:`ChildExitedError` (with the log's tail) when the child is gone."""
        code = self.proc.poll()
        if code is not None:
            raise ChildExitedError(f"{self.name} exited {code} (log: {self.log}):\n{self.tail()}", service=self.name)

    def metrics(self, timeout: float = 5.0) -> str:
        """The child's ``/metrics`` page (it was started with ``metrics_port``); OSError while it is not up."""
        if not self.metrics_port:
            raise ValueError(f"{self.name} has no metrics port")
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read()
        return body.decode()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout`` seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_all(children: Sequence[Child], timeout: float = 15.0) -> None:
    """SIGTERM every child at once, then wait for all within one ``timeout`` (SIGKILL the rest)."""
    for child in children:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
