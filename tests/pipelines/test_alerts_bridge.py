"""The alerts bridge on a real 4-node ledger and the real Kafka: operations that
break audit rules raise events, `/events` serves them identically on every node,
and the bridge (a `sealstream pipeline alerts-bridge` subprocess) publishes exactly
one message per event to ``iiot.alerts``; SIGKILL while publishing, more events
while it is down, restart: no event lost, none published twice (read_committed)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from ledger import Params
from ledger.client import LedgerClient
from infra.ledger_cluster import LocalCluster
from infra.process import Child, sealstream_command
from pipelines.alerts import ALERTS_TOPIC, H_CHAIN, H_ID, H_SEQ, last_published_seq
from sealstream.settings import TOPICS
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.timeout(240)

PARAMS = Params(max_block_txs=128, block_time_ms=20, checkpoint_interval=10, view_change_timeout_ms=800,
                status_interval_ms=300, fetch_timeout_ms=800)


def _consumer(settings) -> Consumer:
    return Consumer({**kafka_endpoint(settings, "admin").confluent(),
                     "group.id": f"alerts-test-{os.getpid()}-{time.time_ns()}",
                     "enable.auto.commit": False, "isolation.level": "read_committed"})


def _ends(settings) -> dict[int, int]:
    c = _consumer(settings)
    try:
        parts = c.list_topics(ALERTS_TOPIC, timeout=10).topics[ALERTS_TOPIC].partitions
        return {p: c.get_watermark_offsets(TopicPartition(ALERTS_TOPIC, p), timeout=10, cached=False)[1]
                for p in parts}
    finally:
        c.close()


def _alerts(settings, start: dict[int, int], chain: str) -> list:
    """Every committed message of `chain` in iiot.alerts from `start` to the current end."""
    end = _ends(settings)
    c = _consumer(settings)
    out = []
    try:
        c.assign([TopicPartition(ALERTS_TOPIC, p, start.get(p, 0)) for p in end])
        deadline = time.monotonic() + 20
        while any(c.position([TopicPartition(ALERTS_TOPIC, p)])[0].offset < end[p]
                  for p in end if end[p] > start.get(p, 0)):
            for m in c.consume(500, 0.5):
                assert m.error() is None, m.error()
                if m.offset() < end[m.partition()] and dict(m.headers() or [])[H_CHAIN] == chain.encode():
                    out.append(m)
            assert time.monotonic() < deadline, "could not read iiot.alerts to its end"
    finally:
        c.close()
    return out


class Bridge(Child):
    """``sealstream pipeline alerts-bridge`` on the ledger under `root` (`stop`: SIGTERM, then its exit code)."""

    def __init__(self, root: Path, settings, log: Path) -> None:
        argv, env = sealstream_command(["pipeline", "alerts-bridge", "--ledger", str(root / "ledger"), "--json"],
                                       home=root / "home",
                                       env={"SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap})
        super().__init__("alerts bridge", argv, log_path=log, env=env)


def _wait_alerts(settings, start, chain, n: int, bridge: Bridge, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while True:
        got = _alerts(settings, start, chain)
        if len(got) >= n:
            return got
        if not bridge.alive():
            raise AssertionError(f"bridge exited {bridge.returncode}:\n{bridge.tail(4000)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(got)} of {n} alerts after {timeout} s:\n{bridge.tail()}")
        time.sleep(0.3)


def _events(c: LocalCluster, node: str) -> list[dict]:
    status, body = c.http_get(node, "/events")
    assert status == 200
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert lines[-1]["type"] == "end"
    return [x for x in lines if x["type"] == "event"]


def test_bridge_publishes_each_event_once_across_a_kill(stack, settings, tmp_path: Path) -> None:
    assert ALERTS_TOPIC in TOPICS  # created by the stack (infra/kafka.py creates every settings topic)
    c = LocalCluster(tmp_path / "ledger", n_nodes=4, n_sealers=4, params=PARAMS, app="contracts")
    c.init()
    c.start(timeout=30)
    bridge = None
    try:
        chain = c.layout.genesis().chain_id
        start = _ends(settings)
        assert last_published_seq(kafka_endpoint(settings, "alerts"), ALERTS_TOPIC, chain) is None
        now_min = time.gmtime().tm_hour * 60 + time.gmtime().tm_min
        lo, hi = (now_min + 120) % 1440, (now_min + 180) % 1440  # an allowed window that excludes now
        admin = c.layout.admin_key()   # the consortium admin also administers org "operator"
        with LedgerClient.from_layout(c.root, key=admin) as A:
            def ok(kind: str, payload: dict) -> dict:
                r = A.submit(kind, payload)
                assert r.refusal is None, r.result
                return r.result

            ok("audit.deploy_rule", {"id": "cmd-window", "org": "operator", "kind": "window",
                                     "start": f"{lo // 60:02d}:{lo % 60:02d}", "end": f"{hi // 60:02d}:{hi % 60:02d}",
                                     "match": {"op": "command"}, "severity": "critical"})
            ok("audit.deploy_rule", {"id": "cfg-rate", "org": "operator", "kind": "rate", "max": 2,
                                     "match": {"op": "config"}})
            ok("audit.deploy_rule", {"id": "setpoint", "org": "operator", "kind": "range", "param": "setpoint",
                                     "min": 10, "max": "90.5", "match": {"op": "config"}})

            def command(i: int) -> int:
                return len(ok("audit.record", {"org": "operator", "operator": f"op-{i}", "system": "press-1",
                                               "op": "command", "action": "start"})["events"])

            def config(value) -> int:
                return len(ok("audit.record", {"org": "operator", "operator": "bob", "system": "oven-1",
                                               "op": "config", "params": {"setpoint": value}})["events"])

            # phase 1: 3 commands (3 window events), 3 configs: 3rd breaks the rate, one setpoint out of range
            raised = sum(command(i) for i in range(3)) + config(50) + config(95) + config("20")
            assert raised == 3 + 1 + 1
            assert ok("audit.record", {"org": "operator", "operator": "eve", "system": "hmi", "op": "login"}) \
                == {"ok": True, "events": [], "charged": 1}

            # the same events on every node, in the same order
            evs = _events(c, "node0")
            assert len(evs) == raised and [e["seq"] for e in evs] == list(range(raised))
            for n in c.names[1:]:
                assert _events(c, n) == evs
            assert {e["rule"] for e in evs} == {"cmd-window", "cfg-rate", "setpoint"}

            bridge = Bridge(tmp_path, settings, tmp_path / "bridge1.log")
            got = _wait_alerts(settings, start, chain, raised, bridge)
            assert [int(dict(m.headers())[H_SEQ]) for m in got] == list(range(raised))

            # phase 2: events keep coming while the bridge is killed mid-stream
            more = {"n": 0}

            def load() -> None:
                for i in range(30):
                    more["n"] += command(100 + i)

            t = threading.Thread(target=load)
            t.start()
            _wait_alerts(settings, start, chain, raised + 3, bridge)
            bridge.kill()
            t.join(60)
            # phase 3: more while it is down
            more["n"] += config(5) + config(7)
            total = raised + more["n"]
            assert more["n"] == 30 + 2 * 2   # each config is over the rate and out of range

            bridge = Bridge(tmp_path, settings, tmp_path / "bridge2.log")
            got = _wait_alerts(settings, start, chain, total, bridge)
            time.sleep(1.0)  # anything extra (a duplicate) would show up now
            got = _alerts(settings, start, chain)
            assert bridge.stop() == 0

        seqs = [int(dict(m.headers())[H_SEQ]) for m in got]
        assert sorted(seqs) == list(range(total)), "each event exactly once"
        evs = {e["seq"]: e for e in _events(c, c.names[2])}
        assert len(evs) == total
        for m in got:
            v = json.loads(m.value())
            e = evs[v["seq"]]
            assert m.key() == b"operator" == e["operation"]["org"].encode()
            assert dict(m.headers())[H_ID] == e["id"].encode()
            assert m.timestamp()[1] == e["time"]
            assert v == {"v": 1, "chain": chain, **{k: x for k, x in e.items() if k != "type"}, "verified_at": None}
        assert last_published_seq(kafka_endpoint(settings, "alerts"), ALERTS_TOPIC, chain) == total - 1
        assert "resumed_after_seq" in (tmp_path / "bridge2.log").read_text()
    finally:
        if bridge is not None:
            bridge.kill()
        c.stop(timeout=5)


def test_a_second_bridge_fences_the_first(stack, settings, tmp_path: Path) -> None:
    """Two bridges for one chain: the newer one fences the older (which stops with
    BridgeFenced), resumes after what the older committed, and nothing is doubled."""
    import asyncio

    from ledger.client import AsyncLedgerClient
    from pipelines.alerts import AlertsBridge, BridgeFenced

    c = LocalCluster(tmp_path / "ledger", n_nodes=4, n_sealers=4, params=PARAMS, app="contracts")
    c.init()
    c.start(timeout=30)
    try:
        chain = c.layout.genesis().chain_id
        start = _ends(settings)

        async def scenario() -> tuple:
            async with AsyncLedgerClient.from_layout(c.root, key=c.layout.admin_key()) as A:
                async def record(n: int) -> None:
                    for i in range(n):
                        r = await A.submit("audit.record", {"org": "operator", "operator": f"o{i}", "system": "s",
                                                            "op": "login"})
                        assert len(r.result["events"]) == 1, r.result

                r = await A.submit("audit.deploy_rule", {"id": "every-login", "org": "operator", "kind": "rate",
                                                         "max": 0, "match": {"op": "login"}})
                assert r.refusal is None, r.result
                await record(3)
                kafka = kafka_endpoint(settings, "alerts")
                first, second = AlertsBridge(A, kafka), AlertsBridge(A, kafka)
                t1 = asyncio.create_task(first.run())
                while first.published < 3:
                    assert not t1.done(), t1.exception()
                    await asyncio.sleep(0.1)
                stop2 = asyncio.Event()
                t2 = asyncio.create_task(second.run(stop2))
                while second.resumed_after is None:
                    assert not t2.done(), t2.exception()
                    await asyncio.sleep(0.1)
                await record(2)
                while second.published < 2:
                    assert not t2.done(), t2.exception()
                    await asyncio.sleep(0.1)
                fenced = await asyncio.wait_for(asyncio.gather(t1, return_exceptions=True), 30)
                stop2.set()
                return first.status(), await t2, fenced[0]

        first, second, fenced = asyncio.run(scenario())
        assert isinstance(fenced, BridgeFenced)
        assert first.published == 3 and second.resumed_after == 2 and second.published == 2
        got = _alerts(settings, start, chain)
        assert sorted(int(dict(m.headers())[H_SEQ]) for m in got) == [0, 1, 2, 3, 4]
    finally:
        c.stop(timeout=5)
