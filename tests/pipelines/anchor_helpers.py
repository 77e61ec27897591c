"""Helpers for tests that anchor: a 4-node contracts LocalCluster and a registered, funded gateway.

`ledger_cluster(root)` starts real node processes on free ports (stop them with
``cluster.stop()``); `register_gateway(cluster, name, key)` registers the gateway
in the org ``operator`` with the consortium admin key and funds it
(`pipelines._anchor_ledger.ensure_gateway`).
"""

from __future__ import annotations

from pathlib import Path

from ledger.cluster import QUICK_PARAMS, LocalCluster
from pipelines._anchor_ledger import GatewayRegistration, ensure_gateway
from trust.identity import KeyPair



def ledger_cluster(root: Path, n_nodes: int = 4) -> LocalCluster:
    """A started contracts ledger of `n_nodes` processes in `root` on free ports."""
    c = LocalCluster(root, n_nodes=n_nodes, n_sealers=n_nodes, params=QUICK_PARAMS, app="contracts")
    c.init()
    c.start(timeout=60)
    return c


def admin_client(cluster: LocalCluster):
    """A blocking client signing as the consortium admin (close it)."""
    return cluster.client(key=cluster.layout.admin_key())


def register_gateway(cluster: LocalCluster, name: str, key: KeyPair, fund: int = 100_000) -> GatewayRegistration:
    with admin_client(cluster) as admin:
        return ensure_gateway(admin, name, key.did, fund=fund)


def register_factory(cluster: LocalCluster, factory) -> dict[str, str]:
    """Register every device of a simulator `factory` as ``<factory>-<name>``; did -> id."""
    from pipelines._anchor_ledger import ensure_devices

    ids = {d.did: f"{factory.name}-{d.spec.name}" for d in factory.devices}
    with admin_client(cluster) as admin:
        ensure_devices(admin, [(i, did) for did, i in ids.items()])
    return ids


class WorkerProc:
    """`sealstream pipeline worker` as a subprocess (ledger directory, anchoring on by default)."""

    def __init__(self, settings, app_id: str, gateway: str, log: Path, *, extra_env: dict | None = None,
                 args: tuple[str, ...] = ()) -> None:
        import os
        import subprocess
        import sys

        from ledger.cluster import free_ports

        self.port = free_ports(1)[0]
        env = dict(os.environ, SEALSTREAM_HOME=str(settings.home),
                   SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap,
                   SEALSTREAM_PIPELINE_GATEWAY=gateway, SEALSTREAM_PIPELINE_SESSION_TIMEOUT_S="6",
                   SEALSTREAM_PIPELINE_DIRECTORY_TTL_S="1", SEALSTREAM_PIPELINE_ANCHOR_WINDOW_S="1",
                   **(extra_env or {}))
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sealstream", "pipeline", "worker", "--app-id", app_id, "--directory", "ledger",
             "--metrics-port", str(self.port), "--loglevel", os.environ.get("SS_TEST_WORKER_LOGLEVEL", "warn"),
             *args],
            cwd=Path(__file__).resolve().parents[2], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)

    def metrics(self) -> str:
        import urllib.request

        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

    def metric(self, name: str) -> float:
        """The value of an unlabelled sample `name` (0 if absent)."""
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def wait_for(pred, timeout: float, what: str, worker: "WorkerProc | None" = None, interval: float = 0.5):
    """Poll `pred()` until truthy (returned); AssertionError naming `what` (and the worker's log tail)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if worker is not None:
            worker.alive()
        if time.monotonic() > deadline:
            tail = worker.log.read_text()[-3000:] if worker is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(interval)
