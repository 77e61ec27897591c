"""`sealstream demo --duration 5 --json` against the real stack, with a private home (so a private
4-node ledger on free ports: `ledger up` puts it in $SEALSTREAM_HOME/ledger), checked against the
database, the ledger and the simulator's sent log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.cluster import LocalCluster
from pipelines.devices import read_sent_log
from storage.db import open_pool

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


def test_demo_summary_matches_the_database(stack, settings, tmp_path) -> None:
    home = tmp_path / "home"
    env = dict(os.environ, SEALSTREAM_HOME=str(home), SEALSTREAM_LEDGER_BASE_PORT="0",
               SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap)
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
        with open_pool(settings.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
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
    finally:
        LocalCluster(home / "ledger").stop(timeout=5)  # the demo leaves the ledger running: this test's own
