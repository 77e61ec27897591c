"""A spool that fills (Kafka unreachable): the alarm is raised (metric + log), the source is held at
its boundary (no reading accepted while full), nothing spooled is dropped, seqs stay contiguous."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from edge.agent import Agent
from edge.config import DeviceConfig, EdgeConfig, GroupConfig, SpoolConfig
from edge.signing import FileSigner
from ledger.cluster import free_ports
from ticker_source import Ticker
from trust.identity import KeyPair


def _value(agent: Agent, name: str, **labels: str) -> float:
    v = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_full_spool_holds_sources_and_alarms(tmp_path: Path, caplog) -> None:
    dead_port = free_ports(1)[0]  # nothing listens: Kafka is "down" for the whole test
    cfg = EdgeConfig(tmp_path / "edge.toml", "full-test",
                     SpoolConfig(tmp_path / "spool", max_bytes=8192, max_age_s=3600),
                     GroupConfig(readings=5, seconds=0.2), {"d": DeviceConfig("d", "timeseries", {}, ("t",))}, {},
                     metrics_port=0)
    signer = FileSigner(KeyPair.generate())
    ticker = Ticker("tick", "d", ["t"], 0.01)
    agent = Agent(cfg, f"127.0.0.1:{dead_port}", sources=[ticker], signers={"d": signer}, metrics_port=0)
    seen: dict = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        run = asyncio.create_task(agent.run(stop))
        for _ in range(300):  # bounded: until the alarm is up
            if _value(agent, "sealstream_edge_spool_full", reason="size") == 1:
                break
            await asyncio.sleep(0.1)
        seen["alarm"] = _value(agent, "sealstream_edge_spool_full", reason="size")
        seen["depth1"] = agent.spool.depth[0]
        seen["readings1"] = agent.contexts["tick"].readings
        await asyncio.sleep(1.5)  # the source keeps trying meanwhile
        seen["depth2"] = agent.spool.depth[0]
        seen["readings2"] = agent.contexts["tick"].readings
        seen["refused"] = _value(agent, "sealstream_edge_refused_total", source="tick")
        seen["blocked"] = _value(agent, "sealstream_edge_spool_blocked_seconds_total", source="tick")
        seen["rows"] = agent.spool.pending(0, 10_000)
        stop.set()
        await asyncio.wait_for(run, 60)

    with caplog.at_level(logging.ERROR, logger="edge.agent"):
        asyncio.run(scenario())
    assert seen["alarm"] == 1
    assert any("spool full" in r.getMessage() and getattr(r, "reason", None) == "size" for r in caplog.records)
    assert seen["depth2"] == seen["depth1"] > 0          # nothing dropped, nothing added while full
    assert seen["readings2"] == seen["readings1"]         # the source is held at its boundary
    assert seen["refused"] >= 1
    seqs = [r.seq for r in seen["rows"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every spooled message kept, in order
    assert agent.spool.path.exists()
