"""A PostgreSQL panel query for grafana-foundation-sdk, which ships no SQL dataquery.

`SqlQuery` is the target model of Grafana's core PostgreSQL datasource
(``grafana-postgresql-datasource``: ``rawSql``, ``format``, ``editorMode``,
``rawQuery``); `SqlQueryBuilder` builds it like the SDK's own query builders.
`register()` adds it to the SDK runtime, so ``Dashboard.from_json`` decodes
these targets back into `SqlQuery` instead of an opaque ``UnknownDataquery``
(the round trip of the generated JSON depends on it).
"""

from __future__ import annotations

import typing

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants

__all__ = ["SqlQuery", "SqlQueryBuilder", "POSTGRES_TYPE", "register"]

POSTGRES_TYPE = "grafana-postgresql-datasource"


class SqlQuery(cogvariants.Dataquery):
    """One raw-SQL target (``format`` is ``table`` or ``time_series``)."""

    def __init__(self, raw_sql: str = "", format_val: str = "table", ref_id: str = "",
                 datasource: typing.Optional[object] = None, hide: typing.Optional[bool] = None) -> None:
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.ref_id = ref_id
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"rawSql": self.raw_sql, "format": self.format_val, "rawQuery": True,
                                      "editorMode": "code", "refId": self.ref_id}
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, typing.Any]) -> typing.Self:
        return cls(raw_sql=data.get("rawSql", ""), format_val=data.get("format", "table"),
                   ref_id=data.get("refId", ""), datasource=data.get("datasource"), hide=data.get("hide"))


class SqlQueryBuilder(cogbuilder.Builder[SqlQuery]):
    """``SqlQueryBuilder().raw_sql("SELECT ...").format("table").ref_id("A")``."""

    def __init__(self) -> None:
        self._internal = SqlQuery()

    def build(self) -> SqlQuery:
        return self._internal

    def raw_sql(self, sql: str) -> typing.Self:
        self._internal.raw_sql = sql
        return self

    def format(self, format_val: typing.Literal["table", "time_series"]) -> typing.Self:
        self._internal.format_val = format_val
        return self

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def datasource(self, datasource: object) -> typing.Self:
        self._internal.datasource = datasource
        return self


def register() -> None:
    """Teach the SDK runtime the SDK's own plugins and this query type (idempotent)."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins

    register_default_plugins()
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=POSTGRES_TYPE, from_json_hook=SqlQuery.from_json))
