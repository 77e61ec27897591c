"""The demo run: the whole path once, as a function (`run_demo`) that reports its steps through
callbacks and returns a `Summary`; ``sealstream demo`` (sealstream._demo_cli) is its command line
and printing.

Brings the stack up if its services are not healthy (``sealstream stack up``)
and the 4-node ledger (``sealstream ledger up``; both run as they would from
the shell, so there is one code path), registers the factory's devices and
the workers' gateways on the ledger, starts pipeline workers and the verifier
agent (``sealstream pipeline verifier``) as subprocesses in fresh consumer
groups pinned to the current ends of the topics (so the numbers are this
run's), runs the simulated factory for a bounded time, waits until everything
sent is handled and anchored and every anchored batch has a verdict, then
tells the verification story (`sealstream._demo_verify`: verified share of the
rows, batch verdicts, one blob verified, one batch bundle exported and verified
offline, each with its command) and stops the processes it started. The stack
and the ledger keep running. It lives in the top package because it drives
every layer below (infra, ledger, pipelines, storage): only the top may import
them all (docs/architecture.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ._demo_verify import Verification, run_batches, tell, wait_verdicts
from ._kafka_config import kafka_endpoint, kafka_secured
from .settings import Settings
from sealstream.topics import ANCHORS, DEADLETTER, RAW, SEALED

__all__ = ["DemoError", "Summary", "run_demo"]

_ROOT = Path(__file__).resolve().parents[1]
_RAW = RAW


class DemoError(Exception):
    """A demo step failed; `step` names it."""

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"{step}: {message}")


@dataclass
class Summary:
    factory: str
    devices: int
    workers: int
    seconds: float
    sent: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    rows: int = 0
    blobs: int = 0
    batches_anchored: int = 0
    statements_anchored: int = 0
    deadletters: dict[str, int] = field(default_factory=dict)
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    complete: bool = False
    ledger_height: int | None = None
    consumer_group: str = ""
    gateways: list[str] = field(default_factory=list)
    verification: Verification | None = None
    left_running: str = "the stack and the ledger keep running: `sealstream stack down`, `sealstream ledger down`"



def _env(s: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child ``sealstream``: ours, with the home made absolute (children run in the repo)."""
    return dict(os.environ, SEALSTREAM_HOME=str(Path(s.home).resolve()), **extra)


def _sealstream(s: Settings, args: list[str], step: str, timeout: float = 600) -> dict:
    """Run ``sealstream ARGS --json`` (the same code path as from the shell); its JSON output."""
    proc = subprocess.run([sys.executable, "-m", "sealstream", *args, "--json"], capture_output=True, text=True,
                          cwd=_ROOT, env=_env(s), timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DemoError(step, tail)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {}


def _stack_healthy(s: Settings) -> bool:
    from infra import Stack

    try:
        return all(svc.health().ok for svc in Stack(s).services)
    except Exception:  # noqa: BLE001 - anything wrong: let `stack up` say what
        return False


def _wait_group(s: Settings, group: str, members: int, procs: "_Workers", timeout: float = 60.0) -> bool:
    """Wait until `group` is stable with `members` members (the workers joined and own partitions)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_endpoint(s, "admin").confluent())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        try:
            desc = admin.describe_consumer_groups([group])[group].result(10)
            if desc.state == ConsumerGroupState.STABLE and len(desc.members) >= members:
                return True
        except Exception:  # noqa: BLE001 - the group does not exist until the first worker joins
            pass
        time.sleep(0.5)
    return False


def _deadletters(s: Settings, start: dict, positions: set[tuple[str, Optional[int], Optional[int]]], group: str
                 ) -> dict[str, int]:
    """Dead letters of this run's records by reason: rejected by our workers (``ss-dlq-group``; a worker of
    another group may read the same records) and matched by their source position."""
    from confluent_kafka import Consumer, TopicPartition

    from pipelines.offsets import end_offsets

    end = end_offsets(kafka_endpoint(s, "admin"), (DEADLETTER,))
    todo = {tp: hi for tp, hi in end.items() if hi > start.get(tp, 0)}
    reasons: dict[str, int] = {}
    seen: set[tuple[str, int, int]] = set()
    if not todo:
        return reasons
    c = Consumer({**kafka_endpoint(s, "admin").confluent(), "group.id": f"sealstream-demo-dlq-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(t, p, start.get((t, p), 0)) for (t, p) in todo])
        done: set = set()
        deadline = time.monotonic() + 30
        while len(done) < len(todo) and time.monotonic() < deadline:
            for m in c.consume(500, 1.0):
                if m.error() is not None:
                    continue
                h = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
                try:
                    pos = (h["ss-dlq-topic"], int(h["ss-dlq-partition"]), int(h["ss-dlq-offset"]))
                except (KeyError, ValueError):
                    pos = None
                # a re-read record is dead-lettered again: once here
                if pos in positions and pos not in seen and h.get("ss-dlq-group") == group:
                    seen.add(pos)
                    reason = h.get("ss-dlq-reason", "?")
                    reasons[reason] = reasons.get(reason, 0) + 1
                if m.offset() >= todo[(m.topic(), m.partition())] - 1:
                    done.add((m.topic(), m.partition()))
    finally:
        c.close()
    return reasons


def _db_counts(pool: Any, good: list[bytes]) -> dict[str, Any]:
    """Accepted statements, readings, blobs, anchored batches and latencies of `good` (statement hashes)."""
    with pool.connection() as conn:
        accepted = conn.execute("SELECT count(*) FROM statements WHERE statement_hash = ANY(%s)", (good,)).fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM readings WHERE statement_hash = ANY(%s)", (good,)).fetchone()[0]
        blobs = conn.execute("SELECT count(*) FROM blobs WHERE statement_hash = ANY(%s)", (good,)).fetchone()[0]
        anchored, batches, p50, p99 = conn.execute(
            "SELECT count(*), count(DISTINCT b.batch_id), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM b.anchored_at - s.ts)), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM b.anchored_at - s.ts)) "
            "FROM statements s JOIN batch_leaves l USING (statement_hash) JOIN batches b USING (batch_id) "
            "WHERE b.anchor_state = 'anchored' AND s.statement_hash = ANY(%s)", (good,)).fetchone()
    return {"accepted": accepted, "rows": rows, "blobs": blobs, "statements_anchored": anchored,
            "batches_anchored": batches, "latency_p50_s": None if p50 is None else round(float(p50), 3),
            "latency_p99_s": None if p99 is None else round(float(p99), 3)}


class _Workers:
    """Worker subprocesses and the verifier agent, started (and stopped) by the demo."""

    def __init__(self, s: Settings, group: str, gateways: list[str], log_dir: Path,
                 verifier_group: str | None = None) -> None:
        from infra.process import Child, free_ports

        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(len(gateways) + 1)
        for gw, port in zip(gateways, ports):
            self.children.append(Child.sealstream(
                "pipeline worker", ["pipeline", "worker", "--app-id", group, "--directory", "ledger"],
                log_path=log_dir / f"worker-{gw}.log", home=s.home, env={"SEALSTREAM_PIPELINE_GATEWAY": gw},
                metrics_port=port))
        if verifier_group is not None:  # no audit: the demo's batches are checked once, as they are anchored
            self.children.append(Child.sealstream(
                "pipeline verifier", ["pipeline", "verifier", "--app-id", verifier_group, "--audit-interval", "0"],
                log_path=log_dir / "verifier.log", home=s.home, metrics_port=ports[-1]))

    def check(self) -> None:
        for child in self.children:
            if not child.alive():
                tail = child.tail().strip().splitlines()[-1:] or ["(no output)"]
                raise DemoError(child.name, f"exited {child.returncode}: {tail[0]} (log: {child.log})")

    def stop(self) -> None:
        from infra.process import stop_all

        stop_all(self.children, timeout=15)


def run_demo(s: Settings, *, duration: float, devices: int, rate: float, workers: int, factory: str,
             faults: bool, drain: float, say: Any, on_tick: Any = None, verify_wait: float = 90.0) -> Summary:
    """The demo (blocking); `say(text)` reports steps, `on_tick(elapsed, sent, stats)` progress."""
    from ledger.client import LedgerClient
    from ledger.layout import LedgerLayout
    from pipelines._anchor_ledger import ensure_devices, ensure_gateway
    from pipelines.devices import FAULTS, Factory, FaultPlan, RunConfig, read_sent_log, run
    from pipelines.offsets import end_offsets, pin_offsets
    from pipelines.worker import gateway_key
    from storage.db import open_pool

    if _stack_healthy(s):
        say("stack: every service healthy")
    else:
        say("stack: starting (sealstream stack up)")
        _sealstream(s, ["stack", "up"], "stack up")
    layout = LedgerLayout(s.ledger_home)
    if layout.exists() and layout.app() != "contracts":
        raise DemoError("ledger", f"the ledger in {s.ledger_home} runs the kv app (made for benchmarks) and has no "
                                  "registry for devices and gateways; replace it with `sealstream ledger init --force` "
                                  "(deletes its blocks) and run the demo again")
    say("ledger: sealstream ledger up")
    _sealstream(s, ["ledger", "up"], "ledger up")

    fac = Factory.ensure(s, factory, devices)
    gateways = [s.pipeline_gateway] if workers == 1 else [f"{s.pipeline_gateway}-{i}" for i in range(workers)]
    say(f"registering {len(fac.devices)} devices and {len(gateways)} gateway(s) on the ledger")
    try:
        with LedgerClient.from_layout(s.ledger_home, key=layout.admin_key()) as admin:
            ensure_devices(admin, [(f"{factory}-{d.spec.name}", d.did) for d in fac.devices])
            for gw in gateways:
                ensure_gateway(admin, gw, gateway_key(Path(s.home), gw).did)
            height = admin.get_status().get("height")
    except Exception as exc:  # registry refusals, ledger unreachable
        raise DemoError("register on the ledger", f"{type(exc).__name__}: {exc}") from exc

    # groups under the prefixes the pipeline and verifier principals' ACLs grant (infra.kafka_acls)
    tag = uuid.uuid4().hex[:8]
    group = f"{s.pipeline_app_id}-demo-{tag}"
    verifier_group = f"sealstream-verifier-demo-{tag}"
    if kafka_secured(s):  # the simulated factory's Kafka principal (produce only), as `stack factory add`
        from infra import Stack

        Stack(s).ensure_factory(factory)
    kafka = kafka_endpoint(s, "admin")
    starts = end_offsets(kafka, (*_RAW, SEALED, DEADLETTER, ANCHORS))
    try:
        pin_offsets(kafka, group,
                    {tp: o for tp, o in starts.items() if tp[0] not in (DEADLETTER, ANCHORS)})
        pin_offsets(kafka, verifier_group, {tp: o for tp, o in starts.items() if tp[0] == ANCHORS})
    except Exception as exc:  # Kafka refused: name the step
        raise DemoError("pin the consumer group", str(exc)) from exc
    genesis_hash = layout.genesis().genesis_hash().hex()
    state_dir = Path(s.home).resolve() / "demo" / group
    say(f"starting {workers} worker(s) in consumer group {group} and the verifier agent ({verifier_group})")
    procs = _Workers(s, group, gateways, state_dir, verifier_group)
    summary = Summary(factory, len(fac.select(("timeseries", "image", "video"), devices)), workers, duration,
                      consumer_group=group, gateways=gateways, ledger_height=height,
                      verification=Verification(verifier_group, genesis_hash))
    pool = open_pool(s.postgres_dsn, max_size=2)
    try:
        if not _wait_group(s, group, workers, procs):
            say("the workers have not joined their group yet; starting the factory anyway (nothing is lost)")
        plan = FaultPlan.parse([f"{f}:1" for f in FAULTS]) if faults else FaultPlan()
        stats: dict[str, Any] = {}
        box: dict[str, Any] = {}

        def simulate() -> None:
            try:
                box["summary"] = run(s, RunConfig(factory, devices=devices, rate=rate, duration=duration,
                                                  faults=plan), lambda st: stats.update(sent=st.sent))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                box["error"] = exc

        began = time.monotonic()
        sim = threading.Thread(target=simulate, name="demo-factory", daemon=True)
        sim.start()
        while sim.is_alive():
            procs.check()
            if on_tick:
                on_tick(time.monotonic() - began, stats.get("sent", 0), None)
            sim.join(0.5)
        if "error" in box:
            raise DemoError("simulated factory", f"{type(box['error']).__name__}: {box['error']}")
        run_summary = box["summary"]
        sent = [r for r in read_sent_log(run_summary.sent_log, run_summary.run_id) if r.error is None]
        good = [bytes.fromhex(r.statement_hash) for r in sent if r.fault is None]
        positions = {(r.topic, r.partition, r.offset) for r in sent}
        summary.sent = len(sent)
        summary.faults_injected = dict(run_summary.faults)
        say("draining: waiting until every message is handled and every accepted one anchored")
        deadline = time.monotonic() + drain
        while True:
            procs.check()
            counts = _db_counts(pool, good)
            if on_tick:
                on_tick(time.monotonic() - began, len(sent), counts)
            handled = counts["accepted"] + sum(_deadletters(s, starts, positions, group).values()) >= len(sent)
            if handled and counts["statements_anchored"] >= counts["accepted"]:
                summary.complete = True
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
        for k, v in _db_counts(pool, good).items():
            setattr(summary, k, v)
        summary.deadletters = _deadletters(s, starts, positions, group)
        batch_ids = run_batches(pool, good)
        if batch_ids:
            say(f"verifying: waiting for the verifier agent's verdicts on {len(batch_ids)} batch(es)")
            wait_verdicts(pool, batch_ids, verify_wait, procs.check,
                          lambda have, want: say(f"verifying: {have} of {want} batch(es) have a verdict"))
        summary.seconds = round(time.monotonic() - began, 1)
        say("stopping the workers and the verifier agent")
        procs.stop()  # the checks below are CLI commands on their own; free the CPU
        assert summary.verification is not None  # set with the summary above
        tell(pool, good, batch_ids, summary.verification, env=_env(s), state_dir=state_dir, say=say)
        return summary
    finally:
        pool.close()
        procs.stop()
