"""A spool that fills (Kafka unreachable): the alarm is raised (metric + log), the source is held at
its boundary (no reading accepted while full), nothing spooled is dropped, seqs stay contiguous; and
once Kafka is back (a real private broker) the alarm clears and the source resumes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from edge.agent import RESUME_FRACTION, Agent
from edge.config import DeviceConfig, EdgeConfig, GroupConfig, SpoolConfig
from edge.signing import FileSigner
from edge.spool import Spool
from infra.process import free_ports
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


@pytest.mark.services
def test_alarm_clears_and_the_source_resumes_when_kafka_returns(stack, settings, tmp_path: Path, caplog) -> None:
    """A private Kafka stopped while the agent runs: the spool fills and the source is held (as above);
    Kafka started again: the spool drains, the alarm clears (metric 0, one warning), the held source
    resumes where it was held, and Kafka holds every message spooled, in seq order, contiguous, once."""
    from devices_helpers import end_offsets, read_range
    from kafka_principals import enrol_factory
    from infra.private_stack import PrivateStack
    from sealstream._kafka_config import factory_principal, kafka_endpoint
    from trust.statement import from_kafka_headers

    with PrivateStack(tmp_path / "private", base=settings, kafka=True) as ps:
        s = ps.settings
        factory = f"full-{uuid.uuid4().hex[:8]}"
        enrol_factory(s, factory)
        max_bytes = 8192
        cfg = EdgeConfig(tmp_path / "edge.toml", factory, SpoolConfig(tmp_path / "spool", max_bytes=max_bytes,
                                                                      max_age_s=3600),
                         GroupConfig(readings=5, seconds=0.2), {"d": DeviceConfig("d", "timeseries", {}, ("t",))},
                         {}, metrics_port=0)
        signer = FileSigner(KeyPair.generate())
        ticker = Ticker("tick", "d", ["t"], 0.01)
        ps.stop("kafka")
        agent = Agent(cfg, kafka_endpoint(s, factory_principal(factory)), sources=[ticker], signers={"d": signer},
                      metrics_port=0)
        seen: dict = {}

        async def wait_for(pred, what: str, timeout: float = 120.0) -> None:
            for _ in range(int(timeout * 10)):  # bounded: a guard, never a timing assertion
                if pred():
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"{what} not within {timeout:.0f} s")

        async def scenario() -> None:
            stop = asyncio.Event()
            run = asyncio.create_task(agent.run(stop))
            await wait_for(lambda: _value(agent, "sealstream_edge_spool_full", reason="size") == 1, "the alarm")
            seen["held_at"] = agent.contexts["tick"].readings
            seen["depth_full"] = agent.spool.depth
            await asyncio.sleep(1.0)
            seen["held_still"] = agent.contexts["tick"].readings
            seen["status_full"] = agent.status()["spool"]["full"]
            await asyncio.to_thread(ps.start, "kafka")
            await wait_for(lambda: _value(agent, "sealstream_edge_spool_full", reason="size") == 0, "the alarm clear")
            seen["cleared_depth"] = agent.spool.depth
            resumed_from = agent.contexts["tick"].readings
            await wait_for(lambda: agent.contexts["tick"].readings > resumed_from + 50, "the source resuming")
            seen["status_after"] = agent.status()["spool"]["full"]
            stop.set()
            await asyncio.wait_for(run, 90)
            seen["messages"] = int(_value(agent, "sealstream_edge_messages_total", source="tick", kind="timeseries"))
            left = Spool(cfg.spool.path)  # what the final flush spooled waits for the next start
            seen["left"] = [m.seq for m in left.pending(0, 100_000)]
            left.close()

        with caplog.at_level(logging.WARNING, logger="edge.agent"):
            asyncio.run(scenario())
        assert seen["held_still"] == seen["held_at"] > 0 and seen["status_full"] == "size"
        assert seen["depth_full"][1] >= max_bytes
        assert seen["cleared_depth"][1] <= RESUME_FRACTION * max_bytes  # resumed below the mark, not at the edge
        assert seen["status_after"] is None
        alarms = [r for r in caplog.records if r.getMessage().startswith("spool full")]
        clears = [r for r in caplog.records if r.getMessage().startswith("spool has room again")]
        assert len(alarms) == len(clears) >= 1
        records = read_range(s, {}, end_offsets(s, ["iiot.timeseries.raw"]), timeout=60)
        seqs = [from_kafka_headers(r.headers)[0].seq for r in sorted(records, key=lambda r: (r.partition, r.offset))
                if from_kafka_headers(r.headers)[0].device == signer.did]
        assert len(seqs) == len(set(seqs))  # none twice
        assert len(seqs) + len(seen["left"]) == seen["messages"]  # every message spooled: sent or still spooled
        seqs += seen["left"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, none dropped while full
        print(f"held at {seen['held_at']} readings, {len(seqs)} messages delivered, {len(alarms)} alarm(s)")
