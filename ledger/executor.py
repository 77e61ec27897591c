"""The deterministic application behind the ledger, and a key/value default.

The consensus core calls `execute()` speculatively to validate a proposal
(PBFT's "Validation" stage: every sealer executes the block and checks the
state root in the header), then `apply()` once the block commits. The next
issue's contracts (registry, anchors, tokens, audit) and the reputation rules
implement this same interface; `next_sealers` is where reputation chooses the
sealer set of the following epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from trust import canonical
from trust._hashes import sha256

from ._types import SealerSet, StateRoot, Transaction

__all__ = ["BlockContext", "Execution", "Executor", "KVExecutor"]


@dataclass(frozen=True)
class BlockContext:
    """What an executor may know about the block it runs (all deterministic)."""

    height: int
    epoch: int
    time: int
    proposer: str
    epoch_end: bool
    sealers: SealerSet


@dataclass(frozen=True)
class Execution:
    """Result of executing a block on top of the committed state.

    `results[i]` is the canonical result of tx i (sent back to clients);
    `next_sealers` is set iff the block ends an epoch; `pending` is the
    executor's private new state, applied by `Executor.apply`.
    """

    state_root: StateRoot
    results: tuple[Any, ...]
    next_sealers: SealerSet | None
    pending: Any = field(default=None, compare=False, repr=False)


class Executor(Protocol):
    """Deterministic state machine replicated by the ledger."""

    def state_root(self) -> StateRoot:
        """Root of the committed state (genesis state before block 1)."""

    def execute(self, ctx: BlockContext, txs: Sequence[Transaction]) -> Execution:
        """Run `txs` on the committed state without changing it."""

    def apply(self, execution: Execution) -> None:
        """Make `execution` (of the next block) the committed state."""


class KVExecutor:
    """Default app: a key/value map. ``kv.put {key, value}``, ``kv.del {key}``.

    The state root is sha256 of the canonical map; results are
    ``{"ok": True}`` or ``{"error": reason}`` (a failed tx is still recorded).
    The sealer set never changes.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self._root = self._root_of(self.state)

    @staticmethod
    def _root_of(state: dict[str, Any]) -> StateRoot:
        return StateRoot(sha256(canonical.encode(["sealstream/kv/v1", state])))

    def state_root(self) -> StateRoot:
        return self._root

    def execute(self, ctx: BlockContext, txs: Sequence[Transaction]) -> Execution:
        state = dict(self.state)
        results = []
        for tx in txs:
            p = tx.payload
            if tx.kind == "kv.put" and isinstance(p, dict) and isinstance(p.get("key"), str) and "value" in p:
                state[p["key"]] = p["value"]
                results.append({"ok": True})
            elif tx.kind == "kv.del" and isinstance(p, dict) and isinstance(p.get("key"), str):
                results.append({"ok": state.pop(p["key"], None) is not None})
            else:
                results.append({"error": f"unsupported transaction kind {tx.kind!r}"})
        nxt = self.next_sealers(ctx, state) if ctx.epoch_end else None
        return Execution(self._root_of(state), tuple(results), nxt, state)

    def next_sealers(self, ctx: BlockContext, state: dict[str, Any]) -> SealerSet:
        """Sealer set of epoch `ctx.epoch + 1`; override to rotate sealers."""
        return ctx.sealers

    def apply(self, execution: Execution) -> None:
        self.state = execution.pending
        self._root = execution.state_root
