"""The Faust app of the pipeline worker: ingest -> store -> seal (DESIGN.md steps 4-6).

One agent per raw topic (``iiot.timeseries.raw``, ``iiot.images.raw``,
``iiot.video.raw``).  For each record the agent runs `IngestProcessor.process`
in a thread (checks, MinIO archive, PostgreSQL writes, gateway receipt), then
produces either the dead letter to ``iiot.deadletter`` (original key, value
and headers plus ``ss-dlq-*``) or the seal to ``iiot.sealed`` (keyed by
device), *waits for the broker's ack*, and only then lets Faust ack the
event.  Faust commits acked offsets, so a crash at any point redelivers the
record: at-least-once delivery + idempotent writes = exactly-once effect in
PostgreSQL and MinIO.  Dead letters are recorded in ``dead_letters`` before they are
produced and marked once acked (`pipelines.dlq`), so a re-read record is
dead-lettered once per consumer group.

The per-device last seq (replay detection) is **not** a Faust table: Faust
0.15's table recovery resumes fetching before it seeks to the committed
offsets (faust-streaming/faust#596, open), and a worker restarted with a
backlog skipped and re-processed records and stalled partitions in our tests.
The database is the arbiter instead: ``statements`` has unique
``(device, seq)``, a per-process cache sits over ``max(seq)``, and a stale
cache is harmless because the writer reports a replayed seq as a conflict
and the worker compares Kafka positions (see `pipelines.worker`).

Infrastructure errors (PostgreSQL, MinIO, the ledger unreachable), while checking
a record as while storing it, are retried with backoff, never dead-lettered: the
partition waits (`pipelines.worker.transient_cause`).  An unexpected exception
is retried a few times, then only its record is dead-lettered as
``internal-error`` (bytes kept) so one poison record cannot stall the pipeline
(`pipelines.worker.Retrier`).

Faust state: ``store="memory://"`` (no tables; rocksdb is not installed),
data dir ``<home>/pipeline/<app id>``.  Faust declares its internal topic
(the assignor's leader topic) itself through the admin API, so broker-side
auto-create can stay off.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Optional, cast

import faust

from sealstream._kafka_config import kafka_endpoint
from sealstream.settings import Settings

from ._testhook import pause
from .checks import TOPIC_KINDS, Limits
from .directory import DeviceDirectory, ManifestDirectory, ProvenDirectory
from .dlq import PRODUCE, DeadLetterGate
from .metrics import PipelineMetrics
from .worker import DeadLetter, IngestProcessor, RawRecord, Retrier, Seal, gateway_key
from sealstream.metrics_targets import add_target
from sealstream.topics import DEADLETTER, SEALED

__all__ = ["build_app", "build_processor", "make_anchorer", "make_directory", "run_worker"]

log = logging.getLogger("sealstream.pipeline")
_RAW: dict = dict(key_type=bytes, value_type=bytes)  # app-wide serializers are "raw"
_HEADROOM = 1024 * 1024  # headers and batch overhead above a payload limit
#: Test hook: SEALSTREAM_DLQ_TEST_PAUSE=acked|marked hangs a batch once its dead letters were acked by the
#: broker (acked: before they are marked produced; marked: after), before its source offsets are acked.
DLQ_PAUSE_ENV, DLQ_PAUSE_FILE_ENV = "SEALSTREAM_DLQ_TEST_PAUSE", "SEALSTREAM_DLQ_TEST_PAUSE_FILE"


def make_directory(settings: Settings, kind: Optional[str] = None, factories: tuple[str, ...] = ()) -> DeviceDirectory:
    """The configured device directory: the ledger registry, or factory manifests (tests/demos)."""
    kind = kind or settings.pipeline_directory
    if kind == "manifest":
        names = factories or tuple(n.strip() for n in settings.pipeline_factories.split(",") if n.strip())
        if not names:
            raise ValueError("the manifest directory needs factories: --factory NAME or SEALSTREAM_PIPELINE_FACTORIES")
        log.warning("device directory: factory manifests %s (tests/demos only, no ledger)", ", ".join(names))
        return ManifestDirectory.for_factories(settings, names)
    return ProvenDirectory.from_layout(settings.ledger_home, ttl=settings.pipeline_directory_ttl_s)


def build_processor(settings: Settings, directory: DeviceDirectory, metrics: Optional[PipelineMetrics] = None
                    ) -> tuple[IngestProcessor, Any]:
    """An `IngestProcessor` on the stack's PostgreSQL and MinIO; also returns the pool (close it)."""
    from storage.blobs import BlobStore
    from storage.db import one_row, open_pool
    from storage.readers import Reader
    from storage.writers import Writer

    pool = open_pool(settings.postgres_dsn_for("pipeline"), max_size=4)
    gw = gateway_key(Path(settings.home), settings.pipeline_gateway)

    def stored_last_seq(did: str) -> Optional[int]:
        with pool.connection() as conn:
            return one_row(conn.execute("SELECT max(seq) FROM statements WHERE device = %s", (did,)))[0]

    blobs = BlobStore.from_settings(settings, "pipeline")  # put and get, no delete (issue 17)
    proc = IngestProcessor(Writer(pool), Reader(pool), blobs, gw, directory.resolve, Limits.from_settings(settings),
                           observe_store=metrics.store_seconds.observe if metrics else (lambda s: None),
                           stored_last_seq=stored_last_seq, archive_parallel=settings.pipeline_archive_parallel)
    return proc, pool


def _headers(message: Any) -> list[tuple[str, bytes]]:
    h = message.headers or []
    items = h.items() if isinstance(h, dict) else h
    return [(k.decode() if isinstance(k, bytes) else k, v) for k, v in items]


def build_app(settings: Settings, processor: Optional[IngestProcessor], metrics: Optional[PipelineMetrics] = None,
              app_id: Optional[str] = None, offset_reset: Optional[str] = None,
              anchorer: Optional[Any] = None, deadletters: Optional[DeadLetterGate] = None) -> faust.App:
    """The Faust app: one ingest agent per raw topic and the two output topics; with an
    `Anchorer`, also the anchor agent (``iiot.sealed`` -> ``iiot.anchors``, `pipelines._anchor_agent`).
    Without a `processor` (an anchor-only worker) there are no ingest agents.  With a
    `DeadLetterGate` (the worker's), a source position is dead-lettered once per group; without,
    at least once."""
    app_id = app_id or settings.pipeline_app_id
    max_bytes = settings.kafka_video_max_message_bytes + _HEADROOM
    datadir = Path(settings.home).resolve() / "pipeline" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    kafka = kafka_endpoint(settings, "pipeline")
    app = faust.App(
        app_id,
        broker=kafka.faust_broker(),
        broker_credentials=kafka.ssl_context(),
        store="memory://",
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset=offset_reset or settings.pipeline_offset_reset,
        broker_max_poll_records=settings.pipeline_max_poll_records,
        consumer_max_fetch_size=max_bytes,
        producer_max_request_size=max_bytes,
        producer_max_batch_size=256 * 1024,  # a batch's seals (~1 KB each) in one produce request
        producer_acks=-1,
        broker_session_timeout=settings.pipeline_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.pipeline_session_timeout_s / 3),
        broker_commit_interval=1.0,
        table_standby_replicas=0,
    )
    deadletter = app.topic(DEADLETTER, **_RAW)
    group = app_id.encode("utf-8")  # ss-dlq-group: which consumer group rejected it
    metrics = metrics or PipelineMetrics()

    async def produce(topic: Any, key: Optional[bytes], value: bytes, headers: list[tuple[str, bytes]]) -> None:
        fut = await topic.send(key=key, value=value, headers=headers)
        await fut  # the broker acked it: only now may the source offset be committed

    def record_of(event: Any) -> RawRecord:
        msg = event.message
        return RawRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value or b"", _headers(msg),
                         int(round(msg.timestamp * 1000)))

    # Outages (PostgreSQL, MinIO, the ledger, the dead-letter look-up) are waited out; a bug is retried
    # a bounded number of times, then its record dead-lettered (`pipelines.worker.Retrier`).
    retrier = Retrier(lambda cause: metrics.retries.labels(cause).inc())
    retried = retrier.call

    async def process(recs: list[RawRecord]) -> list:
        """`process_batch` in a thread, under the `Retrier`'s policy (outage: wait; bug: bounded, then split
        so that only the poison record is dead-lettered, ``internal-error``)."""
        assert processor is not None  # agents that process are made only with a processor
        return await retrier.batch(processor.process_batch, recs)

    async def gate(recs: list[RawRecord], results: list) -> set:
        """The positions of the batch's dead letters that must not be produced again (this group
        dead-lettered them before: `DeadLetterGate`); no query when the batch has none."""
        dead = [(rec.position, r.reason) for rec, r in zip(recs, results) if isinstance(r, DeadLetter)]
        if not dead or deadletters is None:
            return set()
        skip = set()
        for (pos, _), verdict in zip(dead, await retried(deadletters.decide, dead)):
            if verdict != PRODUCE:
                skip.add(pos)
                metrics.deadletters_repeated.labels(verdict).inc()
        return skip

    async def handle(events: list) -> None:
        """Process a batch of one raw topic, then produce its dead letters (those not produced
        before by this group) and seals and wait for the broker's acks (all of them); mark the
        dead letters produced: only then may the source offsets be acked."""
        recs = [record_of(ev) for ev in events]
        results = await process(recs)
        skip = await gate(recs, results)
        pending, produced = [], []
        for rec, result in zip(recs, results):
            if isinstance(result, DeadLetter):
                if rec.position in skip:
                    continue
                pending.append(await deadletter.send(key=result.key, value=result.value,
                                                     headers=result.headers + [("ss-dlq-group", group)]))
                produced.append(rec.position)
                metrics.deadletters.labels(result.reason).inc()
                continue
            assert isinstance(result, Seal)
            # straight to the producer: Faust's Topic.send adds a channel, a FutureMessage and
            # sensor calls per seal (~0.4 ms of event-loop time each under load); same partitioner
            pending.append(await app.producer.send(
                SEALED, result.key, result.value, None, None,
                [("ss-statement-hash", result.statement.hash().hex().encode("ascii"))]))
            kind = result.statement.kind
            metrics.ingested.labels(kind).inc()
            metrics.ingested_bytes.labels(kind).inc(len(rec.value))
            if result.redelivery:
                metrics.redeliveries.inc()
        await asyncio.gather(*pending)  # every one acked by the broker (an error raises: nothing acked)
        if produced and deadletters is not None:
            note = f"{len(produced)} dead letters"
            await asyncio.to_thread(pause, DLQ_PAUSE_ENV, DLQ_PAUSE_FILE_ENV, "acked", note)
            await retried(deadletters.mark_produced, produced)
            await asyncio.to_thread(pause, DLQ_PAUSE_ENV, DLQ_PAUSE_FILE_ENV, "marked", note)

    batch_max = settings.pipeline_batch_max_records
    batch_within = settings.pipeline_batch_window_s
    for topic_name, kind in (TOPIC_KINDS.items() if processor is not None else ()):
        topic = app.topic(topic_name, **_RAW)

        async def agent(stream: Any) -> None:
            async for events in stream.noack_take(batch_max, within=batch_within):
                await handle(events)
                for ev in events:  # only now: stored, sealed (or dead-lettered) and acked by the broker
                    await stream.ack(ev)

        agent.__name__ = agent.__qualname__ = f"ingest_{kind}"
        app.agent(topic, name=f"ingest-{kind}")(agent)
    if anchorer is not None:
        from ._anchor_agent import add_anchor_agent

        add_anchor_agent(app, anchorer, metrics, window_s=settings.pipeline_anchor_window_s, produce=produce,
                         sweep_grace_s=settings.pipeline_anchor_sweep_grace_s,
                         sweep_interval_s=settings.pipeline_anchor_sweep_interval_s)
    return app


def run_worker(settings: Settings, directory: Optional[DeviceDirectory], *, app_id: Optional[str] = None,
               metrics_port: Optional[int] = None, offset_reset: Optional[str] = None,
               loglevel: str = "warn", anchor: bool = True, ingest: bool = True) -> None:
    """Run one worker until SIGTERM/SIGINT (blocking); `anchor`: also run the anchor agent
    (if a ledger is set up at ``settings.ledger_home``, see `make_anchorer`); ``ingest=False``:
    only the anchor agent (an anchorer process beside ``--no-anchor`` workers; no `directory`)."""
    if not (ingest or anchor):
        raise ValueError("a worker must ingest, anchor or both")
    port = settings.pipeline_metrics_port if metrics_port is None else metrics_port
    metrics = PipelineMetrics.switched(settings.metrics)
    if port and settings.metrics:
        if ingest:
            from .lag import ConsumerLag

            metrics.registry.register(ConsumerLag(kafka_endpoint(settings, "pipeline"),
                                                  app_id or settings.pipeline_app_id,
                                                  tuple(TOPIC_KINDS),
                                                  offset_reset or settings.pipeline_offset_reset))
            if hasattr(directory, "collect"):  # ProvenDirectory: refused ledger answers, its floor
                metrics.registry.register(cast(Any, directory))
        metrics.serve(port, settings.host)
        add_target(Path(settings.home).resolve(), "sealstream-pipeline", f"{settings.host}:{port}")
    processor, pool, gate = None, cast(Any, None), None
    if ingest:
        from storage.deadletters import DeadLetterLog

        assert directory is not None
        processor, pool = build_processor(settings, directory, metrics)
        gate = DeadLetterGate(DeadLetterLog(pool), kafka_endpoint(settings, "pipeline"),
                              app_id or settings.pipeline_app_id, DEADLETTER)
        log.info("gateway %s", processor.gateway.did)
    anchorer = make_anchorer(settings, metrics) if anchor else None
    if anchorer is None and not ingest:
        raise SystemExit(f"anchor-only worker: no ledger in {settings.ledger_home}")
    app = build_app(settings, processor, metrics, app_id, offset_reset, anchorer, gate)
    try:
        _quiet_faust(loglevel)
        worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
        worker.spinner = None
        worker.execute_from_commandline()
    finally:
        if processor is not None:
            processor.close()
            pool.close()
        if anchorer is not None:
            anchorer.close()


_FAUST_LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG"}


def _quiet_faust(loglevel: str) -> None:
    """Keep the CLI's structured logging and give Faust, mode and aiokafka `loglevel`.

    Left to itself a Faust worker replaces the root handlers with its own and,
    for its terminal spinner, sets the root logger to DEBUG: every library's
    debug call (one per Kafka send, one per MinIO request) then builds a
    LogRecord just to spin it, about 7% of the worker's GIL time under load.
    So the worker runs with ``override_logging=False`` and no spinner."""
    level = _FAUST_LEVELS.get(loglevel, loglevel.upper())
    for name in ("faust", "mode", "aiokafka"):
        logging.getLogger(name).setLevel(level)


def make_anchorer(settings: Settings, metrics: Optional[PipelineMetrics] = None) -> Optional[Any]:
    """The worker's `Anchorer`, or None (logged) when ``settings.ledger_home`` holds no ledger:
    the worker then seals without anchoring, and its group reads ``iiot.sealed`` from where it
    left off once started with a ledger.  Warns when the gateway is not registered there."""
    from ledger.layout import LedgerLayout

    from .anchor import Anchorer

    if not LedgerLayout(settings.ledger_home).exists():
        log.error("anchoring off: no ledger in %s (run `sealstream ledger up`, or pass --no-anchor)",
                  settings.ledger_home)
        return None
    anchorer = Anchorer.from_settings(settings, metrics=metrics)
    try:
        found = anchorer.ledger.resolve(anchorer.gateway)
    except Exception as exc:  # noqa: BLE001 - the ledger may come up later; anchoring retries
        log.warning("gateway %s: ledger not reachable yet (%s)", anchorer.gateway, exc)
        return anchorer
    if found is None or (found.get("resolution") or {}).get("key") != anchorer.ledger.key.did:
        log.warning("gateway %s (%s) is not registered with this key on the ledger: its batches fail and are "
                    "retried until `sealstream pipeline register-gateway` is run", anchorer.gateway,
                    anchorer.ledger.key.did)
    return anchorer

