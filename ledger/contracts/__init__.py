"""The ledger's contracts: deterministic Python run by `ContractApp` (an `Executor`).

`_app` holds the framework (dispatch by kind, per-tx atomic writes, refusal
codes, the incremental sparse-Merkle state root), `registry` the identities
and key resolution as of a height, `anchors` the batch roots. See
docs/contracts.md.
"""

from __future__ import annotations

from . import anchors, registry
from ._app import (
    STATE_TAG,
    ContractApp,
    ContractsGenesis,
    ContractState,
    GenesisEntity,
    GenesisOrg,
    Refused,
    TxContext,
    recompute_root,
    state_root_of,
    verify_state_proof,
)
from ._smt import ProofError
from .registry import Resolution, resolve, resolve_key

__all__ = [
    "STATE_TAG",
    "ContractApp",
    "ContractsGenesis",
    "ContractState",
    "GenesisEntity",
    "GenesisOrg",
    "ProofError",
    "Refused",
    "Resolution",
    "TxContext",
    "anchors",
    "recompute_root",
    "registry",
    "resolve",
    "resolve_key",
    "state_root_of",
    "verify_state_proof",
]
