"""ledger: the reputation-aided PBFT consortium ledger of sealstream.

Pure parts (no I/O): values (`Transaction`, `Block`, `CommitCertificate`,
`Genesis`, `SealerSet`), consensus messages, the sans-I/O `Replica`, the
`Executor` interface with a key/value default, the light client and the
deterministic simulator. I/O lives at the edges: `ledger.store.BlockStore` (SQLite, imported on demand).
"""

from ._types import (
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
    Replica,
    Reply,
    RequestSubmitted,
    Send,
    SetTimer,
    Tick,
    TimerFired,
)
from .errors import CertificateError, LedgerError, StoreError, WireError
from .executor import BlockContext, Execution, Executor, KVExecutor
from .light_client import LightClient, LightClientError, TxProof, tx_proof, verify_chain
from .messages import decode_message, encode_message

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
    "LedgerError",
    "LightClient",
    "LightClientError",
    "MessageReceived",
    "NodeId",
    "Params",
    "Replica",
    "Reply",
    "RequestSubmitted",
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
    "WireError",
    "decode_message",
    "encode_message",
    "epoch_of",
    "quorum_size",
    "tx_proof",
    "verify_chain",
]
