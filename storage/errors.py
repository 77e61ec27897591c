"""The one error hierarchy of the storage boundary (drawn in `storage.__init__`).

Driver errors (psycopg, the MinIO SDK, the network) never leak out of
`storage`: they are translated here so callers catch `StorageError` and read a
message that names the table, key or batch involved.  The original exception
stays available as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "StorageError",
    "MigrationError",
    "DatabaseError",
    "RecordError",
    "BatchError",
    "InvalidTransition",
    "BatchConflict",
    "BlobError",
    "BlobNotFound",
    "BlobDigestMismatch",
    "BlobConflict",
    "BlobStoreUnavailable",
]


class StorageError(Exception):
    """Base of every error raised by `storage`. Its message never holds a password: a driver
    message quoting a DSN is masked (`sealstream.settings.mask_dsn`)."""

    def __init__(self, *args: object) -> None:
        from sealstream.settings import mask_dsn

        super().__init__(*(mask_dsn(a) if isinstance(a, str) else a for a in args))


class MigrationError(StorageError):
    """A migration could not be planned or applied (the database is left as before it)."""


class DatabaseError(StorageError):
    """PostgreSQL refused a read or write, or could not be reached."""


class BatchError(StorageError):
    """A batch write or anchor-state change was refused."""


class InvalidTransition(BatchError):
    """An anchor-state change not allowed by the state machine (e.g. anchored -> pending)."""

    def __init__(self, batch_id: str, current: str, wanted: str) -> None:
        super().__init__(f"batch {batch_id!r}: cannot go from {current!r} to {wanted!r}")
        self.batch_id, self.current, self.wanted = batch_id, current, wanted


class BatchConflict(BatchError):
    """The same batch id with different contents, a leaf already in another batch,
    or an anchor recorded twice with different coordinates."""


class BlobError(StorageError):
    """Base of the blob-store errors; ``.key`` names the object."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class BlobNotFound(BlobError):
    """No object under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key, f"blob {key!r} not found")


class BlobDigestMismatch(BlobError):
    """The object's bytes do not hash to the digest its key promises (tampered or corrupted)."""

    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(key, f"blob {key!r} is corrupted or tampered: sha256 is {actual}, want {expected}")
        self.expected, self.actual = expected, actual


class BlobConflict(BlobError):
    """An immutable object (a batch manifest) already exists with other contents."""


class BlobStoreUnavailable(BlobError):
    """MinIO/S3 could not be reached or answered with an unexpected error."""


class RecordError(StorageError, ValueError):
    """Records handed to a writer are malformed (missing column, wrong type, root
    that does not match the leaves); nothing was written."""
