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

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from trust import merkle
from trust._hashes import RootHash, StatementHash

from .errors import RecordError
from .records import BatchRecord, manifest_key

__all__ = ["MANIFEST_VERSION", "Manifest"]

MANIFEST_VERSION = 1
_KEYS = {"v", "batch_id", "root", "tree_size", "window_start", "window_end", "leaves"}


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise RecordError("manifest window bounds must be timezone-aware")
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
        doc = {
            "v": MANIFEST_VERSION,
            "batch_id": self.batch_id,
            "root": self.root.hex(),
            "tree_size": self.tree_size,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "leaves": [h.hex() for h in self.leaves],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        """Parse a manifest; anything but the canonical encoding is refused."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or set(doc) != _KEYS or doc["v"] != MANIFEST_VERSION:
                raise ValueError(f"want exactly the keys {sorted(_KEYS)} and v={MANIFEST_VERSION}")
            manifest = cls(
                doc["batch_id"],
                RootHash(bytes.fromhex(doc["root"])),
                datetime.fromisoformat(doc["window_start"]),
                datetime.fromisoformat(doc["window_end"]),
                tuple(StatementHash(bytes.fromhex(h)) for h in doc["leaves"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise RecordError(f"malformed batch manifest: {exc}") from None
        if manifest.to_bytes() != data or manifest.tree_size != doc["tree_size"]:
            raise RecordError(f"batch manifest {manifest.batch_id!r} is not in canonical form")
        return manifest
