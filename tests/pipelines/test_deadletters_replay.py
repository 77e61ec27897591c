"""`sealstream pipeline deadletters replay` on the shared Kafka and PostgreSQL: each original once.

1. Dead letters made as the worker records them (``dead_letters`` rows marked produced) for records of a
   test-only topic: ``--dry-run`` changes nothing; the replay puts each selected original back at its
   partition exactly once with identical key, value, headers and timestamp plus ``ss-replay-of``; a second
   run and a run for another group re-inject nothing; unmarked rows and other reasons are left alone.
2. The CLI SIGKILLed at its test hook (``SEALSTREAM_REPLAY_TEST_PAUSE``) after the intent was committed
   (``intent``), with its transaction open (``produced``) and after the commit (``committed``), then rerun:
   one copy per original in the log (read_uncommitted, as the workers read), every intent confirmed.
3. A real worker dead-letters a factory it does not know (``unknown-device``); restarted trusting that
   factory ("the cause fixed"), the replay makes it store every good record from its copy's position, and a
   record with a bad signature is dead-lettered again, now ``bad-signature``, with its ``ss-replay-of``.
Each test uses its own consumer group and passes ``--group`` (the database is the shared one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from devices_helpers import end_offsets, read_range
from pipelines.devices import Factory, FaultPlan, RunConfig, read_sent_log, run
from pipelines.replay import REPLAY_NONCE, REPLAY_OF, dead_letter_id
from support.workers import WorkerProc, metric_total
from resilience_helpers import ROOT, pin_offsets, wait_stored
from storage import migrate
from storage.db import open_pool
from storage.deadletters import DeadLetterLog, DeadLetterReplays
from storage.records import KafkaPosition
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services
DLQ = "iiot.deadletter"


@pytest.fixture(scope="module")
def s(stack, settings):
    migrate(settings.postgres_dsn)  # 0006 (dead_letter_replays), a no-op once `db migrate` applied it
    return settings


@pytest.fixture
def topic(s):
    """A fresh two-partition topic: what is in it is this test's alone."""
    name = f"ss-test-replay-{uuid.uuid4().hex[:10]}"
    admin = AdminClient(kafka_endpoint(s, "admin").confluent())
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(30)
    try:
        yield name
    finally:
        admin.delete_topics([name])[name].result(30)


def _cli(s, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sealstream", "pipeline", "deadletters", "replay", *args],
                          cwd=ROOT, env={**os.environ, **_env(s), **(env or {})}, capture_output=True, text=True,
                          timeout=180)


def _env(s) -> dict:
    return {"SEALSTREAM_HOME": str(s.home), "SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap,
            "SEALSTREAM_PG_DSN": s.postgres_dsn}


def _json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _originals(s, topic: str, n: int) -> list:
    """`n` records on `topic` (keys spread over both partitions), each with headers and an hour-old
    timestamp; their positions, in produce order."""
    p = Producer({**kafka_endpoint(s, "admin").confluent(), "enable.idempotence": True})
    got: dict[int, KafkaPosition] = {}
    ts = int(time.time() * 1000) - 3_600_000
    for i in range(n):
        def cb(err, msg, i=i):
            assert err is None, err
            got[i] = KafkaPosition(msg.topic(), msg.partition(), msg.offset())
        p.produce(topic, key=f"did:key:dev{i}".encode(), value=os.urandom(40) + bytes([i]),
                  headers=[("ss-v", b"1"), ("ss-seq", str(i).encode()), ("ss-empty", b"")],
                  partition=i % 2, timestamp=ts + i, on_delivery=cb)
    assert p.flush(30) == 0
    return [got[i] for i in range(n)]


def _dead_lettered(s, group: str, letters: list[tuple[KafkaPosition, str]], produced: bool = True) -> None:
    """Rows as the worker leaves them: recorded, then (once the broker acked the dead letter) marked."""
    with open_pool(s.postgres_dsn, max_size=1) as pool:
        log = DeadLetterLog(pool)
        assert all(r.new for r in log.record(group, letters))
        if produced:
            assert log.mark_produced(group, [p for p, _ in letters]) == len(letters)


def _read(s, start: dict, end: dict, committed: bool = False) -> list:
    """(partition, offset, key, value, headers, timestamp) of every record in [start, end)."""
    c = Consumer({**kafka_endpoint(s, "admin").confluent(), "group.id": f"test-{uuid.uuid4().hex}",
                  "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed else "read_uncommitted"})
    out, todo = [], {tp: hi for tp, hi in end.items() if start.get(tp, 0) < hi}
    try:
        if not todo:
            return out
        c.assign([TopicPartition(t, p, start.get((t, p), 0)) for (t, p) in todo])
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                assert m.error() is None, m.error()
                out.append((m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []), m.timestamp()[1]))
            for tp in c.position([TopicPartition(t, p) for (t, p) in todo]):
                if tp.offset >= todo[(tp.topic, tp.partition)]:
                    del todo[(tp.topic, tp.partition)]
        assert not todo, f"not read to the end: {todo}"
        return out
    finally:
        c.close()


def _hw(s, topic: str) -> dict:
    """Every partition's high watermark (read_uncommitted: past an open transaction, unlike the LSO)."""
    c = Consumer({**kafka_endpoint(s, "admin").confluent(), "group.id": f"test-{uuid.uuid4().hex}",
                  "isolation.level": "read_uncommitted"})
    try:
        parts = c.list_topics(topic, timeout=30).topics[topic].partitions
        return {(topic, p): c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1]
                for p in sorted(parts)}
    finally:
        c.close()


def _copies_of(records: list) -> dict:
    """``{dead letter id: [records carrying ss-replay-of that id]}``."""
    out: dict = {}
    for r in records:
        h = dict(r[4])
        if REPLAY_OF in h:
            out.setdefault(h[REPLAY_OF].decode(), []).append(r)
    return out


def _by_position(s, topic: str, positions: list[KafkaPosition]) -> dict:
    everything = _read(s, {}, _hw(s, topic))
    return {KafkaPosition(topic, r[0], r[1]): r for r in everything
            if KafkaPosition(topic, r[0], r[1]) in set(positions)}


def _replays(s) -> tuple[dict, dict]:
    with open_pool(s.postgres_dsn, max_size=2) as pool:
        r = DeadLetterReplays(pool)
        return {i.position: i for i in r.replayed()}, {i.position: i for i in r.pending()}


def test_replay_once_dry_run_groups_and_json(s, topic) -> None:
    group, other = f"test-replay-{uuid.uuid4().hex[:8]}", f"test-replay-other-{uuid.uuid4().hex[:8]}"
    pos = _originals(s, topic, 6)
    originals = _by_position(s, topic, pos)
    # pos[0..3] unknown-device (produced); pos[4] bad-signature; pos[5] unknown-device but never marked
    _dead_lettered(s, group, [(p, "unknown-device") for p in pos[:4]] + [(pos[4], "bad-signature")])
    _dead_lettered(s, group, [(pos[5], "unknown-device")], produced=False)
    _dead_lettered(s, other, [(pos[0], "unknown-device")])  # another group rejected pos[0] too
    before = _hw(s, topic)

    dry = _json(_cli(s, "--reason", "unknown-device", "--group", group, "--dry-run", "--json"))
    assert dry == {"reason": "unknown-device", "group": group, "dry_run": True, "matched": 4,
                   "already_replayed": 0, "unmarked": 1, "would_replay": 4, "pending": 0}
    assert _hw(s, topic) == before  # nothing produced
    done, pending = _replays(s)
    assert not set(pos) & (set(done) | set(pending))  # nothing recorded
    text = _cli(s, "--reason", "unknown-device", "--group", group, "--dry-run")
    assert text.returncode == 0 and "would replay 4 dead letter(s) with reason unknown-device" in text.stdout

    first = _json(_cli(s, "--reason", "unknown-device", "--group", group, "--json"))
    ids = [dead_letter_id(p) for p in pos[:4]]
    assert {k: v for k, v in first.items() if k != "copies"} == {
        "reason": "unknown-device", "group": group, "dry_run": False, "matched": 4, "already_replayed": 0,
        "unmarked": 1, "replayed": 4, "recovered": 0, "forgotten": 0, "missing": []}
    assert sorted(c["id"] for c in first["copies"]) == sorted(ids)
    after = _hw(s, topic)
    new = _read(s, before, after)
    copies = _copies_of(new)
    assert len(new) == 4 and sorted(copies) == sorted(ids)
    done, _ = _replays(s)
    for p in pos[:4]:
        (c,) = copies[dead_letter_id(p)]
        o = originals[p]
        assert (c[0], c[2], c[3], c[5]) == (p.partition, o[2], o[3], o[5])  # partition, key, value, timestamp
        assert c[4][:-2] == o[4] and c[4][-2][0] == REPLAY_OF and c[4][-1][0] == REPLAY_NONCE
        assert done[p].copy_offset == c[1] and done[p].group == group and done[p].reason == "unknown-device"
        assert {"id": dead_letter_id(p), "topic": topic, "partition": p.partition, "offset": c[1]} in first["copies"]

    # a second run, and a run for the other group (its position was replayed already): nothing injected
    again = _json(_cli(s, "--reason", "unknown-device", "--group", group, "--json"))
    assert (again["replayed"], again["already_replayed"], again["copies"]) == (0, 4, [])
    theirs = _json(_cli(s, "--reason", "unknown-device", "--group", other, "--json"))
    assert (theirs["matched"], theirs["replayed"], theirs["already_replayed"]) == (1, 0, 1)
    text = _cli(s, "--reason", "unknown-device", "--group", group)
    assert text.returncode == 0 and "replayed 0 dead letter(s)" in text.stdout and "4 already replayed" in text.stdout
    assert _json(_cli(s, "--reason", "unknown-device", "--group", group, "--dry-run", "--json"))["would_replay"] == 0
    assert _hw(s, topic) == after
    # the other reason is still there to replay, once
    bad = _json(_cli(s, "--reason", "bad-signature", "--group", group, "--json"))
    assert bad["replayed"] == 1 and [c["id"] for c in bad["copies"]] == [dead_letter_id(pos[4])]
    assert len(_copies_of(_read(s, {}, _hw(s, topic)))) == 5


def test_unknown_reason_and_missing_original(s, topic) -> None:
    refused = _cli(s, "--reason", "unknown-devices", "--json")
    assert refused.returncode == 2
    err = json.loads(refused.stdout)
    assert err["error"] == "unknown-reason" and "unknown-device" in err["known"] and "bad-signature" in err["known"]
    assert "use one of" in err["message"] and "unknown-device" in refused.stderr
    assert _cli(s, "--reason", "nope").returncode == 2
    # a dead letter whose source record is gone (an offset past the end stands for one deleted by retention)
    group = f"test-replay-gone-{uuid.uuid4().hex[:8]}"
    (p,) = _originals(s, topic, 1)
    gone = KafkaPosition(topic, p.partition, p.offset + 1000)
    _dead_lettered(s, group, [(p, "clock-skew"), (gone, "clock-skew")])
    res = _json(_cli(s, "--reason", "clock-skew", "--group", group, "--json"))
    assert (res["replayed"], res["missing"]) == (1, [dead_letter_id(gone)])
    assert len(_copies_of(_read(s, {}, _hw(s, topic)))) == 1


@pytest.mark.parametrize("stage", ["intent", "produced", "committed"])
def test_replay_killed_before_the_mark_then_rerun(s, topic, tmp_path: Path, stage: str) -> None:
    group = f"test-replay-kill-{uuid.uuid4().hex[:8]}"
    pos = _originals(s, topic, 5)
    _dead_lettered(s, group, [(p, "revoked-device") for p in pos])
    ids = sorted(dead_letter_id(p) for p in pos)
    before = _hw(s, topic)
    marker = tmp_path / "paused"
    env = {**os.environ, **_env(s), "SEALSTREAM_REPLAY_TEST_PAUSE": stage,
           "SEALSTREAM_REPLAY_TEST_PAUSE_FILE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "sealstream", "pipeline", "deadletters", "replay", "--reason",
                             "revoked-device", "--group", group, "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the replay never reached its test hook"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done, pending = _replays(s)
    assert set(pos) <= set(pending) and not set(pos) & set(done)  # every intent unconfirmed
    in_log = _copies_of(_read(s, before, _hw(s, topic)))
    assert sorted(in_log) == ([] if stage == "intent" else ids)
    assert _json(_cli(s, "--reason", "revoked-device", "--group", group, "--dry-run", "--json"))["pending"] == 5

    res = _json(_cli(s, "--reason", "revoked-device", "--group", group, "--json"))
    if stage == "intent":  # nothing reached Kafka: forgotten, then replayed
        assert (res["forgotten"], res["recovered"], res["replayed"]) == (5, 0, 5)
    else:  # the copies are in the log: confirmed, not produced again
        assert (res["recovered"], res["forgotten"], res["replayed"]) == (5, 0, 0)
    records = _read(s, before, _hw(s, topic))
    copies = _copies_of(records)
    assert len(records) == 5 and sorted(copies) == ids and all(len(v) == 1 for v in copies.values())
    committed = _copies_of(_read(s, before, _hw(s, topic), committed=True))
    # killed with its transaction open: aborted by the rerun's fencing, so read_committed sees none
    assert sorted(committed) == ([] if stage == "produced" else ids)
    done, pending = _replays(s)
    assert set(pos) <= set(done) and not set(pos) & set(pending)
    for p in pos:
        assert done[p].copy_offset == copies[dead_letter_id(p)][0][1]
    assert _json(_cli(s, "--reason", "revoked-device", "--group", group, "--json"))["replayed"] == 0


def _worker(s, app_id: str, factories: list[str], log: Path) -> WorkerProc:
    """A worker trusting several factories, without anchoring."""
    return WorkerProc.manifest(s, app_id, factories, log, "gw-replay", args=("--no-anchor",))


def _rows(s, group: str) -> dict:
    with open_pool(s.postgres_dsn, max_size=1) as pool:
        return {r.position: r for r in DeadLetterLog(pool).rows(group)}


def _until(cond, timeout: float, what: str, worker: WorkerProc) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if not worker.alive() or time.monotonic() > deadline:
            raise AssertionError(f"{what} (alive: {worker.alive()}):\n{worker.tail()}")
        time.sleep(0.5)


def test_worker_stores_the_copies_once_fixed_and_dead_letters_a_bad_one_again(s, tmp_path: Path) -> None:
    known, unknown = f"rp-known-{uuid.uuid4().hex[:6]}", f"rp-new-{uuid.uuid4().hex[:6]}"
    group = f"sealstream-pipeline-test-rp-{uuid.uuid4().hex[:8]}"
    Factory.ensure(s, known, 1, ("timeseries",))
    Factory.ensure(s, unknown, 1, ("timeseries",))
    raw = ["iiot.timeseries.raw", "iiot.images.raw", "iiot.video.raw"]
    pin_offsets(s, group, end_offsets(s, raw))  # the new group starts at the end of the raw topics
    worker = _worker(s, group, [known], tmp_path / "w1.log")
    try:
        summary = run(s, RunConfig(unknown, devices=1, count=4, rate=0, kinds=("timeseries",), seed=32,
                                   faults=FaultPlan.parse(["bad-signature:1"])))
        sent = list(read_sent_log(summary.sent_log, summary.run_id))
        assert len(sent) == 4 and all(r.error is None for r in sent) and sum(1 for r in sent if r.fault) == 1
        where = {KafkaPosition(r.topic, r.partition, r.offset): r for r in sent}
        _until(lambda: set(where) <= {p for p, r in _rows(s, group).items() if r.produced}, 90,
               "the unknown factory's records were not dead-lettered", worker)
        assert {_rows(s, group)[p].reason for p in where} == {"unknown-device"}
        # every offset committed first: a re-read original would now be stored from its own position
        _until(lambda: "sealstream_pipeline_consumer_lag{" in (m := _metrics(worker))
               and metric_total(m, "sealstream_pipeline_consumer_lag") == 0, 90, "worker 1 did not commit", worker)
        worker.stop()

        # the cause fixed: the worker now trusts the factory; then the replay
        worker = _worker(s, group, [known, unknown], tmp_path / "w2.log")
        dlq_start = end_offsets(s, [DLQ])
        res = _json(_cli(s, "--reason", "unknown-device", "--group", group, "--json"))
        # (on the shared broker the group also dead-letters other tests' records meanwhile: replayed too)
        assert set(map(dead_letter_id, where)) <= {c["id"] for c in res["copies"]}
        assert res["replayed"] == len(res["copies"]) == res["matched"]
        copy_of = {KafkaPosition(c["topic"], c["partition"], c["offset"]): c["id"] for c in res["copies"]}
        good = [r for r in sent if r.fault is None]
        wait_stored(s, good, [worker], timeout=120)
        with open_pool(s.postgres_dsn, max_size=1) as pool, pool.connection() as conn:
            stored = conn.execute("SELECT encode(statement_hash, 'hex'), kafka_topic, kafka_partition, kafka_offset "
                                  "FROM statements WHERE device = %s", (good[0].device,)).fetchall()
        assert sorted(h for h, *_ in stored) == sorted(r.statement_hash for r in good)  # each once
        for h, t, p, o in stored:  # stored from its copy, which names the original
            orig = next(r for r in good if r.statement_hash == h)
            assert copy_of[KafkaPosition(t, p, o)] == dead_letter_id(KafkaPosition(orig.topic, orig.partition,
                                                                                   orig.offset))
        (bad,) = [r for r in sent if r.fault]
        bad_id = dead_letter_id(KafkaPosition(bad.topic, bad.partition, bad.offset))
        (bad_copy,) = [p for p, i in copy_of.items() if i == bad_id]
        _until(lambda: bad_copy in _rows(s, group) and _rows(s, group)[bad_copy].produced, 90,
               "the bad copy was not dead-lettered again", worker)
        assert _rows(s, group)[bad_copy].reason == "bad-signature"
        ours = {dead_letter_id(p).encode() for p in where}
        again = [r for r in read_range(s, dlq_start, end_offsets(s, [DLQ]))
                 if dict(r.headers).get("ss-dlq-group") == group.encode() and dict(r.headers).get(REPLAY_OF) in ours]
        assert len(again) == 1  # the good copies were stored, not dead-lettered
        h = dict(again[0].headers)
        assert h["ss-dlq-reason"] == b"bad-signature" and h[REPLAY_OF] == bad_id.encode()
        assert ((h["ss-dlq-topic"].decode(), int(h["ss-dlq-partition"]), int(h["ss-dlq-offset"]))
                == (bad_copy.topic, bad_copy.partition, bad_copy.offset))
        assert worker.alive(), worker.tail()
    finally:
        worker.kill()


def _metrics(worker: WorkerProc) -> str:
    try:
        return worker.metrics()
    except OSError:
        return ""
