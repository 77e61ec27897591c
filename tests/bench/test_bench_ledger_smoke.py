"""Smoke test of bench/ledger.py: structure only, never timings (issue 4, "Measure").

Runs the ceiling measurement for about a second and builds the report with a
target spec that cannot load, so our cluster rows must say so instead of
showing numbers.  The CometBFT peer is a benchmark, not a test: not run here.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bench import ledger as bench_ledger
from bench._ceiling import measure_ceiling, merge
from bench._loadgen import make_payload, run_closed_loop
from bench._target import TargetUnavailable, load_target

UNLOADABLE = "bench._target:NoSuchTarget"


def test_ceiling_structure() -> None:
    c = measure_ceiling(seconds=0.4, runs=2, msg_size=256, sealers=4)
    assert len(c.runs_verifications_per_s) == 2
    assert c.verifications_per_s > 0
    assert c.ceiling_tx_per_s == pytest.approx(c.verifications_per_s / 4)
    assert c.procs == c.cpu_count >= 1
    assert "/ 4 =" in c.formula and "verifications/s" in c.formula
    both = merge(c, c)
    assert len(both.runs_verifications_per_s) == 4 and both.sealers == 4


def test_report_without_our_cluster() -> None:
    args = bench_ledger.parse_args(
        ["--duration", "1", "--ceiling-seconds", "0.2", "--ceiling-runs", "1", "--nodes", "4,16",
         "--target", UNLOADABLE, "--no-bound"]
    )
    rep = bench_ledger.build_report(args)
    assert [o["nodes"] for o in rep["ours"]] == [4, 16]
    for o in rep["ours"]:
        assert o["unavailable"].startswith("sealstream ledger cluster not available yet: ")
        assert "tx_per_s" not in o  # never fake numbers
    assert [p["tx_per_s"] for p in rep["paper"]] == [14604.0, 13471.0]
    assert rep["ceiling"]["sealers"] == 4 and rep["ceiling"]["ceiling_tx_per_s"] > 0
    assert len(rep["ceiling"]["runs_verifications_per_s"]) == 2  # one window before, one after
    assert rep["peer"] is None and rep["bound"] is None
    assert rep["ratios"]["ours_4_over_ceiling"] is None
    json.dumps(rep, default=str)
    text = bench_ledger.format_report(rep)
    for needle in ("sealstream ledger cluster not available yet", "ICB paper, 4 nodes", "machine ceiling", "ceiling = ",
                   "load average"):
        assert needle in text


class _FakeTarget:
    """In-process stand-in for the LedgerTarget interface (plumbing only)."""

    name = "fake"

    def __init__(self) -> None:
        self.started: tuple[int, int] | None = None
        self.stopped = False
        self.seen: set[bytes] = set()

    def start(self, n_nodes: int, n_sealers: int) -> None:
        self.started = (n_nodes, n_sealers)

    async def asubmit(self, tx: bytes) -> None:
        assert tx not in self.seen
        self.seen.add(tx)
        await asyncio.sleep(0.001)

    def submit(self, tx: bytes) -> None:  # pragma: no cover - asubmit is preferred
        raise AssertionError("asubmit should be used")

    def stop(self) -> None:
        self.stopped = True


def test_drive_uses_the_interface_and_always_stops() -> None:
    args = bench_ledger.parse_args(["--duration", "0.3", "--warmup", "0.1", "--clients", "4", "--drain", "2"])
    t = _FakeTarget()
    row = bench_ledger.drive(t, 16, 4, args)
    assert t.started == (16, 4) and t.stopped
    run = row["runs"][0]
    assert run["submitted"] == run["succeeded"] + run["failed"]
    assert run["failed"] == 0
    assert all(len(tx) == 256 for tx in t.seen)


def test_payloads_and_loader() -> None:
    p = make_payload("r1", 3, 7, 64)
    assert len(p) == 64 and p.count(b"=") == 1 and b":" not in p and not p.endswith(b"=")
    with pytest.raises(ValueError):
        make_payload("r1", 3, 7, 8)
    with pytest.raises(TargetUnavailable):
        load_target(UNLOADABLE)
    with pytest.raises(TargetUnavailable):
        load_target("no_such_module_xyz:Target")
    res = run_closed_loop(lambda tx: None, clients=2, duration=5, warmup=0.0, max_txs=10)
    assert res.total_submitted == 10 and res.hit_max_txs
