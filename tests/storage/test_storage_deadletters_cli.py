"""`sealstream pipeline deadletters summary|prune` as an operator runs them, on a fresh migrated
database (SEALSTREAM_PG_DSN): JSON that parses and matches the table, prune that keeps unmarked and
young rows, a dry run that deletes nothing, and a bad --older-than refused as a usage error."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from sealstream.cli import cli
from storage.deadletters import DeadLetterLog
from test_storage_deadletters import seed

pytestmark = pytest.mark.services


@pytest.fixture()
def run(migrated_dsn, monkeypatch):
    monkeypatch.setenv("SEALSTREAM_PG_DSN", migrated_dsn)
    monkeypatch.setenv("SEALSTREAM_LOG_LEVEL", "WARNING")

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["pipeline", "deadletters", *args])
    return invoke


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _group() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_summary_json_and_table(run, pool) -> None:
    g = _group()
    seed(pool, g)
    doc = _json(run("summary", "--group", g, "--json"))
    assert doc["group"] == g and doc["total"] == 5 and doc["unmarked"] == 1
    assert [(r["group"], r["reason"], r["count"], r["produced"], r["unmarked"]) for r in doc["rows"]] == [
        (g, "bad-signature", 4, 3, 1), (g, "oversized", 1, 1, 0)]
    assert doc["rows"] == [s.to_json() for s in DeadLetterLog(pool).summary(g)]
    every = _json(run("summary", "--json"))
    assert {r["group"] for r in every["rows"]} >= {g}
    table = run("summary", "--group", g)
    assert table.exit_code == 0 and g in table.stdout and "oversized" in table.stdout
    empty = run("summary", "--group", _group())
    assert empty.exit_code == 0 and "no dead letters for group" in empty.stdout


def test_prune_dry_run_then_prune_one_group(run, pool) -> None:
    g, other = _group(), _group()
    pos = seed(pool, g)
    seed(pool, other)
    log = DeadLetterLog(pool)
    dry = _json(run("prune", "--older-than", "7d", "--group", g, "--dry-run", "--json"))
    assert dry == {"group": g, "older_than_s": 7 * 86400, "dry_run": True, "deleted": 0, "would_delete": 2}
    assert len(log.rows(g)) == 5
    done = _json(run("prune", "--older-than", "168h", "--group", g, "--json"))
    assert (done["deleted"], done["dry_run"], done["would_delete"]) == (2, False, None)
    assert {r.position for r in log.rows(g)} == {pos["old_unmarked"], pos["young"], pos["edge"]}
    assert len(log.rows(other)) == 5
    # 6-day-old produced row goes at 5 days (in minutes); the 10-day-old unmarked one stays
    text = run("prune", "--older-than", f"{5 * 24 * 60}m", "--group", g)
    assert text.exit_code == 0 and "deleted 1 produced dead-letter row(s)" in text.stdout
    assert {r.position for r in log.rows(g)} == {pos["old_unmarked"], pos["young"]}
    assert _json(run("summary", "--group", g, "--json"))["unmarked"] == 1


@pytest.mark.parametrize("bad", ["7x", "7", "d", "0d", "-1d", "1.5h", "7 days", ""])
def test_bad_duration_is_a_usage_error(run, bad: str) -> None:
    r = run("prune", "--older-than", bad, "--dry-run", "--json")
    assert r.exit_code == 2 and "--older-than" in r.stderr and "7d, 12h, 30m, 90s" in r.stderr, r.output
    assert r.stdout == ""


def test_prune_needs_older_than(run) -> None:
    r = run("prune", "--dry-run")
    assert r.exit_code == 2 and "--older-than" in r.stderr


def test_unmigrated_database_is_one_sentence_and_exit_1(run, migrated_dsn, monkeypatch) -> None:
    monkeypatch.setenv("SEALSTREAM_PG_DSN", make_conninfo(migrated_dsn, dbname="postgres"))
    r = run("summary", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["service"] == "postgres" and doc["error"] == "DatabaseError"
    assert "summarise dead letters" in doc["message"] and "sealstream db migrate" in doc["message"]
    assert "sealstream db migrate" in r.stderr
