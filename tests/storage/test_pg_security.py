"""PostgreSQL least privilege (issue 17), against the stack's real PostgreSQL.

With security on (``SEALSTREAM_SECURITY=1``): a plaintext connection, a client without a
password, with a wrong one, or trusting another CA is refused; each principal logs in over TLS as
its own role. In both modes the permission matrix of migration 0009 is tried for real in a
throwaway database: each principal's connection is its own login (security on) or the admin's
with ``role`` set to that principal's role (security off: the roles exist, NOLOGIN), so what is
checked is the same grants and row security. The pipeline writer, the verifier and the analyst
also run their real storage code (`Writer`, `VerificationStore`, the ADBC reads) as their role.

The tests without the stack (SCRAM verifiers, DSN derivation and masking) run under `make check`.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from storage_helpers import readings, statement_record, utc

from infra.pki import StackPKI
from infra.postgres import scram_matches, scram_verifier
from sealstream.settings import PG_ROLES, Settings, load_settings, mask_dsn
from storage import BatchRecord, ReadingsPart, StorageError, Writer, key_records, manifest_key, open_pool
from storage.outbox import OutboxMessage
from storage.records import ms_to_datetime
from storage.verification import BatchVerdict, VerificationStore, VerifiedStatement
from trust import merkle
from trust.identity import KeyPair
from trust.receipt import seal_receipt

GATEWAY = KeyPair.generate()
_now = datetime.now(timezone.utc)
TODAY = utc(_now.year, _now.month, _now.day)
PARTITION = f"readings_p{TODAY:%Y%m%d}"
DENIED = psycopg.errors.InsufficientPrivilege


# -- no stack: SCRAM verifiers, DSNs, masking ------------------------------------------------------

def test_scram_verifier_round_trip() -> None:
    stored = scram_verifier("pw-1234567890")
    assert stored.startswith("SCRAM-SHA-256$4096:") and "pw-1234567890" not in stored
    assert scram_matches(stored, "pw-1234567890")
    assert not scram_matches(stored, "pw-1234567891")
    assert not scram_matches(None, "x") and not scram_matches("md5abc", "x")
    assert scram_verifier("p", salt=b"s" * 16) == scram_verifier("p", salt=b"s" * 16)


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings with security on whose PostgreSQL passwords are the files of a fresh state directory."""
    for var in list(os.environ):
        if var.startswith("SEALSTREAM_PG_") or var in ("SEALSTREAM_CONFIG", "SEALSTREAM_TLS_CA_FILE",
                                                                "SEALSTREAM_STACK_HOME"):
            monkeypatch.delenv(var)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for p in PG_ROLES:
        (secrets / f"pg_{p}_password").write_text(f"secret-of-{p}-0123456789\n")

    def make(**kw: object) -> Settings:
        return Settings(home=tmp_path, security=True, pg_port=6543, **kw)  # type: ignore[arg-type]
    return make


def test_each_principal_has_its_dsn(tmp_path: Path, secured) -> None:
    off = Settings(home=tmp_path, security=False, pg_port=6543)
    assert {off.postgres_dsn_for(p) for p in PG_ROLES} == {off.postgres_dsn}  # one role, as before
    on = secured()
    admin = conninfo_to_dict(on.postgres_dsn)
    assert admin["user"] == on.pg_user and admin["password"] == "secret-of-admin-0123456789"
    assert admin["sslmode"] == "verify-full" and admin["sslrootcert"] == str((tmp_path / "pki" / "ca.crt").resolve())
    for p in ("pipeline", "verifier", "analyst", "grafana"):
        d = conninfo_to_dict(on.postgres_dsn_for(p))
        assert (d["user"], d["password"]) == (PG_ROLES[p], f"secret-of-{p}-0123456789")
        assert (d["sslmode"], d["port"], d["dbname"]) == ("verify-full", "6543", on.pg_database)
    with pytest.raises(ValueError):
        on.postgres_dsn_for("factory-x")
    given = secured(pg_dsn="postgresql://u:given@db.example:5432/x?sslmode=verify-ca")
    d = conninfo_to_dict(given.postgres_dsn_for("analyst"))
    assert (d["host"], d["dbname"], d["sslmode"], d["user"]) == ("db.example", "x", "verify-ca", PG_ROLES["analyst"])
    assert "sslrootcert" in d


def test_no_password_is_printed(secured) -> None:
    on = secured(pg_dsn="postgresql://u:given-secret-1@db:5432/x")
    shown = str(on.public_dict())
    assert "given-secret-1" not in shown and "secret-of-" not in shown
    for text in (on.postgres_dsn, on.postgres_dsn_for("pipeline"), "postgresql://a:p%40ss-word1@h/d?x=1",
                 "host=h password='it''s a secret' user=u", "...?sslmode=require&password=topsecret1&user=u"):
        masked = mask_dsn(f"failed: {text}")
        for secret in ("secret-of-", "p%40ss-word1", "it''s a secret", "topsecret1"):
            assert secret not in masked, masked
    err = StorageError("write: cannot connect to host=h password=hunter2hunter2 user=u")
    assert "hunter2" not in str(err)


# -- the stack's PostgreSQL ------------------------------------------------------------------------

needs_security = pytest.mark.skipif(not load_settings().security,
                                    reason="TLS and logins per role are on with security (SEALSTREAM_SECURITY=1)")


@pytest.fixture(scope="module")
def dbname(migrated_dsn: str) -> str:
    return str(conninfo_to_dict(migrated_dsn)["dbname"])


@pytest.fixture(scope="module")
def role_dsn(settings: Settings, migrated_dsn: str, dbname: str):
    """principal -> a DSN that acts as its role in the module's database."""
    def dsn(principal: str) -> str:
        if settings.security:
            return make_conninfo(settings.postgres_dsn_for(principal), dbname=dbname)
        return make_conninfo(migrated_dsn, options=f"-c role={PG_ROLES[principal]}")
    return dsn


@pytest.fixture(scope="module")
def connect(role_dsn):
    @contextmanager
    def as_role(principal: str) -> Iterator[psycopg.Connection]:
        with psycopg.connect(role_dsn(principal), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (PG_ROLES[principal],)
            yield conn
    return as_role


def _refused(dsn: str, **kw: object) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn, connect_timeout=5, passfile="/dev/null", **kw).close()
    return str(info.value)


@needs_security
def test_every_principal_logs_in_as_itself_over_tls(settings: Settings, stack, dbname: str) -> None:
    for principal, role in PG_ROLES.items():
        with psycopg.connect(make_conninfo(settings.postgres_dsn_for(principal), dbname=dbname)) as conn:
            user, ssl, version = conn.execute(
                "SELECT current_user, s.ssl, s.version FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()").fetchone()
            assert user == (role or settings.pg_user) and ssl is True and version.startswith("TLS")
            assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)


@needs_security
def test_plaintext_no_password_wrong_password_and_another_ca_are_refused(settings: Settings, stack,
                                                                         tmp_path: Path) -> None:
    pipeline = settings.postgres_dsn_for("pipeline")
    assert "no encryption" in _refused(pipeline, sslmode="disable")  # no `host` line: TLS or nothing
    assert "no encryption" in _refused(settings.postgres_dsn, sslmode="disable")
    assert "no password supplied" in _refused(make_conninfo(pipeline, password=""))
    wrong = _refused(make_conninfo(pipeline, password="not-the-password"))
    assert "password authentication failed" in wrong and "not-the-password" not in wrong
    other = StackPKI(tmp_path)
    other.ensure_ca()
    assert "certificate verify failed" in _refused(make_conninfo(pipeline, sslrootcert=str(other.ca_cert_path)))
    # the roles cannot log in to the maintenance database either with another role's password
    assert "password authentication failed" in _refused(
        make_conninfo(pipeline, password=settings.pg_password_for("analyst")))


@needs_security
def test_status_names_tls_and_the_roles(stack) -> None:
    row = next(r for r in stack.status() if r.name == "postgres")
    assert row.security == f"TLS (verify-full), scram-sha-256, {len(PG_ROLES)} roles"


# -- the permission matrix -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def anchored(role_dsn) -> dict:
    """As the pipeline's role, with its real writer: two time-series statements sealed, their rows
    (and a new daily partition), a batch anchored; then, as the verifier's role, its verdict."""
    with open_pool(role_dsn("pipeline"), max_size=2) as pool:
        writer = Writer(pool)
        recs = [statement_record(seq)[0] for seq in (1, 2)]
        assert writer.write_statements(recs).inserted == 2
        receipts = [seal_receipt(r.hash, "raw/" + r.statement.payload_sha256.hex(), GATEWAY) for r in recs]
        assert writer.write_receipts(receipts).inserted == 2
        day = TODAY  # inside the writer's partition window: it makes the day's partition
        parts = [ReadingsPart(r.statement.device, r.hash, readings(day, 4)) for r in recs]
        assert writer.write_readings(parts).inserted == 8
        leaves = [r.hash for r in recs]
        batch = BatchRecord("b-sec-1", merkle.root(merkle.leaf_hashes(leaves)), 2, day, day + timedelta(seconds=5),
                            manifest_key("b-sec-1"))
        assert writer.write_batch(batch, leaves) is True
        writer.mark_submitted("b-sec-1")
        writer.mark_anchored("b-sec-1", 7, 0)
        again = writer.mark_anchored("b-sec-1", 7, 0)  # the same coordinates: a no-op, not refused
        assert (again.anchor_state, again.ledger_height) == ("anchored", 7)
    with open_pool(role_dsn("verifier"), max_size=2) as pool:
        store = VerificationStore(pool)
        assert store.statements(leaves).keys() == set(leaves)
        assert store.range_rows(recs[0].statement.device, day, day + timedelta(days=1)).num_rows == 8  # ADBC
        verdict = BatchVerdict("b-sec-1", "verified", batch.root, 7, 0, 2, rows=8)
        store.record_verdict(verdict, [VerifiedStatement(r.hash, i, 4, r.statement.device, r.statement.seq,
                                                         ms_to_datetime(r.statement.ts), r.statement.payload_sha256)
                                       for i, r in enumerate(recs)],
                             alert=OutboxMessage("iiot.alerts", None, b"{}"))
    return {"records": recs, "batch": batch, "day": day}


def test_the_writer_cannot_alter_an_anchored_batch(connect, anchored) -> None:
    with connect("pipeline") as conn:
        # row security: an anchored batch is not the writer's to update, in any column it may update
        assert conn.execute("UPDATE batches SET last_error = 'x' WHERE batch_id = 'b-sec-1'").rowcount == 0
        assert conn.execute("UPDATE batches SET attempts = 0 WHERE anchor_state = 'anchored'").rowcount == 0
        for sql in ("UPDATE batches SET manifest_key = 'manifests/other' WHERE batch_id = 'b-sec-1'",
                    "UPDATE batches SET root = '\\x00' WHERE batch_id = 'b-sec-1'",
                    "DELETE FROM batches WHERE batch_id = 'b-sec-1'",
                    "DELETE FROM batch_leaves",
                    "TRUNCATE batches CASCADE"):
            with pytest.raises(DENIED):
                conn.execute(sql)
        # nor insert a batch that is already 'anchored', nor a verdict
        with pytest.raises(DENIED, match="row-level security"):
            conn.execute("INSERT INTO batches (batch_id, root, tree_size, window_start, window_end, manifest_key, "
                         "anchor_state, ledger_height, tx_index) VALUES ('b-forged', '\\x" + "00" * 32 + "', 1, "
                         "now(), now(), 'manifests/b-forged', 'anchored', 1, 0)")
        with pytest.raises(DENIED):
            conn.execute("INSERT INTO batch_verdicts (batch_id, verdict, root, ledger_height, tx_index, leaves) "
                         "VALUES ('b-sec-1', 'verified', '\\x00', 1, 0, 1)")
        # the receipts of an anchored batch's statements stay as they are
        h = anchored["records"][0].hash
        assert conn.execute("UPDATE statements SET gateway = 'other' WHERE statement_hash = %s", (h,)).rowcount == 0
        with pytest.raises(DENIED):
            conn.execute("UPDATE statements SET canonical = '\\x00' WHERE statement_hash = %s", (h,))


def test_the_writer_cannot_update_or_delete_readings(connect, anchored) -> None:
    with connect("pipeline") as conn:
        for sql in ("UPDATE readings SET value = 0", "DELETE FROM readings", "SELECT count(*) FROM readings",
                    "DELETE FROM verified_statements", "UPDATE blobs SET size = 0", "DELETE FROM statements",
                    "SELECT count(*) FROM alert_outbox", "CREATE TABLE t (x int)"):
            with pytest.raises(DENIED):
                conn.execute(sql)
    with connect("verifier") as conn:
        assert conn.execute("SELECT count(*) FROM verified_readings").fetchone() == (8,)


def test_a_reading_the_writer_adds_still_takes_its_statement_out_of_the_views(role_dsn, connect, anchored) -> None:
    """The verification triggers run as the owner (the writer may not delete verified_statements)."""
    rec = anchored["records"][1]
    with open_pool(role_dsn("pipeline"), max_size=1) as pool:
        extra = readings(anchored["day"] + timedelta(seconds=1), 5)
        assert Writer(pool).write_readings([ReadingsPart(rec.statement.device, rec.hash, extra)]).inserted == 5
    with connect("verifier") as conn:
        assert conn.execute("SELECT count(*) FROM verified_statements WHERE statement_hash = %s",
                            (rec.hash,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM verified_readings").fetchone() == (4,)


def test_the_verifier_reads_everything_and_writes_verdicts_only(connect, anchored) -> None:
    with connect("verifier") as conn:
        for table in ("statements", "readings", "blobs", "batches", "batch_leaves", "batch_verdicts",
                      "verified_statements", "dead_letters", "alert_outbox", "storage_meta", "schema_migrations",
                      PARTITION):
            conn.execute(f"SELECT count(*) FROM {table}")
        assert conn.execute("SELECT count(*) FROM alert_outbox").fetchone() == (1,)
        assert conn.execute("UPDATE batch_verdicts SET checks = checks + 1 WHERE batch_id = 'b-sec-1'").rowcount == 1
        for sql in ("UPDATE readings SET value = 0", "DELETE FROM readings", "INSERT INTO statements (statement_hash) "
                    "VALUES ('\\x00')", "UPDATE batches SET last_error = 'x'", "DELETE FROM batches",
                    "UPDATE statements SET gateway = 'x'", "DELETE FROM batch_verdicts", "DELETE FROM alert_outbox",
                    "UPDATE alert_outbox SET value = '\\x00'", "INSERT INTO dead_letters (grp, topic, partition, "
                    "\"offset\", reason) VALUES ('g', 't', 0, 0, 'r')", "CREATE TABLE t (x int)",
                    "SELECT readings_ensure_partition('2031-01-01')"):
            with pytest.raises(DENIED):
                conn.execute(sql)


def test_the_analyst_reads_the_verified_views_only(role_dsn, connect, anchored) -> None:
    with connect("analyst") as conn:
        assert conn.execute("SELECT count(*) FROM verified_readings").fetchone()[0] > 0
        conn.execute("SELECT count(*) FROM verified_blobs")
        for table in ("readings", "readings_default", PARTITION, "statements", "blobs", "batches",
                      "batch_leaves", "batch_verdicts", "verified_statements", "statement_anchors", "dead_letters",
                      "alert_outbox", "storage_meta"):
            with pytest.raises(DENIED):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")
        for sql in ("UPDATE readings SET value = 0", "DELETE FROM readings", "CREATE TEMP TABLE t (x int)",
                    "CREATE TABLE t (x int)", "SELECT readings_ensure_partition('2031-01-01')"):
            with pytest.raises(DENIED):
                conn.execute(sql)
    # and the export's own read (ADBC), as the analyst
    with open_pool(role_dsn("analyst"), max_size=1) as pool:
        rec = anchored["records"][0]
        table = VerificationStore(pool).verified_readings_arrow(rec.statement.device, anchored["day"],
                                                                anchored["day"] + timedelta(days=1))
        assert table.num_rows == 4


def test_key_records_are_inserted_by_the_writer_and_destroyed_by_erasure_only(role_dsn, connect, anchored) -> None:
    """Migration 0010: the pipeline may only INSERT a key record (with its new statement:
    `Writer.write_sealed`); the erasure role may read statements and batch leaves and SELECT and
    DELETE key records, and nothing else; the analyst and the verifier read them; Grafana cannot."""
    rec = anchored["records"][0]
    h = rec.hash
    with connect("pipeline") as conn:
        conn.execute("INSERT INTO key_records (statement_hash, record) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (h, b"wrapped keys"))
        for sql in ("SELECT count(*) FROM key_records", "UPDATE key_records SET record = '\\x00'",
                    "DELETE FROM key_records"):
            with pytest.raises(DENIED):
                conn.execute(sql)
    for principal in ("analyst", "verifier"):
        with open_pool(role_dsn(principal), max_size=1) as pool:
            assert key_records.read(pool, [h]) == {h: b"wrapped keys"}
        with connect(principal) as conn:
            with pytest.raises(DENIED):
                conn.execute("DELETE FROM key_records")
    with connect("grafana") as conn:
        with pytest.raises(DENIED):
            conn.execute("SELECT count(*) FROM key_records")
    with connect("erasure") as conn:
        assert conn.execute("SELECT count(*) FROM statements WHERE statement_hash = %s", (h,)).fetchone() == (1,)
        conn.execute("SELECT count(*) FROM batch_leaves")
        for sql in ("UPDATE key_records SET record = '\\x00'", "INSERT INTO key_records (statement_hash, record) "
                    "VALUES ('\\x00', '\\x00')", "DELETE FROM statements", "UPDATE statements SET gateway = 'x'",
                    "SELECT count(*) FROM readings", "DELETE FROM readings", "DELETE FROM batch_leaves",
                    "SELECT count(*) FROM verified_readings", "CREATE TABLE t (x int)"):
            with pytest.raises(DENIED):
                conn.execute(sql)
    with open_pool(role_dsn("erasure"), max_size=1) as pool:
        assert key_records.destroy(pool, [h]) == (1, [])
        assert key_records.read(pool, [h]) == {h: None}


def test_grafana_reads_its_panels_tables_and_writes_nothing(connect, anchored) -> None:
    with connect("grafana") as conn:
        for table in ("batches", "dead_letters", "batch_verdicts", "readings", "verified_readings", "verified_blobs"):
            conn.execute(f"SELECT count(*) FROM {table}")
        for sql in ("INSERT INTO dead_letters (grp, topic, partition, \"offset\", reason) VALUES ('g','t',0,0,'r')",
                    "UPDATE batches SET last_error = 'x'", "DELETE FROM batch_verdicts",
                    "UPDATE readings SET value = 0", "SELECT count(*) FROM statements",
                    "SELECT count(*) FROM alert_outbox",
                    "CREATE TABLE t (x int)", "CREATE TEMP TABLE t (x int)"):
            with pytest.raises(DENIED):
                conn.execute(sql)


def test_no_public_access(settings: Settings, connect, dbname: str) -> None:
    """PUBLIC may not connect, make temporary tables or create in the schema: only the roles may."""
    with connect("grafana") as conn:
        acl = conn.execute("SELECT datacl::text FROM pg_database WHERE datname = %s", (dbname,)).fetchone()[0]
        assert not re.search(r"(^|[{,])=", acl), acl  # no PUBLIC entry
        for role in ("sealstream_pipeline", "sealstream_verifier", "sealstream_analyst", "sealstream_grafana",
                     "sealstream_erasure"):
            assert f"{role}=c" in acl or f"{role}=Tc" in acl


def test_every_dashboard_sql_query_runs_as_grafana(connect, anchored) -> None:
    """What the provisioned datasource runs (the panels' SQL of dashboards/provisioning) needs only
    the Grafana role's rights."""
    import importlib.util
    import sys

    panels = sys.modules.get("panel_queries")
    if panels is None:
        spec = importlib.util.spec_from_file_location(
            "panel_queries", Path(__file__).resolve().parents[1] / "dashboards" / "panel_queries.py")
        assert spec is not None and spec.loader is not None
        panels = sys.modules["panel_queries"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(panels)
    queries = [q for q in panels.panel_queries() if q.kind == "sql"]
    assert queries
    start, end = TODAY - timedelta(days=1), TODAY + timedelta(days=2)
    with connect("grafana") as conn:
        for q in queries:
            conn.execute(panels.sql(q.text, start, end)).fetchall()


def test_the_grafana_datasource_uses_its_role_over_tls(secured, tmp_path: Path) -> None:
    from dashboards.datasources import Endpoints, datasource_definitions

    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    defs = datasource_definitions(Endpoints.from_settings(secured()))
    ds = next(d for d in defs if d["uid"] == "sealstream-postgres")
    assert ds["user"] == PG_ROLES["grafana"] and ds["url"] == "127.0.0.1:6543"
    assert ds["jsonData"]["sslmode"] == "verify-full" and ds["jsonData"]["tlsConfigurationMethod"] == "file-content"
    assert ds["secureJsonData"] == {"password": "secret-of-grafana-0123456789",
                                    "tlsCACert": (tmp_path / "pki" / "ca.crt").read_text()}
    off = next(d for d in datasource_definitions(Endpoints.from_settings(Settings(home=tmp_path, security=False)))
               if d["uid"] == "sealstream-postgres")
    assert off["jsonData"]["sslmode"] == "disable" and "tlsCACert" not in off["secureJsonData"]


@pytest.mark.services  # starts a PostgreSQL cluster of its own
def test_a_running_cluster_follows_the_security_setting(settings: Settings, tmp_path: Path) -> None:
    """Off -> on -> off on one running cluster (a private one with a CA and secrets of its own, the
    shared stack untouched): `stack up` reloads TLS and pg_hba, moves the admin's password and gives
    the roles their login, then takes it back; nothing is restarted."""
    import shutil

    from infra import Stack
    from infra.pki import server_spec
    from infra.process import free_ports

    home, own = tmp_path / "pg", tmp_path / "stack"
    for sub in ("data", "logs", "run", "conf"):
        (home / sub).mkdir(parents=True)
    StackPKI(own).ensure([server_spec("postgres", [settings.host, "127.0.0.1", "localhost"])])
    port = free_ports(1)[0]

    def cluster(security: bool):
        s = load_settings(home=home, cache_dir=settings.cache_dir, pg_port=port, security=security,
                          stack_home=own)
        return s, Stack(s).postgres

    off, svc = cluster(False)
    try:
        svc.install()
        svc.launch()
        pid = svc.running_pid()
        for security in (False, True, False):
            s, svc = cluster(security)
            svc.wait_healthy()
            svc.provision()
            assert svc.running_pid() == pid  # reloaded, not restarted
            with psycopg.connect(s.postgres_dsn, connect_timeout=5) as conn:
                ssl = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]
                logins = dict(conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                                           ([r for r in PG_ROLES.values() if r],)).fetchall())
            # (a fresh cluster with security off has no roles yet: migration 0009 makes them NOLOGIN)
            assert ssl is security and all(v is security for v in logins.values()), (security, ssl, logins)
            assert len(logins) == len(PG_ROLES) - 1 or not security  # every role but the owner
            if security:
                assert "no encryption" in _refused(s.postgres_dsn, sslmode="disable")
                with psycopg.connect(s.postgres_dsn_for("analyst"), connect_timeout=5) as conn:
                    assert conn.execute("SELECT current_user").fetchone() == (PG_ROLES["analyst"],)
            else:
                assert "password authentication failed" in _refused(make_conninfo(s.postgres_dsn, password="wrong"))
            assert svc.security() == ("TLS (verify-full), scram-sha-256, 6 roles" if security
                                      else "plaintext, scram-sha-256, one role")
    finally:
        svc.stop()
        shutil.rmtree(home, ignore_errors=True)
