"""Panel helpers shared by the three dashboards: PromQL and SQL targets, panel kinds, the grid.

Every panel gets its datasource by fixed uid (`dashboards.datasources`), every
target a ref id, and `board()` numbers the panels 1..n and lays them out left
to right on Grafana's 24-column grid, so no two panels share an id.
"""

from __future__ import annotations

from typing import Sequence

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.builders import stat as sb
from grafana_foundation_sdk.builders import table as tb
from grafana_foundation_sdk.builders import timeseries as tsb
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from ._sql import SqlQueryBuilder
from .datasources import POSTGRES, PROMETHEUS

__all__ = ["m", "quantiles", "prom", "sql", "timeseries", "stat", "table", "board", "RATE", "JOB_VAR"]

#: The rate window of every PromQL panel (Grafana substitutes at least four scrape intervals).
RATE = "$__rate_interval"
#: The dashboard variable selecting Prometheus jobs (one deployment, or a test's private job).
JOB_VAR = "job"


def m(metric: str) -> str:
    """A metric selector restricted to the jobs chosen in the ``$job`` variable (all by default)."""
    return f'{metric}{{job=~"${JOB_VAR}"}}'
_Panel = tsb.Panel | sb.Panel | tb.Panel


def _ref(i: int) -> str:
    return chr(ord("A") + i)


def prom(expr: str, legend: str = "") -> pb.Dataquery:
    """A range PromQL target on the sealstream Prometheus."""
    q = pb.Dataquery().expr(expr).range().editor_mode(pm.QueryEditorMode.CODE).datasource(PROMETHEUS)
    return q.legend_format(legend) if legend else q


def quantiles(histogram: str) -> tuple[pb.Dataquery, pb.Dataquery]:
    """p50 and p99 of a histogram (``histogram`` without ``_bucket``) over all selected series."""
    return tuple(prom(f"histogram_quantile({q}, sum by (le) (rate({m(histogram + '_bucket')}[{RATE}])))",
                      f"p{round(q * 100)}") for q in (0.5, 0.99))  # type: ignore[return-value]


def sql(raw_sql: str, fmt: str = "table") -> SqlQueryBuilder:
    """A raw-SQL target on the sealstream PostgreSQL (macros: ``$__timeFilter(col)``, ``$__timeGroupAlias``)."""
    return SqlQueryBuilder().raw_sql(raw_sql.strip()).format(fmt).datasource(POSTGRES)  # type: ignore[arg-type]


def _targets(panel: _Panel, targets: Sequence[pb.Dataquery | SqlQueryBuilder]) -> _Panel:
    for i, t in enumerate(targets):
        panel.with_target(t.ref_id(_ref(i)))
    return panel


def timeseries(title: str, description: str, unit: str, *targets: pb.Dataquery | SqlQueryBuilder,
               postgres: bool = False) -> tsb.Panel:
    p = (tsb.Panel().title(title).description(description).unit(unit)
         .datasource(POSTGRES if postgres else PROMETHEUS).line_width(1).fill_opacity(10)
         .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
                 .placement(cm.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"])))
    return _targets(p, targets)  # type: ignore[return-value]


def stat(title: str, description: str, unit: str, *targets: pb.Dataquery | SqlQueryBuilder,
         postgres: bool = False) -> sb.Panel:
    p = (sb.Panel().title(title).description(description).unit(unit)
         .datasource(POSTGRES if postgres else PROMETHEUS)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    return _targets(p, targets)  # type: ignore[return-value]


def table(title: str, description: str, *targets: SqlQueryBuilder) -> tb.Panel:
    p = tb.Panel().title(title).description(description).datasource(POSTGRES).show_header(True)
    return _targets(p, targets)  # type: ignore[return-value]


def _job_variable(job_metric: str) -> db.QueryVariable:
    return (db.QueryVariable(JOB_VAR).label("Prometheus job").datasource(PROMETHEUS)
            .query(f"label_values({job_metric}, job)").refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True).all_value(".+").sort(dm.VariableSort.ALPHABETICAL_ASC)
            .current(dm.VariableOption(selected=True, text="All", value="$__all")))


def board(uid: str, title: str, description: str, tags: Sequence[str], job_metric: str,
          panels: Sequence[tuple[_Panel, int, int]]) -> dm.Dashboard:
    """The dashboard: ``panels`` are ``(panel, width, height)``, placed in order and numbered from 1;
    the ``$job`` variable lists the jobs exporting ``job_metric``."""
    d = (db.Dashboard(title).uid(uid).description(description).tags(["sealstream", *tags])
         .time("now-1h", "now").refresh("10s").timezone("utc").readonly()
         .with_variable(_job_variable(job_metric)))
    x = y = row_h = 0
    for n, (panel, w, h) in enumerate(panels, start=1):
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        d.with_panel(panel.id(n).grid_pos(dm.GridPos(h=h, w=w, x=x, y=y)))
        x, row_h = x + w, max(row_h, h)
    return d.build()
