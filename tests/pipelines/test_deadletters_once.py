"""Dead letters exactly once per (consumer group, source position), on a private Kafka.

1. The gate alone (`pipelines.dlq.DeadLetterGate`, PostgreSQL + a private broker): positions recorded but
   not marked produced (a crash between the produce and the mark) are looked up in ``iiot.deadletter`` --
   one whose dead letter of this group is there is not produced again, one whose is not (or only another
   group's, or one older than the look-back) is produced; new positions are produced; marked ones never again.
2. The worker SIGKILLed at the test hook (``SEALSTREAM_DLQ_TEST_PAUSE``) with faults in flight: after the
   dead letters were acked and before they were marked (``acked``), then, in a second run, after the mark
   (``marked``); both before the source offsets were committed.  After a last restart in the same group
   every fault record is in ``iiot.deadletter`` exactly once for the group, with its reason and its
   original bytes, every ``dead_letters`` row is produced, and every good record stored exactly once.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import Producer

from devices_helpers import end_offsets, read_range, read_records
from pipelines.devices import FAULTS, Factory, FaultPlan, RunConfig, read_sent_log, run
from pipelines.dlq import IN_TOPIC, PRODUCE, RECORDED, DeadLetterGate, find_dead_letters
from pipelines.worker import RawRecord, _dead
from infra.private_stack import PrivateStack
from support.workers import WorkerProc, metric_total
from resilience_helpers import check_exactly_once, wait_stored
from storage import migrate
from storage.blobs import BlobStore
from storage.db import open_pool
from storage.deadletters import DeadLetterLog
from storage.records import KafkaPosition
from sealstream._kafka_config import KafkaEndpoint, kafka_endpoint

pytestmark = pytest.mark.services
DLQ = "iiot.deadletter"


@pytest.fixture(scope="module")
def private(stack, settings, tmp_path_factory):
    """A private Kafka (its dead-letter topic holds only this module's records); the shared PostgreSQL."""
    migrate(settings.postgres_dsn)  # no-op when `stack up` / `db migrate` already applied 0004
    with PrivateStack(tmp_path_factory.mktemp("dlq-private"), base=settings, kafka=True) as ps:
        yield ps.settings


def _produce_dead_letter(bootstrap: KafkaEndpoint, pos: KafkaPosition, group: str, timestamp_ms: int = 0) -> None:
    """A dead letter as the worker produces it (`_dead` headers + ``ss-dlq-group``)."""
    rec = RawRecord(pos.topic, pos.partition, pos.offset, b"dev", b"payload", [("ss-v", b"1")], 0)
    dl = _dead(rec, "bad-signature", "test")
    p = Producer(bootstrap.confluent())
    extra = {"timestamp": timestamp_ms} if timestamp_ms else {}
    p.produce(DLQ, key=dl.key, value=dl.value, headers=dl.headers + [("ss-dlq-group", group.encode())], **extra)
    assert p.flush(30) == 0


def test_gate_resolves_unmarked_rows_against_the_topic(private) -> None:
    s = private
    group = f"dlq-gate-{uuid.uuid4().hex[:8]}"
    pos = [KafkaPosition("iiot.images.raw", 0, 1000 + i) for i in range(6)]
    with open_pool(s.postgres_dsn, max_size=2) as pool:
        log = DeadLetterLog(pool)
        gate = DeadLetterGate(log, kafka_endpoint(s, "pipeline"), group, DLQ, lookback_s=5.0, timeout_s=30.0)
        # pos[0..3] recorded, never marked (the crash hit between record and mark)
        log.record(group, [(p, "bad-signature") for p in pos[:4]])
        # one partition (same key): an hour-old dead letter of pos[2] first, before the scanned range
        old = int((datetime.now(timezone.utc) - timedelta(hours=1)).timestamp() * 1000)
        _produce_dead_letter(kafka_endpoint(s, "admin"), pos[2], group, old)
        _produce_dead_letter(kafka_endpoint(s, "admin"), pos[0], group)  # it made it to the topic
        _produce_dead_letter(kafka_endpoint(s, "admin"), pos[1], "another-group")  # not ours
        # pos[3]: never produced; pos[4], pos[5]: new
        since = datetime.now(timezone.utc) - timedelta(minutes=1)
        assert find_dead_letters(kafka_endpoint(s, "pipeline"), DLQ, group, pos, since) == {pos[0]}
        earlier = since - timedelta(hours=2)
        assert find_dead_letters(kafka_endpoint(s, "pipeline"), DLQ, group, pos, earlier) == {pos[0], pos[2]}

        verdicts = gate.decide([(p, "bad-signature") for p in pos])
        assert verdicts == [IN_TOPIC, PRODUCE, PRODUCE, PRODUCE, PRODUCE, PRODUCE]
        rows = {r.position: r for r in log.rows(group)}
        assert set(rows) == set(pos) and [rows[p].produced for p in pos] == [True] + [False] * 5
        # the worker produces the PRODUCE ones, the broker acks, it marks them: never produced again
        assert gate.mark_produced(pos[1:]) == 5
        assert gate.decide([(p, "unknown-device") for p in pos]) == [RECORDED] * 6
        assert {r.reason for r in log.rows(group)} == {"bad-signature"}  # the first verdict is kept


def test_lookup_on_an_unreachable_broker_raises_for_a_retry() -> None:
    from infra.process import free_ports

    from pipelines.dlq import DeadLetterLookupError

    with pytest.raises(DeadLetterLookupError):
        find_dead_letters(f"127.0.0.1:{free_ports(1)[0]}", DLQ, "g", [KafkaPosition("t", 0, 1)],
                          datetime.now(timezone.utc), timeout_s=2.0)
    assert issubclass(DeadLetterLookupError, ConnectionError)  # retried by the worker like a store outage


def _dlq_of(records, group: str) -> dict:
    """``{source position: [dead letters of group]}``."""
    out: dict = {}
    for r in records:
        h = dict(r.headers)
        if h.get("ss-dlq-group") == group.encode():
            pos = (h["ss-dlq-topic"].decode(), int(h["ss-dlq-partition"]), int(h["ss-dlq-offset"]))
            out.setdefault(pos, []).append(r)
    return out


def _wait(cond, timeout: float, what: str, worker: WorkerProc) -> None:
    """Until `cond()`; a poll the worker's /metrics refuses (not listening yet, or between two
    starts) is "not yet", not a failure: the deadline and the worker's liveness decide."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except OSError:  # urllib's URLError included
            pass
        if not worker.alive() or time.monotonic() > deadline:
            raise AssertionError(f"{what} (alive: {worker.alive()}):\n{worker.tail()}")
        time.sleep(0.5)


def _faulty_run(s, name: str, seed: int) -> list:
    summary = run(s, RunConfig(name, devices=2, rate=3, duration=3, seed=seed,
                               faults=FaultPlan.parse([f"{f}:1" for f in FAULTS])))
    sent = list(read_sent_log(summary.sent_log, summary.run_id))
    assert all(r.error is None for r in sent) and {r.fault for r in sent if r.fault} == set(FAULTS)
    return sent


def test_worker_killed_at_the_dead_letter_pause_points(private, tmp_path: Path, monkeypatch) -> None:
    s = private
    name = f"dq-{uuid.uuid4().hex[:8]}"
    group = f"sealstream-pipeline-test-dq-{uuid.uuid4().hex[:8]}"
    Factory.ensure(s, name, 2)
    marker = tmp_path / "paused"
    dlq_start = end_offsets(s, [DLQ])
    monkeypatch.setenv("SEALSTREAM_DLQ_TEST_PAUSE_FILE", str(marker))
    workers: list[WorkerProc] = []
    try:
        # -- 1: killed after the broker acked a batch's dead letters, before they were marked produced
        monkeypatch.setenv("SEALSTREAM_DLQ_TEST_PAUSE", "acked")
        workers.append(WorkerProc.manifest(s, group, name, tmp_path / "w1.log"))
        sent = _faulty_run(s, name, seed=21)
        _wait(marker.exists, 90, "worker 1 never paused after producing dead letters", workers[-1])
        time.sleep(2)  # let the other agents reach their pause too
        in_flight = _dlq_of(read_range(s, dlq_start, end_offsets(s, [DLQ])), group)
        workers[-1].kill()
        with open_pool(s.postgres_dsn, max_size=1) as pool:
            unmarked = [r for r in DeadLetterLog(pool).rows(group) if not r.produced]
        assert in_flight and unmarked, (in_flight, unmarked)
        marker.unlink()

        # -- 2: restarted in the same group; killed after a new batch's dead letters were marked
        monkeypatch.setenv("SEALSTREAM_DLQ_TEST_PAUSE", "marked")
        workers.append(WorkerProc.manifest(s, group, name, tmp_path / "w2.log"))
        sent += _faulty_run(s, name, seed=22)
        _wait(marker.exists, 120, "worker 2 never paused after marking dead letters", workers[-1])
        time.sleep(2)
        w2 = workers[-1].metrics()
        workers[-1].kill()
        # worker 2 re-read worker 1's paused batches: their dead letters were found in the topic
        assert metric_total(w2, 'sealstream_pipeline_deadletters_repeated_total{found="in-topic"}') >= 1, w2

        # -- 3: restarted without the hook: everything processed, nothing dead-lettered twice
        monkeypatch.delenv("SEALSTREAM_DLQ_TEST_PAUSE")
        workers.append(WorkerProc.manifest(s, group, name, tmp_path / "w3.log"))
        faults = {(r.topic, r.partition, r.offset): r for r in sent if r.fault}
        good = [r for r in sent if r.fault is None]
        wait_stored(s, good, workers[-1:], timeout=180)

        def all_dead_lettered() -> bool:
            return set(faults) <= set(_dlq_of(read_range(s, dlq_start, end_offsets(s, [DLQ])), group))

        _wait(all_dead_lettered, 120, "not every fault dead-lettered", workers[-1])

        def caught_up() -> bool:  # every record of the run read and its offset committed by the group
            text = workers[-1].metrics()
            return "sealstream_pipeline_consumer_lag{" in text and \
                metric_total(text, "sealstream_pipeline_consumer_lag") == 0

        _wait(caught_up, 120, "the group did not commit every offset", workers[-1])
        # worker 3 re-read worker 2's paused (marked, uncommitted) batch: not produced again
        w3 = workers[-1].metrics()
        assert metric_total(w3, 'sealstream_pipeline_deadletters_repeated_total{found="recorded"}') >= 1, w3

        dlq = _dlq_of(read_range(s, dlq_start, end_offsets(s, [DLQ])), group)
        assert set(dlq) == set(faults)
        assert {p: len(v) for p, v in dlq.items() if len(v) != 1} == {}, "a fault dead-lettered twice"
        originals = read_records(s, list(faults))
        for p, (rec,) in dlq.items():
            orig = originals[p]
            assert dict(rec.headers)["ss-dlq-reason"].decode() == faults[p].fault, p
            assert (rec.key, rec.value) == (orig.key, orig.value)
            assert rec.headers[:len(orig.headers)] == orig.headers
        with open_pool(s.postgres_dsn, max_size=1) as pool:
            rows = DeadLetterLog(pool).rows(group)
        assert {(r.position.topic, r.position.partition, r.position.offset) for r in rows} == set(faults)
        assert all(r.produced for r in rows)
        assert {r.reason for r in rows} == set(FAULTS)
        zero = {tp: 0 for tp in end_offsets(s, ["iiot.sealed"])}
        check_exactly_once(s, good, zero, dlq_start, BlobStore.from_settings(s), lambda key: True)
        assert workers[-1].alive(), workers[-1].tail()
    finally:
        for w in workers:
            w.kill()
