"""ledger: the reputation-aided PBFT consortium ledger of sealstream.

Pure parts (no I/O): values (`Transaction`, `Block`, `CommitCertificate`,
`Genesis`, `SealerSet`), consensus messages, the sans-I/O `Replica`, the
`Executor` interface with a key/value default, the light client and the
deterministic simulator. I/O lives at the edges, imported on demand:
`ledger.store.BlockStore` (SQLite), `ledger.transport` (asyncio TCP),
`ledger.node` (a node process with its HTTP API and metrics),
`ledger.client` (`LedgerClient`, `AsyncLedgerClient`). Local node processes are
run from outside the package, by `infra.ledger_cluster.LocalCluster` (process
handling lives in `infra/`; the benchmark's target wrapping it is
`bench/_ledger_target.py`).
"""

from .values import (
    Block,
    BlockHash,
    BlockHeader,
    CommitCertificate,
    Genesis,
    GenesisNode,
    NodeId,
    Params,
    SealerSet,
    StateRoot,
    Transaction,
    TxId,
    epoch_of,
    quorum_size,
)
from .consensus import (
    Broadcast,
    CancelTimer,
    CommitBlock,
    Equivocation,
    MessageReceived,
    Persist,
    Replica,
    Reply,
    RequestSubmitted,
    RequestsSubmitted,
    SafetyState,
    Send,
    SetTimer,
    Tick,
    TimerFired,
)
from .errors import CertificateError, LedgerError, StoreError, WireError
from .executor import BlockContext, Execution, Executor, KVExecutor
from .layout import LayoutError, LedgerLayout, NodeAddress
from .light_client import LightClient, LightClientError, TxProof, tx_proof, verify_chain
from .messages import decode_message, encode_message
from .replies import TxReplies

__all__ = [
    "Block",
    "BlockContext",
    "BlockHash",
    "BlockHeader",
    "Broadcast",
    "CancelTimer",
    "CertificateError",
    "CommitBlock",
    "CommitCertificate",
    "Equivocation",
    "Execution",
    "Executor",
    "Genesis",
    "GenesisNode",
    "KVExecutor",
    "LayoutError",
    "LedgerLayout",
    "LedgerError",
    "LightClient",
    "LightClientError",
    "MessageReceived",
    "NodeAddress",
    "NodeId",
    "Params",
    "Persist",
    "Replica",
    "Reply",
    "RequestSubmitted",
    "RequestsSubmitted",
    "SafetyState",
    "SealerSet",
    "Send",
    "SetTimer",
    "StateRoot",
    "StoreError",
    "Tick",
    "TimerFired",
    "Transaction",
    "TxId",
    "TxProof",
    "TxReplies",
    "WireError",
    "decode_message",
    "encode_message",
    "epoch_of",
    "quorum_size",
    "tx_proof",
    "verify_chain",
]
