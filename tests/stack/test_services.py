"""The stack's real services answer the clients the project uses."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from infra import Stack
from sealstream.settings import TOPICS, Settings
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services

TOPIC = "iiot.alerts"


def _end_offset(settings: Settings, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_endpoint(settings, "admin").kafka_python())
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def test_kafka_python_produce_and_consume(stack: Stack, settings: Settings) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    start = _end_offset(settings, TOPIC)
    marker = uuid.uuid4().bytes
    producer = KafkaProducer(**kafka_endpoint(settings, "admin").kafka_python(), acks="all")
    meta = producer.send(TOPIC, key=b"test-device", value=marker, headers=[("sig", b"\x01\x02")],
                         partition=0).get(timeout=30)
    producer.close()
    assert meta.offset >= start

    consumer = KafkaConsumer(**kafka_endpoint(settings, "admin").kafka_python(), enable_auto_commit=False,
                             consumer_timeout_ms=15_000)
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek(tp, meta.offset)
    record = next(iter(consumer))
    consumer.close()
    assert (record.key, record.value, record.headers) == (b"test-device", marker, [("sig", b"\x01\x02")])


def test_aiokafka_produce_and_consume(stack: Stack, settings: Settings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def roundtrip() -> tuple[bytes, bytes]:
        marker = uuid.uuid4().bytes
        producer = AIOKafkaProducer(**kafka_endpoint(settings, "admin").kafka_python(), acks="all")
        await producer.start()
        try:
            meta = await producer.send_and_wait(TOPIC, marker, key=b"aio-device", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**kafka_endpoint(settings, "admin").kafka_python(), enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(TOPIC, 0)
            consumer.assign([tp])
            consumer.seek(tp, meta.offset)
            msg = await asyncio.wait_for(consumer.getone(), timeout=15)
        finally:
            await consumer.stop()
        return marker, msg.value

    sent, received = asyncio.run(roundtrip())
    assert received == sent


def test_topics_exist_with_settings(stack: Stack, settings: Settings) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(**kafka_endpoint(settings, "admin").kafka_python())
    try:
        described = {t["name"]: t for t in admin.describe_topics(list(TOPICS))}
        assert set(described) == set(TOPICS)
        for topic in TOPICS:
            assert len(described[topic]["partitions"]) == settings.topic_partitions(topic), topic
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "iiot.video.raw")])
        entry = configs["topic"]["iiot.video.raw"]["max.message.bytes"]
        assert int(entry["value"]) == settings.kafka_video_max_message_bytes
        dead = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "iiot.deadletter")])
        assert int(dead["topic"]["iiot.deadletter"]["max.message.bytes"]["value"]) == \
            settings.kafka_video_max_message_bytes
        assert settings.kafka_video_max_message_bytes > settings.kafka_max_message_bytes
        # auto-create is off: producing to an unknown topic must not create it
        assert "no.such.topic" not in admin.list_topics()
    finally:
        admin.close()


def test_minio_put_stat_get(stack: Stack, settings: Settings) -> None:
    client = stack.minio.client()
    key = f"tests/{uuid.uuid4().hex}"
    body = b"x" * 300_000 + uuid.uuid4().bytes
    client.put_object(settings.minio_bucket, key, io.BytesIO(body), len(body),
                      metadata={"sha256": "test"}, content_type="application/octet-stream")
    try:
        stat = client.stat_object(settings.minio_bucket, key)
        assert stat.size == len(body)
        assert stat.metadata.get("x-amz-meta-sha256") == "test"
        resp = client.get_object(settings.minio_bucket, key)
        try:
            assert resp.read() == body
        finally:
            resp.close()
            resp.release_conn()
    finally:
        client.remove_object(settings.minio_bucket, key)


def test_postgres_copy_100k_rows(stack: Stack, settings: Settings) -> None:
    import psycopg

    table = f"copy_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (ts timestamptz, device text, sensor text, value double precision)")
        try:
            with conn.cursor() as cur, cur.copy(f"COPY {table} (ts, device, sensor, value) FROM STDIN") as copy:
                for i in range(100_000):
                    copy.write_row(("2026-01-01T00:00:00Z", f"dev-{i % 10}", "temperature", i * 0.5))
            count, total = conn.execute(f"SELECT count(*), sum(value) FROM {table}").fetchone()
            assert count == 100_000
            assert total == pytest.approx(sum(i * 0.5 for i in range(100_000)))
        finally:
            conn.execute(f"DROP TABLE {table}")


def test_prometheus_targets_up(stack: Stack, settings: Settings) -> None:
    wanted = {"prometheus", "kafka", "minio"}
    deadline = time.monotonic() + 60
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{settings.prometheus_base_url}/api/v1/targets", timeout=5) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if all(health.get(job) == "up" for job in wanted):
            break
        time.sleep(1)
    assert {job: health.get(job) for job in wanted} == {job: "up" for job in wanted}


def test_status_json_reports_every_service(stack: Stack) -> None:
    proc = subprocess.run([sys.executable, "-m", "sealstream", "stack", "status", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {r["name"]: r for r in data["services"]}
    assert set(rows) == {"postgres", "minio", "kafka", "prometheus"}
    assert all(r["state"] == "running" and r["pid"] for r in rows.values())
    assert "PostgreSQL" in rows["postgres"]["detail"] or "timescaledb" in rows["postgres"]["detail"]
    assert rows["kafka"]["version"].startswith("4.")


def test_second_up_starts_nothing(stack: Stack) -> None:
    pids = {r.name: r.pid for r in stack.status()}
    rows = stack.up()
    assert {r.name: r.pid for r in rows} == pids
    recorded = json.loads((stack.home / "stack.json").read_text())
    assert recorded["started"] == []


def test_stack_up_migrates_and_db_commands_report_it(stack: Stack, settings: Settings) -> None:
    import psycopg

    up = subprocess.run([sys.executable, "-m", "sealstream", "stack", "up", "--json"],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    postgres = next(r for r in json.loads(up.stdout)["services"] if r["name"] == "postgres")
    proc = subprocess.run([sys.executable, "-m", "sealstream", "db", "status", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["pending"] == [] and status["version"] == status["latest"] >= 2
    expected = "timescaledb" if postgres["detail"].startswith("timescaledb") else "partitioned"
    assert status["flavour"] == expected
    assert f"schema v{status['version']}/{status['latest']} ({expected})" in postgres["detail"]
    with psycopg.connect(settings.postgres_dsn) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"readings", "statements", "blobs", "batches", "batch_leaves"} <= names
    again = subprocess.run([sys.executable, "-m", "sealstream", "db", "migrate", "--json"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and json.loads(again.stdout)["applied"] == []


def test_logs_prints_the_end_of_a_service_log(stack: Stack) -> None:
    proc = subprocess.run([sys.executable, "-m", "sealstream", "stack", "logs", "kafka", "-n", "5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert 0 < len(lines) <= 5
    assert set(lines) <= set(stack.kafka.tail_log(500))  # the broker may log more meanwhile
    unknown = subprocess.run([sys.executable, "-m", "sealstream", "stack", "logs", "grafana"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "postgres" in unknown.stderr  # click names the valid choices


def test_top_level_status_shows_services_and_ledger(stack: Stack) -> None:
    proc = subprocess.run([sys.executable, "-m", "sealstream", "status", "--json"],
                          capture_output=True, text=True, timeout=120)
    data = json.loads(proc.stdout)
    assert [r["name"] for r in data["services"]] == ["postgres", "minio", "kafka", "prometheus"]
    assert all(r["state"] == "running" for r in data["services"])
    assert "schema v" in data["services"][0]["detail"]
    assert isinstance(data["ledger"], list)
    all_running = all(n["state"] == "running" for n in data["ledger"])
    assert proc.returncode == (0 if all_running else 3)
