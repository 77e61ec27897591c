"""`anchors`: batch roots anchored by registered gateways (DESIGN.md step 7).

``anchors.anchor {batch_id, root, tree_size, gateway, window}``:

* ``batch_id``: 1..128 printable ASCII characters (no spaces), unique forever;
* ``root``: the 32-byte RFC 9162 root of the batch's statement hashes;
* ``tree_size``: the number of leaves, >= 1;
* ``gateway``: the registry id of the gateway (pipeline worker) anchoring it;
* ``window``: ``[start_ms, end_ms]``, 0 <= start <= end.

Accepted only when ``gateway`` is a registered gateway, it and its org are
not revoked, and the submitter's did is the gateway's *current* key.
Refusal codes: ``BAD_PAYLOAD``, ``UNKNOWN_GATEWAY`` (no such id, or not a
gateway), ``REVOKED`` (the gateway or its org is revoked), ``FORBIDDEN`` (the
submitter is not the gateway's current key), ``DUPLICATE_BATCH`` (the batch id
was anchored before; the pipeline reads the stored record with `get_batch`).

State: ``anc/batch/<batch_id>`` -> ``{root, tree_size, gateway, org, window,
submitter, height, index, tx_id, time}`` and ``anc/root/<root hex>`` -> the
list of batch ids with that root, in commit order.

Where ``height`` and ``index`` come from: the executor runs a block's
transactions in block order (`Replica` passes ``block.txs``), so the block
height (`BlockContext.height`) and the tx's position (`TxContext.index`) are
known, identically on every node, while executing; they are the same
``(height, index)`` as the block store's tx index and ``GET /tx/{tx_id}``,
which also serves the tx's inclusion proof. They are stored in state, so no
node has to fill them in afterwards.
"""

from __future__ import annotations

import re
from typing import Any

from ._app import ContractState, Refused, TxContext, check_fields, check_id, check_int
from .registry import resolve

__all__ = ["METHODS", "get_batch", "batches_by_root", "batch_json", "anchor"]

_BATCH_ID = re.compile(r"[\x21-\x7e]{1,128}")
_MAX = (1 << 63) - 1


def batch_key(batch_id: str) -> str:
    return "anc/batch/" + batch_id


def root_key(root: bytes) -> str:
    return "anc/root/" + root.hex()


def anchor(tc: TxContext, p: dict) -> dict:
    check_fields(p, ("batch_id", "root", "tree_size", "gateway", "window"))
    batch_id = p["batch_id"]
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise Refused("BAD_PAYLOAD", "batch_id must be 1..128 printable ASCII characters without spaces")
    root = p["root"]
    if type(root) is not bytes or len(root) != 32:
        raise Refused("BAD_PAYLOAD", "root must be 32 bytes")
    tree_size = check_int(p["tree_size"], "tree_size", 1)
    gateway = check_id(p["gateway"], "gateway")
    w = p["window"]
    if not isinstance(w, list) or len(w) != 2:
        raise Refused("BAD_PAYLOAD", "window must be [start_ms, end_ms]")
    start, end = check_int(w[0], "window start"), check_int(w[1], "window end")
    if start > end:
        raise Refused("BAD_PAYLOAD", "window start must not be after its end")
    r = resolve(tc.state, gateway, tc.height, tc.index)
    if r.type != "gateway":
        raise Refused("UNKNOWN_GATEWAY", f"no gateway {gateway!r}")
    if r.status != "active":
        raise Refused("REVOKED", f"gateway {gateway!r} is revoked")
    if tc.submitter != r.key:
        raise Refused("FORBIDDEN", f"the submitter is not the current key of gateway {gateway!r}")
    if batch_key(batch_id) in tc.state:
        raise Refused("DUPLICATE_BATCH", f"batch {batch_id!r} is already anchored")
    tc.state.put(batch_key(batch_id), {
        "root": root, "tree_size": tree_size, "gateway": gateway, "org": r.org, "window": [start, end],
        "submitter": tc.submitter, "height": tc.height, "index": tc.index, "tx_id": tc.tx.tx_id,
        "time": tc.block.time,
    })
    rk = root_key(root)
    tc.state.put(rk, tc.state.get(rk, []) + [batch_id])
    return {"batch_id": batch_id}


METHODS = {"anchor": anchor}


# ---------------------------------------------------------------- queries


def get_batch(reader: Any, batch_id: str) -> dict | None:
    """The stored anchor of `batch_id` (with its height and tx index), or None."""
    return reader.get(batch_key(batch_id)) if isinstance(batch_id, str) else None


def batches_by_root(reader: ContractState | Any, root: bytes) -> list[tuple[str, dict]]:
    """(batch id, record) of every batch anchored with `root`, in commit order."""
    if type(root) is not bytes or len(root) != 32:
        return []
    return [(b, reader.get(batch_key(b))) for b in reader.get(root_key(root), [])]


def batch_json(batch_id: str, rec: dict) -> dict:
    """HTTP-friendly view (bytes as hex)."""
    return {"batch_id": batch_id, "root": rec["root"].hex(), "tree_size": rec["tree_size"],
            "gateway": rec["gateway"], "org": rec["org"], "window": list(rec["window"]),
            "submitter": rec["submitter"], "height": rec["height"], "index": rec["index"],
            "tx_id": rec["tx_id"].hex(), "time": rec["time"]}
