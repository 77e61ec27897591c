"""Kafka with security on (issue 17), against the real broker: TLS only, every client authenticated
by its certificate, the jobs' ACLs tried for real. Skipped with SEALSTREAM_SECURITY=0.

Refused: a plaintext client, a TLS client without a certificate, one with a certificate from
another CA. The permission matrix: a factory may produce to the raw topics and nothing else (no
iiot.sealed, no read of any topic, not even its own raw topic); the verifier cannot write
iiot.sealed; the alerts bridge cannot read iiot.anchors; the pipeline cannot write iiot.alerts;
every library (confluent-kafka, kafka-python, aiokafka) connects through `sealstream._kafka_config`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.kafka_acls import current, plan
from infra.pki import StackPKI, client_spec
from sealstream._kafka_config import KafkaEndpoint, factory_principal, kafka_endpoint, kafka_secured
from sealstream._security import TLSFiles

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def secured(stack):
    if not kafka_secured(stack.settings):
        pytest.skip("Kafka security is off (SEALSTREAM_SECURITY=0)")
    return stack


@pytest.fixture(scope="module")
def factory(secured) -> str:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    secured.ensure_factory(name)
    return name


def _produce(ep: KafkaEndpoint, topic: str, timeout: float = 15.0) -> KafkaError | None:
    """Produce one record and wait for its report: None if acked, else the error."""
    errors: list = []
    p = Producer(ep.confluent({"enable.idempotence": True, "message.timeout.ms": int(timeout * 1000),
                               "log_level": 0}))
    p.produce(topic, value=b"x", key=b"k", on_delivery=lambda err, _m: errors.append(err))
    p.flush(timeout + 5)
    assert errors, "no delivery report"
    return errors[0]


def _read(ep: KafkaEndpoint, topic: str, timeout: float = 10.0) -> KafkaError | None:
    """Read from the start of partition 0 of `topic` with a group: None if the broker let it, else the error."""
    c = Consumer(ep.confluent({"group.id": f"sealstream-probe-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                               "enable.auto.commit": False, "log_level": 0}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        for m in c.consume(10, timeout):
            if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                return m.error()
            return None
        try:
            c.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout, cached=False)
        except KafkaException as exc:
            return exc.args[0]
        return None
    finally:
        c.close()


def _metadata_ok(conf: dict, timeout: float = 8.0) -> bool:
    admin = AdminClient({**conf, "log_level": 0, "socket.timeout.ms": int(timeout * 1000)})
    try:
        admin.list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


# -- who may connect -------------------------------------------------------------------------------
def test_principal_with_its_certificate_connects(secured):
    ep = kafka_endpoint(secured.settings, "pipeline")
    assert ep.protocol == "SSL" and ep.tls is not None and ep.tls.cert.name == "client-pipeline.crt"
    assert _metadata_ok(ep.confluent())


def test_plaintext_client_refused(secured):
    assert not _metadata_ok({"bootstrap.servers": secured.settings.kafka_bootstrap})


def test_tls_client_without_certificate_refused(secured):
    ep = kafka_endpoint(secured.settings, "admin")
    conf = ep.confluent()
    del conf["ssl.certificate.location"], conf["ssl.key.location"]
    assert not _metadata_ok(conf)


def test_certificate_from_another_ca_refused(secured, tmp_path: Path):
    other = StackPKI(tmp_path)  # another stack's CA, same principal name
    files = other.ensure([client_spec("admin")])["client-admin"]
    ep = kafka_endpoint(secured.settings, "admin")
    # trusts the real broker (our CA), presents a certificate the broker's CA never issued
    conf = {**ep.confluent(), "ssl.certificate.location": str(files.cert), "ssl.key.location": str(files.key)}
    assert not _metadata_ok(conf)


def test_broker_from_another_ca_refused(secured, tmp_path: Path):
    other = StackPKI(tmp_path)
    other.ensure_ca()
    ep = kafka_endpoint(secured.settings, "admin")
    assert not _metadata_ok({**ep.confluent(), "ssl.ca.location": str(other.dir / "ca.crt")})


# -- the permission matrix ------------------------------------------------------------------------
def test_factory_produces_to_raw_topics(secured, factory):
    ep = kafka_endpoint(secured.settings, factory_principal(factory))
    for topic in ("iiot.timeseries.raw", "iiot.images.raw", "iiot.video.raw"):
        assert _produce(ep, topic) is None, topic


@pytest.mark.parametrize("topic", ["iiot.sealed", "iiot.deadletter", "iiot.anchors", "iiot.alerts"])
def test_factory_cannot_write_other_topics(secured, factory, topic):
    err = _produce(kafka_endpoint(secured.settings, factory_principal(factory)), topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


@pytest.mark.parametrize("topic", ["iiot.timeseries.raw", "iiot.sealed", "iiot.anchors", "iiot.alerts"])
def test_factory_cannot_read_any_topic(secured, factory, topic):
    err = _read(kafka_endpoint(secured.settings, factory_principal(factory)), topic)
    assert err is not None and err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                              KafkaError.GROUP_AUTHORIZATION_FAILED), err


def test_unknown_factory_cannot_produce(secured, tmp_path):
    # a certificate of our CA for a factory the stack has no ACLs for (issued but never enrolled)
    name = f"stranger-{uuid.uuid4().hex[:6]}"
    files = StackPKI(secured.home).ensure([client_spec(factory_principal(name))])[f"client-factory-{name}"]
    try:
        ep = KafkaEndpoint(secured.settings.kafka_bootstrap, factory_principal(name), "SSL", files)
        err = _produce(ep, "iiot.timeseries.raw")
        assert err is not None and err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                  KafkaError.CLUSTER_AUTHORIZATION_FAILED), err
    finally:
        for p in (files.cert, files.key):
            p.unlink(missing_ok=True)


def test_verifier_cannot_write_sealed(secured):
    err = _produce(kafka_endpoint(secured.settings, "verifier"), "iiot.sealed")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_verifier_reads_anchors_not_raw(secured):
    ep = kafka_endpoint(secured.settings, "verifier")
    c = Consumer(ep.confluent({"group.id": f"sealstream-verifier-t-{uuid.uuid4().hex[:6]}", "log_level": 0,
                               "enable.auto.commit": False}))
    try:
        c.assign([TopicPartition("iiot.anchors", 0, 0)])
        c.get_watermark_offsets(TopicPartition("iiot.anchors", 0), timeout=10, cached=False)
        with pytest.raises(KafkaException):
            c.get_watermark_offsets(TopicPartition("iiot.timeseries.raw", 0), timeout=10, cached=False)
    finally:
        c.close()


def test_alerts_bridge_writes_alerts_only(secured):
    ep = kafka_endpoint(secured.settings, "alerts")
    assert _produce(ep, "iiot.alerts") is None
    for topic in ("iiot.sealed", "iiot.anchors"):
        err = _produce(ep, topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, err)


def test_pipeline_writes_its_topics_not_alerts(secured):
    ep = kafka_endpoint(secured.settings, "pipeline")
    for topic in ("iiot.sealed", "iiot.deadletter", "iiot.anchors"):
        assert _produce(ep, topic) is None, topic
    err = _produce(ep, "iiot.alerts")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    err = _produce(ep, "iiot.timeseries.raw")  # a worker never forges device records
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_acls_are_the_plan(secured, factory):
    """Provisioning again changes nothing; the cluster holds exactly the plan (no ACL for admin:
    a super user)."""
    secured.kafka.provision_acls()
    have = {(b.principal, b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name)
            for b in current(secured.kafka.endpoint())}
    from infra.kafka_acls import known_factories

    want = {(f"User:{a.principal}", "BROKER" if a.resource == "CLUSTER" else a.resource, a.name, a.pattern,
             a.operation) for a in plan(secured.settings.pipeline_app_id, known_factories(secured.home))}
    assert want <= have
    assert not any(p == "User:admin" for p, *_ in have)


# -- the other libraries ----------------------------------------------------------------------------
def test_kafka_python_and_aiokafka_connect_with_tls(secured, factory):
    from kafka import KafkaProducer

    ep = kafka_endpoint(secured.settings, factory_principal(factory))
    p = KafkaProducer(**ep.kafka_python(client_id=factory_principal(factory), acks="all"))
    try:
        md = p.send("iiot.timeseries.raw", key=b"k", value=b"v").get(timeout=20)
        assert md.offset >= 0
    finally:
        p.close(timeout=5)

    async def aio() -> int:
        from aiokafka import AIOKafkaProducer

        prod = AIOKafkaProducer(**kafka_endpoint(secured.settings, "pipeline").aiokafka())
        await prod.start()
        try:
            return (await prod.send_and_wait("iiot.sealed", b"v", key=b"k")).offset
        finally:
            await prod.stop()

    assert asyncio.run(aio()) >= 0


# -- revoking a factory ---------------------------------------------------------------------------
def _refused_within(send, timeout: float = 20.0) -> KafkaError | None:
    """`send()` -> its delivery error (None when acked), until one is refused or `timeout` passes
    (an ACL deletion reaches the broker's authorizer through the metadata log within moments)."""
    deadline = time.monotonic() + timeout
    while True:
        err = send()
        if err is not None or time.monotonic() > deadline:
            return err
        time.sleep(0.5)


def test_revoked_factory_is_refused_at_once_and_stays_revoked(secured, tmp_path: Path):
    """A stolen edge: `stack factory revoke` deletes its principal's ACLs, so its open producer and
    a new one with the copied certificate are refused (the broker still completes the TLS handshake:
    no CRL), `stack provision` (what `stack up` runs) does not give the rights back, the name cannot
    be enrolled again, and `stack factory list` says so."""
    from click.testing import CliRunner

    from sealstream.cli import cli

    name = f"rev-{uuid.uuid4().hex[:8]}"
    secured.ensure_factory(name)
    principal = factory_principal(name)
    ep = kafka_endpoint(secured.settings, principal)
    stolen = {}
    for what in ("cert", "key"):  # the thief's copy, taken before the revocation moves the files
        src = Path(getattr(ep.tls, what))
        stolen[what] = tmp_path / src.name
        stolen[what].write_bytes(src.read_bytes())
    errors: list = []
    open_producer = Producer(ep.confluent({"enable.idempotence": True, "message.timeout.ms": 10000,
                                           "log_level": 0}))

    def send_open() -> KafkaError | None:
        errors.clear()
        open_producer.produce("iiot.timeseries.raw", value=b"x", key=b"k",
                              on_delivery=lambda err, _m: errors.append(err))
        open_producer.flush(20)
        assert errors, "no delivery report"
        return errors[0]

    assert send_open() is None  # enrolled: it produces
    runner = CliRunner()
    res = runner.invoke(cli, ["stack", "factory", "revoke", name, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    done = json.loads(res.stdout)
    assert done["principal"] == principal and done["acls_deleted"] is True and len(done["cert_sha256"]) == 64
    assert not [b for b in current(kafka_endpoint(secured.settings, "admin")) if b.principal == f"User:{principal}"]

    err = _refused_within(send_open)  # the connection opened before the revocation
    assert err is not None and err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                              KafkaError.CLUSTER_AUTHORIZATION_FAILED), err
    thief = KafkaEndpoint(secured.settings.kafka_bootstrap, principal, "SSL",
                          TLSFiles(ca=ep.tls.ca, cert=stolen["cert"], key=stolen["key"]))
    err = _produce(thief, "iiot.timeseries.raw")
    assert err is not None and err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                              KafkaError.CLUSTER_AUTHORIZATION_FAILED), err

    secured.provision()  # what `stack up` / `stack provision` run: the revoked principal gets nothing back
    assert not [b for b in current(kafka_endpoint(secured.settings, "admin")) if b.principal == f"User:{principal}"]
    with pytest.raises(ValueError, match="revoked"):
        secured.ensure_factory(name)
    res = runner.invoke(cli, ["stack", "factory", "list", "--json"], catch_exceptions=False)
    listed = json.loads(res.stdout)
    assert name not in listed["enrolled"] and name in [r["factory"] for r in listed["revoked"]]
    res = runner.invoke(cli, ["stack", "factory", "revoke", name, "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["error"] == "invalid-argument"
    assert "already revoked" in res.output
    res = runner.invoke(cli, ["stack", "factory", "add", name])
    assert res.exit_code == 1 and "revoked" in res.output and "new name" in res.output
    open_producer.flush(0)
