"""Daemon processes owned by the stack: start, identify by pid file, stop, and ports."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ._errors import PortInUseError

__all__ = [
    "PidFile",
    "spawn",
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
        _signal(pid, signal.SIGTERM)
        if not wait_until(lambda: self.running_pid() is None, timeout):
            _signal(pid, signal.SIGKILL)
            wait_until(lambda: self.running_pid() is None, 10.0)
        self.clear()
        return True


def _signal(pid: int, sig: int) -> None:
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


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except Exception:  # noqa: BLE001 - a probe that fails is "not yet"
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
