"""Versioned schema migrations, applied once each, safe under concurrent workers.

Files in ``storage/migrations/``: ``NNNN_name.sql`` is shared by every
flavour; ``NNNN_name.<flavour>.sql`` replaces it for one flavour.  The
flavour (`TIMESCALEDB` or `PARTITIONED`) is chosen at the first migration —
TimescaleDB when the extension is installable — and recorded in
``storage_meta``; later runs keep it.  Each migration runs in its own
transaction and is recorded in ``schema_migrations`` with the SHA-256 of its
SQL, so an applied file that was edited afterwards is refused.  A session
advisory lock serialises concurrent `migrate` calls: the second one waits,
then finds nothing to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import psycopg

from .db import one_row
from .errors import MigrationError

__all__ = [
    "TIMESCALEDB",
    "PARTITIONED",
    "FLAVOURS",
    "Migration",
    "MigrationReport",
    "StorageStatus",
    "choose_flavour",
    "plan_migrations",
    "load_migrations",
    "migrate",
    "current_version",
    "storage_status",
]

TIMESCALEDB = "timescaledb"
PARTITIONED = "partitioned"
FLAVOURS = (TIMESCALEDB, PARTITIONED)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: pg_advisory_lock key: the first 8 bytes of sha256("sealstream.storage.migrate").
LOCK_KEY = int.from_bytes(hashlib.sha256(b"sealstream.storage.migrate").digest()[:8], "big", signed=True)
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.([a-z]+))?\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS storage_meta (
    key        text        PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    """One schema step: ``version`` orders them, ``checksum`` pins the SQL."""

    version: int
    name: str
    sql: str
    flavour: Optional[str] = None

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    """What one `migrate` call found and did."""

    flavour: str
    applied: tuple[str, ...]  # "0002_readings" names applied by this call
    version: int  # schema version after the call
    latest: int  # highest version this code knows

    @property
    def changed(self) -> bool:
        return bool(self.applied)


@dataclass(frozen=True)
class StorageStatus:
    """What `sealstream status` shows about the database schema."""

    flavour: Optional[str]
    version: int
    latest: int
    pending: tuple[str, ...]


def choose_flavour(timescaledb_available: bool, timescaledb_preloaded: bool) -> str:
    """TimescaleDB only when the extension is both installed and preloaded
    (``shared_preload_libraries``), otherwise native partitioning."""
    return TIMESCALEDB if timescaledb_available and timescaledb_preloaded else PARTITIONED


def plan_migrations(files: Mapping[str, str], flavour: str) -> tuple[Migration, ...]:
    """The ordered migrations for `flavour` from ``{file name: sql}`` (pure)."""
    if flavour not in FLAVOURS:
        raise MigrationError(f"unknown storage flavour {flavour!r}, want one of {FLAVOURS}")
    shared: dict[int, Migration] = {}
    specific: dict[int, Migration] = {}
    names: dict[int, str] = {}
    for filename, sql in files.items():
        match = _FILE.fullmatch(filename)
        if match is None:
            raise MigrationError(f"migration file {filename!r} is not named NNNN_name[.flavour].sql")
        version, name, file_flavour = int(match[1]), match[2], match[3]
        if file_flavour is not None and file_flavour not in FLAVOURS:
            raise MigrationError(f"migration file {filename!r}: unknown flavour {file_flavour!r}")
        if names.setdefault(version, name) != name:
            raise MigrationError(f"migration {version:04d} has two names: {names[version]!r} and {name!r}")
        if file_flavour is None:
            shared[version] = Migration(version, name, sql)
        elif file_flavour == flavour:
            specific[version] = Migration(version, name, sql, flavour)
    chosen = {**shared, **specific}
    versions = sorted(names)
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must be 1..n without gaps, got {versions}")
    missing = [v for v in versions if v not in chosen]
    if missing:
        raise MigrationError(f"no migration {missing[0]:04d} for flavour {flavour!r}")
    return tuple(chosen[v] for v in versions)


def load_migrations(flavour: str, directory: Path = MIGRATIONS_DIR) -> tuple[Migration, ...]:
    """The migrations shipped in `directory` for `flavour`."""
    files = {p.name: p.read_text("utf-8") for p in directory.glob("*.sql")}
    return plan_migrations(files, flavour)


def _detect_flavour(conn: psycopg.Connection) -> str:
    available = one_row(conn.execute(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    ))[0]
    preload = one_row(conn.execute("SELECT current_setting('shared_preload_libraries')"))[0]
    return choose_flavour(bool(available), "timescaledb" in preload)


def _recorded_flavour(conn: psycopg.Connection) -> Optional[str]:
    row = conn.execute("SELECT value FROM storage_meta WHERE key = 'flavour'").fetchone()
    return row[0] if row else None


def _applied(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    return {v: (n, c) for v, n, c in rows}


def _check_history(applied: Mapping[int, tuple[str, str]], plan: tuple[Migration, ...]) -> None:
    known = {m.version: m for m in plan}
    for version, (name, checksum) in sorted(applied.items()):
        m = known.get(version)
        if m is None:
            raise MigrationError(
                f"database has migration {version:04d}_{name} that this code does not know (newer schema?)"
            )
        if m.checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{name} was changed after it was applied (checksum differs)"
            )


def migrate(dsn: str, *, flavour: Optional[str] = None) -> MigrationReport:
    """Bring the schema at `dsn` to the latest version; a no-op when it is there.

    `flavour` forces the flavour of a fresh database (default: detect); on a
    database that already has one, a different value is an error.
    """
    applied_now: list[str] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                with conn.transaction():
                    conn.execute(_BOOTSTRAP)
                    recorded = _recorded_flavour(conn)
                    if recorded is None:
                        recorded = flavour or _detect_flavour(conn)
                        conn.execute(
                            "INSERT INTO storage_meta (key, value) VALUES ('flavour', %s)", (recorded,)
                        )
                    elif flavour is not None and flavour != recorded:
                        raise MigrationError(
                            f"database flavour is {recorded!r}; it cannot be migrated as {flavour!r}"
                        )
                plan = load_migrations(recorded)
                applied = _applied(conn)
                _check_history(applied, plan)
                for m in plan:
                    if m.version in applied:
                        continue
                    label = f"{m.version:04d}_{m.name}"
                    try:
                        with conn.transaction():
                            conn.execute(m.sql)
                            conn.execute(
                                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                                (m.version, m.name, m.checksum),
                            )
                    except psycopg.Error as exc:
                        raise MigrationError(f"migration {label} ({recorded}) failed: {exc}") from exc
                    applied_now.append(label)
                version = max((m.version for m in plan), default=0)
                _grant_privileges(conn)
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"cannot migrate the database: {exc}") from exc
    return MigrationReport(recorded, tuple(applied_now), version, version)


def _grant_privileges(conn: psycopg.Connection) -> None:
    """Re-assert every role's rights (migration 0009's ``storage_grant_privileges()``, replaced by
    later migrations that add tables): a role made after the database was migrated gets them."""
    if one_row(conn.execute("SELECT to_regprocedure('storage_grant_privileges()') IS NOT NULL"))[0]:
        try:
            with conn.transaction():
                conn.execute("SELECT storage_grant_privileges()")
        except psycopg.Error as exc:
            raise MigrationError(f"granting the roles' privileges failed: {exc}") from exc


def _table_exists(conn: psycopg.Connection, name: str) -> bool:
    return bool(one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)))[0])


def current_version(dsn: str) -> int:
    """The highest applied migration version, 0 for an empty database."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if not _table_exists(conn, "schema_migrations"):
                return 0
            return int(one_row(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))[0])
    except psycopg.Error as exc:
        raise MigrationError(f"cannot read the schema version: {exc}") from exc


def storage_status(dsn: str) -> StorageStatus:
    """Flavour, applied version and pending migrations (read-only)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if not _table_exists(conn, "schema_migrations"):
                flavour, applied = None, {}
            else:
                flavour, applied = _recorded_flavour(conn), _applied(conn)
            plan = load_migrations(flavour or _detect_flavour(conn))
    except psycopg.Error as exc:
        raise MigrationError(f"cannot read the storage status: {exc}") from exc
    pending = tuple(f"{m.version:04d}_{m.name}" for m in plan if m.version not in applied)
    return StorageStatus(flavour, max(applied, default=0), max((m.version for m in plan), default=0), pending)
