"""The ``dead_letters`` table: which source positions a consumer group dead-lettered.

The pipeline dead-letters a bad record at most once per (consumer group,
topic, partition, offset): before producing a batch's dead letters it
`record`\\ s them (one statement), produces only the new ones, and
`mark_produced` once the broker acked them.  A row still unmarked after a crash
is resolved by the caller (it looks in the dead-letter topic; storage does no
Kafka).  The first verdict recorded for a position is the one kept.

Operators read `summary` (per group and reason) and `prune` old rows.  Retention:

- only rows marked ``produced`` are ever pruned.  An unmarked row is a crash
  between the produce and the mark whose outcome is still unknown; the
  pipeline's look-up (`pipelines.dlq`) needs it to decide whether to produce.
- prune only rows older than the source topics' retention (plus a margin: Kafka
  deletes whole segments, so a record can outlive ``retention.ms``).  A source
  position re-read after its row was pruned (a crash before the offset commit,
  a consumer group reset) would be dead-lettered a second time; once Kafka
  deleted the source record it cannot be re-read, so its row is no longer
  needed.  `prunable_topics` names the source topics of what `prune` would delete,
  so a caller can check their retention on the broker first (`sealstream pipeline
  deadletters prune` does) and then `prune` only those topics' rows.

`DeadLetterReplays` keeps ``dead_letter_replays`` (migration 0006): which
dead-lettered source positions ``sealstream pipeline deadletters replay``
re-injected (one row per position, whatever the group), as an intent committed
before the copy is produced and confirmed once its Kafka transaction committed
(`pipelines.replay` owns the Kafka side and the crash recovery).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterator, Optional, Sequence

from psycopg_pool import ConnectionPool

from .db import db_errors, one_row
from .records import KafkaPosition

__all__ = ["DeadLetterRow", "DeadLetterSummary", "DeadLetterLog", "ReplayIntent", "ReplayCounts",
           "DeadLetterReplays"]

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
# rows already there, in `_RECORD`'s column order (new = false, present = true)
_SELECT = 'SELECT topic, partition, "offset", false, reason, produced, recorded_at, true FROM dead_letters '
_READ = (_SELECT + 'WHERE grp = %(grp)s AND (topic, partition, "offset") IN '
         '(SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[]))')
_MARK = ('UPDATE dead_letters SET produced = true WHERE grp = %(grp)s AND NOT produced AND '
         '(topic, partition, "offset") IN '
         '(SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[]))')

_GROUP = "(%(grp)s::text IS NULL OR grp = %(grp)s)"
_SUMMARY = ("SELECT grp, reason, count(*), count(*) FILTER (WHERE produced), count(*) FILTER (WHERE NOT produced), "
            f"min(recorded_at), max(recorded_at) FROM dead_letters WHERE {_GROUP} GROUP BY 1, 2 ORDER BY 1, 2")
# What prune may delete: produced (never an unmarked row) and recorded before the cutoff (database clock).
# `topics` NULL: every topic.
_PRUNABLE = (f"produced AND recorded_at < now() - %(age)s::interval AND {_GROUP} "
             "AND (%(topics)s::text[] IS NULL OR topic = ANY(%(topics)s::text[]))")
_PRUNE = f"DELETE FROM dead_letters WHERE {_PRUNABLE}"
_PRUNE_COUNT = f"SELECT count(*) FROM dead_letters WHERE {_PRUNABLE}"
_PRUNE_TOPICS = f"SELECT DISTINCT topic FROM dead_letters WHERE {_PRUNABLE} ORDER BY 1"


@dataclass(frozen=True)
class DeadLetterRow:
    """One recorded dead letter: ``new`` when this `record` call inserted it; ``reason`` is
    the first verdict recorded; ``produced`` once the broker acked its dead letter."""

    position: KafkaPosition
    reason: str
    produced: bool
    recorded_at: datetime
    new: bool


@dataclass(frozen=True)
class DeadLetterSummary:
    """One (group, reason) of ``dead_letters``: rows, how many ``produced`` and still unmarked
    (a crash's unknown outcome, never pruned), oldest and newest ``recorded_at``."""

    group: str
    reason: str
    count: int
    produced: int
    unmarked: int
    oldest: datetime
    newest: datetime

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "reason": self.reason, "count": self.count, "produced": self.produced,
                "unmarked": self.unmarked, "oldest": self.oldest.isoformat(), "newest": self.newest.isoformat()}


def _columns(positions: Sequence[KafkaPosition]) -> dict:
    return {"topics": [p.topic for p in positions], "partitions": [p.partition for p in positions],
            "offsets": [p.offset for p in positions]}


def _prune_params(older_than: timedelta, group: str | None, topics: Sequence[str] | None) -> dict:
    if older_than <= timedelta(0):
        raise ValueError(f"older_than must be positive, not {older_than}")
    return {"age": older_than, "grp": group, "topics": None if topics is None else list(topics)}


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
            found = conn.execute(_SELECT + "WHERE grp = %s ORDER BY 1, 2, 3", (group,)).fetchall()
        return [_row(r) for r in found]

    def summary(self, group: str | None = None) -> list[DeadLetterSummary]:
        """Per (group, reason), by group then reason: counts and recorded_at range (`group` only, if given)."""
        with db_errors("summarise dead letters"), self._pool.connection() as conn:
            found = conn.execute(_SUMMARY, {"grp": group}).fetchall()
        return [DeadLetterSummary(*r) for r in found]

    def prunable_topics(self, older_than: timedelta, group: str | None = None) -> list[str]:
        """The source topics, sorted, of the rows `prune` would delete now (same arguments)."""
        params = _prune_params(older_than, group, None)
        with db_errors("read prunable dead-letter topics"), self._pool.connection() as conn:
            return [r[0] for r in conn.execute(_PRUNE_TOPICS, params).fetchall()]

    def prune(self, older_than: timedelta, group: str | None = None, dry_run: bool = False,
              topics: Sequence[str] | None = None) -> int:
        """Delete the ``produced`` rows recorded more than `older_than` ago (of `group`, and of
        source `topics`, if given); the number deleted, or with `dry_run` the number that would
        be (nothing deleted).  Unmarked rows are kept whatever their age (module docstring)."""
        params = _prune_params(older_than, group, topics)
        with db_errors("prune dead letters"), self._pool.connection() as conn:
            if dry_run:
                return one_row(conn.execute(_PRUNE_COUNT, params))[0]
            return conn.execute(_PRUNE, params).rowcount


# -- replays ---------------------------------------------------------------------------------------
# What a replay selects: the rows of `reason` (and group) whose dead letter was produced, counted
# per source position. A position with a replay row (confirmed or not) is never a candidate.
_D_GROUP = "(%(grp)s::text IS NULL OR d.grp = %(grp)s)"
_SELECTED = f"FROM dead_letters d WHERE d.reason = %(reason)s AND {_D_GROUP} AND d.produced"
_HAS_REPLAY = ('EXISTS (SELECT 1 FROM dead_letter_replays r WHERE (r.topic, r.partition, r."offset") = '
               '(d.topic, d.partition, d."offset")')
_CANDIDATES = (f'SELECT DISTINCT d.topic, d.partition, d."offset" {_SELECTED} AND NOT {_HAS_REPLAY}) '
               'ORDER BY 1, 2, 3 LIMIT %(limit)s')
_DISTINCT = 'count(DISTINCT (d.topic, d.partition, d."offset"))'
_COUNTS = f"""
SELECT
  (SELECT {_DISTINCT} {_SELECTED}),
  (SELECT {_DISTINCT} {_SELECTED} AND {_HAS_REPLAY} AND r.replayed_at IS NOT NULL)),
  (SELECT {_DISTINCT} {_SELECTED} AND {_HAS_REPLAY} AND r.replayed_at IS NULL)),
  (SELECT {_DISTINCT} FROM dead_letters d WHERE d.reason = %(reason)s AND {_D_GROUP} AND NOT d.produced
     AND NOT EXISTS (SELECT 1 FROM dead_letters p WHERE p.reason = %(reason)s AND p.produced
                     AND (%(grp)s::text IS NULL OR p.grp = %(grp)s)
                     AND (p.topic, p.partition, p."offset") = (d.topic, d.partition, d."offset")))
"""
_BEGIN = """
INSERT INTO dead_letter_replays (topic, partition, "offset", reason, grp, nonce, scan_from)
SELECT i.topic, i.partition, i."offset", %(reason)s, %(grp)s, %(nonce)s, i.scan_from
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[], %(scan_from)s::bigint[])
    AS i(topic, partition, "offset", scan_from)
ON CONFLICT DO NOTHING
RETURNING topic, partition, "offset"
"""
_CONFIRM = """
UPDATE dead_letter_replays r SET copy_offset = i.copy_offset, replayed_at = now()
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[], %(copies)s::bigint[])
    AS i(topic, partition, "offset", copy_offset)
WHERE (r.topic, r.partition, r."offset") = (i.topic, i.partition, i."offset") AND r.replayed_at IS NULL
"""
_FORGET = ('DELETE FROM dead_letter_replays WHERE replayed_at IS NULL AND (topic, partition, "offset") IN '
           '(SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[]))')
_INTENTS = ('SELECT topic, partition, "offset", reason, grp, nonce, scan_from, started_at, copy_offset, replayed_at '
            'FROM dead_letter_replays WHERE (replayed_at IS NULL) = %(pending)s ORDER BY 1, 2, 3')
_LOCK_KEY = 0x5EA1_0014_DEAD  # pg_try_advisory_lock key of `sealstream pipeline deadletters replay`


@dataclass(frozen=True)
class ReplayIntent:
    """One ``dead_letter_replays`` row: the dead-lettered source `position` whose copy goes (or went)
    to the same topic and partition at offset `scan_from` or later, with header ss-replay-nonce =
    `nonce`; `copy_offset` and `replayed_at` once confirmed."""

    position: KafkaPosition
    reason: str
    group: Optional[str]
    nonce: str
    scan_from: int
    started_at: datetime
    copy_offset: Optional[int]
    replayed_at: Optional[datetime]


@dataclass(frozen=True)
class ReplayCounts:
    """For a reason (and group), in distinct source positions whose dead letter was produced:
    ``matched``; of those ``replayed`` (confirmed) and ``pending`` (a run died before confirming it);
    ``unmarked``: positions dead-lettered but never marked produced (not replayed: their dead letter
    may not exist). `to_replay` = matched - replayed - pending."""

    matched: int
    replayed: int
    pending: int
    unmarked: int

    @property
    def to_replay(self) -> int:
        return self.matched - self.replayed - self.pending


class DeadLetterReplays:
    """``dead_letter_replays``: replay intents and confirmations (thread-safe, through a pool).
    `lock` holds a connection for the whole block: give the pool at least two."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """A session advisory lock held for the block (one replay per database at a time); yields
        False, without waiting, when another session holds it. A killed process's lock goes with
        its connection."""
        with db_errors("lock dead-letter replays"), self._pool.connection() as conn:
            got = one_row(conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)))[0]
            try:
                yield got
            finally:
                if got:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))

    def database(self) -> str:
        """The database's name (it scopes the replay producer's transactional id)."""
        with db_errors("read the database name"), self._pool.connection() as conn:
            return one_row(conn.execute("SELECT current_database()"))[0]

    def counts(self, reason: str, group: Optional[str] = None) -> ReplayCounts:
        with db_errors("count dead letters to replay"), self._pool.connection() as conn:
            return ReplayCounts(*one_row(conn.execute(_COUNTS, {"reason": reason, "grp": group})))

    def candidates(self, reason: str, group: Optional[str] = None, limit: int = 500) -> list[KafkaPosition]:
        """Up to `limit` source positions dead-lettered (produced) with `reason` (by `group`, if
        given) and never replayed, by position."""
        with db_errors("select dead letters to replay"), self._pool.connection() as conn:
            found = conn.execute(_CANDIDATES, {"reason": reason, "grp": group, "limit": limit}).fetchall()
        return [KafkaPosition(*r) for r in found]

    def begin(self, reason: str, group: Optional[str], nonce: str,
              positions: Sequence[tuple[KafkaPosition, int]]) -> set[KafkaPosition]:
        """Record the intents ``(position, scan_from)``, committed when this returns; the positions
        inserted now: only those may be produced (one already there belongs to another run)."""
        if not positions:
            return set()
        params = {"reason": reason, "grp": group, "nonce": nonce, **_columns([p for p, _ in positions]),
                  "scan_from": [s for _, s in positions]}
        with db_errors("record dead-letter replays"), self._pool.connection() as conn:
            return {KafkaPosition(*r) for r in conn.execute(_BEGIN, params).fetchall()}

    def confirm(self, copies: Sequence[tuple[KafkaPosition, int]]) -> int:
        """The copies ``(position, copy offset)`` are in their topic: replayed (rows changed)."""
        if not copies:
            return 0
        params = {**_columns([p for p, _ in copies]), "copies": [c for _, c in copies]}
        with db_errors("confirm dead-letter replays"), self._pool.connection() as conn:
            return conn.execute(_CONFIRM, params).rowcount

    def forget(self, positions: Sequence[KafkaPosition]) -> int:
        """Unconfirmed intents proven never injected: deleted, so these positions may be replayed."""
        if not positions:
            return 0
        with db_errors("forget dead-letter replays"), self._pool.connection() as conn:
            return conn.execute(_FORGET, _columns(positions)).rowcount

    def pending(self) -> list[ReplayIntent]:
        """Every unconfirmed intent (a run died between recording and confirming it), by position."""
        return self._intents(True)

    def replayed(self) -> list[ReplayIntent]:
        """Every confirmed replay, by position."""
        return self._intents(False)

    def _intents(self, pending: bool) -> list[ReplayIntent]:
        with db_errors("read dead-letter replays"), self._pool.connection() as conn:
            found = conn.execute(_INTENTS, {"pending": pending}).fetchall()
        return [ReplayIntent(KafkaPosition(r[0], r[1], r[2]), *r[3:]) for r in found]
