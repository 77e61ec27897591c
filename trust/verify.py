"""The evidence chain for one record, as pure functions.

Given what a verifier holds for one record — payload bytes, the device's
statement and signature, the gateway's seal receipt, the anchor reference and
its inclusion proof — check, in order (the first failure wins):

==================  ==========================================================
step                check
==================  ==========================================================
statement-format    statement bytes parse as a canonical statement
payload-size        len(payload) == statement.size
payload-hash        SHA-256(payload) == statement.payload_sha256
device-signature    the device's Ed25519 signature over the statement is valid
                    (under the key registered for the device, if given)
receipt-format      the seal receipt parses
statement-hash      receipt.statement_hash == SHA-256(statement bytes)
receipt-signature   the gateway's signature over the receipt is valid
anchor-root         anchor.root == the trusted root (when one is given, e.g.
                    read from the ANCHOR transaction on the ledger)
inclusion           the leaf SHA-256(0x00 || statement hash) is leaf
                    anchor.leaf_index of the tree (anchor.tree_size, root),
                    RFC 9162 §2.1.3.2
==================  ==========================================================

The ledger half of the chain (root in an ANCHOR tx, tx in a block, quorum
certificate, sealer set from genesis) needs ledger data and lives in the
ledger's light client; downstream verifiers (`verify`) map its
failures onto the `LedgerEvidenceError` steps of `trust.errors`.

Batch-level helpers, for verifiers that hold a whole manifest rather than
one inclusion proof: `check_manifest` (the leaves hash to the root: step
``manifest``), `check_leaf` (statement hash is leaf i: step ``leaf``) and
`check_device_key` (the registry said the device key was in force: step
``device-key``).  `CHAIN_STEPS` lists every step of the whole chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

from .hashes import sha256
from .errors import (
    CHAIN_STEPS,
    AnchorMismatchError,
    DeviceKeyError,
    LeafError,
    ManifestError,
    DeviceSignatureError,
    IdentityError,
    InclusionError,
    InclusionProofError,
    PayloadHashError,
    PayloadSizeError,
    ReceiptError,
    ReceiptFormatError,
    ReceiptSignatureError,
    StatementError,
    StatementFormatError,
    StatementHashError,
    VerificationError,
    STEPS,
)
from .merkle import leaf_hash, leaf_hashes, root as merkle_root, verify_inclusion
from .receipt import AnchorRef, SealReceipt, verify_receipt
from .statement import Statement, verify_statement

__all__ = [
    "VerificationResult",
    "verify_record",
    "check_record",
    "check_manifest",
    "check_leaf",
    "check_device_key",
    "VerificationError",
    "STEPS",
    "CHAIN_STEPS",
]

Key = Union[bytes, str, None]


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of `verify_record`: the steps passed and the first failure."""

    passed: tuple[str, ...]
    error: VerificationError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failed_step(self) -> str | None:
        """Machine-readable name of the first failed step, or None."""
        return None if self.error is None else self.error.step

    def __bool__(self) -> bool:
        return self.error is None

    def raise_for_failure(self) -> None:
        if self.error is not None:
            raise self.error


def _run(
    passed: list[str],
    payload: bytes,
    statement: Union[Statement, bytes],
    signature: bytes,
    receipt: Union[SealReceipt, str, bytes],
    anchor: AnchorRef,
    proof: Sequence[bytes],
    device_key: Key,
    gateway_key: Key,
    root: bytes | None,
) -> None:
    step: Callable[[str], None] = passed.append

    if isinstance(statement, (bytes, bytearray, memoryview)):
        try:
            statement = Statement.from_bytes(bytes(statement))
        except StatementError as exc:
            raise StatementFormatError(str(exc)) from exc
    elif not isinstance(statement, Statement):
        raise StatementFormatError(f"expected a Statement or its bytes, not {type(statement).__name__}")
    step("statement-format")

    if len(payload) != statement.size:
        raise PayloadSizeError(f"payload has {len(payload)} bytes, statement says {statement.size}")
    step("payload-size")

    if sha256(payload) != statement.payload_sha256:
        raise PayloadHashError("SHA-256 of the payload differs from the statement's payload_sha256")
    step("payload-hash")

    try:
        good = verify_statement(statement, signature, device_key)
    except IdentityError as exc:
        raise DeviceSignatureError(f"unusable device key: {exc}") from exc
    if not good:
        raise DeviceSignatureError(f"signature does not verify for device {statement.device}")
    step("device-signature")

    if isinstance(receipt, (str, bytes, bytearray, memoryview)):
        try:
            if isinstance(receipt, str):
                receipt = SealReceipt.from_json(receipt)
            else:
                receipt = SealReceipt.from_bytes(bytes(receipt))
        except ReceiptError as exc:
            raise ReceiptFormatError(str(exc)) from exc
    elif not isinstance(receipt, SealReceipt):
        raise ReceiptFormatError(f"expected a SealReceipt, not {type(receipt).__name__}")
    step("receipt-format")

    stmt_hash = statement.hash()
    if receipt.statement_hash != stmt_hash:
        raise StatementHashError("the receipt seals another statement")
    step("statement-hash")

    try:
        good = verify_receipt(receipt, gateway_key)
    except IdentityError as exc:
        raise ReceiptSignatureError(f"unusable gateway key: {exc}") from exc
    if not good:
        raise ReceiptSignatureError(f"receipt signature does not verify for gateway {receipt.gateway}")
    step("receipt-signature")

    if not isinstance(anchor, AnchorRef):
        raise AnchorMismatchError(f"expected an AnchorRef, not {type(anchor).__name__}")
    if root is not None and anchor.root != root:
        raise AnchorMismatchError(f"anchor {anchor.batch_id} names another root than the trusted one")
    step("anchor-root")

    try:
        verify_inclusion(leaf_hash(stmt_hash), anchor.leaf_index, anchor.tree_size, list(proof), anchor.root)
    except InclusionError as exc:
        raise InclusionProofError(str(exc)) from exc
    step("inclusion")


def check_record(
    payload: bytes,
    statement: Union[Statement, bytes],
    signature: bytes,
    receipt: Union[SealReceipt, str, bytes],
    anchor: AnchorRef,
    proof: Sequence[bytes],
    *,
    device_key: Key = None,
    gateway_key: Key = None,
    root: bytes | None = None,
) -> None:
    """Check the whole chain for one record; raise the first `VerificationError`.

    `device_key` / `gateway_key`: the keys registered at the anchoring height
    (raw or did); by default the keys embedded in the did:key ids.  `root`:
    the trusted root (from the ledger); by default ``anchor.root``.
    """
    _run([], payload, statement, signature, receipt, anchor, proof, device_key, gateway_key, root)


def verify_record(
    payload: bytes,
    statement: Union[Statement, bytes],
    signature: bytes,
    receipt: Union[SealReceipt, str, bytes],
    anchor: AnchorRef,
    proof: Sequence[bytes],
    *,
    device_key: Key = None,
    gateway_key: Key = None,
    root: bytes | None = None,
) -> VerificationResult:
    """Like `check_record`, but return a `VerificationResult` instead of raising."""
    passed: list[str] = []
    try:
        _run(passed, payload, statement, signature, receipt, anchor, proof, device_key, gateway_key, root)
    except VerificationError as exc:
        return VerificationResult(tuple(passed), exc)
    return VerificationResult(tuple(passed))



def check_manifest(leaves: Sequence[bytes], root: bytes, tree_size: int) -> None:
    """Raise `ManifestError` unless `leaves` (statement hashes in leaf order)
    are `tree_size` many and their RFC 9162 tree has `root`."""
    if len(leaves) != tree_size:
        raise ManifestError(f"manifest lists {len(leaves)} leaves, the batch has {tree_size}")
    if tree_size == 0 or merkle_root(leaf_hashes(list(leaves))) != root:
        raise ManifestError("the manifest's leaves do not hash to its root")


def check_leaf(leaves: Sequence[bytes], leaf_index: int, statement_hash: bytes) -> None:
    """Raise `LeafError` unless `statement_hash` is leaf `leaf_index` of `leaves`."""
    if not 0 <= leaf_index < len(leaves):
        raise LeafError(f"leaf index {leaf_index} outside the batch's {len(leaves)} leaves")
    if leaves[leaf_index] != statement_hash:
        raise LeafError(f"leaf {leaf_index} of the manifest is another statement")


def check_device_key(device: str, status: str, key: str | None) -> str:
    """The device key in force, given the registry's resolution of `device`'s
    key as of the anchor height (`status` as `ledger.contracts.resolve_key`:
    ``valid``/``active`` pass; ``revoked``, ``not_current``, ``unregistered``,
    ``unknown`` fail with `DeviceKeyError`)."""
    if status not in ("valid", "active") or key is None:
        raise DeviceKeyError(f"device {device} resolves as {status} at the anchor height")
    return key
