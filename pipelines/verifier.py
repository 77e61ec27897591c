"""The verifier agent (DESIGN.md step 8, continuous): re-verify every anchored batch.

`BatchVerifier.verify_batch(batch_id)` is the blocking core (tests call it
directly): collect the batch's evidence from storage and the ledger
(`pipelines.collect`), check it with the pure chain
(`verify.chain`: leaves recomputed from the stored statements and
archived payloads, each stored row against its signed payload, the root
rebuilt from the manifest and matched with the ANCHOR tx, headers from the
genesis), then in one transaction record the verdict in ``batch_verdicts``
and, for a verified batch, its statements in ``verified_statements`` (what
the ``verified_*`` views join).  A failed batch: its alert is written to
``alert_outbox`` in that same transaction (so a verdict is never recorded
without its alert), its failures are counted by step, and none of its rows
shows in the views; the outbox relay (`pipelines.outbox.AlertRelay`) then
commits the alert to ``iiot.alerts`` once (Kafka transactions; header
``ss-alert-id``).

The Faust app (`build_app`) runs one agent on ``iiot.anchors`` (value: the
anchor agent's JSON, ``batch_id`` read from it), a timer that picks up
anchored batches without a verdict (missed messages, a verifier started
late), a periodic audit that re-checks a random sample of batches
verified before (`audit_sample` every `audit_interval_s`) and the outbox
relay task (woken by each new alert, and every `relay_interval_s` to retry).

Metrics (own registry): ``sealstream_verify_batches_total{verdict}``,
``sealstream_verify_failures_total{step}``,
``sealstream_verify_last_failure_timestamp_seconds``,
``sealstream_verify_batch_seconds``, and the relay's ``sealstream_alert_outbox_*``
(`pipelines.outbox.OutboxMetrics`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from storage.outbox import AlertOutbox, OutboxMessage, new_alert_id
from storage.records import ms_to_datetime
from storage.verification import BatchVerdict, VerificationStore, VerifiedStatement
from trust.hashes import sha256
from trust.statement import ENVELOPE_CONTENT_TYPE, Statement

from verify import chain
from .collect import CollectError, Collector
from .outbox import AlertRelay, OutboxMetrics
from verify.model import Evidence, Report
from verify.rows import payload_rows
from sealstream._kafka_config import kafka_endpoint
from sealstream.metrics_targets import register_targets
from sealstream.topics import ALERTS, ANCHORS

__all__ = ["VerifyMetrics", "BatchVerifier", "alert_value", "alert_message", "build_app", "run_verifier",
           "ANCHORS_TOPIC", "ALERTS_TOPIC"]

log = logging.getLogger("sealstream.pipeline.verifier")
ANCHORS_TOPIC = ANCHORS
ALERTS_TOPIC = ALERTS


class VerifyMetrics:
    """The verifier's Prometheus series, in their own registry."""

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.batches = Counter("sealstream_verify_batches_total", "Batches verified, by verdict",
                               ["verdict"], registry=self.registry)
        self.failures = Counter("sealstream_verify_failures_total",
                                "Failures of the evidence chain, by the step that broke", ["step"],
                                registry=self.registry)
        self.last_failure = Gauge("sealstream_verify_last_failure_timestamp_seconds",
                                  "Unix time of the last failed verification", registry=self.registry)
        self.seconds = Histogram("sealstream_verify_batch_seconds", "Time to verify one batch",
                                 registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.outbox = OutboxMetrics(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)


def alert_value(batch_id: str, report: Report, audit: bool, alert_id: Optional[str] = None) -> bytes:
    """The ``iiot.alerts`` value of a failed batch: compact sorted JSON (``alert_id``: the
    ``ss-alert-id`` header's value, when given)."""
    doc = {"v": 1, "source": "verifier", "kind": "verification-failure", "severity": "critical",
           "batch_id": batch_id, "audit": audit, "step": report.failed_step,
           "failures": [f.to_json() for f in report.failures[:20]], "failure_count": report.counts.get("failures"),
           "ledger_height": report.ledger_height, "genesis_hash": report.genesis_hash,
           "time": int(time.time() * 1000)}
    if alert_id is not None:
        doc["alert_id"] = alert_id
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def alert_message(batch_id: str, report: Report, audit: bool, topic: str = ALERTS_TOPIC) -> OutboxMessage:
    """A failed batch's alert as an outbox message: key = batch id, a fresh alert id (also in the
    value), headers ``ss-rule: verification``, ``ss-severity: critical`` (the relay adds ``ss-alert-id``)."""
    aid = new_alert_id()
    return OutboxMessage(topic, batch_id.encode(), alert_value(batch_id, report, audit, aid),
                         (("ss-rule", "verification"), ("ss-severity", "critical")), aid)


def _verified_statements(evidence: Evidence) -> list[VerifiedStatement]:
    out = []
    for r in evidence.records:
        st = Statement.from_bytes(r.statement)
        plain_ts = st.kind == "timeseries" and st.content_type != ENVELOPE_CONTENT_TYPE  # an envelope has no rows
        rows = payload_rows(r.payload).num_rows if plain_ts and r.payload is not None else 0
        out.append(VerifiedStatement(sha256(r.statement), r.leaf_index or 0, rows, st.device, st.seq,
                                     ms_to_datetime(st.ts), st.payload_sha256))
    return out


@dataclass
class BatchVerifier:
    """Verify one batch and record the verdict (blocking, thread-safe through its pool)."""

    collector: Collector
    store: VerificationStore
    trusted_genesis_hash: Optional[bytes] = None
    metrics: Optional[VerifyMetrics] = None
    #: called with (key, value) once a failed verdict and its alert are committed to the outbox
    #: (the app wakes the relay with it); the relay, not this callback, sends the alert
    alert: Optional[Callable[[str, bytes], None]] = None
    alert_topic: Optional[str] = ALERTS_TOPIC  # None: no outbox row (nothing alerted)

    def verify_batch(self, batch_id: str, *, audit: bool = False) -> BatchVerdict:
        started = time.monotonic()
        evidence = self.collector.batch(batch_id)
        report = chain.verify(evidence, trusted_genesis_hash=self.trusted_genesis_hash)
        batch = self.collector.reader.batch(batch_id)
        assert batch is not None  # its evidence was just collected
        rows = 0 if evidence.rows is None else evidence.rows.num_rows
        if report.ok:
            verdict = BatchVerdict(batch_id, "verified", batch.root, batch.ledger_height or 0, batch.tx_index or 0,
                                   len(evidence.records), rows, audit=audit)
            self.store.record_verdict(verdict, _verified_statements(evidence))
        else:
            first = report.failures[0]
            verdict = BatchVerdict(batch_id, "failed", batch.root, batch.ledger_height or 0, batch.tx_index or 0,
                                   len(evidence.records), rows, failed_step=first.step,
                                   detail=first.message[:2000], audit=audit)
            message = None if self.alert_topic is None else alert_message(batch_id, report, audit, self.alert_topic)
            self.store.record_verdict(verdict, alert=message)
            if self.alert is not None and message is not None:
                self.alert(batch_id, message.value)
            log.warning("batch %s failed verification at %s: %s", batch_id, first.step, first.message)
        if self.metrics is not None:
            self.metrics.batches.labels(verdict.verdict).inc()
            self.metrics.seconds.observe(time.monotonic() - started)
            if not report.ok:
                for step in sorted({f.step for f in report.failures}):
                    self.metrics.failures.labels(step).inc()
                self.metrics.last_failure.set(time.time())
        return verdict

    def catch_up(self, limit: int = 100) -> list[BatchVerdict]:
        """Verify anchored batches that have no verdict yet (oldest first)."""
        return [self.verify_batch(b) for b in self.store.unverified_batches(limit)]

    def audit(self, sample: int, older_than_s: float = 0.0) -> list[BatchVerdict]:
        """Re-check a random sample of batches verified (or failed) before."""
        return [self.verify_batch(b, audit=True) for b in self.store.audit_sample(sample, older_than_s)]


def _batch_id(value: Optional[bytes]) -> Optional[str]:
    try:
        doc = json.loads(value or b"")
        bid = doc.get("batch_id") if isinstance(doc, dict) else None
        return bid if isinstance(bid, str) else None
    except ValueError:
        return None


def build_app(settings: Any, verifier: BatchVerifier, *, app_id: str, audit_interval_s: float = 300.0,
              audit_sample: int = 5, catch_up_s: float = 10.0, relay: Optional[AlertRelay] = None,
              relay_interval_s: float = 5.0) -> Any:
    """The Faust app: the agent on ``iiot.anchors``, a catch-up timer, the audit timer and, with
    `relay`, the outbox relay task (woken by each alert, retried every `relay_interval_s`)."""
    import faust

    datadir = Path(settings.home).resolve() / "pipeline" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    kafka = kafka_endpoint(settings, "verifier")
    app = faust.App(app_id, broker=kafka.faust_broker(), broker_credentials=kafka.ssl_context(),
                    store="memory://", datadir=str(datadir), key_serializer="raw", value_serializer="raw",
                    web_enabled=False, topic_allow_declare=False, topic_replication_factor=1,
                    consumer_auto_offset_reset="earliest", broker_commit_interval=1.0,
                    table_standby_replicas=0)
    anchors = app.topic(ANCHORS_TOPIC, key_type=bytes, value_type=bytes)
    wake: dict[str, Any] = {}  # "loop", "event": set by the relay task once it runs

    def alert_committed(key: str, value: bytes) -> None:  # called in a worker thread
        loop, event = wake.get("loop"), wake.get("event")
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    if relay is not None:
        verifier.alert = alert_committed

        @app.task
        async def relay_alerts() -> None:
            wake["event"], wake["loop"] = asyncio.Event(), asyncio.get_running_loop()
            while True:  # until the worker stops (the task is cancelled)
                await asyncio.to_thread(relay.run_once)
                try:
                    await asyncio.wait_for(wake["event"].wait(), relay_interval_s)
                except asyncio.TimeoutError:
                    pass
                wake["event"].clear()

    async def run(fn: Callable[[], Any], what: str) -> Any:
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(fn)
            except CollectError as exc:
                log.error("%s: %s", what, exc)
                return None
            except Exception as exc:  # noqa: BLE001 - storage/ledger outages: retry, the offset waits
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    @app.agent(anchors, name="verify-anchors")
    async def verify_anchors(stream: Any) -> None:
        async for event in stream.events():
            bid = _batch_id(event.message.value)
            if bid is None:
                log.error("%s %d/%d: no batch_id in the value", ANCHORS, event.message.partition,
                          event.message.offset)
                continue
            await run(functools.partial(verifier.verify_batch, bid), f"verify batch {bid}")

    @app.timer(interval=catch_up_s)
    async def catch_up() -> None:
        await run(verifier.catch_up, "catch up unverified batches")

    if audit_interval_s > 0:
        @app.timer(interval=audit_interval_s)
        async def audit() -> None:
            await run(lambda: verifier.audit(audit_sample, older_than_s=audit_interval_s), "audit")

    return app


def make_verifier(settings: Any, ledger_root: Path, metrics: Optional[VerifyMetrics] = None
                  ) -> tuple[BatchVerifier, Callable[[], None]]:
    """A `BatchVerifier` on the stack's services and the ledger at `ledger_root` (genesis of its state
    directory = the trust anchor), and a function closing what it opened."""
    verifier, _, close = _open_verifier(settings, ledger_root, metrics)
    return verifier, close


def _open_verifier(settings: Any, ledger_root: Path, metrics: Optional[VerifyMetrics] = None
                   ) -> tuple[BatchVerifier, AlertRelay, Callable[[], None]]:
    """`make_verifier` plus the outbox relay on the same pool (one connection more for its lock)."""
    from ledger.client import LedgerClient
    from ledger.layout import LedgerLayout
    from storage.db import open_pool

    client = LedgerClient.from_layout(ledger_root)
    pool = open_pool(settings.postgres_dsn_for("verifier"), max_size=6)
    collector = Collector.from_settings(settings, client, pool)
    pin = LedgerLayout(ledger_root).genesis().genesis_hash()
    relay = AlertRelay(AlertOutbox(pool), kafka_endpoint(settings, "verifier"),
                       metrics=metrics.outbox if metrics is not None else None)

    def close() -> None:
        relay.close()
        pool.close()
        client.close()

    return BatchVerifier(collector, collector.store, pin, metrics), relay, close


def run_verifier(settings: Any, *, app_id: str, ledger_root: Path, metrics_port: int = 0,
                 audit_interval_s: float = 300.0, audit_sample: int = 5, loglevel: str = "warn") -> None:
    """Run the verifier until SIGTERM/SIGINT (blocking)."""
    import faust

    from storage import MigrationError, migrate, storage_status

    if settings.security:
        # its role may not migrate (least privilege: `sealstream stack up` / `db migrate` do, as the owner)
        st = storage_status(settings.postgres_dsn_for("verifier"))
        if st.pending:
            raise MigrationError(f"the database schema is at v{st.version}, pending {', '.join(st.pending)}: "
                                 "run `sealstream db migrate` (as the stack's admin) first")
    else:
        migrate(settings.postgres_dsn)
    metrics = VerifyMetrics()
    if metrics_port:
        metrics.serve(metrics_port, settings.host)
        register_targets(Path(settings.home).resolve(), "sealstream-verifier", [f"{settings.host}:{metrics_port}"])
    verifier, relay, close = _open_verifier(settings, ledger_root, metrics)
    app = build_app(settings, verifier, app_id=app_id, audit_interval_s=audit_interval_s,
                    audit_sample=audit_sample, relay=relay)
    try:
        faust.Worker(app, loglevel=loglevel).execute_from_commandline()
    finally:
        close()
