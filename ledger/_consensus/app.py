"""What the consensus core needs of the application it replicates.

`BlockContext` (what an executor may know of a block), `Execution` (the
result of running one) and the `Executor` protocol. The core only ever calls
an executor it is given; the key/value default (`ledger.executor.KVExecutor`)
and the contracts (`ledger.contracts.ContractApp`) implement this interface.
Re-exported by `ledger.executor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from ..values import CommitCertificate, Genesis, SealerSet, StateRoot, Transaction

__all__ = ["BlockContext", "Execution", "Executor"]


@dataclass(frozen=True)
class BlockContext:
    """What an executor may know about the block it runs (all deterministic)."""

    height: int
    epoch: int
    time: int
    proposer: str
    epoch_end: bool
    sealers: SealerSet
    #: the chain's genesis (chain id, nodes, params: the reputation rules read them)
    genesis: Genesis | None = None
    #: hash of block ``height - 1`` (the genesis hash for block 1)
    prev_hash: bytes = b""
    #: the certificate of block ``height - 1`` this block carries (verified by the core)
    last_commit: CommitCertificate | None = None
    #: the sealer set that certified block ``height - 1``
    last_sealers: SealerSet | None = None

    @property
    def reputation(self) -> bool:
        """True when the chain chooses sealers by reputation (`Params.sealer_count` > 0)."""
        return self.genesis is not None and self.genesis.params.sealer_count > 0


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
    """Deterministic state machine replicated by the ledger.

    An executor may also have ``admit(tx, nodes) -> (code, org)``: mempool admission against its
    committed state (`ledger._consensus.mempool`; the contracts' is `ledger.contracts.admission`).
    Without it every submitter is admitted (the KV app)."""

    def state_root(self) -> StateRoot:
        """Root of the committed state (genesis state before block 1)."""

    def execute(self, ctx: BlockContext, txs: Sequence[Transaction]) -> Execution:
        """Run `txs` on the committed state without changing it."""

    def apply(self, execution: Execution) -> None:
        """Make `execution` (of the next block) the committed state."""
