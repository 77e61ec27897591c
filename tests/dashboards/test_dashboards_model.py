"""The generated dashboards as data: SDK round trip, ids, datasources, staleness, naming; the metrics switch."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models.prometheus import Dataquery as PromQuery
from prometheus_client import generate_latest

import dashboards
from dashboards import PROVISIONING, load, render, stale, to_dict
from dashboards._sql import SqlQuery
from dashboards.datasources import datasource_definitions
from ledger.metrics import NodeMetrics, metrics_enabled
from pipelines.lag import partition_lag
from pipelines.metrics import PipelineMetrics

BOARD_FILES = sorted(PROVISIONING.glob("dashboards/*.json"))


def _committed() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in BOARD_FILES}


def test_committed_files_are_fresh_and_complete() -> None:
    assert stale() == [], "run `sealstream dashboards build` and commit dashboards/provisioning"
    assert {p.stem for p in BOARD_FILES} == set(dashboards.BOARDS)
    assert set(render()) == {str(p.relative_to(PROVISIONING)) for p in PROVISIONING.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(dashboards.BOARDS))
def test_round_trip_through_the_sdk_model(name: str) -> None:
    data = _committed()[name]
    model = load(data)
    assert to_dict(model) == data
    kinds = {type(t) for p in model.panels for t in (p.targets or [])}
    assert UnknownDataquery not in kinds and kinds <= {PromQuery, SqlQuery}


@pytest.mark.parametrize("name", sorted(dashboards.BOARDS))
def test_panel_ids_unique_and_datasources_provisioned(name: str) -> None:
    data = _committed()[name]
    uids = {d["uid"]: d["type"] for d in datasource_definitions()}
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    assert data["uid"].startswith("sealstream-")
    for p in data["panels"]:
        ds = p["datasource"]
        assert uids.get(ds["uid"]) == ds["type"], p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)) and all(refs)
        for t in p["targets"]:
            assert t["datasource"] == ds, p["title"]
            assert (t.get("expr") or t.get("rawSql") or "").strip(), p["title"]
    boxes = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in data["panels"]}
    assert len(boxes) == len(ids)


def test_promql_uses_conventional_metric_names() -> None:
    """Counters end in _total, durations in _seconds (or their histogram series), all sealstream_*, all by $job."""
    names = set()
    for data in _committed().values():
        for p in data["panels"]:
            for t in p["targets"]:
                expr = t.get("expr", "")
                names |= set(re.findall(r"\b(sealstream_[a-z_]+)\b", expr))
                # every selector is scoped by the dashboard's $job variable
                assert len(re.findall(r"sealstream_[a-z_]+\{job=~\"\$job\"\}", expr)) == expr.count("sealstream_"), expr
    assert names
    for n in names:
        assert re.fullmatch(r"sealstream_(ledger|pipeline|verify|edge)_[a-z_]+", n), n
        if "latency" in n or n.endswith(("_seconds_bucket", "_seconds")):
            assert re.search(r"_seconds(_bucket)?$", n), n


def test_every_dashboard_shows_postgres_where_it_is_the_source_of_truth() -> None:
    boards = _committed()
    for name in ("pipeline", "verification"):
        assert any(t.get("rawSql") for p in boards[name]["panels"] for t in p["targets"]), name


def test_partition_lag() -> None:
    assert partition_lag(committed=10, low=0, high=15) == 5
    assert partition_lag(committed=15, low=0, high=15) == 0
    assert partition_lag(committed=-1001, low=3, high=9) == 6  # no commit, earliest: all retained
    assert partition_lag(committed=-1001, low=3, high=9, offset_reset="latest") == 0
    assert partition_lag(committed=1, low=5, high=9) == 4  # committed below retention counts from low


def test_metrics_switch() -> None:
    assert metrics_enabled({}) and metrics_enabled({"SEALSTREAM_METRICS": "1"})
    assert not metrics_enabled({"SEALSTREAM_METRICS": "0"}) and not metrics_enabled({"SEALSTREAM_METRICS": "false"})
    state = defaultdict(int, {"height": 3, "committed_tx": 7, "drops": {"truncated": 1}})  # other gauges 0
    on = NodeMetrics("n0", lambda: state, enabled=True)
    on.commit_latency.observe(0.01)
    text = generate_latest(on.registry).decode()
    assert 'sealstream_ledger_height{node="n0"} 3.0' in text and "commit_latency_seconds_count" in text
    off = NodeMetrics("n0", lambda: state, enabled=False)
    off.commit_latency.observe(0.01)
    assert generate_latest(off.registry) == b""

    p_on, p_off = PipelineMetrics.switched(True), PipelineMetrics.switched(False)
    for m in (p_on, p_off):
        m.ingested.labels("image").inc()
        m.store_seconds.observe(0.1)
    assert b'sealstream_pipeline_ingested_total{kind="image"} 1.0' in generate_latest(p_on.registry)
    assert generate_latest(p_off.registry) == b""
