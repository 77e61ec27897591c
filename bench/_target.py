"""The small interface through which a cluster plugs into `bench/ledger.py`.

Our ledger provides it in `bench/_ledger_target.py` (default spec `bench._ledger_target:LedgerBenchTarget`,
overridable with `bench/ledger.py --target module:attr`); the CometBFT peer in
`bench/_cometbft.py` implements the same interface.

    class LedgerTarget(Protocol):
        name: str
        def start(self, n_nodes: int, n_sealers: int) -> None
        def submit(self, tx: bytes) -> None
        async def asubmit(self, tx: bytes) -> None     # optional, preferred
        async def aclose(self) -> None                  # optional
        def stop(self) -> None

* `start(n_nodes, n_sealers)`: bring up a fresh cluster of `n_nodes` node
  processes on loopback, the first `n_sealers` of them sealers (4, 4) and
  (16, 4); return once it is ready to commit transactions (or raise).
* `submit(tx)`: submit one transaction and return only once it is committed
  (our ledger: f+1 matching replies); raise on any failure (refusal, timeout,
  error reply).  `tx` is the load generator's opaque `key=value` payload of
  exactly `--tx-size` bytes; the target wraps it (e.g. as a signed
  `Transaction` payload) and must not batch it with other clients' txs.
  Called concurrently from one thread per client.
* `asubmit(tx)`: the same as a coroutine; if present, the load generator uses
  it (all clients in one asyncio loop) instead of `submit`.
* `aclose()`: if present, awaited at the end of each load run inside the same
  event loop (close sessions/connections created by `asubmit`).
* `stop()`: stop every process started by `start` and wait for them (bounded
  time); idempotent; called from a `finally`, also after Ctrl-C.

The factory named by the spec is called with no arguments.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

DEFAULT_TARGET_SPEC = "bench._ledger_target:LedgerBenchTarget"


@runtime_checkable
class LedgerTarget(Protocol):
    name: str

    def start(self, n_nodes: int, n_sealers: int) -> None: ...

    def submit(self, tx: bytes) -> None: ...

    def stop(self) -> None: ...


class TargetUnavailable(RuntimeError):
    """The target cannot be run here; the message says why, in one sentence."""


def load_target(spec: str = DEFAULT_TARGET_SPEC) -> LedgerTarget:
    """Import `module:attr` and call it; raise TargetUnavailable with the reason otherwise."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise TargetUnavailable(f"bad target spec {spec!r} (expected module:attr)")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise TargetUnavailable(f"cannot import {mod_name} ({type(e).__name__}: {e})") from e
    factory = getattr(mod, attr, None)
    if factory is None:
        raise TargetUnavailable(f"{mod_name} has no {attr}")
    try:
        target = factory()
    except Exception as e:
        raise TargetUnavailable(f"{spec}() failed ({type(e).__name__}: {e})") from e
    missing = [m for m in ("start", "stop") if not callable(getattr(target, m, None))]
    if not (callable(getattr(target, "submit", None)) or callable(getattr(target, "asubmit", None))):
        missing.append("submit or asubmit")
    if missing:
        raise TargetUnavailable(f"{spec} lacks {', '.join(missing)}")
    return target
