"""Edge agent throughput against the Ed25519 signing ceiling of one core, measured in the same run.

    .venv/bin/python -m bench.edge [--readings 200000] [--group 50] [--runs 3]

1. ceiling: Ed25519 statement signatures/s on one core (sign_payload of a tiny payload, no I/O);
2. agent: a source emitting readings as fast as it can -> groups of --group -> signed -> spooled
   (fsynced) -> a PRIVATE Kafka (acked): readings/s and messages/s, and messages/s as a ratio of (1);
3. spool write (append, one fsynced commit per 50 messages) and drain (spool -> Kafka acked) rates.
Medians of --runs; the load average is printed with the figures. Latency to stored/anchored: not yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from edge.agent import Agent
from edge.config import DeviceConfig, EdgeConfig, GroupConfig, SpoolConfig
from edge.metrics import EdgeMetrics
from edge.model import Reading
from edge.sdk import TIMESERIES_CONTENT_TYPE, Producer, sign_payload, timeseries_payload
from edge.sender import Sender
from edge.signing import FileSigner
from edge.spool import Spool
from trust.identity import KeyPair


def ceiling(seconds: float = 2.0) -> float:
    signer = FileSigner(KeyPair.generate())
    payload = timeseries_payload([(1_700_000_000_000, "t", 1.0)])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            sign_payload(signer, n, 1_700_000_000_000, "timeseries", TIMESERIES_CONTENT_TYPE, payload, 1)
            n += 1
    return n / (time.perf_counter() - t0)


class Burst:
    name = "burst"

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = asyncio.Event()

    async def run(self, ctx) -> None:
        now = int(time.time() * 1000)
        for i in range(self.total):
            await ctx.emit(Reading("d", ("t", "p", "v", "c")[i % 4], float(i), now + i // 4, now + i // 4))
        self.done.set()
        await asyncio.Event().wait()


def agent_run(bootstrap: str, home: Path, readings: int, group: int) -> tuple[float, float, int]:
    cfg = EdgeConfig(home / "edge.toml", "bench", SpoolConfig(home / "spool", 1 << 34, 86400),
                     GroupConfig(group, 0.2), {"d": DeviceConfig("d", "timeseries", {}, ())}, {}, metrics_port=0)
    src = Burst(readings)
    agent = Agent(cfg, bootstrap, sources=[src], signers={"d": FileSigner(KeyPair.generate())}, metrics_port=0)
    messages = -(-readings // group)

    async def main() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        t0 = time.perf_counter()
        for _ in range(600_000):
            if agent.sender is not None and agent.sender.sent >= messages:
                break
            await asyncio.sleep(0.005)
        dt = time.perf_counter() - t0
        stop.set()
        await task
        return dt

    dt = asyncio.run(main())
    return readings / dt, messages / dt, messages


def spool_rates(bootstrap: str, home: Path, n: int) -> tuple[float, float]:
    signer = FileSigner(KeyPair.generate())
    payload = timeseries_payload([(1_700_000_000_000 + i, "t", float(i)) for i in range(50)])
    sp = Spool(home / "spool-bench")
    build = (signer.did, lambda seq: sign_payload(signer, seq, 1_700_000_000_000, "timeseries",
                                                  TIMESERIES_CONTENT_TYPE, payload, 1), None, "bench")
    t0 = time.perf_counter()
    for _ in range(n // 50):
        sp.append([build] * 50)
    write = n / (time.perf_counter() - t0)
    sender = Sender(sp, lambda: Producer(bootstrap), EdgeMetrics())
    t0 = time.perf_counter()
    sender.start()
    for _ in range(600_000):
        if sp.depth[0] == 0:
            break
        time.sleep(0.005)
    drain = n / (time.perf_counter() - t0)
    sender.stop()
    sender.join(30)
    sp.close()
    return write, drain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--group", type=int, default=50)
    ap.add_argument("--spool-messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    from bench._pipeline_stack import PrivateStack
    from sealstream.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp, PrivateStack(Path(tmp) / "k", base=load_settings(), kafka=True) as ps:
        bootstrap = ps.settings.kafka_bootstrap
        ceil, rps, mps, wr, dr = [], [], [], [], []
        for i in range(a.runs):
            ceil.append(ceiling())
            r, m, _ = agent_run(bootstrap, Path(tmp) / f"a{i}", a.readings, a.group)
            rps.append(r)
            mps.append(m)
            w, d = spool_rates(bootstrap, Path(tmp) / f"s{i}", a.spool_messages)
            wr.append(w)
            dr.append(d)
        med = statistics.median
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs, "
              f"medians of {a.runs} runs")
        print(f"Ed25519 statement signing ceiling, one core: {med(ceil):,.0f} signatures/s")
        print(f"agent source -> Kafka acked: {med(rps):,.0f} readings/s, {med(mps):,.0f} signed messages/s "
              f"({a.group} readings each) = {med(mps) / med(ceil):.3f} of the ceiling "
              f"({med(rps) / med(ceil):.2f} readings per signature-time)")
        print(f"spool write (50 messages per fsynced commit, signing included): {med(wr):,.0f} messages/s "
              f"= {med(wr) / med(ceil):.2f} of the ceiling; drain to Kafka: {med(dr):,.0f} messages/s")


if __name__ == "__main__":
    main()
