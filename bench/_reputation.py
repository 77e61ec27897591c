"""Reputation rows of `bench/ledger.py --reputation` (issue 5's measurements).

Three configurations of 16 nodes, each driven by the same closed-loop load
generator as the other rows (KV app, `bench._ledger_target.BENCH_PARAMS`):

* ``rep-4``: reputation on (`Params.sealer_count` = 4, short epochs), so the
  4 sealers are chosen by reputation at every epoch end, the other 12 are
  backups that apply certified blocks and send heartbeats;
* ``all-16``: no reputation, all 16 nodes seal (PBFT among 16, quorum 11);
* ``static-4``: no reputation, the genesis 4 seal forever (what reputation
  costs: heartbeats, the carried certificate counted, the primary's wait);
* ``rep-4-offline``: as ``rep-4``, but one sealer (not the primary) is
  SIGKILLed a third of the way into the first measured window (later
  repeats run with it dead, then replaced): the remaining 3 are
  still a quorum, the primary waits `last_commit_wait_ms` per block for the
  missing COMMIT until the epoch end replaces the dead sealer by a backup.
  The row says whether it was replaced and how many epochs passed.

The paper's claim (Xia et al., ICB) is that a small reputation-chosen sealer
set keeps throughput stable as the node count grows; ``rep-4 / all-16`` is
that ratio on this machine.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

__all__ = ["REP_EPOCH", "run_reputation", "format_reputation"]

#: Blocks per epoch in the reputation rows: several epoch changes in a ~10 s run.
REP_EPOCH = 20


class _Killer:
    """Wraps `LedgerBenchTarget`: SIGKILLs one non-primary sealer `at` seconds after start."""

    def __init__(self, target: Any, at: float) -> None:
        self.t = target
        self.at = at
        self.name = getattr(target, "name", "sealstream")
        self.killed: str | None = None
        self.sets: list[list[str]] = []
        self._timer: threading.Timer | None = None

    def start(self, n_nodes: int, n_sealers: int) -> None:
        self.t.start(n_nodes, n_sealers)
        st = self.t.cluster.status("node0")
        self.sets.append(st["sealers"])
        self._timer = threading.Timer(self.at, self._kill)
        self._timer.daemon = True
        self._timer.start()

    def _kill(self) -> None:
        st = self.t.cluster.status("node0")
        victim = next(s for s in st["sealers"] if s != st["primary"])
        self.t.cluster.kill(victim)
        self.killed = victim
        self.height_at_kill = st["height"]

    async def asubmit(self, tx: bytes) -> None:
        await self.t.asubmit(tx)

    async def aclose(self) -> None:
        await self.t.aclose()

    def submit(self, tx: bytes) -> None:
        self.t.submit(tx)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.t.cluster is not None:
            st = self.t.cluster.status(self.t.cluster.names[-1])  # a backup: never the one killed
            if st is not None:
                self.sets.append(st["sealers"])
                self.height_at_end = st["height"]
        self.t.stop()


def run_reputation(args: Any, drive: Any) -> list[dict[str, Any]]:
    """The three rows; `drive(target, n_nodes, n_sealers, args)` is bench/ledger.py's."""
    from bench._ledger_target import BENCH_PARAMS, LedgerBenchTarget

    rep_params = replace(BENCH_PARAMS, sealer_count=4, epoch_length=REP_EPOCH)
    rows: list[dict[str, Any]] = []
    specs = [
        ("rep-4", "sealstream 16 nodes, 4 reputation-chosen sealers", LedgerBenchTarget(rep_params), 4),
        ("all-16", "sealstream 16 nodes, all 16 sealing", LedgerBenchTarget(BENCH_PARAMS), 16),
        ("static-4", "sealstream 16 nodes, 4 static sealers (no rep.)", LedgerBenchTarget(BENCH_PARAMS), 4),
        ("rep-4-offline", "sealstream 16 nodes, 4 rep. sealers, 1 killed",
         _Killer(LedgerBenchTarget(rep_params), at=args.warmup + args.duration / 3), 4),
    ]
    for key, config, target, sealers in specs:
        row: dict[str, Any] = {"key": key, "config": config, "nodes": 16, "sealers": sealers}
        try:
            row.update(drive(target, 16, sealers, args))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - reported in the row, never hidden
            row["unavailable"] = f"{type(e).__name__}: {e}"
        if isinstance(target, _Killer):
            row["killed"] = target.killed
            row["sets"] = target.sets
            end = target.sets[-1] if len(target.sets) > 1 else None
            row["replaced"] = bool(target.killed and end is not None and target.killed not in end)
            h0, h1 = getattr(target, "height_at_kill", None), getattr(target, "height_at_end", None)
            row["epoch_changes_after_kill"] = (None if h0 is None or h1 is None
                                               else h1 // REP_EPOCH - h0 // REP_EPOCH)
        rows.append(row)
    by = {r["key"]: r for r in rows}

    def ratio(a: str, b: str) -> float | None:
        x, y = by[a].get("tx_per_s"), by[b].get("tx_per_s")
        return x / y if x is not None and y else None

    rows.append({"key": "ratios", "rep4_over_all16": ratio("rep-4", "all-16"),
                 "rep4_over_static4": ratio("rep-4", "static-4"),
                 "offline_over_rep4": ratio("rep-4-offline", "rep-4")})
    return rows


def format_reputation(rows: list[dict[str, Any]]) -> list[str]:
    def f(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    out = ["", f"Reputation (issue 5): 16 nodes, epochs of {REP_EPOCH} blocks",
           f"{'configuration':<48} {'tx/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'success':>8}"]
    for r in rows:
        if r["key"] == "ratios":
            out.append(f"  ratio 4 reputation-chosen / 16 sealing: {f(r['rep4_over_all16'], '.2f')}; "
                       f"/ 4 static: {f(r['rep4_over_static4'], '.2f')}; "
                       f"one sealer offline / none: {f(r['offline_over_rep4'], '.2f')}")
            continue
        if "unavailable" in r:
            out.append(f"{r['config']:<48} not measured: {r['unavailable']}")
            continue
        succ = None if r.get("success_rate") is None else 100 * r["success_rate"]
        out.append(f"{r['config']:<48} {f(r['tx_per_s'], ',.0f'):>9} {f(r['p50_ms'], '.2f'):>8} "
                   f"{f(r['p99_ms'], '.2f'):>8} {f(succ, '.2f'):>7}%")
        if len(r.get("runs", [])) > 1:
            out.append("  runs: " + " / ".join(f"{x['tx_per_s']:,.0f}" for x in r["runs"]) + " tx/s")
        if r["key"] == "rep-4-offline":
            out.append(f"  killed {r['killed']}; sealers before {r['sets'][0]}, at the end {r['sets'][-1]}; "
                       f"replaced: {'yes' if r['replaced'] else 'NO'}; epoch changes after the kill: "
                       f"{r['epoch_changes_after_kill']}")
    return out
