"""The deterministic application behind the ledger, and a key/value default.

The consensus core calls `execute()` speculatively to validate a proposal
(PBFT's "Validation" stage: every sealer executes the block and checks the
state root in the header), then `apply()` once the block commits. The contracts
(`ledger.contracts.ContractApp`) implement this same interface. With
`Params.sealer_count` > 0 both apps keep reputation in their state
(`ledger.contracts.reputation`): counted from the previous block's
certificate at the start of each block, and choosing the next sealer set at
each epoch end.
"""

from __future__ import annotations

from typing import Any, Sequence

from trust import canonical
from trust.hashes import sha256

from ._consensus.app import BlockContext, Execution, Executor
from .values import SealerSet, StateRoot, Transaction

__all__ = ["BlockContext", "Execution", "Executor", "KVExecutor"]


class KVExecutor:
    """Default app: a key/value map. ``kv.put {key, value}``, ``kv.del {key}``.

    The state root is sha256 of the canonical map; results are
    ``{"ok": True}`` or ``{"error": reason}`` (a failed tx is still recorded).
    The sealer set never changes unless the chain turns reputation on
    (`Params.sealer_count` > 0): then the reputation table lives beside the
    map (its entries are in the root) and ``reputation.*`` txs run the same
    rules as in the contracts app, every genesis node being eligible.
    """

    def __init__(self) -> None:
        from .contracts.reputation import History

        self.state: dict[str, Any] = {}
        self.rep: dict[str, bytes] = {}
        #: reputation records after each block where they changed (``/reputation?height=``)
        self.rep_history = History()
        self.height = 0
        self._root = self._root_of(self.state, self.rep)

    @staticmethod
    def _root_of(state: dict[str, Any], rep: dict[str, bytes] | None = None) -> StateRoot:
        if not rep:
            return StateRoot(sha256(canonical.encode(["sealstream/kv/v1", state])))
        return StateRoot(sha256(canonical.encode(["sealstream/kv/v2", state, rep])))

    def state_root(self) -> StateRoot:
        return self._root

    def execute(self, ctx: BlockContext, txs: Sequence[Transaction]) -> Execution:
        state = dict(self.state)
        results: list[Any] = []
        rep = None
        if ctx.reputation:
            from .contracts import reputation

            rep = reputation.KVBook(self.rep, ctx)
        for i, tx in enumerate(txs):
            p = tx.payload
            if tx.kind == "kv.put" and isinstance(p, dict) and isinstance(p.get("key"), str) and "value" in p:
                state[p["key"]] = p["value"]
                results.append({"ok": True})
            elif tx.kind == "kv.del" and isinstance(p, dict) and isinstance(p.get("key"), str):
                results.append({"ok": state.pop(p["key"], None) is not None})
            elif rep is not None and tx.kind.startswith("reputation."):
                results.append(rep.run(i, tx))
            else:
                results.append({"error": f"unsupported transaction kind {tx.kind!r}"})
        changed: dict[str, bytes | None] = {}
        if rep is not None:
            nxt = rep.next_sealers() if ctx.epoch_end else None
            repmap = rep.merged()
            changed = rep.changed()
        else:
            nxt = self.next_sealers(ctx, state) if ctx.epoch_end else None
            repmap = self.rep
        return Execution(self._root_of(state, repmap), tuple(results), nxt, (state, repmap, changed, ctx.height))

    def next_sealers(self, ctx: BlockContext, state: dict[str, Any]) -> SealerSet:
        """Sealer set of epoch `ctx.epoch + 1` without reputation: unchanged; override to rotate."""
        return ctx.sealers

    def apply(self, execution: Execution) -> None:
        self.state, self.rep, changed, self.height = execution.pending
        self._root = execution.state_root
        self.rep_history.note(self.height, changed)
