"""Connections to PostgreSQL: one pool per process, driver errors translated.

Pool connections are in autocommit mode; every write opens an explicit
transaction (``with conn.transaction()``), so what is atomic is visible in
the code.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .errors import DatabaseError

__all__ = ["open_pool", "db_errors", "one_row"]


def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 30.0) -> ConnectionPool:
    """An open connection pool to `dsn` (close it with ``pool.close()`` or ``with``)."""
    pool = ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        kwargs={"autocommit": True},
        open=False,
        name="sealstream-storage",
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseError(f"cannot connect to PostgreSQL within {timeout:g} s") from exc
    return pool


def one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always returns one (an aggregate, a function call, ``RETURNING`` of
    a row the transaction holds)."""
    row = cursor.fetchone()
    if row is None:
        raise DatabaseError("the query returned no row")
    return row


@contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Translate psycopg and pool errors raised inside into `DatabaseError` naming `what`."""
    try:
        yield
    except psycopg.Error as exc:
        raise DatabaseError(f"{what}: {exc}") from exc
    except PoolTimeout as exc:
        raise DatabaseError(f"{what}: no database connection available ({exc})") from exc
