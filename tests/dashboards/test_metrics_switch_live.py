"""SEALSTREAM_METRICS reaches real processes: a ledger node's /metrics is empty when off (has its series when on);
a pipeline worker opens no /metrics port and registers no Prometheus target when off."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ledger import Params
from infra.process import Child, free_ports
from infra.ledger_cluster import LocalCluster
from pipelines.devices import Factory
from sealstream.settings import load_settings
from sealstream._kafka_config import kafka_endpoint

PARAMS = Params(max_block_txs=16, block_time_ms=20, checkpoint_interval=10, view_change_timeout_ms=800,
                status_interval_ms=300, fetch_timeout_ms=800)


@pytest.mark.services  # a ledger node process
@pytest.mark.parametrize("value", ["1", "0"])
def test_ledger_node_metrics_switch(value: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEALSTREAM_METRICS", value)  # the node processes inherit the environment
    cluster = LocalCluster(tmp_path / "ledger", n_nodes=1, n_sealers=1, params=PARAMS, app="kv")
    cluster.init()
    cluster.start(timeout=30)
    try:
        with cluster.client() as client:
            client.submit("kv.put", {"key": "k", "value": 1})
        status, body = cluster.http_get(cluster.names[0], "/metrics")
        assert status == 200
        text = body.decode()
        if value == "1":
            assert "sealstream_ledger_height{" in text and "sealstream_ledger_commit_latency_seconds_count" in text
        else:
            assert "sealstream_" not in text
        assert cluster.status(cluster.names[0])["height"] >= 1
        # Prometheus's plain-HTTP listener: the same series when on, not listening when off
        a = cluster.addresses()[0]
        assert a.metrics_port is not None
        if value == "1":
            status, body = cluster.metrics_get(a.name)
            assert status == 200 and "sealstream_ledger_height{" in body.decode()
        else:
            with socket.socket() as sock:
                assert sock.connect_ex((a.metrics_host or a.host, a.metrics_port)) != 0
    finally:
        cluster.stop(timeout=5)


@pytest.mark.services
def test_pipeline_worker_without_metrics_serves_nothing(stack, settings, tmp_path) -> None:
    """With SEALSTREAM_METRICS=0 a worker that has joined its group opens no /metrics port and registers no target."""
    home = tmp_path / "home"
    s = load_settings(home=home, kafka_bootstrap_servers=settings.kafka_bootstrap)
    factory, group = f"off-{uuid.uuid4().hex[:8]}", f"sealstream-pipeline-metricsoff-{uuid.uuid4().hex[:8]}"
    Factory.ensure(s, factory, 1)
    port = free_ports(1)[0]
    proc = Child.sealstream("pipeline worker", ["pipeline", "worker", "--app-id", group, "--directory", "manifest",
                                                "--factory", factory, "--no-anchor"],
                            log_path=tmp_path / "worker.log", home=home, metrics_port=port,
                            env={"SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap, "SEALSTREAM_METRICS": "0",
                                 "SEALSTREAM_PIPELINE_OFFSET_RESET": "latest"})
    admin = AdminClient(kafka_endpoint(s, "admin").confluent())
    try:
        deadline = time.monotonic() + 90
        while True:
            proc.check()
            try:
                desc = admin.describe_consumer_groups([group])[group].result(10)
            except KafkaException as exc:  # e.g. the coordinator still loading on a fresh broker
                assert exc.args[0].retriable(), exc
            else:
                if desc.members:
                    break
            assert time.monotonic() < deadline, f"worker never joined its group\n{proc.tail()}"
            time.sleep(1)
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "a /metrics server listens although metrics are off"
        assert not (home / "prometheus" / "targets" / "sealstream-pipeline.json").exists()
    finally:
        proc.stop(15)
