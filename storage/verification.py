"""What downstream verification reads and writes (migration 0003).

Reads, for collecting evidence: statements and their batch membership by
hash, statements by payload digest or by device and time, and stored
readings as an Arrow table (``statement_hash, row_index, time_us, sensor,
value``), read by the ADBC PostgreSQL driver (binary COPY decoded straight
into Arrow in C++).

Writes, for the verifier agent: one verdict per batch (``batch_verdicts``)
and, in the same transaction, the statements it proved
(``verified_statements``), which the ``verified_readings`` /
``verified_blobs`` views join.  Triggers of the migration delete a
statement's row there as soon as one of its readings, its blob or its
statement row changes, so the views never show data changed after it was
checked (docs/verify.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Optional, Sequence
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from trust.hashes import StatementHash

from . import _rows
from .db import db_errors
from .errors import DatabaseError
from .records import StatementRecord

if TYPE_CHECKING:
    from .outbox import OutboxMessage

__all__ = ["BatchVerdict", "VerifiedStatement", "VerificationStore", "READING_COLUMNS"]

#: Columns of the readings tables `VerificationStore` returns, in order.
READING_COLUMNS = ("statement_hash", "row_index", "time_us", "sensor", "value", "device")


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
    #: the signed statement's device, seq, ts and payload digest (what the views show)
    device: Optional[str] = None
    seq: Optional[int] = None
    ts: Optional[datetime] = None
    payload_sha256: Optional[bytes] = None


def _uri(conninfo: str) -> str:
    """A ``postgresql://`` URI for ADBC from a libpq conninfo string."""
    d = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    auth = quote(d.get("user", ""), safe="")
    if d.get("password"):
        auth += ":" + quote(d["password"], safe="")
    host = d.get("host", "localhost")
    extra = {k: v for k, v in d.items() if k not in ("user", "password", "host", "port", "dbname")}
    query = ("?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in extra.items())) if extra else ""
    return f"postgresql://{auth}@{host}:{d.get('port', 5432)}/{quote(d.get('dbname', ''), safe='')}{query}"


def _rows_table(t: Optional[pa.Table]) -> pa.Table:
    """`READING_COLUMNS`: statement_hash and device dictionary-encoded (few distinct per many rows),
    time as µs; the device is what the database attributes each row to (the verifier checks it)."""
    if t is None or t.num_rows == 0:
        return pa.table({"statement_hash": pa.array([], pa.binary()).dictionary_encode(),
                         "row_index": pa.array([], pa.int32()), "time_us": pa.array([], pa.int64()),
                         "sensor": pa.array([], pa.string()), "value": pa.array([], pa.float64()),
                         "device": pa.array([], pa.string()).dictionary_encode()})
    times = t.column("time").combine_chunks()
    return pa.table({
        "statement_hash": pc.dictionary_encode(t.column("statement_hash").combine_chunks()),
        "row_index": t.column("row_index").combine_chunks().cast(pa.int32()),
        "time_us": pc.cast(times, pa.timestamp("us", tz="UTC")).cast(pa.int64()),
        "sensor": t.column("sensor").combine_chunks().cast(pa.string()),
        "value": t.column("value").combine_chunks().cast(pa.float64()),
        "device": pc.dictionary_encode(t.column("device").combine_chunks().cast(pa.string())),
    })


def _concat_rows(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate `_rows_table` results, unifying their statement dictionaries."""
    out = pa.concat_tables(tables).unify_dictionaries()
    return pa.table({name: out.column(name).combine_chunks() for name in out.schema.names})


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

    def payload_copies(self, hashes: Iterable[bytes]) -> dict[bytes, bytes]:
        """``payload_sha256 -> bytes`` of the payload copies kept beside these statements
        (migration 0011; `storage.records.payload_copy`), as stored: unchecked (the caller compares
        each with its digest; the verifier checks it against the signed statement)."""
        hs = [bytes(h) for h in hashes]
        if not hs:
            return {}
        with db_errors("read payload copies"), self._pool.connection() as conn:
            rows = conn.execute("SELECT payload_sha256, payload FROM statements WHERE statement_hash = ANY(%s) "
                                "AND payload IS NOT NULL", (hs,)).fetchall()
        return {bytes(d): bytes(p) for d, p in rows}

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

    def _arrow(self, query: str, params: Sequence, what: str) -> pa.Table:
        """A query's result as Arrow, read by the ADBC PostgreSQL driver (binary COPY decoded into
        Arrow in C++; psycopg's per-row COPY iteration was 3x slower).  ``$1..`` placeholders."""
        import adbc_driver_postgresql.dbapi as adbc

        try:
            conninfo = self._pool.conninfo
            conninfo = conninfo if isinstance(conninfo, str) else conninfo()
            with adbc.connect(_uri(conninfo), autocommit=True) as conn, conn.cursor() as cur:
                cur.execute(query, tuple(params) or None)
                return cur.fetch_arrow_table()
        except adbc.Error as exc:
            raise DatabaseError(f"{what}: {exc}") from exc

    def _arrow_rows(self, where: str, params: Sequence, what: str) -> pa.Table:
        return _rows_table(self._arrow("SELECT r.statement_hash, r.row_index, r.time, r.sensor, r.value, r.device "
                                       f"FROM readings r {where}", params, what))

    def range_rows(self, device: str, start: datetime, end: datetime, *, parallel: int = 2) -> pa.Table:
        """Stored readings of `device` with ``start <= time < end`` (any order), read as `parallel`
        consecutive sub-ranges on as many connections at once (the server scans one while the
        client decodes another)."""
        cuts = [start + (end - start) * i / parallel for i in range(parallel)] + [end]
        parts = [(cuts[i], cuts[i + 1]) for i in range(parallel) if cuts[i] < cuts[i + 1]] or [(start, end)]
        if len(parts) == 1:
            return self._range_part(device, *parts[0])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(parts)) as ex:
            tables = list(ex.map(lambda p: self._range_part(device, *p), parts))
        return _concat_rows(tables)

    def _range_part(self, device: str, start: datetime, end: datetime) -> pa.Table:
        return self._arrow_rows("WHERE r.device = $1 AND r.time >= $2 AND r.time < $3", (device, start, end),
                                f"read readings of {device}")

    def statement_rows(self, hashes: Iterable[bytes]) -> pa.Table:
        """Every stored reading of these statements."""
        hs = [bytes(h) for h in hashes]
        if not hs:
            return _rows_table(None)
        keys = ",".join(f"'\\x{h.hex()}'::bytea" for h in hs)
        return self._arrow_rows(f"WHERE r.statement_hash IN ({keys})", (), "read readings of statements")

    def row(self, statement_hash: bytes, row_index: int) -> pa.Table:
        """The stored reading(s) at ``(statement_hash, row_index)`` (normally one)."""
        return self._arrow_rows(f"WHERE r.statement_hash = '\\x{bytes(statement_hash).hex()}'::bytea "
                                f"AND r.row_index = {int(row_index)}", (), "read a reading")

    # -- verdicts ------------------------------------------------------------

    def record_verdict(self, verdict: BatchVerdict, verified: Iterable[VerifiedStatement] = (),
                       alert: "Optional[OutboxMessage]" = None) -> None:
        """Upsert the batch's verdict and replace its verified statements, in one transaction;
        `alert` (a failure's alert) goes to ``alert_outbox`` in that same transaction
        (`storage.outbox`), so the verdict is never recorded without it, nor it without the verdict."""
        from .outbox import insert_message

        v = verdict
        items = [(bytes(s.statement_hash), v.batch_id, s.leaf_index, s.rows, s.device, s.seq, s.ts,
                  None if s.payload_sha256 is None else bytes(s.payload_sha256)) for s in verified]
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
                with cur.copy("COPY verified_statements (statement_hash, batch_id, leaf_index, rows, device, "
                              "seq, ts, payload_sha256) FROM STDIN (FORMAT binary)") as cp:
                    cp.set_types(["bytea", "text", "int4", "int4", "text", "int8", "timestamptz", "bytea"])
                    for item in items:
                        cp.write_row(item)
            if alert is not None:
                insert_message(conn, alert)

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
        t = self._arrow(
            "SELECT time, device, sensor, value, statement_hash, row_index, batch_id, leaf_index, ledger_height, "
            "tx_index FROM verified_readings WHERE device = $1 AND time >= $2 AND time < $3 "
            "ORDER BY time, statement_hash, row_index", (device, start, end), f"read verified readings of {device}")
        t = t.replace_schema_metadata(None)
        return pa.table({f.name: t.column(f.name).combine_chunks() for f in t.schema}).cast(pa.schema([
            ("time", pa.timestamp("us", tz="UTC")), ("device", pa.string()), ("sensor", pa.string()),
            ("value", pa.float64()), ("statement_hash", pa.binary(32)), ("row_index", pa.int32()),
            ("batch_id", pa.string()), ("leaf_index", pa.int32()), ("ledger_height", pa.int64()),
            ("tx_index", pa.int32())]))
