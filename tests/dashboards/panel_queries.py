"""Run the queries of the generated dashboard JSON against the real Prometheus and PostgreSQL.

Queries are read from ``dashboards/provisioning/dashboards/*.json`` (what Grafana
gets), never re-typed. Grafana's variables and macros are substituted the way
Grafana would for a "last hour" view of one job: ``$job`` becomes the test's
private Prometheus job (so only the test's own targets can answer),
``$__rate_interval`` becomes ``1m`` (at least four 5 s scrapes),
``$__timeFilter(col)`` becomes a ``BETWEEN`` on the given range. An unknown variable or macro fails
loudly, so a new one cannot slip through untested.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOARDS = ROOT / "dashboards" / "provisioning" / "dashboards"
PROM_VARS = {"$__rate_interval": "1m"}


@dataclass(frozen=True)
class PanelQuery:
    board: str
    panel: str
    ref: str
    kind: str  # "promql" | "sql"
    text: str

    @property
    def name(self) -> str:
        return f"{self.board} / {self.panel} / {self.ref}"


def panel_queries() -> list[PanelQuery]:
    out = []
    for path in sorted(BOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for t in panel["targets"]:
                kind = "sql" if "rawSql" in t else "promql"
                out.append(PanelQuery(path.stem, panel["title"], t["refId"], kind, t.get("rawSql") or t["expr"]))
    return out


def promql(text: str, job: str) -> str:
    for var, value in {**PROM_VARS, "$job": job}.items():  # job names are [a-z0-9-]: no regex escaping
        text = text.replace(var, value)
    if "$" in text:
        raise AssertionError(f"unsubstituted Grafana variable in {text!r}")
    return text


def sql(text: str, start: datetime, end: datetime) -> str:
    text = re.sub(r"\$__timeFilter\(([^)]+)\)",
                  lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'", text)
    if "$" in text:
        raise AssertionError(f"unsubstituted Grafana macro in {text!r}")
    return text


def prom_query(base_url: str, expr: str) -> list[dict]:
    """The instant-query result of ``expr`` now (Prometheus HTTP API)."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def finite_samples(result: list[dict]) -> list[float]:
    values = [float(s["value"][1]) for s in result]
    return [v for v in values if math.isfinite(v)]


def targets_up(base_url: str, job: str) -> dict[str, str]:
    """``{instance: health}`` of the scrape targets of ``job``."""
    with urllib.request.urlopen(f"{base_url}/api/v1/targets?state=active", timeout=10) as r:
        doc = json.load(r)
    return {t["labels"]["instance"]: t["health"] for t in doc["data"]["activeTargets"]
            if t["labels"].get("job") == job}
