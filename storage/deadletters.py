"""The ``dead_letters`` table: which source positions a consumer group dead-lettered.

The pipeline dead-letters a bad record at most once per (consumer group,
topic, partition, offset): before producing a batch's dead letters it
`record`\\ s them (one statement), produces only the new ones, and
`mark_produced` once the broker acked them.  A row still unmarked after a crash
is resolved by the caller (it looks in the dead-letter topic; storage does no
Kafka).  The first verdict recorded for a position is the one kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from psycopg_pool import ConnectionPool

from .db import db_errors
from .records import KafkaPosition

__all__ = ["DeadLetterRow", "DeadLetterLog"]

# One statement: insert what is new, and return every input position with its row. The
# main query's snapshot does not see the CTE's inserts, hence the coalesce for new rows.
_RECORD = """
WITH input AS (
    SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[], %(reasons)s::text[])
        AS i(topic, partition, "offset", reason)
), ins AS (
    INSERT INTO dead_letters (grp, topic, partition, "offset", reason)
    SELECT %(grp)s, topic, partition, "offset", reason FROM input
    ON CONFLICT DO NOTHING
    RETURNING topic, partition, "offset", recorded_at
)
SELECT i.topic, i.partition, i."offset", ins.topic IS NOT NULL, coalesce(d.reason, i.reason),
       coalesce(d.produced, false), coalesce(ins.recorded_at, d.recorded_at), d.grp IS NOT NULL
FROM input i
LEFT JOIN ins ON (ins.topic, ins.partition, ins."offset") = (i.topic, i.partition, i."offset")
LEFT JOIN dead_letters d ON d.grp = %(grp)s AND (d.topic, d.partition, d."offset") = (i.topic, i.partition, i."offset")
"""
_READ = ('SELECT topic, partition, "offset", false, reason, produced, recorded_at, true FROM dead_letters '
         'WHERE grp = %(grp)s AND (topic, partition, "offset") IN '
         '(SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[]))')
_MARK = ('UPDATE dead_letters SET produced = true WHERE grp = %(grp)s AND NOT produced AND '
         '(topic, partition, "offset") IN '
         '(SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[]))')


@dataclass(frozen=True)
class DeadLetterRow:
    """One recorded dead letter: ``new`` when this `record` call inserted it; ``reason`` is
    the first verdict recorded; ``produced`` once the broker acked its dead letter."""

    position: KafkaPosition
    reason: str
    produced: bool
    recorded_at: datetime
    new: bool


def _columns(positions: Sequence[KafkaPosition]) -> dict:
    return {"topics": [p.topic for p in positions], "partitions": [p.partition for p in positions],
            "offsets": [p.offset for p in positions]}


def _row(r: tuple) -> DeadLetterRow:
    return DeadLetterRow(KafkaPosition(r[0], r[1], r[2]), r[4], r[5], r[6], r[3])


class DeadLetterLog:
    """Records and marks a consumer group's dead letters (thread-safe, through a pool)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def record(self, group: str, letters: Sequence[tuple[KafkaPosition, str]]) -> list[DeadLetterRow]:
        """Record ``(position, reason)`` pairs for `group` (positions distinct); one row per pair,
        in order: new ones, or the row recorded before (its reason and ``produced`` flag)."""
        if not letters:
            return []
        params = {"grp": group, **_columns([p for p, _ in letters]), "reasons": [r for _, r in letters]}
        with db_errors("record dead letters"), self._pool.connection() as conn:
            rows = {(r[0], r[1], r[2]): r for r in conn.execute(_RECORD, params).fetchall()}
            # Inserted meanwhile by another transaction (its commit released our ON CONFLICT wait,
            # but our snapshot predates it): read again.
            unseen = [p for p, _ in letters if not (rows[(p.topic, p.partition, p.offset)][3]
                                                     or rows[(p.topic, p.partition, p.offset)][7])]
            if unseen:
                for r in conn.execute(_READ, {"grp": group, **_columns(unseen)}).fetchall():
                    rows[(r[0], r[1], r[2])] = r
        return [_row(rows[(p.topic, p.partition, p.offset)]) for p, _ in letters]

    def mark_produced(self, group: str, positions: Sequence[KafkaPosition]) -> int:
        """Mark `group`'s dead letters at `positions` produced (broker-acked); rows changed."""
        if not positions:
            return 0
        with db_errors("mark dead letters produced"), self._pool.connection() as conn:
            return conn.execute(_MARK, {"grp": group, **_columns(positions)}).rowcount

    def rows(self, group: str) -> list[DeadLetterRow]:
        """Every dead letter recorded for `group`, by position (``new`` is False)."""
        with db_errors("read dead letters"), self._pool.connection() as conn:
            found = conn.execute('SELECT topic, partition, "offset", false, reason, produced, recorded_at, true '
                                 'FROM dead_letters WHERE grp = %s ORDER BY 1, 2, 3', (group,)).fetchall()
        return [_row(r) for r in found]
