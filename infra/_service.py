"""What every service of the local stack can do, and where its files live."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

from sealstream.settings import Settings

from ._errors import ServiceFailedError
from .process import PidFile, require_free_port, wait_until

__all__ = ["Service", "ServiceStatus", "Health", "http_get"]


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``sealstream stack status``."""

    name: str
    state: str  # "running" | "unhealthy" | "stopped"
    address: str
    version: str
    pid: int | None
    detail: str = ""
    #: how clients reach it: "TLS, <authentication>" or "plaintext, no authentication"
    security: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET; HTTP errors are returned, connection errors raise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Service(ABC):
    """A daemon the stack installs, starts, health-checks and stops."""

    name: str
    #: seconds ``up`` waits for the service to become healthy
    start_timeout: float = 90.0

    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.home = home
        self.cache = settings.cache_dir.expanduser().resolve()
        self.data_dir = home / "data" / self.name
        self.conf_dir = home / "conf" / self.name
        self.log_path = home / "logs" / f"{self.name}.log"
        self.pidfile = PidFile(home / "run" / f"{self.name}.pid", marker=str(self.data_dir))

    # -- what the stack asks of a service -------------------------------------------
    @abstractmethod
    def ports(self) -> list[tuple[int, str]]:
        """(port, setting name) pairs the service listens on."""

    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def install(self) -> None:
        """Make the service's programs available (idempotent, cached)."""

    @abstractmethod
    def launch(self) -> None:
        """Configure and start the process (only called when it is not running)."""

    @abstractmethod
    def health(self) -> Health: ...

    @abstractmethod
    def version(self) -> str: ...

    def provision(self) -> None:  # noqa: B027 - optional: most services have nothing to create
        """Create what the project needs inside the running service (topics, buckets, ...)."""

    def describe(self) -> str:
        return ""

    def security(self) -> str:
        """Transport and authentication clients must use (shown by `stack status`); each service
        with TLS and principals says which."""
        return "plaintext, no authentication"

    # -- shared behaviour -----------------------------------------------------------
    def running_pid(self) -> int | None:
        return self.pidfile.running_pid()

    def check_ports(self) -> None:
        for port, setting in self.ports():
            require_free_port(self.name, self.settings.host, port, setting)

    def wait_healthy(self) -> None:
        last: list[Health] = []

        def probe() -> bool:
            if self.running_pid() is None:
                raise ServiceFailedError(self._exited_message(), service=self.name)
            last[:] = [self.health()]
            return last[0].ok

        try:
            ok = wait_until(probe, self.start_timeout, interval=0.25)
        except ServiceFailedError:
            raise
        if not ok:
            detail = f" ({last[0].detail})" if last and last[0].detail else ""
            raise ServiceFailedError(
                f"{self.name} did not become healthy within {self.start_timeout:.0f} s{detail}; "
                f"see `sealstream stack logs {self.name}` for why.",
                service=self.name,
            )

    def _exited_message(self) -> str:
        return (
            f"{self.name} exited right after starting; "
            f"see `sealstream stack logs {self.name}` (file {self.log_path}) for why."
        )

    def stop(self) -> bool:
        return self.pidfile.stop()

    def status(self) -> ServiceStatus:
        pid = self.running_pid()
        if pid is None:
            return ServiceStatus(self.name, "stopped", self.address(), self.version(), None, self.describe(),
                                 self.security())
        try:
            health = self.health()
        except Exception as exc:  # noqa: BLE001 - a status call reports, it does not fail
            health = Health(False, str(exc))
        state = "running" if health.ok else "unhealthy"
        detail = "; ".join(d for d in (self.describe(), health.detail) if d)
        return ServiceStatus(self.name, state, self.address(), self.version(), pid, detail, self.security())

    def tail_log(self, lines: int) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                return [ln.decode(errors="replace") for ln in fh.read().splitlines()[-lines:]]
        except FileNotFoundError:
            return []

    @staticmethod
    def write_if_changed(path: Path, text: str) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_text() == text:
            return False
        path.write_text(text)
        return True

    @staticmethod
    def read_json(path: Path) -> dict[str, object]:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
