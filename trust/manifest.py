"""The batch manifest format (version 1), one module for the writer and every verifier.

A manifest is the leaf list of one anchored RFC 9162 tree, stored at
``manifests/<batch_id>``: compact JSON, keys sorted, no spaces, UTF-8; hashes
as lowercase hex; window bounds as ISO-8601 UTC with microseconds and ``Z``::

    {"batch_id":"…","leaves":["<statement hash hex>",…],"root":"<hex>",
     "tree_size":N,"v":1,"window_end":"…Z","window_start":"…Z"}

Leaf i of the tree is SHA-256(0x00 || leaves[i]).  `parse_manifest` accepts
only the exact bytes `encode_manifest` produces (one manifest, one encoding)
and raises `ManifestError` (step ``manifest``) otherwise, or when the leaves
do not hash to the root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from .hashes import RootHash, StatementHash
from .errors import ManifestError
from .merkle import leaf_hashes, root as merkle_root

__all__ = ["MANIFEST_VERSION", "ParsedManifest", "encode_manifest", "parse_manifest", "iso_utc"]

MANIFEST_VERSION = 1
_KEYS = {"v", "batch_id", "root", "tree_size", "window_start", "window_end", "leaves"}


def iso_utc(t: datetime) -> str:
    """A window bound as the manifest writes it: UTC, microseconds, ``Z``."""
    if t.tzinfo is None:
        raise ValueError("manifest window bounds must be timezone-aware")
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ParsedManifest:
    batch_id: str
    root: RootHash
    leaves: tuple[StatementHash, ...]
    window_start: datetime
    window_end: datetime


def encode_manifest(batch_id: str, root: bytes, window_start: datetime, window_end: datetime,
                    leaves: tuple[bytes, ...]) -> bytes:
    doc = {"v": MANIFEST_VERSION, "batch_id": batch_id, "root": root.hex(), "tree_size": len(leaves),
           "window_start": iso_utc(window_start), "window_end": iso_utc(window_end),
           "leaves": [h.hex() for h in leaves]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def parse_manifest(data: bytes, batch_id: Optional[str] = None, *, check_root: bool = True) -> ParsedManifest:
    """Parse a manifest strictly (for `batch_id` if given); `ManifestError` unless it is in
    canonical form and (with `check_root`) its leaves hash to its root."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != _KEYS or doc["v"] != MANIFEST_VERSION:
            raise ValueError(f"want exactly the keys {sorted(_KEYS)} and v={MANIFEST_VERSION}")
        m = ParsedManifest(doc["batch_id"], RootHash(bytes.fromhex(doc["root"])),
                           tuple(StatementHash(bytes.fromhex(h)) for h in doc["leaves"]),
                           datetime.fromisoformat(doc["window_start"]), datetime.fromisoformat(doc["window_end"]))
        if len(m.root) != 32 or any(len(x) != 32 for x in m.leaves):
            raise ValueError("hashes must be 32 bytes")
        if type(doc["tree_size"]) is not int or doc["tree_size"] != len(m.leaves):
            raise ValueError("tree_size is not the number of leaves")
        if encode_manifest(m.batch_id, m.root, m.window_start, m.window_end, m.leaves) != data:
            raise ValueError("not in canonical form")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ManifestError(f"malformed manifest{'' if batch_id is None else ' of batch ' + repr(batch_id)}: "
                            f"{exc}") from None
    if batch_id is not None and m.batch_id != batch_id:
        raise ManifestError(f"the manifest stored for batch {batch_id!r} is batch {m.batch_id!r}")
    if check_root and (not m.leaves or merkle_root(leaf_hashes(m.leaves)) != m.root):
        raise ManifestError(f"the leaves of manifest {m.batch_id!r} do not hash to its root")
    return m
