"""Pure parts of anchoring: parse seals, cut a batch, its id, the ANCHOR payload and the ``iiot.anchors`` value.

No I/O here, so the rules that make anchoring idempotent are unit-tested alone:

- leaves are the distinct statement hashes of a window, ordered by
  ``(statement ts, hash)``: the same set of seals gives the same tree, whatever
  order (or how many times) they were delivered;
- the batch id is ``<gateway>-<first 32 hex digits of the root>``: a function of
  the leaves, so recomputing a batch after a crash gives the same id, and two
  different leaf sets never share one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from trust import merkle
from trust._hashes import RootHash, StatementHash

__all__ = ["SealedLeaf", "BatchPlan", "AnchorCommit", "SealError", "parse_sealed", "plan_batch", "batch_id_for",
           "anchor_payload", "anchor_value", "ANCHOR_KIND"]

ANCHOR_KIND = "anchors.anchor"
_ID_HEX = 32  # 128 bits of the root in the batch id


class SealError(ValueError):
    """An ``iiot.sealed`` value the anchor agent cannot use (kept out of batches, logged)."""


@dataclass(frozen=True)
class SealedLeaf:
    """What anchoring needs of one seal: the statement hash (leaf data), its ts (ms) and the
    did of the gateway that sealed it (None when unknown)."""

    statement_hash: StatementHash
    ts_ms: int
    gateway: Optional[str] = None


def parse_sealed(value: bytes) -> SealedLeaf:
    """The leaf of an ``iiot.sealed`` value (docs/pipeline.md); `SealError` if malformed."""
    try:
        doc = json.loads(value)
        h = bytes.fromhex(doc["statement_hash"])
        ts = doc["ts"]
        receipt = doc.get("receipt", {})
        if not isinstance(receipt, dict):
            raise TypeError("receipt is not an object")
        gateway = receipt.get("gateway")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SealError(f"not an iiot.sealed value: {exc}") from None
    if len(h) != 32 or type(ts) is not int or not (gateway is None or isinstance(gateway, str)):
        raise SealError("not an iiot.sealed value: statement_hash must be 32 bytes, ts an integer")
    return SealedLeaf(StatementHash(h), ts, gateway)


def batch_id_for(gateway: str, root: bytes) -> str:
    """The deterministic id of the batch `gateway` makes of the tree with `root`."""
    return f"{gateway}-{bytes(root).hex()[:_ID_HEX]}"


@dataclass(frozen=True)
class BatchPlan:
    """A batch before it is written: leaves in tree order, root, id, window (ms)."""

    batch_id: str
    root: RootHash
    leaves: tuple[StatementHash, ...]
    window_start_ms: int
    window_end_ms: int

    @property
    def tree_size(self) -> int:
        return len(self.leaves)


def plan_batch(leaves: Iterable[SealedLeaf], gateway: str) -> Optional[BatchPlan]:
    """The batch of the distinct `leaves` (None if there are none)."""
    by_hash: dict[bytes, SealedLeaf] = {}
    for leaf in leaves:
        by_hash.setdefault(bytes(leaf.statement_hash), leaf)
    if not by_hash:
        return None
    ordered = sorted(by_hash.values(), key=lambda lf: (lf.ts_ms, bytes(lf.statement_hash)))
    hashes = tuple(lf.statement_hash for lf in ordered)
    root = merkle.root(merkle.leaf_hashes(hashes))
    return BatchPlan(batch_id_for(gateway, root), root, hashes, ordered[0].ts_ms,
                     max(lf.ts_ms for lf in ordered))


def anchor_payload(batch_id: str, root: bytes, tree_size: int, gateway: str, window: Sequence[int]) -> dict:
    """The ``anchors.anchor`` payload (docs/contracts.md)."""
    return {"batch_id": batch_id, "root": bytes(root), "tree_size": int(tree_size), "gateway": gateway,
            "window": [int(window[0]), int(window[1])]}


@dataclass(frozen=True)
class AnchorCommit:
    """Where the ledger committed a batch's ANCHOR (from a receipt or an anchors lookup)."""

    batch_id: str
    root: RootHash
    tree_size: int
    height: int
    tx_index: int
    tx_id: str
    gateway: Optional[str] = None  # the gateway the ledger recorded (None: the submitter's own)

    @classmethod
    def from_lookup(cls, doc: dict[str, Any]) -> "AnchorCommit":
        """From ``GET /anchors/{batch_id}`` (`LedgerClient.get_anchor`)."""
        tx_id = doc.get("tx_id")
        return cls(doc["batch_id"], RootHash(bytes.fromhex(doc["root"])), int(doc["tree_size"]),
                   int(doc["height"]), int(doc["index"]), tx_id.hex() if isinstance(tx_id, bytes) else str(tx_id),
                   doc.get("gateway"))


def anchor_value(commit: AnchorCommit, gateway: str, window: Sequence[int], manifest_key: str) -> bytes:
    """The ``iiot.anchors`` value: compact sorted JSON, a function of the ledger commit only
    (no clock), so a re-emission after a crash is byte-identical.  ``gateway`` is the one the
    ledger recorded (`commit.gateway`), else `gateway` (the submitter's)."""
    doc = {"v": 1, "batch_id": commit.batch_id, "root": bytes(commit.root).hex(), "tree_size": commit.tree_size,
           "gateway": commit.gateway or gateway, "window": [int(window[0]), int(window[1])], "manifest": manifest_key,
           "height": commit.height, "tx_index": commit.tx_index, "tx_id": commit.tx_id}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
