"""Migrations on a fresh database: once, idempotent, concurrent-safe, flavour recorded."""

from __future__ import annotations

import threading

import psycopg
import pytest

from storage import (
    PARTITIONED,
    TIMESCALEDB,
    MigrationError,
    choose_flavour,
    current_version,
    migrate,
    plan_migrations,
    storage_status,
)
from storage.migrate import MIGRATIONS_DIR, load_migrations

pytestmark = pytest.mark.services

FILES = {p.name: p.read_text() for p in MIGRATIONS_DIR.glob("*.sql")}


# -- pure planning ------------------------------------------------------------

def test_timescaledb_chosen_when_extension_available_and_preloaded() -> None:
    assert choose_flavour(True, True) == TIMESCALEDB
    assert choose_flavour(True, False) == PARTITIONED
    assert choose_flavour(False, False) == PARTITIONED


def test_flavour_selects_its_readings_migration() -> None:
    ts = plan_migrations(FILES, TIMESCALEDB)
    pg = plan_migrations(FILES, PARTITIONED)
    assert [m.version for m in ts] == [m.version for m in pg] == list(range(1, len(ts) + 1))
    assert ts[0] == pg[0] and ts[0].flavour is None  # shared core
    readings_ts, readings_pg = ts[1], pg[1]
    assert (readings_ts.name, readings_pg.name) == ("readings", "readings")
    assert "create_hypertable('readings'" in readings_ts.sql and "add_compression_policy" in readings_ts.sql
    assert "PARTITION BY RANGE (time)" in readings_pg.sql and "PARTITION OF readings DEFAULT" in readings_pg.sql
    # Same object names in both flavours, so queries never change.
    for name in ("readings_record_key", "readings_device_time_idx", "readings_time_idx",
                 "readings_ensure_partition"):
        assert name in readings_ts.sql and name in readings_pg.sql


def test_plan_refuses_gaps_bad_names_and_unknown_flavours() -> None:
    with pytest.raises(MigrationError, match="gaps"):
        plan_migrations({"0001_a.sql": "", "0003_c.sql": ""}, PARTITIONED)
    with pytest.raises(MigrationError, match="not named"):
        plan_migrations({"1_a.sql": ""}, PARTITIONED)
    with pytest.raises(MigrationError, match="no migration 0002"):
        plan_migrations({"0001_a.sql": "", "0002_b.timescaledb.sql": ""}, PARTITIONED)
    with pytest.raises(MigrationError, match="unknown storage flavour"):
        plan_migrations(FILES, "mysql")


# -- against a real, fresh database -------------------------------------------

def test_fresh_database_has_version_zero(fresh_dsn: str) -> None:
    assert current_version(fresh_dsn) == 0
    status = storage_status(fresh_dsn)
    assert status.flavour is None and status.version == 0 and len(status.pending) == status.latest


def test_concurrent_migrations_apply_each_step_once(fresh_dsn: str) -> None:
    reports, errors = [], []

    def run() -> None:
        try:
            reports.append(migrate(fresh_dsn))
        except Exception as exc:  # noqa: BLE001 - reported below  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    latest = len(load_migrations(PARTITIONED))
    applied = sorted((r.applied for r in reports), key=len)
    assert applied[:-1] == [(), ()] and len(applied[-1]) == latest
    assert {r.version for r in reports} == {latest}
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version").fetchall()
    assert sorted(rows) == [(v, 1) for v in range(1, latest + 1)]


def test_second_migrate_is_a_no_op(fresh_dsn: str) -> None:
    report = migrate(fresh_dsn)
    assert report.applied == () and not report.changed
    assert current_version(fresh_dsn) == report.latest


def test_flavour_is_recorded_and_kept(fresh_dsn: str) -> None:
    # This machine has plain PostgreSQL (no timescaledb): the partitioned flavour.
    status = storage_status(fresh_dsn)
    assert status.flavour == PARTITIONED and status.pending == ()
    with psycopg.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT value FROM storage_meta WHERE key = 'flavour'").fetchone() == (PARTITIONED,)
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings'").fetchone()[0]
        assert kind == "p"  # a partitioned table
        assert conn.execute("SELECT to_regclass('readings_default') IS NOT NULL").fetchone()[0]
    with pytest.raises(MigrationError, match="cannot be migrated as 'timescaledb'"):
        migrate(fresh_dsn, flavour=TIMESCALEDB)


def test_edited_migration_is_refused(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        try:
            with pytest.raises(MigrationError, match="changed after it was applied"):
                migrate(fresh_dsn)
        finally:
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = 1",
                (load_migrations(PARTITIONED)[0].checksum,),
            )
    assert migrate(fresh_dsn).applied == ()


def test_unreachable_database_is_a_migration_error() -> None:
    with pytest.raises(MigrationError, match="cannot"):
        migrate("postgresql://nobody:nothing@127.0.0.1:1/none?connect_timeout=2")
