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
5. real sources (`bench/_edge_real.py`; --real-readings 0 skips them): an MQTT topic on mosquitto, a
   Sparkplug B edge node on it and an OPC UA subscription to an asyncua server, each published as fast
   as it goes into the agent (durable windows, the product's default, and in-memory) -> a PRIVATE Kafka:
   readings/s and signed messages/s, messages/s as a ratio of (1); then each paced at --real-rate
   readings/s for --real-seconds with a real trusted pipeline worker anchoring on a 4-node ledger:
   p50/p99 from the sensor value's timestamp to its statement's PostgreSQL row and to anchored.
Medians of --runs; the load average is printed with the figures (before and after).

    .venv/bin/python -m bench.edge --only-real --runs 1     # the ceiling and the real sources only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional

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


def real_sources(ps, bootstrap: KafkaLike, tmp: Path, a: argparse.Namespace,
                 ceil: list[float]) -> list[str]:
    """Step 5: the real sources' figures, as report lines."""
    from bench import _edge_real as real

    out = []
    srcs = real.Sources(tmp / "servers")
    try:
        thr: dict[tuple[str, bool], list[tuple[float, float, int, int]]] = {}
        for i in range(a.runs):
            ceil.append(ceiling())
            for kind in real.KINDS:
                for durable in (True, False):
                    thr.setdefault((kind, durable), []).append(
                        real.throughput(bootstrap, srcs, tmp / f"r{i}{kind}{durable}", kind, a.real_readings,
                                        a.group, durable))
        lat = real_latency(ps, bootstrap, srcs, tmp / "latency", a)
    finally:
        srcs.close()
    med = statistics.median
    c = med(ceil)
    for kind in real.KINDS:
        for durable in (True, False):
            xs = thr[(kind, durable)]
            rps, mps = med(x[0] for x in xs), med(x[1] for x in xs)
            out.append(f"real {kind:9s} -> Kafka acked, {'durable' if durable else 'in-memory'} windows: "
                       f"{rps:,.0f} readings/s, {mps:,.0f} signed messages/s = {mps / c:.4f} of the ceiling "
                       f"({med(x[2] for x in xs):,.0f} readings taken in {med(x[3] for x in xs):,.0f} messages)")
    for kind, (stored, anchored, n, taken) in lat.items():  # n: readings timestamped in the run
        out.append(f"real {kind:9s} latency, {a.real_rate:,.0f} readings/s paced, window {a.group} or 0.2 s, "
                   f"sensor ts -> stored (PostgreSQL row): p50 {pct(stored, 0.5):,.1f} ms, p99 {pct(stored, 0.99):,.1f}"
                   f" ms; -> anchored: p50 {pct(anchored, 0.5):,.0f} ms, p99 {pct(anchored, 0.99):,.0f} ms "
                   f"({n:,} readings timestamped in the run, of {taken:,} taken; every one stored and anchored)")
    return out


def real_latency(ps, bootstrap: KafkaLike, srcs, home: Path, a: argparse.Namespace) -> dict:
    """Each real source paced, with a real trusted worker (own database and bucket) anchoring on a 4-node
    ledger: kind -> (ms to stored, ms to anchored, readings stored, readings taken)."""
    from bench import _edge_real as real
    from bench.pipeline import RAW, Consumer, Load, _start_ledger
    from bench._pipeline_kafka import end_offsets

    s = ps.settings
    home.mkdir(parents=True)
    factory = "bench-edge"
    keys = real.device_keys(home)
    real.manifest(home, factory, keys)
    cluster = _start_ledger(home)
    try:
        here = end_offsets(kafka_endpoint(s, "admin"), RAW)
        load = Load(here, {}, factory, [kp.did for kp in keys.values()], 0, {}, 0, [])
        worker = Consumer("trusted", s, load, home, "default", home / "worker.log", start=here, anchor=True)
        try:
            signers = {d: FileSigner(kp) for d, kp in keys.items()}
            # warm-up (not measured): the worker's first batches, partitions, the ledger's first anchors
            warm = real.latency_run(bootstrap, srcs, home, real.edge_config(home / "edge-warm", a.group, 0.2, factory),
                                    signers, "mqtt", int(a.real_rate * 2), a.real_rate)
            taken: dict[str, int] = {}
            since: dict[str, float] = {}
            for kind in real.KINDS:
                cfg = real.edge_config(home / f"edge-{kind}", a.group, 0.2, factory)
                since[kind] = time.time() * 1000  # before the source subscribes: an older value is no sample
                taken[kind] = real.latency_run(bootstrap, srcs, home, cfg, signers, kind,
                                               int(a.real_rate * a.real_seconds), a.real_rate)
            out = {}
            for kind in real.KINDS:
                did = keys[real.DEVICE[kind]].did
                deadline = time.monotonic() + 600  # a guard, never a measured figure
                while True:  # every reading of the device stored (warm-up too) and anchored
                    rows = real.reading_times(worker.dsn, did)
                    ours = [r for r in rows if r[0] >= since[kind]]
                    if len(rows) >= taken[kind] + (warm if kind == "mqtt" else 0) and \
                            all(an is not None for *_, an in rows):
                        break
                    if not worker.children[0].alive() or time.monotonic() > deadline:
                        raise SystemExit(f"{kind}: {len(rows)} of {taken[kind]} readings stored, "
                                         f"{sum(an is not None for *_, an in rows)} anchored; worker log {worker.log}")
                    time.sleep(1)
                out[kind] = (sorted(st - t for t, st, _ in ours), sorted(an - t for t, _, an in ours if an is not None),
                             len(ours), taken[kind])
            return out
        finally:
            worker.close()
    finally:
        cluster.stop(timeout=10)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--group", type=int, default=50)
    ap.add_argument("--spool-messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--durable-readings", type=int, default=20_000, help="readings of the durable-window runs")
    ap.add_argument("--sources", type=int, default=8, help="concurrent sources of the shared-commit run")
    ap.add_argument("--paced-rate", type=float, default=2000.0, help="readings/s of the latency runs")
    ap.add_argument("--paced-s", type=float, default=5.0, help="seconds of each latency run")
    ap.add_argument("--real-readings", type=int, default=20_000,
                    help="readings of each real-source throughput run (0: no real sources)")
    ap.add_argument("--real-rate", type=float, default=200.0, help="readings/s of each real-source latency run")
    ap.add_argument("--real-seconds", type=float, default=10.0, help="seconds of each real-source latency run")
    ap.add_argument("--only-real", action="store_true", help="the ceiling and the real sources only")
    a = ap.parse_args(argv)
    from infra.private_stack import PrivateStack
    from sealstream.settings import load_settings

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, PrivateStack(Path(tmp) / "k", base=load_settings(), kafka=True) as ps:
        # the edge's own principal (TLS with its certificate when Kafka security is on)
        if kafka_secured(ps.settings):
            ps.ensure_factory("bench-edge")
        bootstrap = kafka_endpoint(ps.settings, factory_principal("bench-edge"))
        ceil: list[float] = []
        rps: list[float] = []
        mps: list[float] = []
        wr: list[float] = []
        dr: list[float] = []
        drps: list[float] = []
        dmps: list[float] = []
        crps: list[float] = []
        lat: dict[bool, list[float]] = {False: [], True: []}
        real_lines = real_sources(ps, bootstrap, Path(tmp), a, ceil) if a.real_readings else []
        for i in range(0 if a.only_real else a.runs):
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
        print(f"load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after, {os.cpu_count()} CPUs, "
              f"medians of {a.runs} runs")
        print(f"Ed25519 statement signing ceiling, one core: {med(ceil):,.0f} signatures/s")
        for line in real_lines:
            print(line)
        if a.only_real:
            return
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
