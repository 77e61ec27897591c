"""The untrusted baseline of bench/pipeline.py: the same Kafka -> MinIO / PostgreSQL COPY path as the
trusted worker, with no signature check, no hashing, no seal and no anchoring.

    .venv/bin/python bench/_pipeline_baseline.py --group G --dsn DSN --bucket B   # until SIGTERM

What it keeps, so the ratio isolates the cost of trust:
  * the consumer library: aiokafka 0.14, the client Faust runs on, same fetch
    sizes and ``max_poll_records`` as the worker, offsets committed after the
    writes (at-least-once);
  * the batching and concurrency: like the worker's three agents (one per
    raw topic, each storing up to ``pipeline_batch_max_records`` records at a
    time in a thread), each poll's records (up to a batch per topic) are
    handled topic by topic in parallel threads, in batches of that size:
    the batch's payloads PUT to MinIO ``pipeline_archive_parallel`` at a time,
    each started as soon as its record is parsed, with the worker's PUT
    (`storage._s3put`, unsigned payload: no hash), one object per record keyed
    by Kafka position, ``raw/<topic>/<partition>/<offset>``, since content
    addressing needs a hash; then one PostgreSQL transaction for the whole batch: time-series
    rows Arrow -> CSV -> COPY into a staging table -> ``INSERT ... ON CONFLICT
    DO NOTHING`` (idempotent like the trusted writer), and the ``records``
    rows.  ``SEALSTREAM_PIPELINE_BATCH_MAX_RECORDS=1`` gives both sides the
    old one-record-at-a-time shape.

What it drops: the statement parse/canonical encoding, the device signature
check, SHA-256 of the payload, the replay/seq and position checks, the
gateway receipt, the ``statements`` row, ``iiot.sealed`` and anchoring.

Tables live in schema ``baseline`` of the database given (the benchmark uses a
throwaway one), never mixed with real data: ``baseline.readings`` (same
columns as ``readings`` but keyed by Kafka position instead of statement
hash, a plain table, not daily-partitioned) and ``baseline.records`` (one row
per message, ``done_at`` = clock time at the end of its writes).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

from sealstream._kafka_config import KafkaLike, as_endpoint, kafka_endpoint  # noqa: E402
from storage._s3put import UNSIGNED_PAYLOAD  # noqa: E402
from sealstream.topics import RAW  # noqa: E402

__all__ = ["SCHEMA_SQL", "ensure_schema", "BaselineStore", "main"]

RAW_TOPICS = RAW
_HEADROOM = 1024 * 1024

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS baseline;
CREATE TABLE IF NOT EXISTS baseline.readings (
    time            timestamptz NOT NULL,
    device          text NOT NULL,
    sensor          text NOT NULL,
    value           double precision,
    kafka_topic     text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    row_index       int NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS baseline_readings_key
    ON baseline.readings (kafka_topic, kafka_partition, kafka_offset, row_index);
CREATE INDEX IF NOT EXISTS baseline_readings_device_time_idx ON baseline.readings (device, time);
CREATE INDEX IF NOT EXISTS baseline_readings_time_idx ON baseline.readings USING brin (time);
CREATE TABLE IF NOT EXISTS baseline.records (
    kafka_topic     text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    device          text NOT NULL,
    kind            text NOT NULL,
    ts              timestamptz,
    object_key      text NOT NULL,
    size            bigint NOT NULL,
    rows            int NOT NULL,
    done_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
"""
_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS baseline_stage (LIKE baseline.readings) ON COMMIT DELETE ROWS")
_READING_COLS = "time, device, sensor, value, kafka_topic, kafka_partition, kafka_offset, row_index"


def ensure_schema(dsn: str) -> None:
    """Create schema ``baseline`` and its tables (idempotent)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)


def _header(headers, name: str) -> str:
    for k, v in headers or ():
        if (k.decode() if isinstance(k, bytes) else k) == name:
            return bytes(v).decode("ascii", "replace")
    return ""


class BaselineStore:
    """Writes one raw record: object to MinIO, then rows + a record row in one transaction (blocking)."""

    def __init__(self, dsn: str, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 secure: bool = False, parallel: int = 8, ca_file: str | None = None) -> None:
        import ssl
        from concurrent.futures import ThreadPoolExecutor

        import urllib3
        from minio import Minio

        from storage._s3put import ObjectPut
        from storage.db import open_pool

        self.parallel = parallel
        self.executor = ThreadPoolExecutor(parallel, thread_name_prefix="put")
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5.0, read=30.0), maxsize=16,
                                   retries=urllib3.Retry(total=3, backoff_factor=0.2),
                                   cert_reqs="CERT_REQUIRED", **({"ca_certs": ca_file} if ca_file else {}))
        self.minio = Minio(endpoint, access_key, secret_key, secure=secure, http_client=http)
        self.bucket = bucket
        if not self.minio.bucket_exists(bucket):
            self.minio.make_bucket(bucket)
        # the worker's archive PUT (storage._s3put), with no payload hash: UNSIGNED-PAYLOAD
        context = ssl.create_default_context(cafile=ca_file) if secure else None
        self.objects = ObjectPut(endpoint, access_key, secret_key, bucket, secure=secure, timeout=30.0, retries=3,
                                 ssl_context=context)
        self.pool = open_pool(dsn, max_size=4)

    def store(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, headers) -> None:
        """One record (a batch of one)."""
        self.store_many([(topic, partition, offset, key, value, headers)])

    def store_many(self, records: list) -> None:
        """Records ``(topic, partition, offset, key, value, headers)``: their objects PUT in parallel
        (``parallel`` at once, like the worker's archive), then all their rows in one transaction
        (like the worker's `Writer.write_sealed`)."""
        rows, csvs, puts, started = [], [], [], []
        parallel = len(records) > 1 and self.parallel > 1
        for topic, partition, offset, key, value, headers in records:
            device = (key or b"").decode("ascii", "replace")
            kind = _header(headers, "ss-kind")
            ts = _header(headers, "ss-ts")
            object_key = f"raw/{topic}/{partition}/{offset}"
            put = (object_key, value, _header(headers, "ss-content-type") or "application/octet-stream")
            if parallel:  # started at once, as the worker starts each PUT once its record passed
                started.append(self.executor.submit(self._put, *put))
            else:
                puts.append(put)
            n = 0
            if kind == "timeseries":
                table = pa.ipc.open_stream(pa.BufferReader(value)).read_all()
                n = table.num_rows
                csvs.append(_readings_csv(table, device, topic, partition, offset))
            rows.append((topic, partition, offset, device, kind, int(ts) if ts.isdigit() else None, object_key,
                         len(value), n))
        for fut in started:
            fut.result()
        for p in puts:
            self._put(*p)
        with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            if csvs:
                cur.execute(_STAGE)
                with cur.copy(f"COPY baseline_stage ({_READING_COLS}) FROM STDIN (FORMAT csv)") as cp:
                    for csv in csvs:
                        cp.write(csv)
                cur.execute(f"INSERT INTO baseline.readings ({_READING_COLS}) SELECT {_READING_COLS} "
                            "FROM baseline_stage ON CONFLICT DO NOTHING")
            cur.executemany(
                "INSERT INTO baseline.records (kafka_topic, kafka_partition, kafka_offset, device, kind, ts, "
                "object_key, size, rows) VALUES (%s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), %s, %s, %s) "
                "ON CONFLICT DO NOTHING", rows)

    def _put(self, object_key: str, value: bytes, content_type: str) -> None:
        self.objects.put(object_key, value, UNSIGNED_PAYLOAD, content_type)

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        self.pool.close()


def _readings_csv(table: pa.Table, device: str, topic: str, partition: int, offset: int) -> memoryview:
    n = table.num_rows
    out = pa.table({
        "time": pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC")),
        "device": pa.repeat(pa.scalar(device), n),
        "sensor": table.column("sensor").cast(pa.string()),
        "value": table.column("value").cast(pa.float64()),
        "kafka_topic": pa.repeat(pa.scalar(topic), n),
        "kafka_partition": pa.repeat(pa.scalar(partition, pa.int32()), n),
        "kafka_offset": pa.repeat(pa.scalar(offset, pa.int64()), n),
        "row_index": pa.array(range(n), pa.int32()),
    })
    sink = pa.BufferOutputStream()
    pacsv.write_csv(out, sink, pacsv.WriteOptions(include_header=False))
    return memoryview(sink.getvalue())


async def consume(store: BaselineStore, bootstrap: KafkaLike, group: str, max_bytes: int, max_poll: int,
                  session_timeout_s: float, stop: asyncio.Event, batch: int = 1) -> None:
    """Poll, store each topic's records in batches of at most `batch` (topics in parallel, like the
    worker's three agents), commit the offsets after the writes."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *RAW_TOPICS, **as_endpoint(bootstrap, "pipeline").aiokafka(), group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=max_bytes, fetch_max_bytes=max_bytes,
        max_poll_records=max_poll, session_timeout_ms=int(session_timeout_s * 1000),
        heartbeat_interval_ms=int(min(3.0, session_timeout_s / 3) * 1000))
    await consumer.start()

    def run_topic(records) -> None:
        for i in range(0, len(records), batch):
            store.store_many([(r.topic, r.partition, r.offset, r.key, r.value or b"", r.headers)
                              for r in records[i:i + batch]])

    try:
        while not stop.is_set():
            # up to a full batch per topic, as each of the worker's agents buffers up to one batch
            got = await consumer.getmany(timeout_ms=500, max_records=max(max_poll, batch * len(RAW_TOPICS)))
            if not got:
                continue
            by_topic: dict[str, list] = {}
            for tp, records in got.items():
                by_topic.setdefault(tp.topic, []).extend(records)
            await asyncio.gather(*(asyncio.to_thread(run_topic, recs) for recs in by_topic.values()))
            await consumer.commit()
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> None:
    from sealstream.settings import load_settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", required=True, help="Kafka consumer group (pin its offsets first)")
    p.add_argument("--dsn", required=True, help="PostgreSQL DSN (schema baseline is created there)")
    p.add_argument("--bucket", required=True, help="MinIO bucket (created if missing)")
    args = p.parse_args(argv)
    s = load_settings()
    ensure_schema(args.dsn)
    access_key, secret_key = s.minio_credentials("admin")  # it makes its own bucket
    store = BaselineStore(args.dsn, s.minio_address, access_key, secret_key, args.bucket, s.minio_tls,
                          parallel=s.pipeline_archive_parallel,
                          ca_file=str(s.minio_ca_file) if s.minio_ca_file else None)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # the same principal and TLS as the trusted worker: the comparison is of the work, not the link
        await consume(store, kafka_endpoint(s, "pipeline"), args.group, s.kafka_video_max_message_bytes + _HEADROOM,
                      s.pipeline_max_poll_records, s.pipeline_session_timeout_s, stop,
                      batch=s.pipeline_batch_max_records)

    try:
        asyncio.run(run())
    finally:
        store.close()


if __name__ == "__main__":
    main()
