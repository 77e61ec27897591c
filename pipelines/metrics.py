"""Prometheus metrics of the pipeline worker, served on ``/metrics``.

``PipelineMetrics.switched(False)`` (``SEALSTREAM_METRICS=0``) hands out no-op
metrics: nothing is updated and the worker serves no ``/metrics``. The consumer
lag gauge is `pipelines.lag.ConsumerLag`, registered by the worker.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["PipelineMetrics"]


class _Off:
    """Every metric while metrics are off: labels(), inc() and observe() do nothing."""

    def labels(self, *values: str) -> "_Off":
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class PipelineMetrics:
    """The worker's counters on their own registry (so tests can build several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ingested = Counter("sealstream_pipeline_ingested", "records stored and sealed", ["kind"], registry=r)
        self.ingested_bytes = Counter("sealstream_pipeline_ingested_bytes", "payload bytes stored and sealed",
                                      ["kind"], registry=r)
        self.deadletters = Counter("sealstream_pipeline_deadletters", "records dead-lettered", ["reason"],
                                   registry=r)
        self.deadletters_repeated = Counter(
            "sealstream_pipeline_deadletters_repeated",
            "dead letters not produced again: this group dead-lettered the position before (found: recorded = "
            "marked produced, in-topic = found in iiot.deadletter after a crash)", ["found"], registry=r)
        self.redeliveries = Counter("sealstream_pipeline_redeliveries",
                                    "records already stored from the same offset, sealed again", registry=r)
        self.retries = Counter("sealstream_pipeline_store_retries",
                               "batch attempts retried, by cause: an outage (ledger, database, blobstore, storage, "
                               "network, timeout, io, other; waited out) or unexpected (a bug: bounded, then "
                               "internal-error)", ["cause"], registry=r)
        for cause in ("ledger", "database", "blobstore", "storage", "network", "timeout", "io", "other",
                      "unexpected"):  # = worker.RETRY_CAUSES: every series exported from 0, as before the label
            self.retries.labels(cause)
        self.store_seconds = Histogram("sealstream_pipeline_store_seconds",
                                       "archive + database writes of one record",
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                       registry=r)
        # Anchoring (pipelines.anchor): names are read by the dashboards, keep them exactly.
        self.batches_anchored = Counter("sealstream_pipeline_batches_anchored",
                                        "batches whose ANCHOR the ledger committed", registry=r)
        self.batches_failed = Counter("sealstream_pipeline_batches_failed",
                                      "ANCHOR submission attempts that failed (retried)", registry=r)
        self.anchor_backlog = Gauge("sealstream_pipeline_anchor_backlog",
                                    "sealed statements of this worker not yet in an anchored batch", registry=r)
        self.anchor_seconds = Histogram("sealstream_pipeline_anchor_seconds", "ANCHOR submit -> ledger commit",
                                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                        registry=r)
        self.device_to_anchored = Histogram("sealstream_pipeline_device_to_anchored_seconds",
                                            "statement ts -> its batch anchored",
                                            buckets=(0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300),
                                            registry=r)
        self.anchor_skipped = Counter("sealstream_pipeline_anchor_skipped",
                                      "seals not anchored here (malformed, or sealed by a gateway this ledger "
                                      "does not know)", ["reason"], registry=r)

    @classmethod
    def switched(cls, enabled: bool) -> "PipelineMetrics":
        """The worker's metrics, or (``SEALSTREAM_METRICS=0``) the same attributes as no-ops on an empty registry."""
        m = cls()
        if not enabled:
            for name, value in list(vars(m).items()):
                if isinstance(value, (Counter, Gauge, Histogram)):
                    m.registry.unregister(value)
                    setattr(m, name, _Off())
        return m

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
