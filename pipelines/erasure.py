"""Erasure of confidential records by destroying their keys (issue 18).

A confidential record's content can only be read through its key record (the data key and
salt wrapped for each recipient, a row of PostgreSQL's ``key_records``: `storage.key_records`;
docs/formats.md section 8). Erasing it: (1) the device's org records a ``policy.erase`` transaction on chain naming the
statement hashes, the reason and the selection (who and when are the tx's submitter and
position; it raises an audit event), then (2) every key record the system holds for them is
deleted. The signed ciphertext, the statements, the manifests and the anchors are untouched,
so every proof still checks; the verifier reports such records as erased at the tx's height.

The order makes a failure safe to retry: the tx first (an erasure re-run skips statements
already erased on chain), then the deletions (absent is fine). Only confidential records can be
erased this way: a plaintext record has no key to destroy (counted as ``skipped_plain``).

What erasure cannot reach is said in docs/formats.md section 8: copies of the key record in
Kafka (the ``ss-keys`` header of the raw topic's message, until the topic's retention deletes
it) and plaintext a recipient already decrypted and kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, Sequence

from ledger.contracts.confidentiality import MAX_ERASE
from storage import key_records
from trust.statement import ENVELOPE_CONTENT_TYPE

__all__ = ["ERASE_STEPS", "ErasureError", "ErasureResult", "Selection", "erase", "select"]

#: the steps of an erasure, in order; an `ErasureError` names one
ERASE_STEPS = ("select", "erasure-tx", "delete-keys")


class ErasureError(Exception):
    """An erasure failed at `step` (one of `ERASE_STEPS`)."""

    def __init__(self, step: str, message: str) -> None:
        assert step in ERASE_STEPS, step
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass(frozen=True)
class Selection:
    """The confidential records chosen, by device (statement hashes in statement order), and the
    plaintext records the selection also matched (not erasable: they have no key)."""

    by_device: tuple[tuple[str, tuple[bytes, ...]], ...]
    skipped_plain: int
    scope: str

    @property
    def count(self) -> int:
        return sum(len(h) for _, h in self.by_device)


@dataclass(frozen=True)
class ErasureResult:
    selection: Selection
    txs: tuple[dict[str, Any], ...]  # {tx_id, height, index, device, erased, already_erased}
    keys_deleted: int

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "records": self.selection.count, "skipped_plain": self.selection.skipped_plain,
                "scope": self.selection.scope, "txs": list(self.txs), "keys_deleted": self.keys_deleted,
                "heights": sorted({t["height"] for t in self.txs})}


def select(pool: Any, *, device: Optional[str] = None, before: Optional[datetime] = None,
           batch: Optional[str] = None, statements: Sequence[bytes] = ()) -> Selection:
    """The records one of: `device` with signed ``ts`` before `before`; the leaves of `batch`;
    the `statements` named."""
    params: tuple[Any, ...]
    if sum((device is not None or before is not None, batch is not None, bool(statements))) != 1:
        raise ErasureError("select", "name exactly one of: --device with --before, --batch, --statement")
    if device is not None or before is not None:
        if device is None or before is None:
            raise ErasureError("select", "--device and --before go together")
        where, params = "device = %s AND ts < %s", (device, before)
        scope = f"device {device} before {before.isoformat()}"
    elif batch is not None:
        where, params, scope = ("statement_hash IN (SELECT statement_hash FROM batch_leaves WHERE batch_id = %s)",
                                (batch,), f"batch {batch}")
    else:
        hs = [bytes(h) for h in statements]
        where, params, scope = "statement_hash = ANY(%s)", (hs,), f"{len(hs)} named record(s)"
    with pool.connection() as conn:
        rows = conn.execute(f"SELECT statement_hash, device, content_type FROM statements WHERE {where} "
                            "ORDER BY device, seq", params).fetchall()
    if statements:
        found = {bytes(r[0]) for r in rows}
        missing = [bytes(h).hex() for h in statements if bytes(h) not in found]
        if missing:
            raise ErasureError("select", f"no stored statement {', '.join(missing[:3])}")
    groups: dict[str, list[bytes]] = {}
    plain = 0
    for h, dev, ct in rows:
        if ct == ENVELOPE_CONTENT_TYPE:
            groups.setdefault(dev, []).append(bytes(h))
        else:
            plain += 1
    if not groups:
        raise ErasureError("select", f"no confidential record matches ({scope}; {plain} plaintext record(s), "
                                     "which have no key to destroy)")
    return Selection(tuple((d, tuple(hs)) for d, hs in groups.items()), plain, scope[:256])


def erase(client: Any, pool: Any, selection: Selection, reason: str) -> ErasureResult:
    """Record the erasure on chain (`client`: a `LedgerClient` signing as the device's org
    admin), then destroy every key record of the selection (`pool`: PostgreSQL as the erasure
    role) and check none is left; raise `ErasureError`."""
    txs = []
    for device, hashes in selection.by_device:
        for i in range(0, len(hashes), MAX_ERASE):
            part = list(hashes[i:i + MAX_ERASE])
            try:
                r = client.submit("policy.erase", {"device": device, "statements": part, "reason": reason,
                                                   "scope": selection.scope})
            except Exception as exc:  # noqa: BLE001 -- any client failure: the tx step failed, nothing deleted
                raise ErasureError("erasure-tx", f"{type(exc).__name__}: {exc}") from None
            if r.refusal is not None:
                code, message = r.refusal
                raise ErasureError("erasure-tx", f"refused with {code}: {message} (height {r.height})")
            txs.append({"tx_id": r.tx_id.hex(), "height": r.height, "index": r.index, "device": device,
                        "erased": r.result["erased"], "already_erased": r.result["already_erased"]})
    try:
        deleted, left = key_records.destroy(pool, [h for _, hs in selection.by_device for h in hs])
    except Exception as exc:  # noqa: BLE001 -- store failure: the tx is on chain, re-run to finish
        raise ErasureError("delete-keys", f"{exc} (the erasure is on chain; run the same command again to "
                                          "finish)") from None
    if left:
        raise ErasureError("delete-keys", f"the key record of {left[0].hex()} is still held after its deletion")
    return ErasureResult(selection, tuple(txs), deleted)
