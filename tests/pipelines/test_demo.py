"""`sealstream demo --duration 5 --json` against the real stack, with a private home (so a private
4-node ledger on free ports: `ledger up` puts it in $SEALSTREAM_HOME/ledger) and a private database
(the verifier agent's catch-up checks every anchored batch without a verdict: in the stack's database,
batches other tests anchored on other ledgers would fail at `evidence`, and verifiers of other tests
would fail ours), checked against the
database, the ledger and the simulator's sent log; its verification story (verifier agent verdicts,
verified_readings share, one blob, one offline bundle) checked against the database and by re-running
the commands it prints."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from infra.ledger_cluster import LocalCluster
from ledger.layout import LedgerLayout
from pipelines.devices import read_sent_log
from storage import migrate
from storage.db import open_pool

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


def _again(command: str, env: dict) -> subprocess.CompletedProcess:
    """Run a command as the summary prints it (``sealstream ...``) with this interpreter."""
    argv = shlex.split(command)
    assert argv[0] == "sealstream"
    return subprocess.run([sys.executable, "-m", "sealstream", *argv[1:], "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def database(stack, settings):
    """A migrated throwaway database on the stack's PostgreSQL (its name), dropped afterwards."""
    name = f"ss_demo_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(settings.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(make_conninfo(settings.postgres_dsn, dbname=name))
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_demo_summary_matches_the_database(stack, settings, database, tmp_path) -> None:
    home = tmp_path / "home"
    dsn = make_conninfo(settings.postgres_dsn, dbname=database)
    env = dict(os.environ, SEALSTREAM_HOME=str(home), SEALSTREAM_LEDGER_BASE_PORT="0",
               SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap, SEALSTREAM_PG_DSN=dsn)
    try:
        proc = subprocess.run([sys.executable, "-m", "sealstream", "demo", "--duration", "5", "--factory", "demo-t",
                               "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
        sent = list(read_sent_log(home / "devices" / "demo-t" / "sent.jsonl"))
        assert summary["complete"] and summary["sent"] == len(sent) > 0
        good = [bytes.fromhex(r.statement_hash) for r in sent if r.fault is None]
        # every injected fault dead-lettered once with its own reason, nothing else
        assert summary["deadletters"] == summary["faults_injected"] and sum(summary["faults_injected"].values()) == 7
        assert summary["accepted"] + sum(summary["deadletters"].values()) == summary["sent"]
        with open_pool(dsn, max_size=1) as pool, pool.connection() as conn:
            accepted = conn.execute("SELECT count(*) FROM statements WHERE statement_hash = ANY(%s)",
                                    (good,)).fetchone()[0]
            rows = conn.execute("SELECT count(*) FROM readings WHERE statement_hash = ANY(%s)", (good,)).fetchone()[0]
            blobs = conn.execute("SELECT count(*) FROM blobs WHERE statement_hash = ANY(%s)", (good,)).fetchone()[0]
            batches = conn.execute(
                "SELECT b.batch_id, encode(b.root, 'hex'), b.tree_size, b.ledger_height, b.tx_index, count(*) "
                "FROM batch_leaves l JOIN batches b USING (batch_id) WHERE l.statement_hash = ANY(%s) "
                "AND b.anchor_state = 'anchored' GROUP BY 1, 2, 3, 4, 5", (good,)).fetchall()
        assert (summary["accepted"], summary["rows"], summary["blobs"]) == (accepted, rows, blobs)
        assert accepted == len(set(good)) and rows > 0 and blobs > 0
        assert summary["batches_anchored"] == len(batches) > 0
        assert summary["statements_anchored"] == sum(b[5] for b in batches) == accepted
        assert 0 <= summary["latency_p50_s"] <= summary["latency_p99_s"]
        with LocalCluster(home / "ledger").client() as c:
            for batch_id, root, size, height, index, _ in batches:
                doc = c.get_anchor(batch_id)
                assert (doc["root"], doc["tree_size"], doc["height"], doc["index"]) == (root, size, height, index)

        # the verification story: every batch of the run verified by the verifier agent, so every row is in
        # verified_readings; one blob and one batch bundle verified with the commands a user would type
        v = summary["verification"]
        genesis = LedgerLayout(home / "ledger").genesis().genesis_hash().hex()
        run_batches = sorted(b[0] for b in batches)
        with open_pool(dsn, max_size=1) as pool, pool.connection() as conn:
            verdicts = dict(conn.execute("SELECT batch_id, verdict FROM batch_verdicts WHERE batch_id = ANY(%s)",
                                         (run_batches,)).fetchall())
            verified_rows = conn.execute("SELECT count(*) FROM verified_readings WHERE statement_hash = ANY(%s)",
                                         (good,)).fetchone()[0]
            run_blobs = {r[0] for r in conn.execute("SELECT encode(sha256, 'hex') FROM blobs "
                                                    "WHERE statement_hash = ANY(%s)", (good,)).fetchall()}
        assert verdicts == {b: "verified" for b in run_batches}
        assert v["complete"] and v["ok"] and v["genesis_hash"] == genesis
        assert v["batches"] == {"verified": len(run_batches), "failed": 0, "pending": 0}
        assert v["rows"] == rows and v["verified_rows"] == verified_rows == rows > 0
        assert v["verified_share"] == 1.0
        blob = v["blob"]
        assert blob["verdict"] == "verified" and blob["subject"] in run_blobs
        assert blob["commands"] == [f"sealstream verify blob {blob['subject']}"]
        bundle = v["bundle"]
        path = Path(bundle["file"])
        assert bundle["verdict"] == "verified" and bundle["subject"] in run_batches and bundle["genesis_pinned"]
        assert path.is_file() and path.is_relative_to(home.resolve())
        assert bundle["commands"] == [
            shlex.join(["sealstream", "evidence", "export", "batch", bundle["subject"], "-o", str(path)]),
            shlex.join(["sealstream", "evidence", "verify", str(path), "--genesis-hash", genesis])]
        # the printed commands work as printed: the blob again, the offline check again (pinned), and the
        # same bundle against another genesis fails at `genesis` (the pin is what it is checked against)
        again = _again(blob["commands"][0], env)
        assert again.returncode == 0 and json.loads(again.stdout)["ok"], again.stderr[-2000:]
        again = _again(bundle["commands"][1], env)
        doc = json.loads(again.stdout)
        assert again.returncode == 0 and doc["ok"] and doc["genesis_pinned"], again.stderr[-2000:]
        assert doc["subject"]["batch_id"] == bundle["subject"]
        wrong = _again(bundle["commands"][1].replace(genesis, "00" * 32), env)
        assert wrong.returncode == 1 and json.loads(wrong.stdout)["failed_step"] == "genesis"
    finally:
        LocalCluster(home / "ledger").stop(timeout=5)  # the demo leaves the ledger running: this test's own
