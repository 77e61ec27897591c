"""This machine's ceiling for the ledger: Ed25519 verifications per second on all cores.

Every sealer verifies the submitter's Ed25519 signature of every transaction,
and in the local benchmark all sealers share this machine's cores, so

    ceiling tx/s = V / s

where V is the number of Ed25519 verifications per second that PyNaCl
(libsodium) achieves with one process per core, for a message of the size of
our typical transaction, and s is the number of sealers that verify each
transaction (4).  It ignores hashing, consensus messages (also signed),
storage and the network: it is an upper bound, not a target to reach exactly.

How V is measured: `procs` worker processes (default: os.cpu_count()) each
verify pre-signed messages in a tight loop with a reused `VerifyKey` (the raw
primitive, no key parsing) during the same fixed window (they start together
at an agreed monotonic instant after their setup); V = total verifications /
window.  This runs `runs` times and V is the median.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

DEFAULT_SEALERS = 4
_CHECK_EVERY = 128  # verifications between clock reads


def _init_worker() -> None:
    """Workers leave Ctrl-C to the parent and die quietly on Pool.terminate()'s SIGTERM."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker(args: tuple[int, float, float, int]) -> int:
    """Verify signatures from `start_at` (time.monotonic) for `seconds`; return the count."""
    msg_size, start_at, seconds, seed = args
    import nacl.signing  # imported in the worker (spawn-safe)

    sk = nacl.signing.SigningKey(seed.to_bytes(4, "big") * 8)
    vk = sk.verify_key
    pairs = []
    for i in range(64):  # distinct messages, so nothing is trivially cached
        m = (b"%d=" % i).ljust(msg_size, b"x")[:msg_size]
        pairs.append((m, sk.sign(m).signature))
    verify = vk.verify
    while time.monotonic() < start_at:
        pass
    end = start_at + seconds
    n = 0
    while True:
        for m, s in pairs[: _CHECK_EVERY]:
            verify(m, s)
        n += min(_CHECK_EVERY, len(pairs))
        if time.monotonic() >= end:
            return n


@dataclass
class CeilingResult:
    verifications_per_s: float  # median over runs, all processes together
    runs_verifications_per_s: list[float]
    procs: int
    cpu_count: int
    seconds_per_run: float
    msg_size: int
    sealers: int
    ceiling_tx_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.ceiling_tx_per_s = self.verifications_per_s / self.sealers

    @property
    def formula(self) -> str:
        return (
            f"ceiling = Ed25519 verifications/s on {self.procs} process(es) "
            f"({self.msg_size} B messages, median of {len(self.runs_verifications_per_s)} windows of "
            f"{self.seconds_per_run:g} s) / sealers verifying each tx = "
            f"{self.verifications_per_s:,.0f} / {self.sealers} = {self.ceiling_tx_per_s:,.0f} tx/s"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["formula"] = self.formula
        return d


def merge(*results: CeilingResult) -> CeilingResult:
    """One ceiling from several measurements (e.g. before and after the cluster runs): median of all windows."""
    first = results[0]
    rates = [r for res in results for r in res.runs_verifications_per_s]
    if any((r.procs, r.msg_size, r.sealers, r.seconds_per_run) != (first.procs, first.msg_size, first.sealers,
                                                                   first.seconds_per_run) for r in results):
        raise ValueError("merge() needs measurements with the same settings")
    return CeilingResult(statistics.median(rates), rates, first.procs, first.cpu_count, first.seconds_per_run,
                         first.msg_size, first.sealers)


def measure_ceiling(
    *,
    seconds: float = 2.0,
    runs: int = 5,
    msg_size: int = 256,
    sealers: int = DEFAULT_SEALERS,
    procs: int | None = None,
) -> CeilingResult:
    """Measure V (median of `runs` windows of `seconds`) and derive the ceiling."""
    if seconds <= 0 or runs < 1 or msg_size < 1 or sealers < 1:
        raise ValueError("seconds > 0, runs >= 1, msg_size >= 1 and sealers >= 1 are required")
    cpu = os.cpu_count() or 1
    procs = procs or cpu
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    rates: list[float] = []
    with ctx.Pool(procs, initializer=_init_worker) as pool:
        # Warm the pool (imports, key setup paths) outside the measured windows.
        pool.map(_worker, [(msg_size, time.monotonic(), 0.05, i + 1) for i in range(procs)])
        for _ in range(runs):
            # Setup (64 signatures) takes milliseconds; 0.3 s of slack lets every
            # worker be spinning at start_at even on a loaded machine.
            start_at = time.monotonic() + 0.3
            counts = pool.map(_worker, [(msg_size, start_at, seconds, i + 1) for i in range(procs)])
            rates.append(sum(counts) / seconds)
    return CeilingResult(
        verifications_per_s=statistics.median(rates),
        runs_verifications_per_s=rates,
        procs=procs,
        cpu_count=cpu,
        seconds_per_run=seconds,
        msg_size=msg_size,
        sealers=sealers,
    )


if __name__ == "__main__":  # pragma: no cover - manual use
    r = measure_ceiling()
    print(r.formula)
