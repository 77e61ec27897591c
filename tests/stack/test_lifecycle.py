"""`stack up`/`down` on a second, private stack: clear failures, and data that survives a restart.

Each test here uses its own state directory and free ports, so the shared stack
the other tests use is never disturbed (and is checked to be untouched).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import Stack
from sealstream.settings import Settings
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services

PORT_SETTINGS = (
    "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_METRICS_PORT", "MINIO_PORT",
    "MINIO_CONSOLE_PORT", "PG_PORT", "PROMETHEUS_PORT",
)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def private_env(stack: Stack) -> Iterator[dict[str, str]]:
    """Environment for a second stack: own home (inside the shared one) and free ports."""
    home = stack.home / "test-stacks" / uuid.uuid4().hex[:8]
    home.mkdir(parents=True)
    # its own everything (home, CA, secrets, ports); only the security mode is the run's
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SEALSTREAM_") or k in ("SEALSTREAM_SECURITY", "SEALSTREAM_KAFKA_SECURITY")}
    env["SEALSTREAM_HOME"] = str(home)
    env["SEALSTREAM_CACHE_DIR"] = str(stack.settings.cache_dir)
    env["SEALSTREAM_KAFKA_HEAP"] = "512m"
    for name, port in zip(PORT_SETTINGS, _free_ports(len(PORT_SETTINGS))):
        env[f"SEALSTREAM_{name}"] = str(port)
    yield env
    _sealstream(env, "stack", "down")
    shutil.rmtree(home, ignore_errors=True)


def _sealstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sealstream", *args], env=env, capture_output=True,
                          text=True, timeout=900)


def _settings(env: dict[str, str]) -> Settings:
    """The private stack's settings as its own processes see them: this process's environment
    (tests/conftest.py points SEALSTREAM_STACK_HOME at the shared stack) does not leak in."""
    home = env["SEALSTREAM_HOME"]
    given = {k[len("SEALSTREAM_"):].lower(): v for k, v in env.items() if k.startswith("SEALSTREAM_")}
    return Settings(**{"stack_home": home, **given})


def _nothing_started(env: dict[str, str]) -> None:
    status = json.loads(_sealstream(env, "stack", "status", "--json").stdout)
    assert [r["state"] for r in status["services"]] == ["stopped"] * 4


def test_up_when_a_port_is_taken_names_port_and_fix(private_env: dict[str, str], stack: Stack) -> None:
    port = int(private_env["SEALSTREAM_KAFKA_PORT"])
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        proc = _sealstream(private_env, "stack", "up", "--json")
    finally:
        squatter.close()
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["error"] == "port-in-use" and error["service"] == "kafka"
    message = " ".join(proc.stderr.split())
    assert f"Port {port} on 127.0.0.1, needed by kafka, is already in use by pid {os.getpid()}" in message
    assert "SEALSTREAM_KAFKA_PORT" in message
    _nothing_started(private_env)
    assert stack.healthy()


def _path_without(where: Path, *tools: str) -> str:
    """A PATH of one folder in ``where`` linking every program on PATH except ``tools``."""
    keep = where / "bin"
    keep.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        d = Path(directory)
        if not d.is_dir():
            continue
        for entry in d.iterdir():
            target = keep / entry.name
            if entry.name not in tools and not target.exists():
                target.symlink_to(entry)
    return str(keep)


def test_up_without_go_names_the_fix(private_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(private_env, SEALSTREAM_CACHE_DIR=str(tmp_path / "empty-cache"),
               PATH=_path_without(tmp_path, "go"))
    proc = _sealstream(env, "stack", "up")
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert "minio needs `go`, which is not on PATH; install Go 1.24 or newer" in message
    _nothing_started(private_env)


def test_up_without_java_names_the_fix(private_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(private_env, PATH=_path_without(tmp_path, "java"), SEALSTREAM_AUTO_INSTALL="0")
    proc = _sealstream(env, "stack", "up")
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert "kafka needs `java`, which is not on PATH; install OpenJDK 17 or newer" in message
    _nothing_started(private_env)


def test_up_when_the_minio_download_fails(private_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(private_env, SEALSTREAM_CACHE_DIR=str(tmp_path / "empty-cache"),
               GOPROXY="off", GOMODCACHE=str(tmp_path / "empty-modcache"), GOFLAGS="-modcacherw")
    proc = _sealstream(env, "stack", "up", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"] == "download-failed"
    message = " ".join(proc.stderr.split())
    assert "Building MinIO (github.com/minio/minio@" in message
    assert "check access to the Go module proxy (GOPROXY)" in message
    _nothing_started(private_env)


def test_down_then_up_keeps_data_and_only_stops_its_own(private_env: dict[str, str], stack: Stack) -> None:
    first = _sealstream(private_env, "stack", "up", "--json")
    assert first.returncode == 0, first.stderr
    private = Stack(_settings(private_env))
    assert private.home != stack.home
    s = private.settings

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    import psycopg

    marker = uuid.uuid4().hex
    producer = KafkaProducer(**kafka_endpoint(s, "admin").kafka_python(), acks="all")
    sent = producer.send("iiot.sealed", key=b"k", value=marker.encode(), partition=0).get(timeout=30)
    producer.close()
    private.minio.client().put_object(s.minio_bucket, f"raw/{marker}", io.BytesIO(marker.encode()), len(marker))
    with psycopg.connect(s.postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (marker text)")
        conn.execute("INSERT INTO kept VALUES (%s)", (marker,))

    down = _sealstream(private_env, "stack", "down", "--json")
    assert down.returncode == 0, down.stderr
    assert sorted(json.loads(down.stdout)["stopped"]) == ["kafka", "minio", "postgres", "prometheus"]
    _nothing_started(private_env)
    assert stack.healthy(), "down of one stack must not stop another's services"

    again = _sealstream(private_env, "stack", "up", "--json")
    assert again.returncode == 0, again.stderr

    consumer = KafkaConsumer(**kafka_endpoint(s, "admin").kafka_python(), enable_auto_commit=False,
                             consumer_timeout_ms=15_000)
    tp = TopicPartition("iiot.sealed", 0)
    consumer.assign([tp])
    consumer.seek(tp, sent.offset)
    assert next(iter(consumer)).value == marker.encode()
    consumer.close()
    obj = private.minio.client().get_object(s.minio_bucket, f"raw/{marker}")
    assert obj.read() == marker.encode()
    obj.close()
    with psycopg.connect(s.postgres_dsn) as conn:
        assert conn.execute("SELECT marker FROM kept").fetchall() == [(marker,)]
