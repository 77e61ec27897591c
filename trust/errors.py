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
    "STEPS",
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
