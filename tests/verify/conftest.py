"""Fixtures for the downstream-verification tests: a real 4-node contracts ledger,
a throwaway PostgreSQL database (migrated, dropped afterwards), the stack's MinIO,
and `Dataset`: signed, stored, sealed and anchored records (A1's `Anchorer`).

Puts this folder and tests/pipelines (for `anchor_helpers`) on sys.path.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent / "pipelines"), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import psycopg  # noqa: E402
import pytest  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from storage import migrate, open_pool  # noqa: E402


@pytest.fixture(scope="module")
def cluster(stack, tmp_path_factory):
    from anchor_helpers import ledger_cluster

    c = ledger_cluster(tmp_path_factory.mktemp("verify-ledger"))
    yield c
    c.stop(timeout=5)


@pytest.fixture(scope="module")
def dsn(stack, settings, request):
    name = f"ss_verify_{request.module.__name__.rsplit('.', 1)[-1][:16]}_{uuid.uuid4().hex[:8]}".lower()
    admin = make_conninfo(settings.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    d = make_conninfo(settings.postgres_dsn, dbname=name)
    migrate(d)
    try:
        yield d
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def pool(dsn):
    p = open_pool(dsn, max_size=4)
    yield p
    p.close()


@pytest.fixture(scope="module")
def dataset(settings, cluster, pool):
    from verify_helpers import Dataset

    d = Dataset(settings, cluster, pool)
    yield d
    d.close()
