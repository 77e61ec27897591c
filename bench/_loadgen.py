"""Closed-loop load generator shared by every benchmark target (ours and the peer's).

`clients` concurrent clients each loop: build a unique transaction of exactly
`tx_size` bytes, submit it, wait until the target says it is committed (or
failed), record the latency, repeat.  Load is therefore "as fast as commits
come back" and the offered load never exceeds what the system absorbs.

Timeline of one run (all on time.monotonic()):

    t0 ........ t0+warmup ...................... t0+warmup+duration ..... + drain
    | warm-up   | measured window: txs *submitted* here are measured | no new txs

* tx/s = measured txs that committed successfully / duration (or / the part
  of the window before `max_txs` was reached)
* latency = submit-to-commit time of those successes (p50/p99 in ms)
* success rate = measured successes / measured submissions; a measured tx
  that has not answered `drain` seconds after the window closed, or whose
  submit raised, counts as a failure (with its error type).

Bounded in count (`max_txs`, across all clients) and in time
(warmup + duration + drain, plus at most `tx_timeout` per pending call in the
async path; sync submits run in daemon threads that are abandoned, not joined,
after the drain).

A target's `submit`/`asubmit` must return only once the transaction is
committed, and raise on any failure (refusal, timeout, error code).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

_FILL = b"abcdefghijklmnopqrstuvwxyz0123456789"


def make_payload(run_id: str, client: int, seq: int, size: int) -> bytes:
    """A unique `key=value` transaction of exactly `size` bytes.

    One '=' only, key first and non-empty, no ':' (CometBFT's kvstore example
    app accepts exactly this shape); unique across clients, sequence numbers
    and runs (run_id), so no mempool cache or replay check rejects it.
    """
    key = f"b{run_id}c{client}s{seq}=".encode()
    if len(key) + 1 > size:
        raise ValueError(f"tx_size {size} too small for a unique key=value payload (need >= {len(key) + 1})")
    pad = size - len(key)
    reps = pad // len(_FILL) + 1
    return key + (_FILL * reps)[:pad]


def _percentile(sorted_vals: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]) of already sorted values."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


@dataclass
class LoadResult:
    target: str
    clients: int
    tx_size: int
    duration_s: float
    warmup_s: float
    submitted: int = 0  # measured window only
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0  # counted in failed too
    total_submitted: int = 0  # including warm-up and failures
    hit_max_txs: bool = False
    window_s: float | None = None  # measured window actually used (< duration if max_txs hit)
    client_cpu_s: float = 0.0  # CPU time of this process (load generator + client library) during the run
    wall_s: float = 0.0
    errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def tx_per_s(self) -> float:
        w = self.duration_s if self.window_s is None else self.window_s
        return self.succeeded / w if w > 0 else 0.0

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.submitted if self.submitted else None

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.latencies_ms) if self.latencies_ms else None

    @property
    def p99_ms(self) -> float | None:
        return _percentile(sorted(self.latencies_ms), 99)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "clients": self.clients,
            "tx_size": self.tx_size,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "tx_per_s": self.tx_per_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "success_rate": self.success_rate,
            "submitted": self.submitted,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "total_submitted": self.total_submitted,
            "hit_max_txs": self.hit_max_txs,
            "window_s": self.duration_s if self.window_s is None else self.window_s,
            "client_cpu_s": round(self.client_cpu_s, 3),
            "wall_s": round(self.wall_s, 3),
            "client_cores": round(self.client_cpu_s / self.wall_s, 3) if self.wall_s else None,
            "errors": dict(self.errors),
        }


class _Recorder:
    """Shared bookkeeping for both the asyncio and the thread paths."""

    def __init__(self, res: LoadResult, t_measure: float, t_end: float, max_txs: int) -> None:
        self.res = res
        self.t_measure = t_measure
        self.t_end = t_end
        self.max_txs = max_txs
        self.pending_measured = 0
        self.closed = False  # set by abandon_pending: late answers are ignored
        self.lock = threading.Lock()

    def may_start(self) -> tuple[bool, bool]:
        """(go on?, measured?) for a tx about to be submitted now."""
        now = time.monotonic()
        with self.lock:
            if self.closed or now >= self.t_end:
                return False, False
            if self.res.total_submitted >= self.max_txs:
                if not self.res.hit_max_txs:
                    self.res.hit_max_txs = True
                    self.res.window_s = max(0.0, min(now, self.t_end) - self.t_measure)
                return False, False
            self.res.total_submitted += 1
            measured = now >= self.t_measure
            if measured:
                self.res.submitted += 1
                self.pending_measured += 1
            return True, measured

    def done(self, measured: bool, latency_s: float, err: BaseException | None) -> None:
        if not measured:
            return
        with self.lock:
            if self.closed:
                return
            self.pending_measured -= 1
            if err is None:
                self.res.succeeded += 1
                self.res.latencies_ms.append(latency_s * 1000.0)
            else:
                self.res.failed += 1
                self.res.errors[_err_name(err)] += 1

    def abandon_pending(self) -> None:
        with self.lock:
            self.closed = True
            if self.pending_measured > 0:
                self.res.unfinished += self.pending_measured
                self.res.failed += self.pending_measured
                self.res.errors["unfinished after drain"] += self.pending_measured
                self.pending_measured = 0


def _err_name(err: BaseException) -> str:
    msg = str(err).strip().splitlines()[0][:80] if str(err).strip() else ""
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def run_closed_loop(
    submit: Callable[[bytes], Any] | None = None,
    *,
    asubmit: Callable[[bytes], Awaitable[Any]] | None = None,
    aclose: Callable[[], Awaitable[Any]] | None = None,
    target: str = "target",
    clients: int = 32,
    duration: float = 20.0,
    tx_size: int = 256,
    warmup: float = 2.0,
    drain: float = 15.0,
    tx_timeout: float = 30.0,
    max_txs: int = 2_000_000,
    run_id: str | None = None,
) -> LoadResult:
    """Drive `asubmit` (asyncio, preferred) or `submit` (blocking, one thread per client).

    `aclose`, if given, is awaited in the same event loop once the async run ends.
    """
    if (submit is None) == (asubmit is None):
        raise ValueError("give exactly one of submit= or asubmit=")
    if clients < 1 or duration <= 0 or warmup < 0 or max_txs < 1:
        raise ValueError("clients >= 1, duration > 0, warmup >= 0, max_txs >= 1 are required")
    run_id = run_id or os.urandom(4).hex()
    make_payload(run_id, clients, 10**9, tx_size)  # validates tx_size early
    res = LoadResult(target, clients, tx_size, duration, warmup)
    if asubmit is not None and not inspect.iscoroutinefunction(asubmit):
        raise TypeError("asubmit must be an async function")
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        if asubmit is not None:
            return asyncio.run(_run_async(asubmit, aclose, res, run_id, drain, tx_timeout, max_txs))
        return _run_threads(submit, res, run_id, drain, max_txs)  # type: ignore[arg-type]
    finally:
        res.client_cpu_s = time.process_time() - cpu0
        res.wall_s = time.monotonic() - wall0


async def _run_async(asubmit, aclose, res: LoadResult, run_id: str, drain: float, tx_timeout: float,
                     max_txs: int) -> LoadResult:
    t0 = time.monotonic()
    rec = _Recorder(res, t0 + res.warmup_s, t0 + res.warmup_s + res.duration_s, max_txs)

    async def client(c: int) -> None:
        seq = 0
        while True:
            tx = make_payload(run_id, c, seq, res.tx_size)
            seq += 1
            go, measured = rec.may_start()
            if not go:
                return
            t = time.monotonic()
            err: BaseException | None = None
            try:
                await asyncio.wait_for(asubmit(tx), tx_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - every failure is recorded by type
                err = e
            rec.done(measured, time.monotonic() - t, err)

    tasks = [asyncio.create_task(client(c)) for c in range(res.clients)]
    try:
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, rec.t_end + drain - time.monotonic()))
        for p in pending:
            p.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        rec.abandon_pending()
        if aclose is not None:
            await aclose()
    return res


def _run_threads(submit, res: LoadResult, run_id: str, drain: float, max_txs: int) -> LoadResult:
    t0 = time.monotonic()
    rec = _Recorder(res, t0 + res.warmup_s, t0 + res.warmup_s + res.duration_s, max_txs)

    def client(c: int) -> None:
        seq = 0
        while True:
            tx = make_payload(run_id, c, seq, res.tx_size)
            seq += 1
            go, measured = rec.may_start()
            if not go:
                return
            t = time.monotonic()
            err: BaseException | None = None
            try:
                submit(tx)
            except Exception as e:  # noqa: BLE001
                err = e
            rec.done(measured, time.monotonic() - t, err)

    threads = [threading.Thread(target=client, args=(c,), daemon=True, name=f"loadgen-{c}") for c in range(res.clients)]
    for th in threads:
        th.start()
    deadline = rec.t_end + drain
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    rec.abandon_pending()  # stragglers keep running as daemon threads; their results are ignored
    return res
