"""The ``alert_outbox`` table (migration 0005): alerts written in the same transaction as
what raised them, relayed to Kafka afterwards.

A writer inserts an `OutboxMessage` with `insert_message` on *its own*
connection, inside the transaction that records the cause (the verifier's
batch verdict, `VerificationStore.record_verdict`): both commit or neither
does.  The relay (`pipelines.outbox.AlertRelay`, which does the Kafka side;
storage does no Kafka) then, through `AlertOutbox`:

1. reads the unsent rows oldest first (`pending`);
2. for a row that already has an attempt (``attempts > 0``: a crash or an
   error between the send and `mark_sent`, outcome unknown) looks its
   ``alert_id`` up in the topic and `mark_sent`\\ s it if found;
3. `mark_attempted` (committed *before* the send), sends, `mark_sent`; on an
   error `mark_failed` records it and the row is retried.

`relay_lock` is a session advisory lock so that one relay per database works
at a time (a second one finds it taken and waits for its next turn).  `prune`
deletes only rows sent before a cutoff; an unsent row is never deleted.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterator, Optional, Sequence

from psycopg_pool import ConnectionPool

from .db import db_errors, one_row
from .errors import RecordError

__all__ = ["OutboxMessage", "OutboxRow", "OutboxBacklog", "AlertOutbox", "insert_message", "new_alert_id"]

#: pg_advisory_lock key of the relay: the first 8 bytes of sha256("sealstream.storage.alert_outbox").
RELAY_LOCK_KEY = int.from_bytes(hashlib.sha256(b"sealstream.storage.alert_outbox").digest()[:8], "big", signed=True)

_COLUMNS = ("id, alert_id, topic, key, value, headers, created_at, attempts, attempted_at, sent_at, "
            "last_error")
_INSERT = ("INSERT INTO alert_outbox (alert_id, topic, key, value, headers) VALUES (%s, %s, %s, %s, %s::jsonb) "
           "RETURNING id")


def new_alert_id() -> str:
    """A fresh alert id (32 hex digits, random)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class OutboxMessage:
    """One Kafka message to send: `headers` are text (UTF-8 on the wire); ``ss-alert-id``
    is added by the relay, so consumers can de-duplicate by it."""

    topic: str
    key: Optional[bytes]
    value: bytes
    headers: tuple[tuple[str, str], ...] = ()
    alert_id: str = field(default_factory=new_alert_id)

    def __post_init__(self) -> None:
        if not self.topic or not self.alert_id:
            raise RecordError("an outbox message needs a topic and an alert id")
        if not isinstance(self.value, (bytes, bytearray)) or (self.key is not None
                                                               and not isinstance(self.key, (bytes, bytearray))):
            raise RecordError("an outbox message's key and value are bytes")


@dataclass(frozen=True)
class OutboxRow:
    """A stored outbox message and its delivery state."""

    id: int
    message: OutboxMessage
    created_at: datetime
    attempts: int
    attempted_at: Optional[datetime]
    sent_at: Optional[datetime]
    last_error: Optional[str]


@dataclass(frozen=True)
class OutboxBacklog:
    """Unsent rows: how many, the oldest one's ``created_at``, how many have an attempt."""

    unsent: int
    oldest: Optional[datetime]
    attempted: int


def _row(r: Sequence[Any]) -> OutboxRow:
    headers = tuple((str(k), str(v)) for k, v in (r[5] or []))
    msg = OutboxMessage(r[2], None if r[3] is None else bytes(r[3]), bytes(r[4]), headers, r[1])
    return OutboxRow(r[0], msg, r[6], r[7], r[8], r[9], r[10])


def insert_message(conn: Any, msg: OutboxMessage) -> int:
    """Insert `msg` on `conn` (a psycopg connection, inside the caller's transaction); its row id."""
    return conn.execute(_INSERT, (msg.alert_id, msg.topic, msg.key, msg.value,
                                  json.dumps([list(h) for h in msg.headers]))).fetchone()[0]


class AlertOutbox:
    """The relay's reads and marks of ``alert_outbox`` (thread-safe, through a pool)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def add(self, msg: OutboxMessage) -> int:
        """Insert `msg` in its own transaction (a writer with a cause to record uses `insert_message`)."""
        with db_errors("add an outbox message"), self._pool.connection() as conn, conn.transaction():
            return insert_message(conn, msg)

    def instance_id(self) -> str:
        """This database's outbox identity (migration 0005): relays derive their Kafka
        transactional id from it."""
        with db_errors("read the outbox id"), self._pool.connection() as conn:
            row = conn.execute("SELECT value FROM storage_meta WHERE key = 'alert_outbox_id'").fetchone()
        if row is None:
            raise RecordError("storage_meta has no alert_outbox_id: migrate the database (0005)")
        return row[0]

    def pending(self, limit: int = 100) -> list[OutboxRow]:
        """Unsent rows, oldest first."""
        with db_errors("read unsent outbox messages"), self._pool.connection() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM alert_outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s",
                                (limit,)).fetchall()
        return [_row(r) for r in rows]

    def get(self, alert_id: str) -> Optional[OutboxRow]:
        with db_errors(f"read outbox message {alert_id!r}"), self._pool.connection() as conn:
            r = conn.execute(f"SELECT {_COLUMNS} FROM alert_outbox WHERE alert_id = %s", (alert_id,)).fetchone()
        return None if r is None else _row(r)

    def mark_attempted(self, ids: Sequence[int]) -> int:
        """Before a send: one more attempt (committed), so a crash after the send is detectable."""
        return self._update("attempts = attempts + 1, attempted_at = now()", ids, "mark outbox sends attempted")

    def mark_sent(self, ids: Sequence[int]) -> int:
        """The send of these rows committed: never send them again; rows changed."""
        return self._update("sent_at = now(), last_error = NULL", ids, "mark outbox messages sent")

    def mark_failed(self, ids: Sequence[int], error: str) -> int:
        """Record the last send error of these (still unsent) rows."""
        return self._update("last_error = %(error)s", ids, "record an outbox send error", error=error[:2000])

    def _update(self, assignments: str, ids: Sequence[int], what: str, **extra: Any) -> int:
        if not ids:
            return 0
        with db_errors(what), self._pool.connection() as conn:
            return conn.execute(f"UPDATE alert_outbox SET {assignments} WHERE sent_at IS NULL "
                                "AND id = ANY(%(ids)s::bigint[])", {"ids": list(ids), **extra}).rowcount

    def backlog(self) -> OutboxBacklog:
        with db_errors("read the outbox backlog"), self._pool.connection() as conn:
            n, oldest, attempted = one_row(conn.execute(
                "SELECT count(*), min(created_at), count(*) FILTER (WHERE attempts > 0) FROM alert_outbox "
                "WHERE sent_at IS NULL"))
        return OutboxBacklog(n, oldest, attempted)

    def prune(self, older_than: timedelta) -> int:
        """Delete rows *sent* more than `older_than` ago (database clock); rows deleted."""
        if older_than <= timedelta(0):
            raise ValueError(f"older_than must be positive, not {older_than}")
        with db_errors("prune the outbox"), self._pool.connection() as conn:
            return conn.execute("DELETE FROM alert_outbox WHERE sent_at IS NOT NULL AND "
                                "sent_at < now() - %s::interval", (older_than,)).rowcount

    @contextmanager
    def relay_lock(self) -> Iterator[bool]:
        """Try the relay's session advisory lock for the duration of the block: yields
        whether this caller holds it (the lock dies with the session if the process does)."""
        with db_errors("take the outbox relay lock"), self._pool.connection() as conn:
            got = one_row(conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,)))[0]
            try:
                yield got
            finally:
                if got and not conn.closed and not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (RELAY_LOCK_KEY,))
