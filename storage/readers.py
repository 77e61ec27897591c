"""Read what the writers stored: readings by device and time, statements,
blobs, batches, their leaves, and the batch of a record."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Iterable, Iterator, Optional

from psycopg_pool import ConnectionPool

from trust.hashes import StatementHash

from . import _rows
from .db import db_errors, one_row
from .records import BatchMembership, BatchRecord, BlobRecord, Reading, StatementRecord

__all__ = ["Reader"]

_cursor_ids = itertools.count()


class Reader:
    """Queries through a connection pool (thread-safe)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @property
    def pool(self) -> ConnectionPool:
        """The pool it reads through (for the readers of other tables, e.g. `storage.key_records`)."""
        return self._pool

    def readings(
        self, device: str, start: datetime, end: datetime, *, chunk: int = 10_000
    ) -> Iterator[Reading]:
        """Readings of `device` with ``start <= time < end``, ordered by
        ``(time, statement_hash, row_index)``, streamed through a server-side
        cursor `chunk` rows at a time (memory stays flat for any range).
        The connection is held until the iterator is exhausted or closed."""
        name = f"readings_{next(_cursor_ids)}"
        with db_errors(f"read readings of {device}"), self._pool.connection() as conn, conn.transaction():
            with conn.cursor(name=name) as cur:
                cur.itersize = chunk
                cur.execute(
                    f"SELECT {_rows.READING_COLS} FROM readings "
                    "WHERE device = %s AND time >= %s AND time < %s "
                    "ORDER BY time, statement_hash, row_index",
                    (device, start, end),
                )
                for row in cur:
                    yield _rows.reading_from_row(row)

    def statement(self, statement_hash: bytes) -> Optional[StatementRecord]:
        """The stored statement with this hash, or None."""
        with db_errors("read statement"), self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_rows.STATEMENT_READ_COLS} FROM statements WHERE statement_hash = %s",
                (statement_hash,),
            ).fetchone()
        return _rows.statement_from_row(row) if row else None

    def blob(self, statement_hash: bytes) -> Optional[BlobRecord]:
        """The blob row of an image/video statement, or None."""
        with db_errors("read blob"), self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_rows.BLOB_COLS}, stored_at FROM blobs WHERE statement_hash = %s",
                (statement_hash,),
            ).fetchone()
        return _rows.blob_from_row(row) if row else None

    def batch(self, batch_id: str) -> Optional[BatchRecord]:
        """The batch with this id, or None."""
        with db_errors(f"read batch {batch_id!r}"), self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_rows.BATCH_COLS} FROM batches WHERE batch_id = %s", (batch_id,)
            ).fetchone()
        return _rows.batch_from_row(row) if row else None

    def batch_leaves(self, batch_id: str) -> list[StatementHash]:
        """The statement hashes of a batch in leaf order (empty if unknown)."""
        with db_errors(f"read leaves of batch {batch_id!r}"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash FROM batch_leaves WHERE batch_id = %s ORDER BY leaf_index",
                (batch_id,),
            ).fetchall()
        return [StatementHash(bytes(r[0])) for r in rows]

    def batch_of(self, statement_hash: bytes) -> Optional[BatchMembership]:
        """The batch holding a statement and its leaf index, or None if not batched yet."""
        cols = ", ".join("b." + c.strip() for c in _rows.BATCH_COLS.split(","))
        with db_errors("find the batch of a statement"), self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {cols}, l.leaf_index FROM batch_leaves l JOIN batches b USING (batch_id) "
                "WHERE l.statement_hash = %s",
                (statement_hash,),
            ).fetchone()
        if row is None:
            return None
        return BatchMembership(_rows.batch_from_row(row[:-1]), row[-1])

    def open_batches(self, limit: int = 100, gateway: Optional[str] = None) -> list[BatchRecord]:
        """Batches not anchored yet, oldest first (what an anchor agent resumes);
        with `gateway`, only that gateway's."""
        where = "" if gateway is None else " AND gateway = %s"
        params = (limit,) if gateway is None else (gateway, limit)
        with db_errors("read open batches"), self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_rows.BATCH_COLS} FROM batches WHERE anchor_state <> 'anchored'{where} "
                "ORDER BY created_at, batch_id LIMIT %s",
                params,
            ).fetchall()
        return [_rows.batch_from_row(r) for r in rows]

    def stale_batches(self, exclude_gateway: str, older_than_s: float, limit: int = 100,
                      gateways: Optional[Iterable[str]] = None) -> list[BatchRecord]:
        """Other gateways' batches not anchored whose last change (cut, claim or failure) is older than
        `older_than_s` seconds, oldest first (only those of `gateways` when given): what a worker may
        adopt when their gateway's worker is gone."""
        where, params = "", [exclude_gateway, older_than_s]
        if gateways is not None:
            where, params = " AND gateway = ANY(%s)", [*params, list(gateways)]
        with db_errors("read stale batches"), self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_rows.BATCH_COLS} FROM batches WHERE anchor_state <> 'anchored' "
                "AND gateway IS DISTINCT FROM %s AND greatest(created_at, submitted_at, failed_at) "
                f"< now() - %s * interval '1 second'{where} ORDER BY created_at, batch_id LIMIT %s",
                (*params, limit),
            ).fetchall()
        return [_rows.batch_from_row(r) for r in rows]

    def stale_gateways(self, exclude_gateway: str, older_than_s: float) -> list[str]:
        """The gateways having `stale_batches`."""
        with db_errors("read stale gateways"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT gateway FROM batches WHERE anchor_state <> 'anchored' AND gateway IS NOT NULL "
                "AND gateway IS DISTINCT FROM %s AND greatest(created_at, submitted_at, failed_at) "
                "< now() - %s * interval '1 second' ORDER BY 1",
                (exclude_gateway, older_than_s),
            ).fetchall()
        return [r[0] for r in rows]

    def batched(self, statement_hashes: Iterable[bytes]) -> set[StatementHash]:
        """Those of `statement_hashes` that are already a leaf of some batch."""
        hashes = list({bytes(h) for h in statement_hashes})
        if not hashes:
            return set()
        with db_errors("find batched statements"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash FROM batch_leaves WHERE statement_hash = ANY(%s)", (hashes,)
            ).fetchall()
        return {StatementHash(bytes(r[0])) for r in rows}

    def statement_times(self, statement_hashes: Iterable[bytes]) -> dict[StatementHash, datetime]:
        """``ts`` of those of `statement_hashes` that are stored statements."""
        hashes = list({bytes(h) for h in statement_hashes})
        if not hashes:
            return {}
        with db_errors("read statement times"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash, ts FROM statements WHERE statement_hash = ANY(%s)", (hashes,)
            ).fetchall()
        return {StatementHash(bytes(r[0])): r[1] for r in rows}

    def leaf_times(self, batch_id: str) -> list[datetime]:
        """The statement times (``ts``) of a batch's leaves, in leaf order."""
        with db_errors(f"read leaf times of batch {batch_id!r}"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT s.ts FROM batch_leaves l JOIN statements s USING (statement_hash) "
                "WHERE l.batch_id = %s ORDER BY l.leaf_index",
                (batch_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def open_leaves(self, gateway: str) -> int:
        """Leaves in `gateway`'s batches that are not anchored yet."""
        with db_errors("count open leaves"), self._pool.connection() as conn:
            row = one_row(conn.execute(
                "SELECT coalesce(sum(tree_size), 0) FROM batches WHERE anchor_state <> 'anchored' "
                "AND gateway = %s",
                (gateway,),
            ))
        return int(row[0])

    # -- the anchor agent's sweep: sealed statements in no batch ----------------------------------
    # ``stored_at`` is PostgreSQL's clock (the default of the row), so the grace needs no synchronised
    # worker clocks.  Each is one anti-join of ``statements`` with ``batch_leaves`` (its unique
    # statement_hash index).

    def sealed_statements(self, statement_hashes: Iterable[bytes]) -> dict[StatementHash, str]:
        """The sealing gateway (did) of those of `statement_hashes` stored here *with* a receipt."""
        hashes = list({bytes(h) for h in statement_hashes})
        if not hashes:
            return {}
        with db_errors("read sealed statements"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash, gateway FROM statements WHERE statement_hash = ANY(%s) "
                "AND receipt_signature IS NOT NULL", (hashes,)
            ).fetchall()
        return {StatementHash(bytes(r[0])): r[1] for r in rows}

    def unbatched_gateways(self, older_than_s: float) -> dict[Optional[str], int]:
        """Sealed statements that are a leaf of no batch and were stored more than `older_than_s`
        seconds ago, counted by sealing gateway (did)."""
        with db_errors("count unbatched statements"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT s.gateway, count(*) FROM statements s WHERE s.receipt_signature IS NOT NULL "
                "AND s.stored_at < now() - %s * interval '1 second' "
                "AND NOT EXISTS (SELECT 1 FROM batch_leaves l WHERE l.statement_hash = s.statement_hash) "
                "GROUP BY s.gateway ORDER BY 1",
                (older_than_s,),
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def unbatched_statements(self, older_than_s: float, gateways: Iterable[str], limit: int = 4096
                             ) -> list[tuple[StatementHash, datetime, str]]:
        """``(statement_hash, ts, gateway)`` of at most `limit` sealed statements of `gateways` (dids)
        that are a leaf of no batch and were stored more than `older_than_s` seconds ago, oldest
        ``ts`` first."""
        gws = sorted(set(gateways))
        if not gws:
            return []
        with db_errors("read unbatched statements"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT s.statement_hash, s.ts, s.gateway FROM statements s "
                "WHERE s.receipt_signature IS NOT NULL AND s.gateway = ANY(%s) "
                "AND s.stored_at < now() - %s * interval '1 second' "
                "AND NOT EXISTS (SELECT 1 FROM batch_leaves l WHERE l.statement_hash = s.statement_hash) "
                "ORDER BY s.ts, s.statement_hash LIMIT %s",
                (gws, older_than_s, limit),
            ).fetchall()
        return [(StatementHash(bytes(r[0])), r[1], r[2]) for r in rows]
