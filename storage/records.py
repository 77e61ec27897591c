"""Frozen values that go into and come out of the database.

They carry `trust` types (`Statement`, `SealReceipt`, hash NewTypes) so a
stored record is the same object the pipeline verified, not a loose tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

from trust.hashes import PayloadDigest, RootHash, StatementHash
from trust.receipt import AnchorRef, SealReceipt, content_address
from trust.statement import ENVELOPE_CONTENT_TYPE, Statement

__all__ = [
    "ANCHOR_STATES",
    "KafkaPosition",
    "StatementRecord",
    "BlobRecord",
    "BatchRecord",
    "BatchMembership",
    "Reading",
    "WriteCount",
    "raw_key",
    "manifest_key",
    "ms_to_datetime",
    "PAYLOAD_COPY_MAX",
    "payload_copy",
]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Anchor states of a batch (enforced by a CHECK and a trigger in the schema).
ANCHOR_STATES = ("pending", "submitted", "anchored", "failed")


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch (a statement's ``ts``) as an exact UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


def raw_key(payload_sha256: bytes) -> str:
    """Object key of an archived payload: ``raw/<sha256 hex>`` (`trust.receipt.content_address`)."""
    return content_address(bytes(payload_sha256))


#: The largest time-series payload kept beside its statement (migration 0011): the devices' windows
#: (about 1.5 KB) are, whole-file uploads are not.
PAYLOAD_COPY_MAX = 16 * 1024


def payload_copy(statement: Statement, payload: bytes) -> Optional[bytes]:
    """The bytes to keep beside `statement` in PostgreSQL: its payload when it is a plaintext (Arrow)
    time series of at most `PAYLOAD_COPY_MAX` bytes (so `verify range` reads a range's payloads in
    one query instead of one object GET each), else None (images, video and confidential envelopes
    live in MinIO only)."""
    if statement.kind == "timeseries" and statement.content_type != ENVELOPE_CONTENT_TYPE \
            and len(payload) <= PAYLOAD_COPY_MAX:
        return bytes(payload)
    return None


def manifest_key(batch_id: str) -> str:
    """Object key of a batch manifest: ``manifests/<batch_id>``."""
    return "manifests/" + batch_id


@dataclass(frozen=True)
class KafkaPosition:
    """Where a message was read: the audit trail back to the log."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class StatementRecord:
    """A verified statement, its device signature, and what happened to it."""

    statement: Statement
    signature: bytes
    kafka: Optional[KafkaPosition] = None
    receipt: Optional[SealReceipt] = None
    sealed_at: Optional[datetime] = None
    stored_at: Optional[datetime] = None  # set by the database
    #: the signed payload's bytes, kept beside the statement when `payload_copy` says so (migration 0011)
    payload: Optional[bytes] = None

    @property
    def hash(self) -> StatementHash:
        return self.statement.hash()


@dataclass(frozen=True)
class BlobRecord:
    """An image or video chunk archived at ``raw/<sha256>``."""

    statement_hash: StatementHash
    object_key: str
    content_type: str
    size: int
    sha256: PayloadDigest
    stored_at: Optional[datetime] = None

    @classmethod
    def for_statement(cls, statement: Statement) -> "BlobRecord":
        return cls(
            statement.hash(), raw_key(statement.payload_sha256), statement.content_type,
            statement.size, statement.payload_sha256,
        )


@dataclass(frozen=True)
class BatchRecord:
    """One anchoring batch: an RFC 9162 tree over statement hashes and its anchor state."""

    batch_id: str
    root: RootHash
    tree_size: int
    window_start: datetime
    window_end: datetime
    manifest_key: str
    gateway: Optional[str] = None
    anchor_state: str = "pending"
    ledger_height: Optional[int] = None
    tx_index: Optional[int] = None
    attempts: int = 0
    last_error: Optional[str] = None
    created_at: Optional[datetime] = None
    submitted_at: Optional[datetime] = None
    anchored_at: Optional[datetime] = None
    failed_at: Optional[datetime] = None


@dataclass(frozen=True)
class BatchMembership:
    """Leaf `leaf_index` of `batch`: how a record finds its evidence."""

    batch: BatchRecord
    leaf_index: int

    def anchor_ref(self) -> Optional[AnchorRef]:
        """The `trust` anchor reference once the batch is anchored, else None."""
        b = self.batch
        if b.anchor_state != "anchored":
            return None
        assert b.ledger_height is not None and b.tx_index is not None  # both set when anchored
        return AnchorRef(b.batch_id, self.leaf_index, b.tree_size, b.root, b.ledger_height, b.tx_index)


@dataclass(frozen=True)
class Reading:
    """One time-series row, with its back-reference to the signed payload."""

    time: datetime
    device: str
    sensor: str
    value: Optional[float]
    statement_hash: StatementHash
    row_index: int


@dataclass(frozen=True)
class WriteCount:
    """Outcome of an idempotent write: rows new in the database vs already there.

    ``conflicts`` lists statement hashes refused because their ``(device,
    seq)`` is held by a *different* statement (a replayed sequence number).
    """

    inserted: int
    present: int
    conflicts: tuple[StatementHash, ...] = ()

    @property
    def total(self) -> int:
        return self.inserted + self.present + len(self.conflicts)
