"""Checks over HTTP shared by the real-cluster tests."""

from __future__ import annotations

import json
import time

from prometheus_client.parser import text_string_to_metric_families

from infra.ledger_cluster import LocalCluster


def header_hashes(cluster: LocalCluster, name: str, upto: int) -> list[str]:
    """Block hashes 1..upto as node `name` serves them over HTTP."""
    out: list[str] = []
    while len(out) < upto:
        status, body = cluster.http_get(name, f"/headers?from={len(out) + 1}&to={upto}")
        assert status == 200, body
        page = json.loads(body)["headers"]
        assert page, f"{name} has no header {len(out) + 1}"
        out += [h["hash"] for h in page]
    return out


def wait_converged(cluster: LocalCluster, names: list[str], min_height: int = 1, timeout: float = 30.0) -> int:
    """Until `names` report the same height (>= min_height) and tip; returns that height."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        sts = {n: cluster.status(n) for n in names}
        last = {n: (s or {}).get("height") for n, s in sts.items()}
        if all(sts.values()):
            tips = {(s["height"], s["tip"]) for s in sts.values()}  # type: ignore[union-attr]
            if len(tips) == 1 and next(iter(tips))[0] >= min_height:
                return next(iter(tips))[0]
        time.sleep(0.2)
    raise AssertionError(f"nodes did not converge: heights {last}")


def assert_same_chain(cluster: LocalCluster, names: list[str], height: int) -> None:
    """Every node serves identical block hashes 1..height."""
    chains = {n: header_hashes(cluster, n, height) for n in names}
    first = chains[names[0]]
    for n, c in chains.items():
        assert c == first, f"{n} differs from {names[0]}"


def metric(cluster: LocalCluster, name: str, metric_name: str, **labels: str) -> float:
    """Value of one sample from node `name`'s /metrics (0 when absent)."""
    status, body = cluster.http_get(name, "/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == metric_name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0
