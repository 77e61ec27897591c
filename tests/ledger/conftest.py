"""Fixtures for the real-cluster tests: node processes over TCP on loopback.

Every cluster lives in its own temporary state directory on free ports, and
its processes are always stopped at teardown (SIGTERM, then SIGKILL).
(`pyproject.toml` puts the repository root on sys.path, so `import ledger`
finds the package, and pytest puts this folder there for `ledger_helpers`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger import Params
from infra.ledger_cluster import QUICK_PARAMS, LocalCluster


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalCluster]]:
    """`make_cluster(n_nodes, n_sealers, app="kv")`: a started cluster, stopped at teardown.

    The consensus tests load it with ``kv.put`` (app "kv"); pass ``app="contracts"``
    for `ContractApp` (then ``keys/admin.key`` is the consortium admin)."""
    started: list[LocalCluster] = []

    def make(n_nodes: int, n_sealers: int, params: Params = QUICK_PARAMS, app: str = "kv") -> LocalCluster:
        root: Path = tmp_path_factory.mktemp(f"ledger{n_nodes}")
        c = LocalCluster(root, n_nodes=n_nodes, n_sealers=n_sealers, params=params, app=app)
        started.append(c)
        c.init()
        c.start(timeout=30)
        return c

    yield make
    for c in started:
        c.stop(timeout=5)
