"""Fixtures for storage tests against the real PostgreSQL and MinIO of the stack.

Each test module gets a throwaway database (created through the ``postgres``
database, dropped afterwards), so tests are re-runnable and never see each
other's rows; MinIO objects are content-addressed by random payloads.

Also makes `import storage` resolve to the package rather than this folder
(same fix as tests/trust/conftest.py).
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
_ROOT = str(Path(__file__).resolve().parents[2])
for _p in (_HERE, _ROOT):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)
for _name in ("storage", "trust"):
    _mod = sys.modules.get(_name)
    if _mod is not None and getattr(_mod, "__file__", None) is None:
        del sys.modules[_name]

import psycopg  # noqa: E402
import pytest  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from storage import BlobStore, migrate, open_pool  # noqa: E402


def _admin_dsn(dsn: str) -> str:
    return make_conninfo(dsn, dbname="postgres")


@pytest.fixture(scope="module")
def fresh_dsn(stack, settings, request):
    """DSN of a new, empty database, dropped after the module."""
    name = f"ss_test_{request.module.__name__.rsplit('.', 1)[-1][:20]}_{uuid.uuid4().hex[:8]}".lower()
    admin = _admin_dsn(settings.postgres_dsn)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(settings.postgres_dsn, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def migrated_dsn(fresh_dsn):
    migrate(fresh_dsn)
    return fresh_dsn


@pytest.fixture(scope="module")
def pool(migrated_dsn):
    p = open_pool(migrated_dsn, max_size=4)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="session")
def blob_store(stack, settings):
    return BlobStore.from_settings(settings)
