"""The ledger's contracts: deterministic Python run by `ContractApp` (an `Executor`).

`_app` holds the framework (dispatch by kind, the pre-dispatch fee hook,
per-tx atomic writes, refusal codes, the incremental sparse-Merkle state
root), `registry` the identities and key resolution as of a height,
`anchors` the batch roots, `tokens` the accounts, fees by kind and the
history of every charge, `audit` the operator operations, declarative rules
and the events they raise, `confidentiality` (kinds ``policy.*``) who may read a
confidential stream as of a height. See docs/contracts.md.
"""

from __future__ import annotations

from . import anchors, audit, confidentiality, registry, tokens
from ._app import (
    AUTO,
    GENEROUS_BALANCE,
    STATE_TAG,
    ContractApp,
    ContractsGenesis,
    ContractState,
    FeeHook,
    GenesisEntity,
    GenesisOrg,
    Refused,
    TxContext,
    recompute_root,
    state_root_of,
    verify_state_proof,
)
from ._smt import StateProofError
from .registry import Resolution, resolve, resolve_key

__all__ = [
    "AUTO",
    "GENEROUS_BALANCE",
    "STATE_TAG",
    "ContractApp",
    "ContractsGenesis",
    "ContractState",
    "FeeHook",
    "GenesisEntity",
    "GenesisOrg",
    "StateProofError",
    "Refused",
    "Resolution",
    "TxContext",
    "anchors",
    "audit",
    "confidentiality",
    "recompute_root",
    "registry",
    "resolve",
    "resolve_key",
    "state_root_of",
    "tokens",
    "verify_state_proof",
]
