"""Smoke test of bench/edge.py's real sources (mosquitto MQTT, Sparkplug B, an asyncua OPC UA
subscription -> the agent -> a private Kafka; paced with a real worker anchoring on a 4-node ledger)
with a tiny load: the report's shape and consistency, never timings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUM = r"([\d,]+(?:\.\d+)?)"


def _f(x: str) -> float:
    return float(x.replace(",", ""))


@pytest.mark.services
def test_bench_edge_real_sources_tiny_run(stack, settings) -> None:
    p = subprocess.run([sys.executable, "-m", "bench.edge", "--only-real", "--runs", "1", "--real-readings", "300",
                        "--real-rate", "50", "--real-seconds", "2", "--group", "20"], cwd=ROOT,
                       env=dict(os.environ, SEALSTREAM_LOG_LEVEL="WARNING"), capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert re.search(r"load average [\d.]+ [\d.]+ [\d.]+ before, [\d.]+ [\d.]+ [\d.]+ after", out), out
    ceiling = re.search(rf"signing ceiling, one core: {NUM} signatures/s", out)
    assert ceiling and _f(ceiling.group(1)) > 0
    for kind in ("mqtt", "sparkplug", "opcua"):
        for mode in ("durable", "in-memory"):
            m = re.search(rf"real {kind} +-> Kafka acked, {mode} windows: {NUM} readings/s, {NUM} signed messages/s "
                          rf"= ([\d.]+) of the ceiling \({NUM} readings taken in {NUM} messages\)", out)
            assert m, (kind, mode, out)
            rps, mps, ratio, taken, msgs = (_f(g) for g in m.groups())
            assert rps > 0 and mps > 0 and taken > 0 and 0 < msgs <= taken
            assert ratio == pytest.approx(mps / _f(ceiling.group(1)), rel=0.05, abs=1e-4)
        m = re.search(rf"real {kind} +latency, .*stored \(PostgreSQL row\): p50 {NUM} ms, p99 {NUM} ms; -> anchored: "
                      rf"p50 {NUM} ms, p99 {NUM} ms \({NUM} readings timestamped in the run, of {NUM} taken", out)
        assert m, (kind, out)
        s50, s99, a50, a99, n, taken = (_f(g) for g in m.groups())
        assert 0 < n <= taken and s50 <= s99 and a50 <= a99 and s50 <= a50  # anchored after stored
