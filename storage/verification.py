"""What downstream verification reads and writes (migration 0003).

Reads, for collecting evidence: statements and their batch membership by
hash, statements by payload digest or by device and time, and stored
readings as an Arrow table (``statement_hash, row_index, time_us, sensor,
value``), streamed with ``COPY ... TO STDOUT (FORMAT csv)`` and parsed by
Arrow's C++ CSV reader (a million rows in about a second).

Writes, for the verifier agent: one verdict per batch (``batch_verdicts``)
and, in the same transaction, the statements it proved
(``verified_statements``), which the ``verified_readings`` /
``verified_blobs`` views join.  Triggers of the migration delete a
statement's row there as soon as one of its readings, its blob or its
statement row changes, so the views never show data changed after it was
checked (docs/verify.md).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg_pool import ConnectionPool

from trust._hashes import StatementHash

from . import _rows
from .db import db_errors
from .records import StatementRecord

__all__ = ["BatchVerdict", "VerifiedStatement", "VerificationStore", "READING_COLUMNS"]

#: Columns of `VerificationStore.rows_*` tables, in order.
READING_COLUMNS = ("statement_hash", "row_index", "time_us", "sensor", "value")
_CSV_TYPES = {"h": pa.dictionary(pa.int32(), pa.string()), "row_index": pa.int32(), "time_us": pa.int64(),
              "sensor": pa.string(), "value": pa.float64()}
_ROWS_SELECT = (
    "SELECT encode(statement_hash, 'hex'), row_index, "
    "(extract(epoch FROM time) * 1000000)::int8, sensor, value FROM readings "
)


@dataclass(frozen=True)
class BatchVerdict:
    """The verifier's verdict on one anchored batch."""

    batch_id: str
    verdict: str  # verified | failed
    root: bytes
    ledger_height: int
    tx_index: int
    leaves: int
    rows: int = 0
    failed_step: Optional[str] = None
    detail: Optional[str] = None
    audit: bool = False
    checks: int = 1
    checked_at: Optional[datetime] = None

    def __post_init__(self) -> None:
        if self.verdict not in ("verified", "failed"):
            raise ValueError(f"verdict must be verified or failed, not {self.verdict!r}")
        if (self.verdict == "failed") != (self.failed_step is not None):
            raise ValueError("a failed verdict names its step, a verified one none")


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement whose chain and (time series) stored rows checked out: `rows` rows."""

    statement_hash: bytes
    leaf_index: int
    rows: int = 0


def _csv_to_table(data: bytes) -> pa.Table:
    names = ["h", "row_index", "time_us", "sensor", "value"]
    if not data:
        h = pa.array([], pa.binary(32))
        return pa.table({"statement_hash": h, "row_index": pa.array([], pa.int32()),
                         "time_us": pa.array([], pa.int64()), "sensor": pa.array([], pa.string()),
                         "value": pa.array([], pa.float64())})
    t = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
        convert_options=pacsv.ConvertOptions(column_types=_CSV_TYPES, strings_can_be_null=False,
                                             quoted_strings_can_be_null=False),
    )
    hexes = t.column("h").combine_chunks()
    if isinstance(hexes, pa.DictionaryArray):
        dictionary = pa.array([bytes.fromhex(x) for x in hexes.dictionary.to_pylist()], pa.binary(32))
        hashes = pa.DictionaryArray.from_arrays(hexes.indices, dictionary)
    else:  # pragma: no cover - the reader dictionary-encodes by the column type
        hashes = pa.array([bytes.fromhex(x) for x in hexes.to_pylist()], pa.binary(32))
    return pa.table({"statement_hash": hashes, "row_index": t.column("row_index"),
                     "time_us": t.column("time_us"), "sensor": t.column("sensor"), "value": t.column("value")})


class VerificationStore:
    """Evidence reads and verdict writes through a connection pool (thread-safe)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    # -- evidence reads ------------------------------------------------------

    def statements(self, hashes: Iterable[bytes]) -> dict[StatementHash, StatementRecord]:
        """Stored statements by hash (absent ones are left out)."""
        hs = [bytes(h) for h in hashes]
        if not hs:
            return {}
        with db_errors("read statements"), self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_rows.STATEMENT_READ_COLS} FROM statements WHERE statement_hash = ANY(%s)", (hs,)
            ).fetchall()
        out = {}
        for row in rows:
            rec = _rows.statement_from_row(row)
            out[rec.hash] = rec
        return out

    def memberships(self, hashes: Iterable[bytes]) -> dict[StatementHash, tuple[str, int]]:
        """``statement hash -> (batch_id, leaf_index)`` for batched statements."""
        hs = [bytes(h) for h in hashes]
        if not hs:
            return {}
        with db_errors("read batch memberships"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash, batch_id, leaf_index FROM batch_leaves WHERE statement_hash = ANY(%s)",
                (hs,),
            ).fetchall()
        return {StatementHash(bytes(h)): (b, i) for h, b, i in rows}

    def statements_by_payload(self, digest: bytes) -> list[StatementHash]:
        """Hashes of the statements whose payload has this SHA-256."""
        with db_errors("find statements by payload"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash FROM statements WHERE payload_sha256 = %s ORDER BY device, seq", (digest,)
            ).fetchall()
        return [StatementHash(bytes(r[0])) for r in rows]

    def device_statements(self, device: str, start: datetime, end: datetime) -> list[StatementHash]:
        """Statements of `device` with ``start <= ts < end``, by seq."""
        with db_errors(f"find statements of {device}"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash FROM statements WHERE device = %s AND ts >= %s AND ts < %s ORDER BY seq",
                (device, start, end),
            ).fetchall()
        return [StatementHash(bytes(r[0])) for r in rows]

    def _copy_rows(self, where: str, params: Sequence, what: str) -> pa.Table:
        buf = bytearray()
        with db_errors(what), self._pool.connection() as conn:
            cur = conn.cursor()
            with cur.copy(f"COPY ({_ROWS_SELECT} {where}) TO STDOUT (FORMAT csv)", params) as cp:
                for chunk in cp:
                    buf += chunk
        return _csv_to_table(bytes(buf))

    def range_rows(self, device: str, start: datetime, end: datetime) -> pa.Table:
        """Stored readings of `device` with ``start <= time < end`` (any order)."""
        return self._copy_rows("WHERE device = %s AND time >= %s AND time < %s", (device, start, end),
                               f"read readings of {device}")

    def statement_rows(self, hashes: Iterable[bytes]) -> pa.Table:
        """Every stored reading of these statements."""
        hs = [bytes(h) for h in hashes]
        return self._copy_rows("WHERE statement_hash = ANY(%s)", (hs,), "read readings of statements")

    def row(self, statement_hash: bytes, row_index: int) -> pa.Table:
        """The stored reading(s) at ``(statement_hash, row_index)`` (normally one)."""
        return self._copy_rows("WHERE statement_hash = %s AND row_index = %s", (statement_hash, row_index),
                               "read a reading")

    # -- verdicts ------------------------------------------------------------

    def record_verdict(self, verdict: BatchVerdict, verified: Iterable[VerifiedStatement] = ()) -> None:
        """Upsert the batch's verdict and replace its verified statements, in one transaction."""
        v = verdict
        items = [(bytes(s.statement_hash), v.batch_id, s.leaf_index, s.rows) for s in verified]
        with db_errors(f"record the verdict of batch {v.batch_id!r}"), self._pool.connection() as conn, \
                conn.transaction():
            conn.execute(
                "INSERT INTO batch_verdicts (batch_id, verdict, failed_step, detail, root, ledger_height, "
                "tx_index, leaves, rows, audit) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (batch_id) DO UPDATE SET verdict = EXCLUDED.verdict, "
                "failed_step = EXCLUDED.failed_step, detail = EXCLUDED.detail, root = EXCLUDED.root, "
                "ledger_height = EXCLUDED.ledger_height, tx_index = EXCLUDED.tx_index, "
                "leaves = EXCLUDED.leaves, rows = EXCLUDED.rows, audit = EXCLUDED.audit, "
                "checks = batch_verdicts.checks + 1, checked_at = now()",
                (v.batch_id, v.verdict, v.failed_step, v.detail, v.root, v.ledger_height, v.tx_index,
                 v.leaves, v.rows, v.audit),
            )
            conn.execute("DELETE FROM verified_statements WHERE batch_id = %s", (v.batch_id,))
            if items:
                cur = conn.cursor()
                with cur.copy("COPY verified_statements (statement_hash, batch_id, leaf_index, rows) "
                              "FROM STDIN (FORMAT binary)") as cp:
                    cp.set_types(["bytea", "text", "int4", "int4"])
                    for item in items:
                        cp.write_row(item)

    def verdict(self, batch_id: str) -> Optional[BatchVerdict]:
        with db_errors(f"read the verdict of batch {batch_id!r}"), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT batch_id, verdict, root, ledger_height, tx_index, leaves, rows, failed_step, detail, "
                "audit, checks, checked_at FROM batch_verdicts WHERE batch_id = %s", (batch_id,),
            ).fetchone()
        if row is None:
            return None
        values = list(row)
        values[2] = bytes(values[2])
        return BatchVerdict(*values)

    def verified_statements(self, batch_id: str) -> list[VerifiedStatement]:
        with db_errors(f"read verified statements of {batch_id!r}"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement_hash, leaf_index, rows FROM verified_statements WHERE batch_id = %s "
                "ORDER BY leaf_index", (batch_id,),
            ).fetchall()
        return [VerifiedStatement(bytes(h), i, n) for h, i, n in rows]

    def unverified_batches(self, limit: int = 100) -> list[str]:
        """Anchored batches with no verdict yet, oldest first."""
        with db_errors("read unverified batches"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT b.batch_id FROM batches b LEFT JOIN batch_verdicts v USING (batch_id) "
                "WHERE b.anchor_state = 'anchored' AND v.batch_id IS NULL ORDER BY b.anchored_at, b.batch_id "
                "LIMIT %s", (limit,),
            ).fetchall()
        return [r[0] for r in rows]

    def audit_sample(self, n: int, older_than_s: float = 0.0) -> list[str]:
        """A random sample of `n` batches with a verdict checked at least `older_than_s` ago."""
        with db_errors("sample batches to audit"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT batch_id FROM batch_verdicts WHERE checked_at <= now() - %s * interval '1 second' "
                "ORDER BY random() LIMIT %s", (older_than_s, n),
            ).fetchall()
        return [r[0] for r in rows]

    def verified_readings_arrow(self, device: str, start: datetime, end: datetime) -> pa.Table:
        """``verified_readings`` of `device` in ``[start, end)`` as Arrow, ordered by time (for exports)."""
        cols = ("time, device, sensor, value, statement_hash, row_index, batch_id, leaf_index, ledger_height, "
                "tx_index")
        with db_errors(f"read verified readings of {device}"), self._pool.connection() as conn:
            cur = conn.cursor(binary=True)
            cur.execute(f"SELECT {cols} FROM verified_readings WHERE device = %s AND time >= %s AND time < %s "
                        "ORDER BY time, statement_hash, row_index", (device, start, end))
            rows = cur.fetchall()
        names = [c.strip() for c in cols.split(",")]
        columns = list(zip(*rows)) if rows else [[] for _ in names]
        types = [pa.timestamp("us", tz="UTC"), pa.string(), pa.string(), pa.float64(), pa.binary(32), pa.int32(),
                 pa.string(), pa.int32(), pa.int64(), pa.int32()]
        data = {}
        for name, col, typ in zip(names, columns, types):
            if typ == pa.binary(32):
                col = [bytes(x) for x in col]
            data[name] = pa.array(list(col), typ)
        return pa.table(data)
