"""Metrics overhead: ledger and pipeline throughput with SEALSTREAM_METRICS=1 versus 0, in one run.

    .venv/bin/python bench/metrics_overhead.py [--pairs 3] [--ledger-duration 6] [--clients 16]
                                               [--pipeline-messages 150] [--no-ledger] [--no-pipeline] [--json]

Ledger: bench/ledger.py's `drive` (imported) on a fresh 4-node cluster (4
sealers, the bench's kv app) per run, closed-loop clients. With metrics on,
every node's ``/metrics`` is scraped once a second while the load runs (five
times the stack's scrape rate), so the cost of a scrape is counted too; with
metrics off the nodes keep an empty registry and observe nothing.

Pipeline: bench/pipeline.py as a subprocess (``--metrics on|off``, one drain of
the trusted worker and one of the untrusted baseline on the same preloaded
messages). The figure is the worker's records/s; because the machine is
shared, the loss is also given on the trusted/baseline ratio of each run,
which cancels what the machine's load does to both.

Runs alternate on/off and flip the order every pair; medians are quoted.
loss = 1 - median(on) / median(off); the target is < 3 % (issue 8).
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
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

_HERE = Path(__file__).resolve().parent
# as in bench/ledger.py: bench/ first on sys.path would shadow the `ledger` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

TARGET_LOSS = 0.03


class _Scraper(threading.Thread):
    """GET every node's /metrics once a second until stopped (what Prometheus does, 5x as often)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls, self.stop, self.scrapes, self.samples = urls, threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for url in self.urls:
                try:
                    body = urllib.request.urlopen(url, timeout=2).read()
                    self.scrapes += 1
                    self.samples += body.count(b"\nsealstream_")
                except OSError:
                    pass


class _ScrapedTarget:
    """bench/ledger.py's target, with a scraper on its nodes while metrics are on."""

    def __init__(self, target: Any, scrape: bool) -> None:
        self.target, self.scrape, self.scraper = target, scrape, None
        self.name = getattr(target, "name", "sealstream")

    def start(self, n_nodes: int, n_sealers: int) -> None:
        self.target.start(n_nodes, n_sealers)
        if self.scrape:
            urls = [f"http://{a.host}:{a.http_port}/metrics" for a in self.target.cluster.addresses()]
            self.scraper = _Scraper(urls)
            self.scraper.start()

    def __getattr__(self, item: str) -> Any:
        return getattr(self.target, item)

    def stop(self) -> None:
        if self.scraper is not None:
            self.scraper.stop.set()
            self.scraper.join(5)
        self.target.stop()


def ledger_run(metrics: bool, args: argparse.Namespace) -> dict[str, Any]:
    from bench import ledger as bl
    from bench._target import DEFAULT_TARGET_SPEC, load_target

    os.environ["SEALSTREAM_METRICS"] = "1" if metrics else "0"  # inherited by the node processes
    bargs = bl.parse_args(["--duration", str(args.ledger_duration), "--warmup", "2", "--drain", "10",
                           "--clients", str(args.clients), "--nodes", "4", "--sealers", "4"])
    target = _ScrapedTarget(load_target(DEFAULT_TARGET_SPEC), scrape=metrics)
    out = bl.drive(target, 4, 4, bargs)
    row = {"metrics": metrics, "tx_per_s": out["tx_per_s"], "p50_ms": out["p50_ms"], "p99_ms": out["p99_ms"],
           "success_rate": out["success_rate"]}
    if target.scraper is not None:
        row["scrapes"] = target.scraper.scrapes
        row["samples_per_scrape"] = round(target.scraper.samples / max(1, target.scraper.scrapes), 1)
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
    return {"on": round(m_on, 2), "off": round(m_off, 2), "loss": round(1 - m_on / m_off, 4)}


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    rep: dict[str, Any] = {"pairs": args.pairs, "target_loss": TARGET_LOSS, "cpu_count": os.cpu_count(),
                           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if args.ledger:
        runs = _pairs(ledger_run, args, "ledger")
        rep["ledger"] = {"runs": runs, "tx_per_s": _loss(runs, "tx_per_s"), "clients": args.clients,
                         "duration_s": args.ledger_duration}
    if args.pipeline:
        runs = _pairs(pipeline_run, args, "pipeline")
        rep["pipeline"] = {"runs": runs, "records_per_s": _loss(runs, "records_per_s"),
                           "trusted_over_baseline": _loss(runs, "trusted_over_baseline"),
                           "messages": args.pipeline_messages}
    rep["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return rep


def format_report(rep: dict[str, Any]) -> str:
    def line(name: str, d: dict, unit: str) -> str:
        if d["loss"] is None:
            return f"{name:34s} no figures"
        verdict = "ok" if d["loss"] < TARGET_LOSS else "ABOVE TARGET"
        return (f"{name:34s} on {d['on']:>10} {unit:6s} off {d['off']:>10} {unit:6s} "
                f"loss {d['loss'] * 100:+6.2f} %  ({verdict}, target < {TARGET_LOSS * 100:.0f} %)")

    out = [f"metrics overhead, {rep['pairs']} on/off pair(s), medians; load average "
           f"{rep['loadavg_before']} -> {rep['loadavg_after']} on {rep['cpu_count']} cores"]
    if "ledger" in rep:
        out.append(line("ledger 4 nodes tx/s", rep["ledger"]["tx_per_s"], "tx/s"))
    if "pipeline" in rep:
        out.append(line("pipeline worker records/s", rep["pipeline"]["records_per_s"], "rec/s"))
        out.append(line("pipeline trusted/baseline ratio", rep["pipeline"]["trusted_over_baseline"], ""))
    return "\n".join(out)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="on/off pairs per component (default 3)")
    p.add_argument("--ledger-duration", type=float, default=6.0, help="measured seconds per ledger run")
    p.add_argument("--clients", type=int, default=16, help="closed-loop ledger clients")
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
