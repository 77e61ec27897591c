"""storage: PostgreSQL/TimescaleDB tables and MinIO objects of sealstream.

Modules, one idea each:

- `storage.migrate`      versioned schema migrations, flavour choice, status
- `storage.db`           the connection pool, driver-error translation
- `storage.records`      frozen values stored and read (statements, blobs,
                         batches, readings, write counts), object keys
- `storage.partitions`   daily ``readings`` partitions created on demand
- `storage.anchor_state` the batch anchor state machine
- `storage.writers`      idempotent COPY-based batch writers
- `storage.readers`      queries: readings by device and time, statements,
                         batches, leaves, the batch of a statement
- `storage.deadletters`  which source positions a consumer group dead-lettered
                         (``dead_letters``: once per position)
- `storage.manifest`     the batch manifest format (``manifests/<batch_id>``)
- `storage.blobs`        the content-addressed MinIO blob store
- `storage.verification` downstream verification: evidence reads (readings as
                         Arrow), batch verdicts, verified statements (docs/verify.md)

Imports only `trust` (and the drivers).  The layout, keys and idempotency
rules are in docs/storage.md.

Errors: nothing from psycopg or the MinIO SDK leaks out; every error is a
`StorageError` (the driver's exception is kept as ``__cause__``)::

    StorageError
    ├── MigrationError            planning or applying a migration failed
    ├── DatabaseError             PostgreSQL refused a read/write or is unreachable
    ├── RecordError     (ValueError) malformed input to a writer or a manifest
    ├── BatchError                a batch write or anchor-state change refused
    │   ├── InvalidTransition     not allowed by the state machine (anchored -> pending)
    │   └── BatchConflict         same id, other contents; leaf already batched;
    │                             anchored twice at different coordinates
    └── BlobError                 .key names the object
        ├── BlobNotFound          no object under the key
        ├── BlobDigestMismatch    stored bytes do not hash to the expected digest
        ├── BlobConflict          an immutable manifest exists with other contents
        └── BlobStoreUnavailable  MinIO/S3 unreachable or an unexpected error
"""

from .anchor_state import TRANSITIONS, check_transition
from .blobs import BlobStore
from .db import open_pool
from .errors import (
    BatchConflict,
    BatchError,
    BlobConflict,
    BlobDigestMismatch,
    BlobError,
    BlobNotFound,
    BlobStoreUnavailable,
    DatabaseError,
    InvalidTransition,
    MigrationError,
    RecordError,
    StorageError,
)
from .manifest import Manifest
from .migrate import (
    FLAVOURS,
    PARTITIONED,
    TIMESCALEDB,
    MigrationReport,
    StorageStatus,
    choose_flavour,
    current_version,
    migrate,
    plan_migrations,
    storage_status,
)
from .partitions import PartitionPolicy
from .readers import Reader
from .records import (
    ANCHOR_STATES,
    BatchMembership,
    BatchRecord,
    BlobRecord,
    KafkaPosition,
    Reading,
    StatementRecord,
    WriteCount,
    manifest_key,
    raw_key,
)
from .writers import ReadingsPart, Writer

__all__ = [
    # migrations
    "migrate", "current_version", "storage_status", "choose_flavour", "plan_migrations",
    "MigrationReport", "StorageStatus", "TIMESCALEDB", "PARTITIONED", "FLAVOURS",
    # database
    "open_pool", "Writer", "Reader", "ReadingsPart", "PartitionPolicy",
    "TRANSITIONS", "check_transition",
    # values
    "StatementRecord", "KafkaPosition", "BlobRecord", "BatchRecord", "BatchMembership", "Reading",
    "WriteCount", "ANCHOR_STATES", "raw_key", "manifest_key",
    # objects
    "BlobStore", "Manifest",
    # errors
    "StorageError", "MigrationError", "DatabaseError", "RecordError", "BatchError", "InvalidTransition",
    "BatchConflict", "BlobError", "BlobNotFound", "BlobDigestMismatch", "BlobConflict",
    "BlobStoreUnavailable",
]
