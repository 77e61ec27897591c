"""`bench/edge.py --real`: the edge agent fed by REAL sources, into a private Kafka.

Three sources, each its own device: an MQTT topic on mosquitto (JSON ``{"v": value, "ts": ms}``, QoS 1),
a Sparkplug B edge node on the same mosquitto (NBIRTH, then NDATA of `SPB_METRICS` metrics by alias,
QoS 1) and an OPC UA subscription to `OPC_NODES` nodes of an asyncua server (publishing interval 20 ms,
queue 100). The servers and publishers run in a thread of their own (`LoopThread`), the agent in this
thread's event loop, in the same process (2 cores shared: the publisher's cost is in the figures).

throughput(): the publisher sends as fast as it can (MQTT/Sparkplug: up to 200 unacknowledged QoS 1
publishes; OPC UA: writes to the nodes in a loop), the agent (durable windows, the product's default,
or in-memory) signs windows of `group` readings and Kafka acknowledges them: readings/s and signed
messages/s from the first reading the agent took to the last broker ack.

latency(): the same sources paced (readings/s each), with a real trusted pipeline worker (its own
database and bucket, `bench.pipeline.Consumer`) anchoring on a 4-node ledger: per reading, the
sensor value's timestamp (the MQTT payload's ``ts``, the Sparkplug metric's timestamp, the OPC UA
SourceTimestamp; all the same host clock) to its statement's PostgreSQL row (``stored_at``) and to
its batch's ``anchored_at``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from edge.simulators import LOOPBACK, LoopThread, OpcUaServer, sparkplug_payload
from infra.mosquitto import mosquitto
from edge.agent import Agent
from edge.config import DeviceConfig, EdgeConfig, GroupConfig, SpoolConfig
from edge.signing import FileSigner
from trust.identity import KeyPair, save_keypair

KINDS = ("mqtt", "sparkplug", "opcua")
SPB_METRICS = 10
OPC_NODES = 4
GUARD_S = 300.0  # a guard against a hung run, never a measured figure
#: the publishers' aiomqtt logger: its "N pending publish calls" warnings are the point of a flood
_QUIET = logging.getLogger("bench.edge.publisher")
_QUIET.setLevel(logging.ERROR)


def _sections(kind: str, broker: Any, opc: OpcUaServer | None) -> dict:
    if kind == "mqtt":
        return {"type": "mqtt", "host": broker.host, "port": broker.port, "qos": 1,
                "topics": [{"topic": "bench/+/value", "device": "mqtt-d", "sensor": "{1}", "value_path": "v",
                            "timestamp_path": "ts"}]}
    if kind == "sparkplug":
        return {"type": "sparkplug", "host": broker.host, "port": broker.port, "group": "bench",
                "metrics": [{"node": "n1", "metric": "*", "device": "spb-d"}]}
    assert opc is not None
    return {"type": "opcua", "endpoint": opc.endpoint, "publishing_interval_ms": 20, "queue_size": 100,
            "nodes": [{"node_id": f"ns=2;s=Press.N{i}", "device": "opc-d", "sensor": f"n{i}"}
                      for i in range(OPC_NODES)]}


def _source(kind: str, broker: Any, opc: OpcUaServer | None) -> Any:
    import importlib

    return importlib.import_module(f"edge.sources.{kind}").from_config(kind, _sections(kind, broker, opc))


async def _mqtt_publish(host: str, port: int, n: int, rate: float, stop: Callable[[], bool]) -> int:
    import aiomqtt

    sent = 0
    t0 = time.monotonic()
    async with aiomqtt.Client(host, port, identifier=f"bench-pub-{uuid.uuid4().hex[:6]}",
                              max_inflight_messages=200, logger=_QUIET) as c:
        pending: set = set()
        for i in range(n):
            if stop():
                break
            if rate:
                lag = t0 + i / rate - time.monotonic()
                if lag > 0:
                    await asyncio.sleep(lag)
            body = json.dumps({"v": float(i), "ts": int(time.time() * 1000)})
            pending.add(asyncio.ensure_future(c.publish(f"bench/s{i % 4}/value", body, qos=1)))
            if len(pending) >= 200:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            sent += 1
        if pending:
            await asyncio.wait(pending)
    return sent


async def _spb_publish(host: str, port: int, n: int, rate: float, stop: Callable[[], bool]) -> int:
    """`n` readings as NDATA of SPB_METRICS metrics each (after an NBIRTH defining their aliases)."""
    import aiomqtt

    from edge.sources.sparkplug_b_pb import DataType

    node = "spBv1.0/bench/{}/n1"
    now = int(time.time() * 1000)
    birth = [dict(name="bdSeq", datatype=DataType.Int64, long_value=1)] + [
        dict(name=f"m{j}", alias=j + 1, datatype=DataType.Double, timestamp=now, double_value=0.0)
        for j in range(SPB_METRICS)]
    sent = 0
    t0 = time.monotonic()
    async with aiomqtt.Client(host, port, identifier=f"bench-spb-{uuid.uuid4().hex[:6]}",
                              max_inflight_messages=200, logger=_QUIET) as c:
        await c.publish(node.format("NBIRTH"), sparkplug_payload(0, birth, now), qos=1)
        sent += SPB_METRICS
        pending: set = set()
        seq = 1
        while sent < n and not stop():
            if rate:
                lag = t0 + sent / rate - time.monotonic()
                if lag > 0:
                    await asyncio.sleep(lag)
            ts = int(time.time() * 1000)
            metrics = [dict(alias=j + 1, timestamp=ts, double_value=float(sent + j)) for j in range(SPB_METRICS)]
            pending.add(asyncio.ensure_future(c.publish(node.format("NDATA"), sparkplug_payload(seq, metrics, ts),
                                                        qos=1)))
            seq = (seq + 1) % 256
            sent += SPB_METRICS
            if len(pending) >= 200:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending)
    return sent


async def _opc_write(opc: OpcUaServer, n: int, rate: float, stop: Callable[[], bool]) -> int:
    from datetime import datetime, timezone

    t0 = time.monotonic()
    for i in range(n):
        if stop():
            return i
        if rate:
            lag = t0 + i / rate - time.monotonic()
            if lag > 0:
                await asyncio.sleep(lag)
        elif i % 50 == 0:
            await asyncio.sleep(0)
        await opc.write(f"N{i % OPC_NODES}", float(i), source_ts=datetime.now(timezone.utc))
    return n


class Sources:
    """mosquitto and an asyncua server, in a LoopThread, for the life of the benchmark."""

    def __init__(self, workdir: Path) -> None:
        self.loop = LoopThread()
        # a flood outruns the agent (durable windows: one fsync per MQTT message); mosquitto's default
        # max_queued_messages (1000 per client) would drop the excess silently: the broker holds it all
        self._broker_cm = mosquitto(workdir / "mosquitto", extra=("max_queued_messages 1000000",))
        self.broker = self._broker_cm.__enter__()
        self.opc = OpcUaServer({f"N{i}": 0.0 for i in range(OPC_NODES)})
        self.loop.run(self.opc.start())

    def publish(self, kind: str, n: int, rate: float, stop: Callable[[], bool]) -> "Any":
        """Start publishing `n` readings at `rate` (0: as fast as possible); a future of the count sent."""
        if kind == "mqtt":
            coro = _mqtt_publish(self.broker.host, self.broker.port, n, rate, stop)
        elif kind == "sparkplug":
            coro = _spb_publish(self.broker.host, self.broker.port, n, rate, stop)
        else:
            coro = _opc_write(self.opc, n, rate, stop)
        return asyncio.run_coroutine_threadsafe(coro, self.loop.loop)

    def close(self) -> None:
        try:
            self.loop.run(self.opc.stop())
        finally:
            self.loop.close()
            self._broker_cm.__exit__(None, None, None)


DEVICE = {"mqtt": "mqtt-d", "sparkplug": "spb-d", "opcua": "opc-d"}


def edge_config(home: Path, group: int, seconds: float, factory: str = "bench-edge") -> EdgeConfig:
    devices = {d: DeviceConfig(d, "timeseries", {}, ()) for d in DEVICE.values()}
    return EdgeConfig(home / "edge.toml", factory, SpoolConfig(home / "spool", 1 << 34, 86400),
                      GroupConfig(group, seconds), devices, {}, metrics_port=0)


def device_keys(home: Path) -> dict[str, KeyPair]:
    keys = {}
    (home / "keys").mkdir(parents=True, exist_ok=True)
    for d in DEVICE.values():
        kp = KeyPair.generate()
        save_keypair(home / "keys" / f"{d}.key", kp)
        keys[d] = kp
    return keys


def _run_agent(agent: Agent, srcs: Sources, kind: str, n: int, rate: float,
               until: Callable[[Agent, int], bool]) -> tuple[float, int, int]:
    """Run the agent while `kind` publishes; (seconds from first reading to done, readings, messages)."""

    async def main() -> tuple[float, int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        ctx = agent.contexts[kind]
        deadline = time.monotonic() + 60
        while ctx.current_state != "connected":  # subscribed before anything is published
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind}: the source did not connect")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        fut = srcs.publish(kind, n, rate, stop.is_set)
        while ctx.readings == 0:
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        deadline = time.monotonic() + GUARD_S
        while not (fut.done() and until(agent, n)):
            if fut.done() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind}: {ctx.readings} readings taken, {agent.sender.sent if agent.sender else 0}"
                                 f" acked after {GUARD_S:.0f} s")
            await asyncio.sleep(0.005)
        dt = time.perf_counter() - t0
        readings = ctx.readings
        messages = int(agent.metrics.registry.get_sample_value(
            "sealstream_edge_messages_total", {"source": kind, "kind": "timeseries"}) or 0)
        stop.set()
        await task
        return dt, readings, messages

    return asyncio.run(main())


def _all_acked(agent: Agent, n: int) -> bool:
    """Every published reading taken (OPC UA: the subscription may coalesce; then when nothing moves),
    no window open or being cut, everything spooled acked."""
    spooled = sum(agent.metrics.registry.get_sample_value("sealstream_edge_messages_total",
                                                          {"source": s, "kind": "timeseries"}) or 0
                  for s in agent.contexts)
    taken = sum(c.readings for c in agent.contexts.values())
    return (taken >= n and not agent._groups and not agent._buf and not agent._flush_lock.locked()
            and agent.spool.depth[0] == 0 and agent.sender is not None and agent.sender.sent >= spooled)


def _until_done(kind: str) -> Any:
    """The stop condition of one run of `kind`: `want` readings taken and all acknowledged; for OPC
    UA (coalesced values never arrive) also done once 1 s passed without a new reading."""
    last = {"n": -1, "t": time.monotonic()}

    def until(a: Agent, want: int) -> bool:
        taken = a.contexts[kind].readings
        if kind == "opcua" and taken < want:
            if taken != last["n"]:
                last["n"], last["t"] = taken, time.monotonic()
                return False
            if time.monotonic() - last["t"] < 1.0:
                return False
            want = taken
        return _all_acked(a, want)

    return until


def throughput(bootstrap: Any, srcs: Sources, home: Path, kind: str, n: int, group: int,
               durable: bool) -> tuple[float, float, int, int]:
    """(readings/s, messages/s, readings taken, messages) for one source, as fast as it publishes."""
    cfg = edge_config(home, group, 0.2)
    signers = {d: FileSigner(KeyPair.generate()) for d in DEVICE.values()}
    src = _source(kind, srcs.broker, srcs.opc)
    agent = Agent(cfg, bootstrap, sources=[src], signers=signers, metrics_port=0, durable_windows=durable)
    dt, readings, messages = _run_agent(agent, srcs, kind, n, 0.0, _until_done(kind))
    if kind == "opcua":
        dt = max(1e-9, dt - 1.0)  # the quiet second that ended it
    return readings / dt, messages / dt, readings, messages


def latency_run(bootstrap: Any, srcs: Sources, home: Path, cfg: EdgeConfig, signers: dict, kind: str, n: int,
                rate: float) -> int:
    """One paced run of `kind` (the worker is already consuming); the readings taken."""
    src = _source(kind, srcs.broker, srcs.opc)
    agent = Agent(cfg, bootstrap, sources=[src], signers=signers, metrics_port=0)
    _dt, readings, _m = _run_agent(agent, srcs, kind, n, rate, _until_done(kind))
    return readings


def reading_times(dsn: str, did: str) -> list[tuple[float, float, float | None]]:
    """Per stored reading of `did`: its timestamp, its statement's stored_at and its batch's anchored_at
    (None while not anchored), epoch ms."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM r.time) * 1000, extract(epoch FROM st.stored_at) * 1000, "
            "extract(epoch FROM b.anchored_at) * 1000 FROM readings r "
            "JOIN statements st USING (statement_hash) "
            "LEFT JOIN batch_leaves l ON l.statement_hash = st.statement_hash "
            "LEFT JOIN batches b ON b.batch_id = l.batch_id AND b.anchor_state = 'anchored' "
            "WHERE st.device = %s", (did,)).fetchall()
    return [(float(t), float(st), None if an is None else float(an)) for t, st, an in rows]


def manifest(home: Path, factory: str, keys: dict[str, KeyPair]) -> None:
    """The device manifest the worker trusts the edge's devices through (``--directory manifest``)."""
    man = home / "devices" / factory
    man.mkdir(parents=True, exist_ok=True)
    (man / "devices.json").write_text(json.dumps({"v": 1, "factory": factory, "devices": [
        {"did": kp.did, "kind": "timeseries", "name": name, "sensors": [],
         "key_file": str(home / "keys" / f"{name}.key")} for name, kp in keys.items()]}))


__all__ = ["KINDS", "DEVICE", "LOOPBACK", "Sources", "throughput", "latency_run", "reading_times", "manifest",
           "edge_config", "device_keys"]
