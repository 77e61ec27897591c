"""Prometheus metrics of one ledger node (served on its HTTP port at ``/metrics``).

Each node has its own `CollectorRegistry`. Gauges and counters are read from
the node's live state at scrape time (no double bookkeeping); only the commit
latency is observed as it happens. Names (all ``sealstream_ledger_*``):

| metric | type | meaning |
|---|---|---|
| ``height`` | gauge | committed height |
| ``view`` | gauge | current PBFT view |
| ``view_changes_total`` | counter | view changes this process started |
| ``sealers`` | gauge | size of the sealer set deciding the next block |
| ``is_sealer`` | gauge | 1 if this node is in that set |
| ``committed_tx_total`` | counter | transactions in blocks this process committed |
| ``commit_latency_seconds`` | histogram | client request received here -> block committed here |
| ``peers_connected`` | gauge | outbound peer links up |
| ``reputation`` | gauge | this node's reputation score (committed state) |
| ``sealer`` | gauge | 1 if this node is in the current sealer set |
| ``dropped_messages_total{reason}`` | counter | frames/messages dropped, by reason |
| ``refused_connections_total{reason}`` | counter | connections refused at accept (``total_cap``, ``address_cap``) |
| ``frames_over_limit_total{link}`` | counter | frames over the link's limit (``hello``, ``peer``, ``client``) |
| ``dropped_replays_total{kind}`` | counter | signed ``status``/``fetch``/``viewchange`` messages dropped as replays |
| ``handshake_failures_total{reason}`` | counter | TLS handshakes refused or failed (``dial_*``: as dialer) |
| ``mempool_refusals_total{reason}`` | counter | txs refused entry to the mempool (``not_registered``, ...) |
| ``inbound_connections`` | gauge | inbound connections open |

Every series carries the ``node`` label (the node's name) so one Prometheus
job can hold the whole cluster.

``SEALSTREAM_METRICS=0`` (read here: `ledger` does not import `sealstream`)
turns metrics off: the registry stays empty (``/metrics`` answers an empty
page) and nothing is observed, for overhead measurements.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["NodeMetrics", "PREFIX", "LATENCY_BUCKETS", "metrics_enabled"]

PREFIX = "sealstream_ledger"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


def metrics_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """``SEALSTREAM_METRICS`` as `sealstream.settings.Settings.metrics` parses it (unset = on)."""
    return environ.get("SEALSTREAM_METRICS", "1").strip().lower() not in ("0", "false", "off", "no", "n", "f")


class _Unobserved:
    """The histogram stand-in while metrics are off."""

    def observe(self, amount: float) -> None:
        pass

    def observe_many(self, amounts: Iterable[float]) -> None:
        pass


class _Latency(Collector):
    """A one-series histogram observed a block at a time.

    A node observes one latency per committed tx; prometheus_client's
    `Histogram.observe` takes a lock and updates two values per call, which
    cost ~5% of a sealer's CPU under load. The node's event loop is the only
    writer and also serves ``/metrics``, so plain counters suffice; the
    exposition is the same (``_bucket{le}``, ``_count``, ``_sum``).
    """

    def __init__(self, name: str, doc: str, node: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.node = name, doc, node
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last = +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # le: a value equal to a bound is in it
        self.sum += amount

    def observe_many(self, amounts: Iterable[float]) -> None:
        bounds, counts, total = self.bounds, self.counts, 0.0
        for a in amounts:
            counts[bisect_left(bounds, a)] += 1
            total += a
        self.sum += total

    def collect(self) -> Iterator[Metric]:
        h = HistogramMetricFamily(self.name, self.doc, labels=["node"])
        acc, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            acc += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), acc))
        h.add_metric([self.node], buckets, self.sum)
        yield h


class _Snapshot(Collector):
    def __init__(self, node: str, read: Callable[[], Mapping[str, object]]) -> None:
        self.node = node
        self.read = read

    def collect(self) -> Iterator[Metric]:
        s = self.read()
        lab = ["node"]
        for name, doc in (("height", "Committed height."), ("view", "Current PBFT view."),
                          ("sealers", "Sealers deciding the next block."),
                          ("is_sealer", "1 if this node is a sealer for the next block."),
                          ("peers_connected", "Outbound peer links that are up."),
                          ("reputation", "This node's reputation score in the committed state (fixed point)."),
                          ("sealer", "1 if this node is in the current sealer set (reputation-chosen).")):
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=lab)
            g.add_metric([self.node], float(s[name]))  # type: ignore[arg-type]
            yield g
        for name, doc in (("view_changes", "View changes started by this replica."),
                          ("committed_tx", "Transactions committed by this node.")):
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=lab)
            c.add_metric([self.node], float(s[name]))  # type: ignore[arg-type]
            yield c
        d = CounterMetricFamily(f"{PREFIX}_dropped_messages", "Messages or frames dropped, by reason.",
                                labels=["node", "reason"])
        for reason, n in sorted(dict(s["drops"]).items()):  # type: ignore[call-overload]
            d.add_metric([self.node, reason], float(n))
        yield d
        for key, name, doc, label in (
                ("refused", "refused_connections", "Inbound connections refused at accept, by reason.", "reason"),
                ("over_limit", "frames_over_limit", "Frames over their link's length limit, by link.", "link"),
                ("replays", "dropped_replays", "Signed messages dropped as replays, by kind.", "kind"),
                ("mempool_refusals", "mempool_refusals",
                 "Client transactions refused entry to the mempool (answered at once, never ordered), by reason.",
                 "reason"),
                ("handshake_failures", "handshake_failures",
                 "TLS handshakes refused or failed, by reason (dial_*: this node dialing a peer).", "reason")):
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["node", label])
            for reason, n in sorted(dict(s.get(key, {})).items()):  # type: ignore[call-overload]
                c.add_metric([self.node, reason], float(n))
            yield c
        if "connections" in s:
            g = GaugeMetricFamily(f"{PREFIX}_inbound_connections", "Inbound connections open.", labels=lab)
            g.add_metric([self.node], float(s["connections"]))  # type: ignore[arg-type]
            yield g


class NodeMetrics:
    """The registry of one node: a live snapshot collector plus the latency histogram."""

    def __init__(self, node: str, read: Callable[[], Mapping[str, object]], enabled: bool | None = None) -> None:
        self.enabled = metrics_enabled() if enabled is None else enabled
        self.registry = CollectorRegistry(auto_describe=False)
        self.commit_latency: _Latency | _Unobserved = _Unobserved()
        if self.enabled:
            self.registry.register(_Snapshot(node, read))
            self.commit_latency = _Latency(
                f"{PREFIX}_commit_latency_seconds",
                "Time from a client's request arriving at this node to the block holding it being committed here.",
                node, LATENCY_BUCKETS)
            self.registry.register(self.commit_latency)
