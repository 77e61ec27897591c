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
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Container, Iterable, Mapping, Optional, Sequence

from trust import merkle
from trust.hashes import RootHash, StatementHash

__all__ = ["SealedLeaf", "BatchPlan", "AnchorCommit", "SealError", "parse_sealed", "plan_batch", "batch_id_for",
           "anchor_payload", "anchor_value", "ANCHOR_KIND", "GATEWAY", "UNBOUND", "Triage", "triage", "settle_deferred",
           "sweep_gateways", "leaf_of_row", "WAITING_REASONS"]

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


# -- which seals are cut now, deferred, or never batched here --------------------------------------

#: `status(did)` of a sealing gateway: bound to a gateway on our ledger ...
GATEWAY = "gateway"
#: ... or bound to nothing on our ledger: not registered *yet*, or another ledger's gateway.
UNBOUND = "unbound"
#: Anything else is the type of the entity the did is bound to (``device``, ``node``, ...): never a gateway.
#: Why the sweep leaves a sealed, unbatched statement alone (the ``sweep_waiting`` gauge's labels).
WAITING_REASONS = ("unknown-gateway", "not-a-gateway")


@dataclass(frozen=True)
class Triage:
    """A window's seals sorted by what the agent does with them.

    - `batch`: sealed by a gateway of our ledger (or by us): cut into batches now;
    - `defer`: sealed by a key bound to nothing on our ledger: it may be registered later (a new
      ingest worker whose gateway is not registered yet), or belong to another ledger sharing the
      topic.  Not cut now; acked once its statement is known to be stored *sealed* in our database,
      which is the durable record the sweep batches from once the gateway is registered;
    - `refuse`: sealed by a key bound to a non-gateway entity (a device's, a node's): its receipt
      can never verify as a gateway's, so it is never batched (with the entity type).
    """

    batch: tuple[SealedLeaf, ...]
    defer: tuple[SealedLeaf, ...]
    refuse: tuple[tuple[SealedLeaf, str], ...]


def triage(leaves: Iterable[SealedLeaf], status: Callable[[Optional[str]], str]) -> Triage:
    """Sort `leaves` by `status(leaf.gateway)` (`GATEWAY`, `UNBOUND` or an entity type), keeping their order."""
    batch: list[SealedLeaf] = []
    defer: list[SealedLeaf] = []
    refuse: list[tuple[SealedLeaf, str]] = []
    for leaf in leaves:
        st = status(leaf.gateway)
        if st == GATEWAY:
            batch.append(leaf)
        elif st == UNBOUND:
            defer.append(leaf)
        else:
            refuse.append((leaf, st))
    return Triage(tuple(batch), tuple(defer), tuple(refuse))


def settle_deferred(defer: Iterable[SealedLeaf], stored_sealed: Container[bytes]
                    ) -> tuple[tuple[SealedLeaf, ...], tuple[SealedLeaf, ...]]:
    """``(kept, absent)``: deferred seals whose statement is stored sealed here (`stored_sealed`: hash ->
    anything), so the sweep will find it and the seal may be acked; and those whose statement is not
    (sealed against another database: never batched here)."""
    kept: list[SealedLeaf] = []
    absent: list[SealedLeaf] = []
    for leaf in defer:
        (kept if bytes(leaf.statement_hash) in stored_sealed else absent).append(leaf)
    return tuple(kept), tuple(absent)


def sweep_gateways(counts: Mapping[Optional[str], int], status: Callable[[Optional[str]], str]
                   ) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Given unbatched sealed statements counted by sealing gateway (did), ``(sweep, waiting)``: the
    gateways whose statements the sweep batches (sorted), and per reason of `WAITING_REASONS` the
    gateways left alone with their counts (``unknown-gateway``: bound to nothing on our ledger, yet;
    ``not-a-gateway``: bound to another kind of entity)."""
    sweep: list[str] = []
    waiting: dict[str, dict[str, int]] = {r: {} for r in WAITING_REASONS}
    for gw, n in counts.items():
        if gw is None or n <= 0:
            continue
        st = status(gw)
        if st == GATEWAY:
            sweep.append(gw)
        else:
            waiting["unknown-gateway" if st == UNBOUND else "not-a-gateway"][gw] = n
    return sorted(sweep), waiting


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def leaf_of_row(statement_hash: bytes, ts: datetime, gateway: Optional[str]) -> SealedLeaf:
    """The leaf of a stored statement (``statements.ts`` back to the statement's ms, as its seal carries it)."""
    return SealedLeaf(StatementHash(bytes(statement_hash)), (ts - _EPOCH) // timedelta(milliseconds=1), gateway)
