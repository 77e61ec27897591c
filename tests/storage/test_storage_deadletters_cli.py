"""`sealstream pipeline deadletters summary|prune` as an operator runs them, on a fresh migrated
database (SEALSTREAM_PG_DSN): JSON that parses and matches the table, prune that keeps unmarked and
young rows, a dry run that deletes nothing, and a bad --older-than refused as a usage error.

The retention check runs against the real broker on topics made here with known retention.ms and
segment.ms (deleted afterwards): a cutoff inside retention + segment, a topic kept forever, a topic
the cluster lacks and an unreachable broker are refused and delete nothing; --force prunes."""

from __future__ import annotations

import itertools
import json
import socket
import uuid
from datetime import timedelta

import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from sealstream.cli import cli
from storage.deadletters import DeadLetterLog
from storage.records import KafkaPosition
from test_storage_deadletters import backdate, seed
from sealstream._kafka_config import kafka_endpoint

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
    """Which rows go: --force, since seed()'s rows are on iiot.images.raw (7 d retention + 7-day
    segments on the stack), so these cutoffs are inside its retention (the check: tests below)."""
    g, other = _group(), _group()
    pos = seed(pool, g)
    seed(pool, other)
    log = DeadLetterLog(pool)
    dry = _json(run("prune", "--older-than", "7d", "--group", g, "--dry-run", "--force", "--json"))
    assert dry == {"group": g, "older_than_s": 7 * 86400, "dry_run": True, "forced": True, "deleted": 0,
                   "would_delete": 2}
    assert len(log.rows(g)) == 5
    done = _json(run("prune", "--older-than", "168h", "--group", g, "--force", "--json"))
    assert (done["deleted"], done["dry_run"], done["would_delete"]) == (2, False, None)
    assert {r.position for r in log.rows(g)} == {pos["old_unmarked"], pos["young"], pos["edge"]}
    assert len(log.rows(other)) == 5
    # 6-day-old produced row goes at 5 days (in minutes); the 10-day-old unmarked one stays
    text = run("prune", "--older-than", f"{5 * 24 * 60}m", "--group", g, "--force")
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


# -- the retention check, against the real broker -------------------------------------------------
HOUR_MS, TEN_MIN_MS = 3_600_000, 600_000
_offsets = itertools.count()


@pytest.fixture(scope="module")
def topics(stack, settings):
    """Fresh topics with known deletion settings: short (1 h + 10 min segments), longer (2 h + 30 min),
    forever (retention.ms -1); deleted after the module."""
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    configs = {"short": {"retention.ms": str(HOUR_MS), "segment.ms": str(TEN_MIN_MS)},
               "longer": {"retention.ms": str(2 * HOUR_MS), "segment.ms": str(3 * TEN_MIN_MS)},
               "forever": {"retention.ms": "-1", "segment.ms": str(TEN_MIN_MS)}}
    names = {k: f"test.deadletters.{k}.{tag}" for k in configs}
    admin = AdminClient(kafka_endpoint(settings, "admin").confluent())
    for f in admin.create_topics([NewTopic(names[k], 1, 1, config=c) for k, c in configs.items()]).values():
        f.result(30)
    try:
        yield names
    finally:
        for f in admin.delete_topics(list(names.values()), operation_timeout=30).values():
            f.result(30)


def _rows(pool, group: str, topic: str, age: timedelta, n: int = 1) -> list[KafkaPosition]:
    """`n` new produced dead letters of `group` on `topic`, recorded `age` ago."""
    log = DeadLetterLog(pool)
    pos = [KafkaPosition(topic, 0, next(_offsets)) for _ in range(n)]
    log.record(group, [(p, "bad-signature") for p in pos])
    log.mark_produced(group, pos)
    backdate(pool, group, pos, age)
    return pos


def _refused(result, error: str) -> dict:
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["error"] == error and doc["deleted"] == 0 and doc["message"] in result.stderr.replace("\n", "")
    return doc


def test_cutoff_inside_retention_is_refused_then_a_longer_one_prunes(run, pool, topics) -> None:
    g = _group()
    _rows(pool, g, topics["short"], timedelta(hours=3), n=2)
    log = DeadLetterLog(pool)
    doc = _refused(run("prune", "--older-than", "1h", "--group", g, "--json"), "cutoff-inside-retention")
    assert {k: doc[k] for k in ("topic", "retention_ms", "segment_ms", "min_older_than_s", "would_delete")} == {
        "topic": topics["short"], "retention_ms": HOUR_MS, "segment_ms": TEN_MIN_MS, "min_older_than_s": 4200,
        "would_delete": None}
    assert len(log.rows(g)) == 2
    text = run("prune", "--older-than", "69m", "--group", g)
    assert text.exit_code == 1 and text.stdout == ""
    assert topics["short"] in text.stderr and "--older-than 70m or more" in text.stderr
    assert len(log.rows(g)) == 2
    # the dry run runs the same check, exits as the real run would, and counts
    dry = _refused(run("prune", "--older-than", "1h", "--group", g, "--dry-run", "--json"),
                   "cutoff-inside-retention")
    assert (dry["dry_run"], dry["would_delete"], dry["min_older_than_s"]) == (True, 2, 4200)
    assert "dry run: 2 produced row(s) match" in dry["message"]
    ok = _json(run("prune", "--older-than", "70m", "--group", g, "--dry-run", "--json"))
    assert (ok["would_delete"], ok["forced"]) == (2, False) and len(log.rows(g)) == 2
    assert _json(run("prune", "--older-than", "70m", "--group", g, "--json"))["deleted"] == 2
    assert log.rows(g) == []


def test_every_source_topic_is_checked_and_the_minimum_covers_all(run, pool, topics) -> None:
    g = _group()
    _rows(pool, g, topics["short"], timedelta(hours=5))
    _rows(pool, g, topics["longer"], timedelta(hours=5))
    _rows(pool, g, topics["longer"], timedelta(minutes=30))  # young: not prunable, not checked either way
    log = DeadLetterLog(pool)
    doc = _refused(run("prune", "--older-than", "2h", "--group", g, "--json"), "cutoff-inside-retention")
    assert (doc["topic"], doc["retention_ms"], doc["segment_ms"], doc["min_older_than_s"]) == (
        topics["longer"], 2 * HOUR_MS, 3 * TEN_MIN_MS, 9000)
    assert len(log.rows(g)) == 3  # the short topic's row, safe alone, is not deleted either
    assert _json(run("prune", "--older-than", "150m", "--group", g, "--json"))["deleted"] == 2
    assert [r.position.topic for r in log.rows(g)] == [topics["longer"]]


def test_force_prunes_inside_retention_without_asking_kafka(run, pool, topics, monkeypatch) -> None:
    g = _group()
    _rows(pool, g, topics["short"], timedelta(hours=2))
    monkeypatch.setenv("SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS", _closed_port())
    done = _json(run("prune", "--older-than", "1h", "--group", g, "--force", "--json"))
    assert (done["deleted"], done["forced"]) == (1, True)
    assert DeadLetterLog(pool).rows(g) == []


def test_topic_retained_forever_is_refused(run, pool, topics) -> None:
    g = _group()
    _rows(pool, g, topics["forever"], timedelta(days=400))
    _rows(pool, g, topics["short"], timedelta(days=400))
    doc = _refused(run("prune", "--older-than", "365d", "--group", g, "--json"), "source-retained-forever")
    assert (doc["topic"], doc["retention_ms"], doc["segment_ms"]) == (topics["forever"], -1, TEN_MIN_MS)
    dry = _refused(run("prune", "--older-than", "365d", "--group", g, "--dry-run", "--json"),
                   "source-retained-forever")
    assert dry["would_delete"] == 2
    assert len(DeadLetterLog(pool).rows(g)) == 2


def test_topic_missing_on_the_cluster_is_refused(run, pool) -> None:
    g, gone = _group(), f"test.deadletters.gone.{uuid.uuid4().hex[:8]}"
    _rows(pool, g, gone, timedelta(days=30))
    doc = _refused(run("prune", "--older-than", "14d", "--group", g, "--json"), "source-topic-unknown")
    assert doc["topic"] == gone and "--force" in doc["message"]
    assert len(DeadLetterLog(pool).rows(g)) == 1
    assert _json(run("prune", "--older-than", "14d", "--group", g, "--force", "--json"))["deleted"] == 1


def _closed_port() -> str:
    """A loopback address nothing listens on: bound (so no one else gets it) but never listening.
    Returned as a string; the socket stays bound for the test process's life."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _closed_port.held.append(sock)
    return f"127.0.0.1:{sock.getsockname()[1]}"


_closed_port.held = []


def test_unreachable_kafka_is_refused(run, pool, topics, monkeypatch) -> None:
    g = _group()
    _rows(pool, g, topics["short"], timedelta(days=30))
    young = _group()
    _rows(pool, young, topics["short"], timedelta(minutes=1))
    bootstrap = _closed_port()
    monkeypatch.setenv("SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    doc = _refused(run("prune", "--older-than", "14d", "--group", g, "--json"), "kafka-unavailable")
    assert doc["bootstrap"] == bootstrap and doc["topics"] == [topics["short"]]
    assert "--force only if" in doc["message"]
    assert len(DeadLetterLog(pool).rows(g)) == 1
    # nothing prunable: nothing to check, Kafka not needed
    assert _json(run("prune", "--older-than", "14d", "--group", young, "--json"))["deleted"] == 0
