"""The simulator against the real Kafka: what lands in the topics verifies, matches the sent-log,
and every injected fault fails exactly the ingest check it names."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from devices_helpers import end_offsets, ingest_checks, positions, read_range, read_records, statement_of
from pipelines.devices import FAULTS, Factory, FaultPlan, RunConfig, read_sent_log, run
from pipelines.devices.kinds import KIND_INFO
from pipelines.devices.timeseries import SCHEMA, read_timeseries
from pipelines.devices.video import decode_video
from sealstream.cli import cli
from trust.statement import verify_statement

pytestmark = pytest.mark.services
RAW = [k.topic for k in KIND_INFO.values()]
#: The ingest check each fault must fail (and no other).
EXPECTED = {"bad-signature": {"signature"}, "unknown-device": {"registered"}, "replay": {"seq"},
            "corrupted-payload": {"hash"}, "oversized": {"size"}, "clock-skew": {"clock"},
            "malformed-headers": {"headers"}}
assert set(EXPECTED) == set(FAULTS)


@pytest.fixture(scope="module")
def good_run(dev_settings):
    """Three devices of each kind, 45 messages, no faults; Kafka watermarks around the run."""
    before = end_offsets(dev_settings, RAW)
    summary = run(dev_settings, RunConfig("plant-a", devices=3, rate=0, count=45, seed=7))
    after = end_offsets(dev_settings, RAW)
    sent = list(read_sent_log(summary.sent_log, summary.run_id))
    return summary, sent, before, after


def test_run_summary(good_run) -> None:
    summary, sent, _, _ = good_run
    assert summary.messages == summary.delivered == len(sent) == 45
    assert summary.errors == 0 and summary.faults == {}
    assert summary.by_kind == {"timeseries": 15, "image": 15, "video": 15}
    assert all(r.error is None and r.fault is None for r in sent)


def test_records_verify_against_the_manifest(good_run, dev_settings) -> None:
    summary, sent, _, _ = good_run
    factory = Factory.load(dev_settings, "plant-a")
    keys = {d.did: d.keypair.public_key for d in factory.devices}
    records = read_records(dev_settings, positions(sent))
    assert len(records) == len(sent)
    last_seq: dict[str, int] = {}
    for r in sorted(sent, key=lambda r: (r.topic, r.partition, r.offset)):
        rec = records[(r.topic, r.partition, r.offset)]
        stmt = statement_of(rec)
        sig = dict(rec.headers)["ss-sig"]
        assert rec.key == stmt.device.encode() and stmt.device in keys
        assert verify_statement(stmt, bytes.fromhex(sig.decode()), keys[stmt.device])
        assert stmt.matches_payload(rec.value)
        assert stmt.hash().hex() == r.statement_hash and stmt.seq == r.seq
        assert rec.topic == KIND_INFO[stmt.kind].topic
        assert stmt.seq > last_seq.get(stmt.device, -1)  # strictly increasing per device, in partition order
        last_seq[stmt.device] = stmt.seq
        if stmt.kind == "timeseries":
            assert read_timeseries(rec.value).schema == SCHEMA
        elif stmt.kind == "image":
            Image.open(io.BytesIO(rec.value)).load()
        else:
            assert len(decode_video(rec.value)) == 20
    assert len(last_seq) == 9


def test_sent_log_matches_kafka(good_run, dev_settings) -> None:
    """Every record of the run's devices in Kafka is in the sent-log, at the logged offset, once."""
    _, sent, before, after = good_run
    dids = {d.did.encode() for d in Factory.load(dev_settings, "plant-a").devices}
    ours = [r for r in read_range(dev_settings, before, after) if r.key in dids]
    assert sorted((r.topic, r.partition, r.offset) for r in ours) == sorted(positions(sent))
    assert len(set(positions(sent))) == len(sent)
    by_pos = {(r.topic, r.partition, r.offset): r.statement_hash for r in sent}
    for rec in ours:
        assert statement_of(rec).hash().hex() == by_pos[(rec.topic, rec.partition, rec.offset)]


def test_restart_continues_seq(good_run, dev_settings) -> None:
    _, sent, _, _ = good_run
    last = {}
    for r in sent:
        last[r.device] = max(last.get(r.device, -1), r.seq)
    again = run(dev_settings, RunConfig("plant-a", devices=3, rate=0, count=9, seed=7))
    first = {}
    for r in read_sent_log(again.sent_log, again.run_id):
        first.setdefault(r.device, r.seq)
    assert set(first) == set(last)
    assert all(first[d] == last[d] + 1 for d in first)  # clean stop: no gap, no reuse


def test_each_fault_fails_exactly_its_check(dev_settings) -> None:
    plan = FaultPlan.parse([f"{name}:1" for name in FAULTS])
    summary = run(dev_settings, RunConfig("plant-f", devices=1, rate=0, count=24, seed=3, faults=plan))
    assert summary.errors == 0, summary.first_error
    assert summary.faults == {name: 1 for name in FAULTS}
    sent = list(read_sent_log(summary.sent_log, summary.run_id))
    records = read_records(dev_settings, positions(sent))
    factory = Factory.load(dev_settings, "plant-f")
    seen: dict[str, int] = {}
    outcome = {}
    for r in sorted(sent, key=lambda r: (r.topic, r.partition, r.offset)):
        failed = ingest_checks(records[(r.topic, r.partition, r.offset)], factory, dev_settings, seen)
        if r.fault is None:
            assert failed == set(), (r, failed)
        else:
            outcome[r.fault] = failed
    assert outcome == EXPECTED
    replay = next(r for r in sent if r.fault == "replay")
    assert any(o.fault is None and (o.device, o.seq, o.statement_hash) == (replay.device, replay.seq,
               replay.statement_hash) for o in sent)


def test_cli_run_and_list(dev_settings, monkeypatch) -> None:
    monkeypatch.setenv("SEALSTREAM_HOME", str(dev_settings.home))
    monkeypatch.setenv("SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS", dev_settings.kafka_bootstrap)
    runner = CliRunner()
    res = runner.invoke(cli, ["devices", "run", "--factory", "plant-cli", "--devices", "1", "--rate", "20",
                              "--duration", "5", "--count", "6", "--kinds", "timeseries,image",
                              "--fault", "bad-signature:1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["messages"] == summary["delivered"] == 6 and summary["faults"] == {"bad-signature": 1}
    assert summary["by_kind"] == {"timeseries": 3, "image": 3}
    res = runner.invoke(cli, ["devices", "list", "--factory", "plant-cli", "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)["devices"]
    assert [(d["name"], d["kind"], d["next_seq"]) for d in listed] == [("ts-000", "timeseries", 3),
                                                                       ("cam-000", "image", 3)]
    res = runner.invoke(cli, ["devices", "list", "--factory", "nowhere"])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = runner.invoke(cli, ["devices", "run", "--factory", "plant-cli", "--fault", "nope:1", "--count", "1"])
    assert res.exit_code == 1 and "unknown fault" in res.output


def test_kafka_python_fallback_produces_the_same_records(dev_settings) -> None:
    summary = run(dev_settings, RunConfig("plant-kp", devices=1, rate=0, count=6, seed=1, client="kafka-python"))
    assert summary.client == "kafka-python" and summary.delivered == 6 and summary.errors == 0
    sent = list(read_sent_log(summary.sent_log, summary.run_id))
    records = read_records(dev_settings, positions(sent))
    for r in sent:
        rec = records[(r.topic, r.partition, r.offset)]
        assert statement_of(rec).hash().hex() == r.statement_hash and statement_of(rec).matches_payload(rec.value)


def test_one_simulator_per_factory(dev_settings) -> None:
    from pipelines.devices import FactoryError
    from pipelines.devices.simulator import _FactoryLock

    factory = Factory.ensure(dev_settings, "plant-lock", 1)
    held = _FactoryLock(factory.path / ".lock")
    try:
        with pytest.raises(FactoryError, match="another simulator"):
            run(dev_settings, RunConfig("plant-lock", devices=1, rate=0, count=1))
    finally:
        held.release()
    assert run(dev_settings, RunConfig("plant-lock", devices=1, rate=0, count=1)).delivered == 1
