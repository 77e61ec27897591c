"""The batch manifest stored at ``manifests/<batch_id>``: the leaf list of one
anchored tree, readable without the database.

Format (version 1): compact JSON, keys sorted, no spaces, UTF-8; hashes as
lowercase hex; window bounds as ISO-8601 UTC with microseconds and ``Z``::

    {"batch_id":"…","leaves":["<statement hash hex>",…],"root":"<hex>",
     "tree_size":N,"v":1,"window_end":"…Z","window_start":"…Z"}

Leaf i of the RFC 9162 tree is SHA-256(0x00 || leaves[i]).  `from_bytes`
accepts only the exact bytes `to_bytes` produces, so one manifest has one
encoding and its SHA-256 (kept in the object metadata) identifies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trust import merkle
from trust.hashes import RootHash, StatementHash
from trust.errors import ManifestError
from trust.manifest import MANIFEST_VERSION, encode_manifest, parse_manifest

from .errors import RecordError
from .records import BatchRecord, manifest_key

__all__ = ["MANIFEST_VERSION", "Manifest"]



@dataclass(frozen=True)
class Manifest:
    """A batch's leaves (statement hashes in leaf order) with its root and window."""

    batch_id: str
    root: RootHash
    window_start: datetime
    window_end: datetime
    leaves: tuple[StatementHash, ...]

    @property
    def tree_size(self) -> int:
        return len(self.leaves)

    @property
    def key(self) -> str:
        return manifest_key(self.batch_id)

    @classmethod
    def for_batch(cls, batch: BatchRecord, leaves: tuple[StatementHash, ...]) -> "Manifest":
        return cls(batch.batch_id, batch.root, batch.window_start, batch.window_end, tuple(leaves))

    def check(self) -> None:
        """Raise `RecordError` unless the leaves hash to `root` (RFC 9162)."""
        if not self.leaves or merkle.root(merkle.leaf_hashes(self.leaves)) != self.root:
            raise RecordError(f"manifest {self.batch_id!r}: leaves do not hash to the root")

    def to_bytes(self) -> bytes:
        return encode_manifest(self.batch_id, self.root, self.window_start, self.window_end, self.leaves)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        """Parse a manifest; anything but the canonical encoding is refused (`trust.manifest`)."""
        try:
            m = parse_manifest(data, check_root=False)
        except ManifestError as exc:
            raise RecordError(f"batch manifest: {exc}") from None
        return cls(m.batch_id, m.root, m.window_start, m.window_end, m.leaves)
