"""No plaintext of a confidential stream where it does not belong (issue 18), on real services.

A private Kafka and MinIO (so every topic and every object can be scanned whole), a throwaway
PostgreSQL database with the pipeline's schema, a 4-node contracts ledger anchoring, and the real
`sealstream pipeline worker` subprocess (log level debug). A device sends a confidential stream
(time series whose sensor names and an image whose bytes carry a unique marker) beside a plain
stream carrying another marker, plus a confidential message with a broken signature (dead-lettered
with its original bytes). Once everything is sealed and anchored, the scan reads every record of
every topic (key, value, headers), every object of every bucket, every row of every table of the
database (as text: bytea shows as hex), the worker's log and /metrics, and every log file of the
private stack, the ledger and the shared stack: the confidential marker is nowhere, in plain bytes,
hex or base64. The same scan finds the plain stream's marker in Kafka, MinIO and PostgreSQL (so it
would have found the other), and the named recipient opens the stored envelope and finds the
confidential marker in the plaintext."""

from __future__ import annotations

import base64
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from confidential.envelope import open_envelope
from confidential.keys import RecipientKey
from infra.process import Child, free_ports
from pipelines.devices import Factory, open_sink
from pipelines.devices.confidential import seal_confidential
from pipelines.devices.payloads import Payload
from pipelines.devices.signing import OutMessage, seal
from infra.private_stack import PrivateStack
from resilience_helpers import Anchoring
from storage import key_records, migrate
from storage.blobs import BlobStore
from storage.db import open_pool

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
SECRET = ("CONFIDENTIAL-" + uuid.uuid4().hex).encode()
PLAIN = ("PLAINSTREAM-" + uuid.uuid4().hex).encode()


def _forms(marker: bytes) -> list[bytes]:
    """The marker as bytes, hex (PostgreSQL's bytea text, logs of digests) and base64 (JSON of bytes)."""
    return [marker, marker.hex().encode(), base64.b64encode(marker)[:-4]]


def _holds(data: bytes, marker: bytes) -> bool:
    return any(f in data for f in _forms(marker))


def _arrow(ts_ms: int, sensor: str, n: int = 5) -> bytes:
    t = pa.table({"ts": pa.array([ts_ms - 100 * (n - 1 - i) for i in range(n)], pa.int64()),
                  "sensor": pa.array([sensor] * n), "value": pa.array([float(i) for i in range(n)])})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


def _kafka_scan(settings, markers: list[bytes]) -> dict[bytes, list[str]]:
    """Every record of every topic of the (private) broker: where each marker appears."""
    from confluent_kafka import Consumer, TopicPartition

    conf = {"group.id": f"scan-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    try:  # the broker's client settings (TLS and principals, where the stack has them)
        from sealstream._kafka_config import as_endpoint, kafka_endpoint
    except ImportError:
        c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, **conf})
    else:
        c = Consumer(as_endpoint(kafka_endpoint(settings, "admin")).confluent(conf))
    found: dict[bytes, list[str]] = {m: [] for m in markers}
    try:
        topics = [t for t in c.list_topics(timeout=20).topics if not t.startswith("__")]
        assert "iiot.images.raw" in topics and "iiot.sealed" in topics, topics
        tps = []
        for t in topics:
            for p in c.list_topics(t, timeout=20).topics[t].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=20)
                if hi > lo:
                    tps.append((TopicPartition(t, p, lo), hi))
        c.assign([tp for tp, _ in tps])
        left = {(tp.topic, tp.partition): hi for tp, hi in tps}
        seen = 0
        deadline = time.monotonic() + 60
        while any(v > 0 for v in left.values()) and time.monotonic() < deadline:
            for msg in c.consume(500, 1.0):
                if msg.error():
                    continue
                seen += 1
                blob = (msg.key() or b"") + (msg.value() or b"") + b"".join(
                    (k.encode() if isinstance(k, str) else k) + (v or b"") for k, v in (msg.headers() or []))
                for m in markers:
                    if _holds(blob, m):
                        found[m].append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}")
                if msg.offset() + 1 >= left[(msg.topic(), msg.partition())]:
                    left[(msg.topic(), msg.partition())] = 0
        assert not any(v > 0 for v in left.values()), f"topics not read to their end: {left}"
        assert seen > 0
    finally:
        c.close()
    return found


def _minio_scan(blobs: BlobStore, markers: list[bytes]) -> dict[bytes, list[str]]:
    found: dict[bytes, list[str]] = {m: [] for m in markers}
    n = 0
    for b in blobs.client.list_buckets():
        for obj in blobs.client.list_objects(b.name, recursive=True, include_version=True):
            r = blobs.client.get_object(b.name, obj.object_name, version_id=obj.version_id)
            try:
                data = r.read()
            finally:
                r.close()
                r.release_conn()
            n += 1
            for m in markers:
                if _holds(data, m):
                    found[m].append(f"{b.name}/{obj.object_name}")
    assert n > 0
    return found


def _pg_scan(dsn: str, markers: list[bytes]) -> dict[bytes, list[str]]:
    found: dict[bytes, list[str]] = {m: [] for m in markers}
    with psycopg.connect(dsn) as conn:
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema')").fetchall()
        assert tables
        for schema, table in tables:
            for m in markers:
                forms = [f.decode() for f in _forms(m)]
                n = conn.execute(sql.SQL("SELECT count(*) FROM {} t WHERE " + " OR ".join(
                    ["position(%s in t::text) > 0"] * len(forms))).format(sql.Identifier(schema, table)),
                    forms).fetchone()[0]
                if n:
                    found[m].append(f"{schema}.{table} ({n} rows)")
    return found


def _files_scan(roots: list[Path], markers: list[bytes]) -> dict[bytes, list[str]]:
    """Every file under `roots` (logs, and the private stack's and ledger's data and logs)."""
    found: dict[bytes, list[str]] = {m: [] for m in markers}
    for root in roots:
        for p in root.rglob("*"):
            try:
                if not p.is_file() or p.stat().st_size > 256 << 20:
                    continue
                data = p.read_bytes()
            except OSError:  # a file rotated or removed while scanning
                continue
            for m in markers:
                if _holds(data, m):
                    found[m].append(str(p))
    return found


def test_no_plaintext_of_a_confidential_stream_in_kafka_minio_postgres_logs_metrics(stack, settings,
                                                                                     tmp_path: Path) -> None:
    name = f"ss_noplain_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(settings.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(settings.postgres_dsn, dbname=name)
    migrate(dsn)
    proc = None
    try:
        with PrivateStack(tmp_path / "private", base=settings, kafka=True, minio=True) as ps:
            s = ps.settings
            fac_name = f"np-{uuid.uuid4().hex[:8]}"
            factory = Factory.ensure(s, fac_name, 1, kinds=("timeseries", "image"))
            ts_dev = next(d for d in factory.devices if d.kind == "timeseries")
            img_dev = next(d for d in factory.devices if d.kind == "image")
            gateway = f"gw-{fac_name}"
            anchoring = Anchoring(s, gateway)
            qa = RecipientKey.generate("acme.qa")
            port = free_ports(1)[0]
            log = tmp_path / "worker.log"
            env = dict(os.environ, SEALSTREAM_HOME=str(s.home), SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap,
                       SEALSTREAM_MINIO_ENDPOINT=s.minio_address, SEALSTREAM_PG_DSN=dsn,
                       SEALSTREAM_PIPELINE_GATEWAY=gateway, SEALSTREAM_PIPELINE_ANCHOR_WINDOW_S="1",
                       SEALSTREAM_LOG_LEVEL="DEBUG")
            proc = Child("pipeline worker", [
                sys.executable, "-m", "sealstream", "pipeline", "worker",
                "--app-id", f"{settings.pipeline_app_id}-np-{uuid.uuid4().hex[:6]}",
                "--directory", "manifest", "--factory", fac_name, "--metrics-port", str(port), "--loglevel", "debug"],
                log_path=log, env=env, metrics_port=port)
            try:
                now = int(time.time() * 1000)
                rc = [(qa.id, qa.public)]
                msgs: list[OutMessage] = []
                for i in range(3):
                    pt = Payload("timeseries", "application/vnd.apache.arrow.stream",
                                 _arrow(now + i, f"setpoint-{SECRET.decode()}"))
                    msgs.append(seal_confidential(ts_dev.keypair, i, now + i, pt, stream="line-3", recipients=rc))
                secret_img = Payload("image", "image/jpeg", b"\xff\xd8\xff" + SECRET * 8 + os.urandom(3000))
                msgs.append(seal_confidential(img_dev.keypair, 0, now, secret_img, stream="line-3", recipients=rc,
                                              chunk_size=1024))
                msgs.append(seal(img_dev.keypair, 1, now + 1, Payload("image", "image/jpeg", b"\xff\xd8\xff" + PLAIN)))
                plain_ts = _arrow(now + 3, f"plain-{PLAIN.decode()}")
                msgs.append(seal(ts_dev.keypair, 3, now + 3,
                                 Payload("timeseries", "application/vnd.apache.arrow.stream", plain_ts)))
                bad = seal_confidential(img_dev.keypair, 2, now + 4, secret_img, stream="line-3", recipients=rc)
                sig = next(v for k, v in bad.headers if k == "ss-sig")
                flipped = bytes([sig[0] ^ 1]) + sig[1:]
                msgs.append(OutMessage(bad.topic, bad.key, bad.value,
                                       tuple((k, flipped if k == "ss-sig" else v) for k, v in bad.headers),
                                       bad.statement, bad.signature, bad.device))
                assert not any(_holds(m.value, SECRET) or any(_holds(v, SECRET) for _, v in m.headers) for m in msgs)
                sink = open_sink(s, {m.topic for m in msgs})
                try:
                    for m in msgs:
                        sink.send(m, lambda d: None)
                    assert sink.flush(30) == 0
                finally:
                    sink.close()
                good = [m.statement.hash() for m in msgs[:6]]
                deadline = time.monotonic() + 180
                while True:
                    with psycopg.connect(dsn) as conn:
                        anchored = conn.execute(
                            "SELECT count(*) FROM batch_leaves l JOIN batches b USING (batch_id) WHERE "
                            "b.anchor_state = 'anchored' AND l.statement_hash = ANY(%s)", (good,)).fetchone()[0]
                        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
                    if anchored == len(good) and dead >= 1:
                        break
                    assert proc.alive(), proc.tail()
                    assert time.monotonic() < deadline, (anchored, dead, log.read_text(errors="replace")[-3000:])
                    time.sleep(1)
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
                assert b"sealstream_pipeline" in metrics
                markers = [SECRET, PLAIN]
                blobs = BlobStore.from_settings(s)
                kafka = _kafka_scan(s, markers)
                minio = _minio_scan(blobs, markers)
                pg = _pg_scan(dsn, markers)
                logs = _files_scan([log.parent, Path(s.home), Path(settings.home) / "logs"], markers)
                # the scan finds plaintext where it is (the plain stream: topics, objects, readings rows, the
                # broker's and object store's data files) ...
                assert kafka[PLAIN] and minio[PLAIN] and pg[PLAIN] and logs[PLAIN], (kafka[PLAIN], minio[PLAIN],
                                                                                     pg[PLAIN], logs[PLAIN])
                # ... and finds none of the confidential stream anywhere
                assert kafka[SECRET] == [] and minio[SECRET] == [] and pg[SECRET] == [] and logs[SECRET] == [], \
                    (kafka[SECRET], minio[SECRET], pg[SECRET], logs[SECRET])
                assert not _holds(metrics, SECRET)
                assert log.stat().st_size > 0
                # while the named recipient reads it from what the pipeline stored
                img = msgs[3]
                stored = blobs.get_raw(img.statement.payload_sha256)
                with open_pool(dsn, max_size=1) as pool:
                    record = key_records.read(pool, [img.statement.hash()])[img.statement.hash()]
                assert record is not None
                opened = open_envelope(stored, record, qa.id, qa.private, device=img.device, seq=0, kind="image")
                assert SECRET in opened.plaintext
            finally:
                proc.stop(30)
                anchoring.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
