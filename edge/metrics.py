"""The edge agent's Prometheus metrics (one registry per agent; `/metrics` on ``[edge] metrics_port``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["EdgeMetrics", "STATES"]

STATES = ("connecting", "connected", "disconnected")


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.readings = Counter("sealstream_edge_readings_total", "readings received, by source", ["source"],
                                registry=r)
        self.blobs = Counter("sealstream_edge_blobs_total", "images/video chunks received, by source", ["source"],
                             registry=r)
        self.messages = Counter("sealstream_edge_messages_total", "signed messages spooled, by source and kind",
                                ["source", "kind"], registry=r)
        self.sent = Counter("sealstream_edge_sent_total", "messages acknowledged by Kafka, by topic", ["topic"],
                            registry=r)
        self.send_errors = Counter("sealstream_edge_send_errors_total", "Kafka delivery errors, by reason",
                                   ["reason"], registry=r)
        self.rejected = Counter("sealstream_edge_rejected_total",
                                "messages the broker refused for good (kept in the spool's rejected table)",
                                ["reason"], registry=r)
        self.source_errors = Counter("sealstream_edge_source_errors_total", "bad input or failed reads, by reason",
                                     ["source", "reason"], registry=r)
        self.source_restarts = Counter("sealstream_edge_source_restarts_total", "a source crashed and was restarted",
                                       ["source"], registry=r)
        self.source_state = Gauge("sealstream_edge_source_state", "1 for the source's current connection state",
                                  ["source", "state"], registry=r)
        self.spool_messages = Gauge("sealstream_edge_spool_messages", "messages in the spool", registry=r)
        self.spool_bytes = Gauge("sealstream_edge_spool_bytes", "bytes in the spool", registry=r)
        self.spool_age = Gauge("sealstream_edge_spool_oldest_age_seconds", "age of the oldest spooled message",
                               registry=r)
        self.spool_full = Gauge("sealstream_edge_spool_full",
                                "1 while the spool is full (by bound): new readings are refused at the sources",
                                ["reason"], registry=r)
        self.refused = Counter("sealstream_edge_refused_total",
                               "readings/blobs a source could not hand over because the spool was full",
                               ["source"], registry=r)
        self.blocked = Counter("sealstream_edge_spool_blocked_seconds_total",
                               "seconds sources waited for room in the spool", ["source"], registry=r)
        self.pending_refused = Counter("sealstream_edge_pending_refused_total",
                                       "sealed pending readings that did not open at a restart (kept in the "
                                       "spool's pending_refused table), by reason", ["reason"], registry=r)
        self.spool_writes = Counter("sealstream_edge_spool_commits_total", "spool transactions (each fsynced)",
                                    registry=r)
        self.skew = Histogram("sealstream_edge_clock_skew_seconds",
                              "edge receive time minus the device's timestamp of a value",
                              ["source"], buckets=(-60, -5, -1, -0.1, 0, 0.01, 0.05, 0.1, 0.5, 1, 5, 60, 300),
                              registry=r)
        self.skew_last = Gauge("sealstream_edge_clock_skew_last_seconds",
                               "edge receive time minus device timestamp, last value per device", ["device"],
                               registry=r)
        self.last_send = Gauge("sealstream_edge_last_send_timestamp_seconds", "when Kafka last acknowledged a message",
                               registry=r)
        self.kafka_up = Gauge("sealstream_edge_kafka_connected", "1 while the producer reaches a broker", registry=r)
        for reason in ("size", "age"):
            self.spool_full.labels(reason).set(0)
        self.send_errors.labels("none")

    def set_state(self, source: str, state: str) -> None:
        for s in STATES:
            self.source_state.labels(source, s).set(1 if s == state else 0)
