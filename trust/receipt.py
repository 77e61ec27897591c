"""Receipts: the gateway's seal over a stored record, and the anchor reference.

`SealReceipt` — the gateway (pipeline worker) signs, with its Ed25519 key,
``RECEIPT_CONTEXT || canonical({v, statement_hash, location, gateway})``:
"I stored the payload of this statement at this location".

`AnchorRef` — where a statement hash sits in the anchored evidence:
``(batch_id, leaf_index, tree_size, root, height, tx_index)``: leaf
`leaf_index` (0-based) of the RFC 9162 tree of `tree_size` leaves with root
`root`, committed in the ANCHOR transaction `tx_index` of ledger block
`height`.

Both are versioned frozen values with a compact JSON form (sorted keys, no
spaces, bytes as lowercase hex) and a canonical binary form; parsing is strict
and raises `ReceiptError`.  See docs/formats.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Union

from . import canonical
from .hashes import RootHash, StatementHash
from .errors import CanonicalError, IdentityError, ReceiptError
from .identity import KeyPair, public_key_from_did, verify_signature

__all__ = [
    "RECEIPT_VERSION",
    "ANCHOR_VERSION",
    "RECEIPT_CONTEXT",
    "SealReceipt",
    "AnchorRef",
    "seal_receipt",
    "verify_receipt",
    "content_address",
    "ReceiptError",
]

RECEIPT_VERSION = 1
ANCHOR_VERSION = 1
RECEIPT_CONTEXT = b"sealstream/receipt/v1\x00"
_MAX_INT = (1 << 63) - 1
_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,1024}$")


def _int(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise ReceiptError(f"{name} must be an int in [0, 2**63), got {value!r}")


def _bytes32(name: str, value: object, size: int = 32) -> None:
    if type(value) is not bytes or len(value) != size:
        raise ReceiptError(f"{name} must be {size} bytes")


def _text(name: str, value: object, limit: int) -> None:
    if type(value) is not str or len(value) > limit or not _PRINTABLE.fullmatch(value):
        raise ReceiptError(f"{name} must be 1..{limit} printable ASCII chars without spaces, got {value!r}")


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _loads(text: Union[str, bytes], keys: tuple[str, ...], what: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise ReceiptError(f"{what}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != set(keys):
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ReceiptError(f"{what}: want exactly the keys {sorted(keys)}, got {got}")
    return doc


def _unhex(name: str, value: Any, size: int) -> bytes:
    if type(value) is not str or len(value) != 2 * size or value.lower() != value:
        raise ReceiptError(f"{name} must be {2 * size} lowercase hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ReceiptError(f"{name} must be {2 * size} lowercase hex digits") from None


def _from_canonical(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = canonical.decode(data)
    except CanonicalError as exc:
        raise ReceiptError(f"{what}: {exc}") from None
    if not isinstance(doc, dict):
        raise ReceiptError(f"{what}: want a map")
    return doc


@dataclass(frozen=True)
class SealReceipt:
    """The gateway's signed statement that a record was stored.

    ``location`` is where the raw payload lives, e.g. ``raw/<sha256 hex>`` in
    the blob store; ``gateway`` is the gateway's ``did:key`` id.
    """

    statement_hash: StatementHash
    location: str
    gateway: str
    signature: bytes = field(repr=False)
    v: int = RECEIPT_VERSION

    _KEYS = ("v", "statement_hash", "location", "gateway", "sig")

    def __post_init__(self) -> None:
        if type(self.v) is not int or self.v != RECEIPT_VERSION:
            raise ReceiptError(f"unsupported receipt version {self.v!r}")
        _bytes32("statement_hash", self.statement_hash)
        _text("location", self.location, 1024)
        if type(self.gateway) is not str:
            raise ReceiptError("gateway must be a did:key id")
        try:
            public_key_from_did(self.gateway)
        except IdentityError as exc:
            raise ReceiptError(f"gateway: {exc}") from None
        _bytes32("signature", self.signature, 64)

    def signed_bytes(self) -> bytes:
        """What the gateway signs."""
        return RECEIPT_CONTEXT + canonical.encode(
            {"v": self.v, "statement_hash": self.statement_hash, "location": self.location, "gateway": self.gateway}
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "statement_hash": self.statement_hash.hex(),
            "location": self.location,
            "gateway": self.gateway,
            "sig": self.signature.hex(),
        }

    def to_json(self) -> str:
        """Compact JSON: sorted keys, no spaces, bytes as lowercase hex."""
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "SealReceipt":
        if not isinstance(doc, dict) or set(doc) != set(cls._KEYS):
            raise ReceiptError(f"seal receipt: want exactly the keys {sorted(cls._KEYS)}")
        if doc["v"] != RECEIPT_VERSION or type(doc["v"]) is not int:
            raise ReceiptError(f"unsupported receipt version {doc['v']!r}")
        return cls(
            statement_hash=StatementHash(_unhex("statement_hash", doc["statement_hash"], 32)),
            location=doc["location"],
            gateway=doc["gateway"],
            signature=_unhex("sig", doc["sig"], 64),
            v=doc["v"],
        )

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "SealReceipt":
        return cls.from_dict(_loads(text, cls._KEYS, "seal receipt"))

    def to_bytes(self) -> bytes:
        """Canonical binary form (trust.canonical map, bytes kept raw)."""
        return canonical.encode(
            {"v": self.v, "statement_hash": self.statement_hash, "location": self.location,
             "gateway": self.gateway, "sig": self.signature}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "SealReceipt":
        doc = _from_canonical(data, "seal receipt")
        if set(doc) != set(cls._KEYS):
            raise ReceiptError(f"seal receipt: want exactly the keys {sorted(cls._KEYS)}")
        if doc["v"] != RECEIPT_VERSION or type(doc["v"]) is not int:
            raise ReceiptError(f"unsupported receipt version {doc['v']!r}")
        return cls(doc["statement_hash"], doc["location"], doc["gateway"], doc["sig"], doc["v"])


def content_address(payload_sha256: bytes) -> str:
    """Where an archived payload lives: ``raw/<sha256 hex>``; a receipt's `location` must be
    exactly this for the payload its statement names (the writer and the verifier share it)."""
    _bytes32("payload_sha256", payload_sha256)
    return "raw/" + payload_sha256.hex()


def seal_receipt(statement_hash: bytes, location: str, keypair: KeyPair) -> SealReceipt:
    """Sign a receipt for `statement_hash` stored at `location` as `keypair`."""
    unsigned = SealReceipt(StatementHash(statement_hash), location, keypair.did, b"\0" * 64)
    return SealReceipt(unsigned.statement_hash, location, keypair.did, keypair.sign(unsigned.signed_bytes()))


def verify_receipt(receipt: SealReceipt, public_key: Union[bytes, str, None] = None) -> bool:
    """True iff the receipt's signature is valid (by default under ``receipt.gateway``)."""
    key = receipt.gateway if public_key is None else public_key
    return verify_signature(key, receipt.signed_bytes(), receipt.signature)


@dataclass(frozen=True)
class AnchorRef:
    """Where a statement hash sits in anchored evidence (0-based leaf index)."""

    batch_id: str
    leaf_index: int
    tree_size: int
    root: RootHash
    height: int
    tx_index: int
    v: int = ANCHOR_VERSION

    _KEYS = ("v", "batch_id", "leaf_index", "tree_size", "root", "height", "tx_index")

    def __post_init__(self) -> None:
        if type(self.v) is not int or self.v != ANCHOR_VERSION:
            raise ReceiptError(f"unsupported anchor reference version {self.v!r}")
        _text("batch_id", self.batch_id, 128)
        for name in ("leaf_index", "tree_size", "height", "tx_index"):
            _int(name, getattr(self, name))
        if not self.leaf_index < self.tree_size:
            raise ReceiptError(f"leaf_index {self.leaf_index} must be < tree_size {self.tree_size}")
        _bytes32("root", self.root)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "batch_id": self.batch_id,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "height": self.height,
            "tx_index": self.tx_index,
        }

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "AnchorRef":
        if not isinstance(doc, dict) or set(doc) != set(cls._KEYS):
            raise ReceiptError(f"anchor reference: want exactly the keys {sorted(cls._KEYS)}")
        if doc["v"] != ANCHOR_VERSION or type(doc["v"]) is not int:
            raise ReceiptError(f"unsupported anchor reference version {doc['v']!r}")
        return cls(
            batch_id=doc["batch_id"],
            leaf_index=doc["leaf_index"],
            tree_size=doc["tree_size"],
            root=RootHash(_unhex("root", doc["root"], 32)),
            height=doc["height"],
            tx_index=doc["tx_index"],
            v=doc["v"],
        )

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "AnchorRef":
        return cls.from_dict(_loads(text, cls._KEYS, "anchor reference"))

    def to_bytes(self) -> bytes:
        d = self.to_dict()
        d["root"] = self.root
        return canonical.encode(d)

    @classmethod
    def from_bytes(cls, data: bytes) -> "AnchorRef":
        doc = _from_canonical(data, "anchor reference")
        if set(doc) != set(cls._KEYS):
            raise ReceiptError(f"anchor reference: want exactly the keys {sorted(cls._KEYS)}")
        if doc["v"] != ANCHOR_VERSION or type(doc["v"]) is not int:
            raise ReceiptError(f"unsupported anchor reference version {doc['v']!r}")
        return cls(**doc)
