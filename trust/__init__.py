"""trust: the evidence chain as pure code (stdlib + PyNaCl, no I/O).

Modules, one idea each:

- `trust.canonical`  deterministic encoding (deterministic CBOR subset)
- `trust.identity`   Ed25519 key pairs, ``did:key`` ids, signatures, key files
- `trust.statement`  the device statement, its signature, its Kafka headers
- `trust.merkle`     RFC 9162 trees: roots, inclusion/consistency proofs,
                     compact ranges, tree heads
- `trust.receipt`    the gateway's seal receipt and the anchor reference
- `trust.verify`     the verification chain for one record

Errors (every one a `TrustError`; format errors are also `ValueError`)::

    TrustError
    ├── CanonicalError            (ValueError) bytes not canonical / value not encodable
    ├── IdentityError             (ValueError) bad key, seed or did:key
    │   └── KeyFileError          unsafe permissions or malformed key file
    ├── StatementError            (ValueError) .reason: invalid-field, non-canonical,
    │                             unsupported-version, missing-header,
    │                             duplicate-header, malformed-header
    ├── ReceiptError              (ValueError) malformed receipt / anchor reference
    ├── ProofError                (ValueError) Merkle proof arguments or result
    │   ├── InclusionError        RFC 9162 §2.1.3.2 failed
    │   └── ConsistencyError      RFC 9162 §2.1.4.2 failed
    └── VerificationError         .step names the failed step of the chain
        ├── StatementFormatError  "statement-format"
        ├── PayloadSizeError      "payload-size"
        ├── PayloadHashError      "payload-hash"
        ├── DeviceSignatureError  "device-signature"
        ├── ReceiptFormatError    "receipt-format"
        ├── StatementHashError    "statement-hash"
        ├── ReceiptSignatureError "receipt-signature"
        ├── AnchorMismatchError   "anchor-root"
        └── InclusionProofError   "inclusion"
"""

from .hashes import HASH_SIZE, LeafHash, NodeHash, PayloadDigest, RootHash, StatementHash, sha256
from .canonical import decode as canonical_decode
from .canonical import encode as canonical_encode
from .errors import (
    STEPS,
    AnchorMismatchError,
    CanonicalError,
    ConsistencyError,
    DeviceSignatureError,
    IdentityError,
    InclusionError,
    InclusionProofError,
    KeyFileError,
    PayloadHashError,
    PayloadSizeError,
    ProofError,
    ReceiptError,
    ReceiptFormatError,
    ReceiptSignatureError,
    StatementError,
    StatementFormatError,
    StatementHashError,
    TrustError,
    VerificationError,
)
from .identity import (
    KeyPair,
    did_from_public_key,
    is_did,
    load_keypair,
    public_key_from_did,
    save_keypair,
    verify_signature,
)
from .merkle import (
    EMPTY_ROOT,
    CompactRange,
    InclusionVerifier,
    MerkleTree,
    TreeHead,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    leaf_hashes,
    node_hash,
    root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from .receipt import AnchorRef, SealReceipt, seal_receipt, verify_receipt
from .statement import (
    KINDS,
    Statement,
    from_kafka_headers,
    sign_statement,
    to_kafka_headers,
    verify_statement,
)
from .verify import VerificationResult, check_record, verify_record

__all__ = [
    # hashes
    "HASH_SIZE", "LeafHash", "NodeHash", "RootHash", "StatementHash", "PayloadDigest", "sha256",
    # canonical
    "canonical_encode", "canonical_decode",
    # identity
    "KeyPair", "did_from_public_key", "public_key_from_did", "is_did", "verify_signature",
    "save_keypair", "load_keypair",
    # statement
    "Statement", "KINDS", "sign_statement", "verify_statement", "to_kafka_headers",
    "from_kafka_headers",
    # merkle
    "EMPTY_ROOT", "leaf_hash", "leaf_hashes", "node_hash", "root", "inclusion_proof",
    "consistency_proof", "root_from_inclusion_proof", "verify_inclusion", "verify_consistency",
    "MerkleTree", "CompactRange", "TreeHead", "InclusionVerifier",
    # receipts
    "SealReceipt", "AnchorRef", "seal_receipt", "verify_receipt",
    # verification
    "VerificationResult", "verify_record", "check_record", "STEPS",
    # errors
    "TrustError", "CanonicalError", "IdentityError", "KeyFileError", "StatementError",
    "ReceiptError", "ProofError", "InclusionError", "ConsistencyError", "VerificationError",
    "StatementFormatError", "PayloadSizeError", "PayloadHashError", "DeviceSignatureError",
    "ReceiptFormatError", "StatementHashError", "ReceiptSignatureError", "AnchorMismatchError",
    "InclusionProofError",
]
