"""`LocalCluster`: N ledger node processes on loopback, from one state directory.

The one place that knows how to initialise, start, stop, kill and restart
local nodes; ``sealstream ledger init|up|down|status``, the real-cluster tests
and the benchmark target (`bench/_ledger_target.py`) all use it.

Each node is ``python -m ledger.node --root ROOT --node NAME`` in its own
session, its output appended to ``ROOT/logs/NAME.log`` and its pid in
``ROOT/run/NAME.pid``. A pid file only counts while the process's command
line still names ROOT and NAME (`infra.process.PidFile`), so `stop` never signals an unrelated process that
reused a stale pid. Ports: node i listens on ``base_port + 2i`` (p2p) and
``base_port + 2i + 1`` (HTTP; HTTPS pinned to its genesis key with TLS, `ledger.https`),
with TLS (the default; ``tls=False`` is the plaintext transport of before) on
``base_port + 2n + i`` for clients, and on ``metrics_host:base_port + 3n + i`` for
Prometheus (plain HTTP, ``/metrics`` only); ``base_port=0`` picks free ports.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

from ledger import https
from ledger.client import AsyncLedgerClient, LedgerClient
from ledger.errors import LedgerError
from ledger.https import Pins
from ledger.layout import LedgerLayout, NodeAddress, init_layout
from ledger.values import Params

from ._errors import StackError
from .process import PidFile, free_ports, port_is_free, signal_pid, spawn, wait_until

__all__ = ["QUICK_PARAMS", "ClusterError", "LocalCluster", "free_ports"]

#: Consensus parameters for local test and demo clusters: quick blocks and view changes.
QUICK_PARAMS = Params(max_block_txs=128, block_time_ms=20, checkpoint_interval=10,
                      view_change_timeout_ms=800, status_interval_ms=300, fetch_timeout_ms=800)


class ClusterError(StackError, LedgerError):
    """A local node could not be started, stopped or reached; the message names the fix.

    A `StackError` of the local services and a `LedgerError` of the ledger both.
    """

    reason = "ledger-node"


class LocalCluster:
    """Local node processes of the ledger in `root` (see module doc)."""

    def __init__(self, root: str | Path, *, n_nodes: int = 4, n_sealers: int | None = None,
                 params: Params | None = None, host: str = "127.0.0.1", base_port: int = 0,
                 port_setting: str = "SEALSTREAM_LEDGER_BASE_PORT", log_level: str = "INFO",
                 app: str = "contracts", tls: bool = True, metrics_host: str = "127.0.0.1") -> None:
        self.root = Path(root).resolve()
        self.layout = LedgerLayout(self.root)
        self.n_nodes = n_nodes
        self.n_sealers = n_nodes if n_sealers is None else n_sealers
        self.params = params or Params()
        self.host = host
        self.base_port = base_port
        self.port_setting = port_setting
        self.log_level = log_level
        self.app = app  # for `init` only: a started ledger runs what its genesis names
        self.tls = tls  # for `init` only: a started ledger runs what its layout says (`LedgerLayout.tls`)
        self.metrics_host = metrics_host  # for `init` only, like `tls`
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pins: tuple[int, Pins] | None = None

    # ------------------------------------------------------------ setup

    def init(self, force: bool = False) -> LedgerLayout:
        """Write keys, genesis and addresses, and for app "contracts" the admin key and
        ``contracts.json`` (`ledger.layout.init_layout`)."""
        n = self.n_nodes
        if self.base_port:
            b = self.base_port
            ports = [(b + 2 * i, b + 2 * i + 1, b + 2 * n + i, b + 3 * n + i) for i in range(n)]
        else:
            flat = free_ports(4 * n, self.host)
            ports = [(flat[2 * i], flat[2 * i + 1], flat[2 * n + i], flat[3 * n + i]) for i in range(n)]
        if force:
            self.stop()
        return init_layout(self.root, n_nodes=n, n_sealers=self.n_sealers, ports=ports,
                           host=self.host, metrics_host=self.metrics_host, params=self.params, force=force,
                           app=self.app, tls=self.tls)

    def addresses(self) -> list[NodeAddress]:
        return self.layout.addresses()

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.addresses()]

    # ------------------------------------------------------------ processes

    def pid(self, name: str) -> int | None:
        """Pid of node `name` if it runs (and is ours), else None."""
        proc = self._procs.get(name)
        if proc is not None:
            if proc.poll() is None:
                return proc.pid
            del self._procs[name]
        return self._pidfile(name).running_pid()

    def _pidfile(self, name: str) -> PidFile:
        # argv is `... --root ROOT --node NAME --log-level L`: the marker names both, and the
        # trailing space keeps node n1 from matching n10.
        return PidFile(self.layout.pid_path(name), f"--root {self.root} --node {name} ")

    def start(self, names: Iterable[str] | None = None, *, wait: bool = True, timeout: float = 30.0,
              progress: Callable[[str], None] | None = None) -> None:
        """Start the named nodes (default: all not running) and wait until they answer."""
        addrs = {a.name: a for a in self.addresses()}
        todo = [n for n in (names or addrs) if self.pid(n) is None]
        for name in todo:
            a = addrs[name]
            for host, port, what in ((a.host, a.p2p_port, "p2p"), (a.host, a.http_port, "HTTP"),
                                     (a.host, a.client_port, "client"),
                                     (a.metrics_host or a.host, a.metrics_port, "metrics")):
                if port is not None and not port_is_free(host, port):
                    raise ClusterError(
                        f"Port {port} on {host}, needed by ledger {name} ({what}), is already in use; "
                        f"stop that process or set {self.port_setting} to a free port and run "
                        f"`sealstream ledger init --force` again.")
        for name in todo:
            self._spawn(name)
            if progress:
                progress(f"started ledger {name}")
        if wait and todo:
            self.wait_ready(todo, timeout=timeout, progress=progress)

    def _spawn(self, name: str) -> None:
        argv = [sys.executable, "-m", "ledger.node", "--root", str(self.root), "--node", name,
                "--log-level", self.log_level]
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = spawn(argv, log_path=self.layout.log_path(name), env=env)
        self._procs[name] = proc
        self._pidfile(name).write(proc.pid)

    def wait_ready(self, names: Iterable[str] | None = None, *, timeout: float = 30.0,
                   progress: Callable[[str], None] | None = None) -> None:
        """Until each node answers `/status` and has its peer links up."""
        deadline = time.monotonic() + timeout
        for name in list(names or self.names):
            if progress:
                progress(f"waiting for ledger {name}")

            def ready(name: str = name) -> bool:  # this iteration's node
                if self.pid(name) is None:
                    raise ClusterError(f"ledger {name} exited; see {self.layout.log_path(name)}")
                st = self.status(name)
                return st is not None and len(st["peers_connected"]) >= st["peers_total"]

            if not wait_until(ready, max(0.1, deadline - time.monotonic()), 0.1, fatal=(ClusterError,)):
                raise ClusterError(f"ledger {name} did not become ready within {timeout:g} s; "
                                   f"see {self.layout.log_path(name)}")

    def stop(self, names: Iterable[str] | None = None, timeout: float = 10.0) -> list[str]:
        """SIGTERM the named nodes (default all), SIGKILL after `timeout`; returns who was stopped."""
        try:
            names = list(names or self.names)
        except LedgerError:
            return []
        pids = {n: p for n in names if (p := self.pid(n)) is not None}
        for pid in pids.values():
            signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, pid in pids.items():
            gone = functools.partial(self._gone, name)
            if not wait_until(gone, max(0.0, deadline - time.monotonic()), 0.1):
                signal_pid(pid, signal.SIGKILL)
                wait_until(gone, 5.0, 0.1)
        for name in names:
            self._pidfile(name).clear()
        return list(pids)

    def _gone(self, name: str) -> bool:
        proc = self._procs.get(name)
        if proc is not None:
            proc.poll()
        return self.pid(name) is None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (SIGKILL by default) to node `name` and wait until it is gone."""
        pid = self.pid(name)
        if pid is None:
            raise ClusterError(f"ledger {name} is not running")
        signal_pid(pid, sig)
        if not wait_until(lambda: self._gone(name), 10.0, 0.1):
            raise ClusterError(f"ledger {name} (pid {pid}) did not exit after signal {sig}")

    def restart(self, name: str, *, timeout: float = 30.0) -> None:
        if self.pid(name) is not None:
            self.stop([name])
        self.start([name], timeout=timeout)

    # ------------------------------------------------------------ queries

    def pins(self) -> Pins:
        """The genesis keys the HTTP API's certificates are pinned to (`ledger.https`)."""
        stamp = self.layout.genesis_path.stat().st_mtime_ns
        if self._pins is None or self._pins[0] != stamp:
            self._pins = (stamp, Pins(self.layout.genesis()))
        return self._pins[1]

    def status(self, name: str, timeout: float = 2.0) -> dict | None:
        """`/status` of node `name`, or None if it does not answer (or is not who genesis says)."""
        a = self.layout.address(name)
        try:
            code, body = https.get(a, "/status", timeout=timeout, pins=self.pins())
            return json.loads(body) if code == 200 else None
        except (OSError, ValueError):
            return None

    def statuses(self) -> dict[str, dict | None]:
        return {n: self.status(n) for n in self.names}

    def http_get(self, name: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET path`` of node `name`'s HTTP API (pinned HTTPS with TLS): (status, body); raises
        `ledger.https.PinError` when the node's certificate is not its genesis key's, OSError if down."""
        return https.get(self.layout.address(name), path, timeout=timeout, pins=self.pins())

    def metrics_get(self, name: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET /metrics`` of node `name`'s plain-HTTP metrics listener (what Prometheus scrapes)."""
        url = self.layout.address(name).metrics_url
        if url is None:
            raise ClusterError(f"ledger {name} has no plain-HTTP metrics port (a layout from before it); "
                               "`sealstream ledger init --force` gives it one")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def client(self, **kw: Any) -> LedgerClient:
        """A blocking client with the ledger's client key (or ``key=``; close it when done)."""
        return LedgerClient.from_layout(self.root, **kw)

    def aclient(self, **kw: Any) -> AsyncLedgerClient:
        """An asyncio client; create it inside the loop that will use it."""
        return AsyncLedgerClient.from_layout(self.root, **kw)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

