"""Helpers for tests that anchor: a 4-node contracts LocalCluster and a registered, funded gateway.

`ledger_cluster(root)` starts real node processes on free ports (stop them with
``cluster.stop()``); `register_gateway(cluster, name, key)` registers the gateway
in the org ``operator`` with the consortium admin key and funds it
(`pipelines._anchor_ledger.ensure_gateway`).
"""

from __future__ import annotations

from pathlib import Path

from infra.ledger_cluster import QUICK_PARAMS, LocalCluster
from pipelines._anchor_ledger import GatewayRegistration, ensure_gateway
from support.workers import WorkerProc
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


def wait_for(pred, timeout: float, what: str, worker: "WorkerProc | None" = None, interval: float = 0.5):
    """Poll `pred()` until truthy (returned); AssertionError naming `what` (and the worker's log tail)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if worker is not None:
            worker.check()
        if time.monotonic() > deadline:
            tail = worker.tail() if worker is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(interval)
