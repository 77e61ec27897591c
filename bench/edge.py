"""Edge agent throughput against the Ed25519 signing ceiling of one core, measured in the same run.

    .venv/bin/python -m bench.edge [--readings 200000] [--group 50] [--runs 3]

1. ceiling: Ed25519 statement signatures/s on one core (sign_payload of a tiny payload, no I/O);
2. agent: a source emitting readings as fast as it can (one at a time: the next after `emit` returned)
   -> groups of --group -> signed -> spooled (fsynced) -> a PRIVATE Kafka (acked): readings/s and
   messages/s, and messages/s as a ratio of (1); with in-memory windows (a SIGKILL loses the open
   window) and with durable windows (each reading committed to the spool before `emit` returns; one
   source in a loop: one fsync per reading; --sources N emitting concurrently share commits);
3. spool write (append, one fsynced commit per 50 messages) and drain (spool -> Kafka acked) rates;
4. latency, sensor timestamp -> broker ack, p50/p99 over every reading: a source paced at --paced-rate
   readings/s with real timestamps, windows of --group readings or 0.2 s, both window modes.
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

import pyarrow as pa

import edge.agent
from edge.agent import Agent
from edge.config import DeviceConfig, EdgeConfig, GroupConfig, SpoolConfig
from edge.metrics import EdgeMetrics
from edge.model import Reading
from edge.sdk import TIMESERIES_CONTENT_TYPE, Producer, sign_payload, timeseries_payload
from edge.sender import Sender
from edge.signing import FileSigner
from edge.spool import Spool
from sealstream._kafka_config import KafkaLike, factory_principal, kafka_endpoint, kafka_secured
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


class Paced:
    """`rate` readings/s of 4 sensors with the real clock as their timestamp, `total` in all."""

    def __init__(self, total: int, rate: float, name: str = "paced") -> None:
        self.name, self.total, self.rate = name, total, rate

    async def run(self, ctx) -> None:
        t0 = time.monotonic()
        for i in range(self.total):
            lag = t0 + i / self.rate - time.monotonic()
            if lag > 0:
                await asyncio.sleep(lag)
            now = int(time.time() * 1000)
            await ctx.emit(Reading("d", ("t", "p", "v", "c")[i % 4], float(i), now, now))
        await asyncio.Event().wait()


class AckClock(Producer):
    """The agent's producer, noting the wall clock of each broker ack with the payload it acked."""

    acks: list[tuple[float, bytes]] = []

    def produce(self, msg, on_delivery=None):  # type: ignore[no-untyped-def,override]
        def done(err, partition, offset) -> None:  # type: ignore[no-untyped-def]
            if err is None:
                AckClock.acks.append((time.time() * 1000, msg.value))
            if on_delivery is not None:
                on_delivery(err, partition, offset)
        return super().produce(msg, done)


def latencies_ms(acks: list[tuple[float, bytes]]) -> list[float]:
    out = []
    for at, value in acks:
        for ts in pa.ipc.open_stream(value).read_all().column("ts").cast(pa.int64()).to_pylist():
            out.append(at - ts)
    return sorted(out)


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def _drained(agent: Agent, readings: int) -> bool:
    """Every reading emitted, no window open or being cut, everything spooled acked."""
    spooled = sum(agent.metrics.registry.get_sample_value("sealstream_edge_messages_total",
                                                          {"source": n, "kind": "timeseries"}) or 0
                  for n in agent.contexts)
    return (sum(c.readings for c in agent.contexts.values()) >= readings and not agent._groups
            and not agent._buf and not agent._flush_lock.locked() and agent.spool.depth[0] == 0
            and agent.sender is not None and agent.sender.sent >= spooled)


def agent_run(bootstrap: KafkaLike, home: Path, readings: int, group: int, durable: bool = False, sources: int = 1,
              rate: float = 0.0) -> tuple[float, float, int]:
    cfg = EdgeConfig(home / "edge.toml", "bench", SpoolConfig(home / "spool", 1 << 34, 86400),
                     GroupConfig(group, 0.2), {"d": DeviceConfig("d", "timeseries", {}, ())}, {}, metrics_port=0)
    each = readings // sources
    readings = each * sources
    srcs = [Paced(each, rate / sources) if rate else Burst(each) for i in range(sources)]
    for i, src in enumerate(srcs):
        src.name = f"{src.name}{i}"
    agent = Agent(cfg, bootstrap, sources=srcs, signers={"d": FileSigner(KeyPair.generate())}, metrics_port=0,
                  durable_windows=durable)
    messages = sources * -(-each // group)

    async def main() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        t0 = time.perf_counter()
        for _ in range(600_000):
            if agent.sender is not None and agent.sender.sent >= messages and not rate:
                break
            if rate and agent.sender is not None and _drained(agent, readings):  # time cuts: more messages
                break
            await asyncio.sleep(0.005)
        dt = time.perf_counter() - t0
        stop.set()
        await task
        return dt

    dt = asyncio.run(main())
    return readings / dt, messages / dt, messages


def spool_rates(bootstrap: KafkaLike, home: Path, n: int) -> tuple[float, float]:
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
    ap.add_argument("--durable-readings", type=int, default=20_000, help="readings of the durable-window runs")
    ap.add_argument("--sources", type=int, default=8, help="concurrent sources of the shared-commit run")
    ap.add_argument("--paced-rate", type=float, default=2000.0, help="readings/s of the latency runs")
    ap.add_argument("--paced-s", type=float, default=5.0, help="seconds of each latency run")
    a = ap.parse_args()
    from bench._pipeline_stack import PrivateStack
    from sealstream.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp, PrivateStack(Path(tmp) / "k", base=load_settings(), kafka=True) as ps:
        # the edge's own principal (TLS with its certificate when Kafka security is on)
        if kafka_secured(ps.settings):
            ps.ensure_factory("bench-edge")
        bootstrap = kafka_endpoint(ps.settings, factory_principal("bench-edge"))
        ceil, rps, mps, wr, dr = [], [], [], [], []
        drps, dmps, crps = [], [], []
        lat: dict[bool, list[float]] = {False: [], True: []}
        for i in range(a.runs):
            ceil.append(ceiling())
            r, m, _ = agent_run(bootstrap, Path(tmp) / f"a{i}", a.readings, a.group)
            rps.append(r)
            mps.append(m)
            r, m, _ = agent_run(bootstrap, Path(tmp) / f"d{i}", a.durable_readings, a.group, durable=True)
            drps.append(r)
            dmps.append(m)
            r, _m, _ = agent_run(bootstrap, Path(tmp) / f"c{i}", a.durable_readings, a.group, durable=True,
                                 sources=a.sources)
            crps.append(r)
            for durable in (False, True):
                AckClock.acks = []
                real = edge.agent.Producer
                edge.agent.Producer = AckClock  # type: ignore[misc]
                try:
                    agent_run(bootstrap, Path(tmp) / f"l{i}{durable}", int(a.paced_rate * a.paced_s), a.group,
                              durable=durable, rate=a.paced_rate)
                finally:
                    edge.agent.Producer = real  # type: ignore[misc]
                lat[durable] += latencies_ms(AckClock.acks)
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
        print(f"  with durable windows (each reading fsynced before emit returns), one source: "
              f"{med(drps):,.0f} readings/s, {med(dmps):,.0f} messages/s ({med(drps) / med(rps):.3f} of in-memory); "
              f"{a.sources} concurrent sources: {med(crps):,.0f} readings/s")
        for durable in (False, True):
            xs = lat[durable]
            print(f"latency sensor ts -> broker ack, {a.paced_rate:,.0f} readings/s paced, window {a.group} "
                  f"readings or 0.2 s, {'durable' if durable else 'in-memory'} windows: p50 {pct(xs, 0.5):,.1f} ms, "
                  f"p99 {pct(xs, 0.99):,.1f} ms ({len(xs):,} readings)")
        print(f"spool write (50 messages per fsynced commit, signing included): {med(wr):,.0f} messages/s "
              f"= {med(wr) / med(ceil):.2f} of the ceiling; drain to Kafka: {med(dr):,.0f} messages/s")


if __name__ == "__main__":
    main()
