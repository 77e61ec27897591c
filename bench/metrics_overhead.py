"""Metrics overhead: ledger and pipeline throughput with SEALSTREAM_METRICS=1 versus 0, in one run.

    .venv/bin/python bench/metrics_overhead.py [--pairs 3] [--ledger-duration 6] [--clients 16]
                                               [--pipeline-messages 150] [--no-ledger] [--no-pipeline] [--json]

Ledger: bench/ledger.py's `drive` (imported) on a fresh 4-node cluster (4
sealers, the bench's kv app) per run, closed-loop clients. With metrics on,
every node's ``/metrics`` is scraped every 5 s while the load runs (the
stack's Prometheus rate; ``--scrape-interval 1`` for five times that), so the
cost of a scrape is counted too; with
metrics off the nodes keep an empty registry and observe nothing.

Pipeline: bench/pipeline.py as a subprocess (``--metrics on|off``, one drain of
the trusted worker and one of the untrusted baseline on the same preloaded
messages). The figure is the worker's records/s; because the machine is
shared, the loss is also given on the trusted/baseline ratio of each run,
which cancels what the machine's load does to both.

Runs alternate on/off and flip the order every pair; medians are quoted.
loss = 1 - median(on) / median(off), and "paired" = 1 - the median of each
pair's on/off ratio; the target is < 3 % (issue 8). On a shared machine the
run-to-run spread (printed) can exceed that, so the report also gives the
cost of the metrics work itself, measured in-process (per observation, per
record, per scrape with the consumer lag read from the real Kafka) as a share
of the measured per-tx CPU of the nodes and of the worker's time per record.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional
from sealstream._kafka_config import kafka_endpoint

_HERE = Path(__file__).resolve().parent
# as in bench/ledger.py: bench/ first on sys.path would shadow the `ledger` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

TARGET_LOSS = 0.03


class _Scraper(threading.Thread):
    """GET every node's /metrics every ``interval_s`` until stopped (what Prometheus does)."""

    def __init__(self, urls: list[str], interval_s: float) -> None:
        super().__init__(daemon=True)
        self.urls, self.interval_s, self.stop, self.scrapes, self.samples = urls, interval_s, threading.Event(), 0, 0
        self.seconds: list[float] = []

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            for url in self.urls:
                try:
                    t0 = time.perf_counter()
                    body = urllib.request.urlopen(url, timeout=2).read()
                    self.seconds.append(time.perf_counter() - t0)
                    self.scrapes += 1
                    self.samples += body.count(b"\nsealstream_")
                except OSError:
                    pass


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _ScrapedTarget:
    """bench/ledger.py's target, with a scraper on its nodes while metrics are on, and the
    nodes' CPU time from ready to stop (load-independent, unlike tx/s on a shared machine)."""

    def __init__(self, target: Any, scrape_interval_s: float) -> None:
        self.target, self.scrape_interval_s, self.scraper = target, scrape_interval_s, None
        self.name = getattr(target, "name", "sealstream")
        self.node_cpu_s = 0.0

    def _node_cpu(self) -> float:
        c = self.target.cluster
        return sum(_cpu_s(pid) for pid in (c.pid(n) for n in c.names) if pid)

    def start(self, n_nodes: int, n_sealers: int) -> None:
        self.target.start(n_nodes, n_sealers)
        self.node_cpu_s = -self._node_cpu()
        if self.scrape_interval_s > 0:
            # the plain-HTTP metrics listener Prometheus scrapes (the API itself is pinned HTTPS)
            urls = [u for a in self.target.cluster.addresses() if (u := a.metrics_url) is not None]
            self.scraper = _Scraper(urls, self.scrape_interval_s)
            self.scraper.start()

    def __getattr__(self, item: str) -> Any:
        return getattr(self.target, item)

    def stop(self) -> None:
        if self.scraper is not None:
            self.scraper.stop.set()
            self.scraper.join(5)
        if self.target.cluster is not None:
            self.node_cpu_s += self._node_cpu()
        self.target.stop()


def ledger_run(metrics: bool, args: argparse.Namespace) -> dict[str, Any]:
    from bench import ledger as bl
    from bench._target import DEFAULT_TARGET_SPEC, load_target

    os.environ["SEALSTREAM_METRICS"] = "1" if metrics else "0"  # inherited by the node processes
    bargs = bl.parse_args(["--duration", str(args.ledger_duration), "--warmup", "2", "--drain", "10",
                           "--clients", str(args.clients), "--nodes", "4", "--sealers", "4"])
    target = _ScrapedTarget(load_target(DEFAULT_TARGET_SPEC), args.scrape_interval if metrics else 0.0)
    out = bl.drive(target, 4, 4, bargs)
    txs = sum(r["total_submitted"] for r in out["runs"])
    row = {"metrics": metrics, "tx_per_s": out["tx_per_s"], "p50_ms": out["p50_ms"], "p99_ms": out["p99_ms"],
           "success_rate": out["success_rate"],
           "node_cpu_ms_per_tx": round(1000 * target.node_cpu_s / txs, 4) if txs else None}
    if target.scraper is not None:
        row["scrapes"] = target.scraper.scrapes
        row["samples_per_scrape"] = round(target.scraper.samples / max(1, target.scraper.scrapes), 1)
        if target.scraper.seconds:
            row["scrape_ms_p50"] = round(statistics.median(target.scraper.seconds) * 1000, 2)
    return row


def pipeline_run(metrics: bool, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, SEALSTREAM_METRICS="1" if metrics else "0")
    cmd = [sys.executable, str(_HERE / "pipeline.py"), "--messages", str(args.pipeline_messages), "--repeats", "1",
           "--latency-seconds", "0", "--metrics", "on" if metrics else "off", "--json"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, timeout=args.pipeline_timeout,
                              cwd=_HERE.parent)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"bench/pipeline.py exited {proc.returncode}: {err.read().decode()[-2000:]}")
    rep = json.loads(proc.stdout)
    return {"metrics": metrics, "records_per_s": rep["trusted"]["records_per_s"],
            "baseline_records_per_s": rep["baseline"]["records_per_s"],
            "trusted_over_baseline": rep["ratio"]["records_per_s"], "reported_metrics": rep.get("metrics")}


def ledger_costs(tx_per_s: Optional[float], node_cpu_ms_per_tx: Optional[float], nodes: int = 4,
                 scrape_interval_s: float = 5.0) -> dict[str, Any]:
    """What a node's metrics cost, measured in this process: one latency observation per tx per node
    (clients send to every sealer) and one scrape per node every ``scrape_interval_s``, as a share of
    the nodes' measured CPU per tx (metrics off) at ``tx_per_s``."""
    from prometheus_client import generate_latest

    from ledger.metrics import NodeMetrics

    state = {"height": 12345, "view": 3, "sealers": 4, "is_sealer": 1, "peers_connected": 3, "reputation": 1000,
             "sealer": 1, "view_changes": 2, "committed_tx": 10 ** 6,
             "drops": {"duplicate": 120, "stale_height": 40, "truncated": 1}}
    m, n = NodeMetrics("node0", lambda: state, enabled=True), 50_000
    t0 = time.perf_counter()
    for _ in range(n):
        m.commit_latency.observe(0.042)
    observe_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(200):
        generate_latest(m.registry)
    scrape_ms = (time.perf_counter() - t0) / 200 * 1000
    share = None
    if tx_per_s and node_cpu_ms_per_tx:
        extra_ms = nodes * (observe_us / 1000 + scrape_ms / (scrape_interval_s * tx_per_s))
        share = extra_ms / node_cpu_ms_per_tx
    return {"observe_us": round(observe_us, 3), "scrape_ms": round(scrape_ms, 3), "nodes": nodes,
            "tx_per_s": tx_per_s, "node_cpu_ms_per_tx": node_cpu_ms_per_tx,
            "share_of_node_cpu": None if share is None else round(share, 5)}


def pipeline_costs(records_per_s: Optional[float], scrape_interval_s: float = 5.0) -> dict[str, Any]:
    """What the worker's metrics cost, measured in this process: the calls made per record, one
    scrape with the consumer lag read from the real Kafka; as a share of the worker's time at
    ``records_per_s`` (the metrics-off median) with one scrape every ``scrape_interval_s``."""
    from prometheus_client import generate_latest

    from pipelines.checks import TOPIC_KINDS
    from pipelines.lag import ConsumerLag
    from pipelines.metrics import PipelineMetrics
    from sealstream.settings import load_settings

    m, n = PipelineMetrics.switched(True), 20_000
    t0 = time.perf_counter()
    for _ in range(n):  # what app.py and the anchor agent call for one stored, sealed, anchored record
        m.ingested.labels("timeseries").inc()
        m.ingested_bytes.labels("timeseries").inc(4096)
        m.store_seconds.observe(0.012)
        m.device_to_anchored.observe(1.5)
    per_record_us = (time.perf_counter() - t0) / n * 1e6
    s = load_settings()
    lag = ConsumerLag(kafka_endpoint(s, "pipeline"), f"bench-lag-{os.getpid()}", tuple(TOPIC_KINDS), ttl_s=0.0)
    m.registry.register(lag)
    try:
        generate_latest(m.registry)  # connect once, as the worker's long-lived collector has
        scrapes = []
        for _ in range(5):
            t0 = time.perf_counter()
            generate_latest(m.registry)
            scrapes.append(time.perf_counter() - t0)
    finally:
        lag.close()
    scrape_ms = statistics.median(scrapes) * 1000
    share = None
    if records_per_s:
        share = per_record_us * 1e-6 * records_per_s + scrape_ms / 1000 / scrape_interval_s
    return {"per_record_us": round(per_record_us, 2), "scrape_with_lag_ms": round(scrape_ms, 2),
            "scrape_interval_s": scrape_interval_s, "records_per_s": records_per_s,
            "share_of_worker_time": None if share is None else round(share, 5)}


def _pairs(run: Callable[[bool, argparse.Namespace], dict], args: argparse.Namespace, what: str) -> list[dict]:
    runs = []
    for i in range(args.pairs):
        for metrics in ((True, False) if i % 2 == 0 else (False, True)):
            r = run(metrics, args)
            runs.append(r)
            if not args.json:
                print(f"{what} pair {i + 1}/{args.pairs} metrics {'on ' if metrics else 'off'} {r}", file=sys.stderr)
    return runs


def _loss(runs: list[dict], key: str) -> dict[str, Optional[float]]:
    on = [r[key] for r in runs if r["metrics"] and r.get(key)]
    off = [r[key] for r in runs if not r["metrics"] and r.get(key)]
    if not on or not off:
        return {"on": None, "off": None, "loss": None}
    m_on, m_off = statistics.median(on), statistics.median(off)
    # run-to-run spread of the metrics-off runs: a loss smaller than this is not resolved
    spread = (max(off) - min(off)) / m_off if len(off) > 1 else None
    # each on run against the off run next to it in time (same pair): the machine's load moves less
    paired = [a[key] / b[key] for a, b in zip(runs[::2], runs[1::2]) if a.get(key) and b.get(key)]
    paired = [r if a["metrics"] else 1 / r for r, a in zip(paired, runs[::2])]
    return {"on": round(m_on, 4), "off": round(m_off, 4), "loss": round(1 - m_on / m_off, 4),
            "paired_loss": round(1 - statistics.median(paired), 4) if paired else None,
            "off_spread": None if spread is None else round(spread, 4)}


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    rep: dict[str, Any] = {"pairs": args.pairs, "target_loss": TARGET_LOSS, "cpu_count": os.cpu_count(),
                           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if args.ledger:
        runs = _pairs(ledger_run, args, "ledger")
        cpu = _loss(runs, "node_cpu_ms_per_tx")  # a cost: "loss" here is -(extra CPU per tx)
        tps = _loss(runs, "tx_per_s")
        rep["ledger"] = {"runs": runs, "tx_per_s": tps, "node_cpu_ms_per_tx": cpu,
                         "clients": args.clients, "duration_s": args.ledger_duration,
                         "costs": ledger_costs(tps["off"], cpu["off"])}
    if args.pipeline:
        runs = _pairs(pipeline_run, args, "pipeline")
        rec = _loss(runs, "records_per_s")
        rep["pipeline"] = {"runs": runs, "records_per_s": rec,
                           "trusted_over_baseline": _loss(runs, "trusted_over_baseline"),
                           "messages": args.pipeline_messages, "costs": pipeline_costs(rec["off"])}
    rep["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return rep


def format_report(rep: dict[str, Any]) -> str:
    def line(name: str, d: dict, unit: str) -> str:
        if d["loss"] is None:
            return f"{name:34s} no figures"
        verdict = "ok" if d["loss"] < TARGET_LOSS else "ABOVE TARGET"
        spread = "" if d.get("off_spread") is None else f", off runs spread {d['off_spread'] * 100:.0f} %"
        paired = "" if d.get("paired_loss") is None else f", paired {d['paired_loss'] * 100:+.2f} %"
        return (f"{name:34s} on {d['on']:>10} {unit:6s} off {d['off']:>10} {unit:6s} "
                f"loss {d['loss'] * 100:+6.2f} %  ({verdict}, target < {TARGET_LOSS * 100:.0f} %{paired}{spread})")

    out = [f"metrics overhead, {rep['pairs']} on/off pair(s), medians; load average "
           f"{rep['loadavg_before']} -> {rep['loadavg_after']} on {rep['cpu_count']} cores"]
    if "ledger" in rep:
        out.append(line("ledger 4 nodes tx/s", rep["ledger"]["tx_per_s"], "tx/s"))
        cpu = rep["ledger"]["node_cpu_ms_per_tx"]
        if cpu["loss"] is not None:
            extra = -cpu["loss"]
            out.append(f"{'ledger node CPU per tx (4 nodes)':34s} on {cpu['on']:>10} {'ms':6s} off {cpu['off']:>10} "
                       f"{'ms':6s} extra {extra * 100:+6.2f} %  (CPU per tx also moves with block size)")
        c = rep["ledger"]["costs"]
        share = "n/a" if c["share_of_node_cpu"] is None else f"{c['share_of_node_cpu'] * 100:.3f} %"
        out.append(f"{'ledger metrics cost':34s} {c['observe_us']} us/observation + {c['scrape_ms']} ms per scrape, "
                   f"x{c['nodes']} nodes = {share} of the nodes' CPU per tx at {c['tx_per_s']} tx/s")
    if "pipeline" in rep:
        out.append(line("pipeline worker records/s", rep["pipeline"]["records_per_s"], "rec/s"))
        out.append(line("pipeline trusted/baseline ratio", rep["pipeline"]["trusted_over_baseline"], ""))
        c = rep["pipeline"]["costs"]
        share = "n/a" if c["share_of_worker_time"] is None else f"{c['share_of_worker_time'] * 100:.3f} %"
        out.append(f"{'pipeline metrics cost':34s} {c['per_record_us']} us/record + {c['scrape_with_lag_ms']} ms "
                   f"per scrape (lag read from Kafka) every {c['scrape_interval_s']:g} s = {share} of the "
                   f"worker's time at {c['records_per_s']} rec/s")
    return "\n".join(out)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="on/off pairs per component (default 3)")
    p.add_argument("--ledger-duration", type=float, default=6.0, help="measured seconds per ledger run")
    p.add_argument("--clients", type=int, default=16, help="closed-loop ledger clients")
    p.add_argument("--scrape-interval", type=float, default=5.0,
                   help="seconds between scrapes of each node while metrics are on (0 = none; default 5, the stack's)")
    p.add_argument("--pipeline-messages", type=int, default=150, help="preloaded messages per pipeline run")
    p.add_argument("--pipeline-timeout", type=float, default=600.0, help="seconds one bench/pipeline.py run may take")
    p.add_argument("--no-ledger", dest="ledger", action="store_false")
    p.add_argument("--no-pipeline", dest="pipeline", action="store_false")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    rep = build_report(args)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
