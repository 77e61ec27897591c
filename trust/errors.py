"""The exception hierarchy of `trust` (drawn in the package docstring).

Every error is a `TrustError`.  Input-format errors are also `ValueError`s so
that callers parsing untrusted input can catch them generically.  Errors that
describe *why evidence does not verify* carry a machine-readable attribute:
`StatementError.reason` and `VerificationError.step`.
"""

from __future__ import annotations

__all__ = [
    "TrustError",
    "CanonicalError",
    "IdentityError",
    "KeyFileError",
    "StatementError",
    "ReceiptError",
    "ProofError",
    "InclusionError",
    "ConsistencyError",
    "VerificationError",
    "StatementFormatError",
    "ReceiptFormatError",
    "PayloadSizeError",
    "PayloadHashError",
    "DeviceSignatureError",
    "StatementHashError",
    "ReceiptSignatureError",
    "AnchorMismatchError",
    "InclusionProofError",
    "ManifestError",
    "LeafError",
    "DeviceKeyError",
    "RowValueError",
    "RowMissingError",
    "RowUnsignedError",
    "PayloadFormatError",
    "LedgerEvidenceError",
    "GenesisError",
    "HeaderChainError",
    "SealerSetHistoryError",
    "CertificateQuorumError",
    "TxInBlockError",
    "AnchorTxError",
    "RegistryProofError",
    "EvidenceMissingError",
    "SubjectError",
    "RowDeviceError",
    "ReceiptGatewayError",
    "ReceiptLocationError",
    "STEPS",
    "CHAIN_STEPS",
]


class TrustError(Exception):
    """Base class of every error raised by `trust`."""


class CanonicalError(TrustError, ValueError):
    """Value cannot be canonically encoded, or bytes are not canonical."""


class IdentityError(TrustError, ValueError):
    """Malformed key, seed or `did:key` identifier."""


class KeyFileError(IdentityError):
    """Key file unsafe (group/other may access it) or malformed."""


class StatementError(TrustError, ValueError):
    """Malformed statement or Kafka headers; `.reason` is machine-readable.

    Reasons: ``invalid-field``, ``non-canonical``, ``unsupported-version``,
    ``missing-header``, ``duplicate-header``, ``malformed-header``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ReceiptError(TrustError, ValueError):
    """Malformed seal receipt or anchor reference."""


class ProofError(TrustError, ValueError):
    """A Merkle proof does not verify or its arguments are out of range."""


class InclusionError(ProofError):
    """Inclusion proof failed (RFC 9162 §2.1.3.2)."""


class ConsistencyError(ProofError):
    """Consistency proof failed (RFC 9162 §2.1.4.2)."""


class VerificationError(TrustError):
    """A step of the evidence chain failed; `.step` names it.

    Subclasses fix `step`; the ledger side may subclass this for the steps it
    owns (root in ANCHOR tx, tx in block, quorum certificate, ...).
    """

    step: str = "unknown"

    def __init__(self, message: str, *, step: str | None = None) -> None:
        if step is not None:
            self.step = step
        super().__init__(f"{self.step}: {message}")


class StatementFormatError(VerificationError):
    """The statement bytes do not parse as a canonical statement."""

    step = "statement-format"


class ReceiptFormatError(VerificationError):
    """The seal receipt does not parse."""

    step = "receipt-format"


class PayloadSizeError(VerificationError):
    """len(payload) differs from the statement's `size`."""

    step = "payload-size"


class PayloadHashError(VerificationError):
    """sha256(payload) differs from the statement's `payload_sha256`."""

    step = "payload-hash"


class DeviceSignatureError(VerificationError):
    """The device signature over the statement does not verify."""

    step = "device-signature"


class StatementHashError(VerificationError):
    """The receipt seals a different statement hash."""

    step = "statement-hash"


class ReceiptSignatureError(VerificationError):
    """The gateway signature over the receipt does not verify."""

    step = "receipt-signature"


class AnchorMismatchError(VerificationError):
    """The anchor reference names a root other than the trusted one."""

    step = "anchor-root"


class InclusionProofError(VerificationError):
    """The statement hash is not leaf `leaf_index` of the anchored tree."""

    step = "inclusion"


class ManifestError(VerificationError):
    """The batch manifest is malformed, for another batch, or its leaves do not hash to its root."""

    step = "manifest"


class LeafError(VerificationError):
    """The statement hash is not leaf `leaf_index` of the batch manifest."""

    step = "leaf"


class DeviceKeyError(VerificationError):
    """The device's key was not registered and in force (or the device was revoked) at the anchor height."""

    step = "device-key"


class PayloadFormatError(VerificationError):
    """A time-series payload is not a readable Arrow stream with ts, sensor, value."""

    step = "payload-format"


class RowValueError(VerificationError):
    """A stored row differs from the row at its index in the signed payload."""

    step = "row-value"


class RowMissingError(VerificationError):
    """A row of a signed payload is missing from the table."""

    step = "row-missing"


class RowUnsignedError(VerificationError):
    """A stored row has no signed origin (unknown statement, or an index past the payload's rows)."""

    step = "row-unsigned"


class EvidenceMissingError(VerificationError):
    """A piece of evidence the chain needs is absent (payload, statement, batch, anchor, ...)."""

    step = "evidence"


class LedgerEvidenceError(VerificationError):
    """Base of the ledger half of the chain (root in ANCHOR tx .. sealer set from genesis)."""


class GenesisError(LedgerEvidenceError):
    """The genesis is not the trusted one (hash pin or checkpoint mismatch)."""

    step = "genesis"


class HeaderChainError(LedgerEvidenceError):
    """A header does not extend the chain (height, prev_hash, time, epoch)."""

    step = "header-chain"


class SealerSetHistoryError(LedgerEvidenceError):
    """A header names another sealer set than the one followed from genesis."""

    step = "sealer-set"


class CertificateQuorumError(LedgerEvidenceError):
    """A header's commit certificate lacks a quorum of the sealer set, or a signature is bad or a non-sealer's."""

    step = "certificate"


class TxInBlockError(LedgerEvidenceError):
    """The ANCHOR transaction is not in the block's tx_root (RFC 9162 proof)."""

    step = "tx-in-block"


class AnchorTxError(LedgerEvidenceError):
    """The ANCHOR transaction (or the anchors state) does not name this batch, root and size."""

    step = "anchor-tx"


class RegistryProofError(LedgerEvidenceError):
    """A registry state value does not verify against a certified header's state root."""

    step = "registry-proof"


class SubjectError(VerificationError):
    """The verified evidence does not cover the claimed subject (or holds evidence outside it)."""

    step = "subject"


class RowDeviceError(VerificationError):
    """A stored row names another device than its signed statement (or than the subject)."""

    step = "row-device"


class ReceiptGatewayError(VerificationError):
    """The seal receipt's signer is not an active gateway at the anchor, or not the one that anchored."""

    step = "receipt-gateway"


class ReceiptLocationError(VerificationError):
    """The seal receipt's location is not the payload's content address."""

    step = "receipt-location"


#: Steps checked by `trust.verify`, in order.
STEPS: tuple[str, ...] = (
    StatementFormatError.step,
    PayloadSizeError.step,
    PayloadHashError.step,
    DeviceSignatureError.step,
    ReceiptFormatError.step,
    StatementHashError.step,
    ReceiptSignatureError.step,
    AnchorMismatchError.step,
    InclusionProofError.step,
)


#: Every step of the whole evidence chain in the order a verifier checks them
#: (docs/verify.md): storage and record steps, then the ledger half.
CHAIN_STEPS: tuple[str, ...] = (
    EvidenceMissingError.step,
    GenesisError.step,
    HeaderChainError.step,
    SealerSetHistoryError.step,
    CertificateQuorumError.step,
    RegistryProofError.step,
    TxInBlockError.step,
    AnchorTxError.step,
    ManifestError.step,
    StatementFormatError.step,
    PayloadSizeError.step,
    PayloadHashError.step,
    DeviceKeyError.step,
    DeviceSignatureError.step,
    ReceiptFormatError.step,
    StatementHashError.step,
    ReceiptSignatureError.step,
    ReceiptLocationError.step,
    ReceiptGatewayError.step,
    LeafError.step,
    AnchorMismatchError.step,
    InclusionProofError.step,
    PayloadFormatError.step,
    RowValueError.step,
    RowMissingError.step,
    RowUnsignedError.step,
    RowDeviceError.step,
    SubjectError.step,
)
