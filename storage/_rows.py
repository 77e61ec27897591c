"""Column lists and row -> record mappers shared by writers and readers."""

from __future__ import annotations

from trust.hashes import PayloadDigest, RootHash, StatementHash
from trust.receipt import SealReceipt
from trust.statement import Statement

from .records import BatchRecord, BlobRecord, KafkaPosition, Reading, StatementRecord

STATEMENT_COLS = (
    "statement_hash, device, seq, ts, kind, content_type, size, payload_sha256, canonical, signature, "
    "gateway, receipt_location, receipt_signature, sealed_at, kafka_topic, kafka_partition, kafka_offset, payload"
)
STATEMENT_TYPES = [
    "bytea", "text", "int8", "timestamptz", "text", "text", "int8", "bytea", "bytea", "bytea",
    "text", "text", "bytea", "timestamptz", "text", "int4", "int8", "bytea",
]
BLOB_COLS = "statement_hash, object_key, content_type, size, sha256"
BATCH_COLS = (
    "batch_id, root, tree_size, window_start, window_end, manifest_key, gateway, anchor_state, "
    "ledger_height, tx_index, attempts, last_error, created_at, submitted_at, anchored_at, failed_at"
)
READING_COLS = "time, device, sensor, value, statement_hash, row_index"


def statement_from_row(row: tuple) -> StatementRecord:
    """Rebuild from ``canonical, signature, gateway, receipt_location,
    receipt_signature, sealed_at, kafka_topic, kafka_partition, kafka_offset, stored_at``.

    The statement comes from its stored canonical bytes (the signed form), not
    from the convenience columns.
    """
    canonical, signature, gateway, location, rsig, sealed_at, topic, partition, offset, stored_at = row
    statement = Statement.from_bytes(bytes(canonical))
    receipt = None
    if gateway is not None:
        receipt = SealReceipt(statement.hash(), location, gateway, bytes(rsig))
    kafka = KafkaPosition(topic, partition, offset) if topic is not None else None
    return StatementRecord(statement, bytes(signature), kafka, receipt, sealed_at, stored_at)


STATEMENT_READ_COLS = (
    "canonical, signature, gateway, receipt_location, receipt_signature, sealed_at, "
    "kafka_topic, kafka_partition, kafka_offset, stored_at"
)


def blob_from_row(row: tuple) -> BlobRecord:
    h, key, ctype, size, digest, stored_at = row
    return BlobRecord(StatementHash(bytes(h)), key, ctype, size, PayloadDigest(bytes(digest)), stored_at)


def batch_from_row(row: tuple) -> BatchRecord:
    values = list(row)
    values[1] = RootHash(bytes(values[1]))
    return BatchRecord(*values)


def reading_from_row(row: tuple) -> Reading:
    time, device, sensor, value, h, idx = row
    return Reading(time, device, sensor, value, StatementHash(bytes(h)), idx)
