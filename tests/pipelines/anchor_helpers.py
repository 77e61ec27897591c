"""Helpers for tests that anchor: a 4-node contracts LocalCluster and a registered, funded gateway.

`ledger_cluster(root)` starts real node processes on free ports (stop them with
``cluster.stop()``); `register_gateway(cluster, name, key)` registers the gateway
in the org ``operator`` with the consortium admin key and funds it
(`pipelines._anchor_ledger.ensure_gateway`).
"""

from __future__ import annotations

from pathlib import Path

from ledger import Params
from ledger.cluster import LocalCluster
from pipelines._anchor_ledger import GatewayRegistration, ensure_gateway
from trust.identity import KeyPair

#: Quick blocks and view changes, as in tests/ledger/conftest.py.
CLUSTER_PARAMS = Params(max_block_txs=128, block_time_ms=20, checkpoint_interval=10,
                        view_change_timeout_ms=800, status_interval_ms=300, fetch_timeout_ms=800)


def ledger_cluster(root: Path, n_nodes: int = 4) -> LocalCluster:
    """A started contracts ledger of `n_nodes` processes in `root` on free ports."""
    c = LocalCluster(root, n_nodes=n_nodes, n_sealers=n_nodes, params=CLUSTER_PARAMS, app="contracts")
    c.init()
    c.start(timeout=60)
    return c


def admin_client(cluster: LocalCluster):
    """A blocking client signing as the consortium admin (close it)."""
    return cluster.client(key=cluster.layout.admin_key())


def register_gateway(cluster: LocalCluster, name: str, key: KeyPair, fund: int = 100_000) -> GatewayRegistration:
    with admin_client(cluster) as admin:
        return ensure_gateway(admin, name, key.did, fund=fund)
