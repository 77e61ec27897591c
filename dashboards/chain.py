"""**Chain health**: the ledger cluster as Prometheus sees it (one series per node)."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from ._panels import RATE, board, m, quantiles, prom, timeseries

__all__ = ["UID", "build"]

UID = "sealstream-chain-health"


def build() -> Dashboard:
    return board(UID, "sealstream / Chain health",
                 "Ledger nodes: height, block and transaction rate, commit latency, views, sealers, "
                 "reputation, peers, dropped messages and what the nodes refused (ledger/metrics.py).", ["ledger"],
                 "sealstream_ledger_height", [
        (timeseries("Height per node", "Committed height reported by each node; a node below the others lags.",
                    "short", prom(f"max by (node) ({m('sealstream_ledger_height')})", "{{node}}")), 12, 8),
        (timeseries("Block rate", "Blocks committed per second, per node.", "short",
                    prom(f"max by (node) (rate({m('sealstream_ledger_height')}[{RATE}]))", "{{node}}")), 12, 8),
        (timeseries("Committed transactions", "Transactions per second in blocks each node committed.", "ops",
                    prom(f"sum by (node) (rate({m('sealstream_ledger_committed_tx_total')}[{RATE}]))",
                         "{{node}}")), 12, 8),
        (timeseries("Commit latency p50 / p99",
                    "Client request arriving at a node -> its block committed there, over all nodes.", "s",
                    *quantiles("sealstream_ledger_commit_latency_seconds")), 12, 8),
        (timeseries("View per node", "Current PBFT view; a step is a view change (new primary).", "short",
                    prom(f"max by (node) ({m('sealstream_ledger_view')})", "{{node}}")), 8, 8),
        (timeseries("View changes", "View changes started per node in each interval.", "short",
                    prom(f"sum by (node) (increase({m('sealstream_ledger_view_changes_total')}[{RATE}]))",
                         "{{node}}")), 8, 8),
        (timeseries("Sealer set", "1 while a node is in the sealer set (as the nodes agree on it); "
                    "the set size deciding the next block.", "short",
                    prom(f"max by (node) ({m('sealstream_ledger_sealer')})", "{{node}}"),
                    prom(f"max({m('sealstream_ledger_sealers')})", "set size")), 8, 8),
        (timeseries("Reputation", "Reputation score of each node as kept in ledger state; the top-k are sealers.",
                    "short", prom(f"max by (node) ({m('sealstream_ledger_reputation')})", "{{node}}")), 8, 8),
        (timeseries("Peers connected", "Outbound peer links up, per node.", "short",
                    prom(f"min by (node) ({m('sealstream_ledger_peers_connected')})", "{{node}}")), 8, 8),
        (timeseries("Dropped messages", "Frames or messages dropped per second, by reason (docs/ledger.md, Drops).",
                    "ops", prom(f"sum by (reason) (rate({m('sealstream_ledger_dropped_messages_total')}[{RATE}]))",
                                "{{reason}}")), 8, 8),
        (timeseries("Refused links and transactions",
                    "What the nodes refused, per second: TLS handshakes (a key outside the genesis, a replayed "
                    "handshake, plaintext), connections over their caps, frames over their link's limit, signed "
                    "messages dropped as replays, and transactions refused entry to the mempool (unregistered, "
                    "no fee, caps). docs/ledger.md, Links bound to genesis and Admission.", "ops",
                    prom(f"sum by (reason) (rate({m('sealstream_ledger_handshake_failures_total')}[{RATE}]))",
                         "handshake {{reason}}"),
                    prom(f"sum by (reason) (rate({m('sealstream_ledger_refused_connections_total')}[{RATE}]))",
                         "connection {{reason}}"),
                    prom(f"sum by (link) (rate({m('sealstream_ledger_frames_over_limit_total')}[{RATE}]))",
                         "over limit {{link}}"),
                    prom(f"sum by (kind) (rate({m('sealstream_ledger_dropped_replays_total')}[{RATE}]))",
                         "replay {{kind}}"),
                    prom(f"sum by (reason) (rate({m('sealstream_ledger_mempool_refusals_total')}[{RATE}]))",
                         "mempool {{reason}}")), 24, 8),
    ])
