"""Offline evidence bundles: one zip with everything `chain.verify` needs.

`write_bundle(evidence, path)` writes it; `read_bundle(path)` reads it back
strictly; `verify_bundle(path, ...)` = read + `chain.verify`.  Reading does no
I/O besides the zip (no network, no database), and this module imports only
`trust`, the ledger's pure values/light client/contracts code and pyarrow.

Format version 1 (docs/verify.md has the full table):

- ``bundle.json``: ``{"format": "sealstream-evidence-bundle", "v": 1,
  "subject": {...}, "window_us": [lo, hi] | null, "genesis_hash": hex,
  "batches": [{"batch_id", "manifest": member | null}],
  "members": {name: sha256 hex}}`` (compact JSON, sorted keys);
- ``ledger/genesis.cbor``, ``ledger/headers.cbor``, ``ledger/anchors.cbor``,
  ``ledger/state.cbor``: canonical CBOR (`trust.canonical`);
- ``ledger/sealer_sets.json``: the sealer-set history the headers imply
  (checked against them);
- ``records.cbor``: statements, signatures, receipts, leaf indexes and
  inclusion proofs; ``payloads/<statement hash hex>``: the payload bytes;
- ``batches/<n>.json``: the manifest bytes as stored;
- ``rows.arrow``: the stored rows under test (Arrow IPC file), if any.

Strict: an unknown ``format``/``v``, a member listed but absent or with
another SHA-256, a zip entry not listed (extra member), a duplicate entry or
malformed content is a `BundleError` (step ``bundle``): nothing is verified
from a bundle that is not exactly what its index says.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pyarrow as pa

from ledger._types import BlockHeader, CommitCertificate, Genesis
from ledger.light_client import TxProof
from trust import canonical
from trust._hashes import sha256

from . import chain
from .model import AnchorTx, BatchEvidence, Evidence, Failure, LedgerEvidence, RecordEvidence, Report, StateValue

__all__ = ["FORMAT", "VERSION", "INDEX", "BundleError", "write_bundle", "read_bundle", "verify_bundle",
           "sealer_history"]

FORMAT = "sealstream-evidence-bundle"
VERSION = 1
INDEX = "bundle.json"
_MAX_MEMBER = 1 << 32


class BundleError(Exception):
    """The bundle is not a well-formed version-1 bundle; `step` is ``bundle``."""

    step = "bundle"


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sealer_history(genesis: Genesis, headers: Any) -> list[dict]:
    """``[{"epoch", "sealers": [did, ...], "from_height"}]``: epoch 0 from the genesis, each next
    set from the header that names it (``next_sealers`` at an epoch end)."""
    out = [{"epoch": 0, "from_height": 1, "sealers": list(genesis.sealers.members)}]
    for header, _ in headers:
        if header.next_sealers is not None:
            out.append({"epoch": header.epoch + 1, "from_height": header.height + 1,
                        "sealers": list(header.next_sealers.members)})
    return out


def _proof_wire(p: TxProof) -> dict:
    return {"height": p.height, "index": p.index, "size": p.size, "path": list(p.path)}


def write_bundle(evidence: Evidence, path: Union[str, Path, io.BytesIO]) -> dict:
    """Write `evidence` as a version-1 bundle; returns the index."""
    members: dict[str, bytes] = {}
    lg = evidence.ledger
    members["ledger/genesis.cbor"] = canonical.encode(lg.genesis.to_wire())
    members["ledger/headers.cbor"] = canonical.encode([[h.to_wire(), c.to_wire()] for h, c in lg.headers])
    members["ledger/sealer_sets.json"] = _dumps(sealer_history(lg.genesis, lg.headers))
    members["ledger/anchors.cbor"] = canonical.encode(
        [{"batch_id": a.batch_id, "tx": a.tx, "proof": _proof_wire(a.proof)} for a in lg.anchors])
    members["ledger/state.cbor"] = canonical.encode(
        [{"key": s.key, "value": s.value, "height": s.height, "proof": s.proof} for s in lg.state])
    batches = []
    for n, b in enumerate(evidence.batches):
        name = None
        if b.manifest is not None:
            name = f"batches/{n}.json"
            members[name] = b.manifest
        batches.append({"batch_id": b.batch_id, "manifest": name})
    records = []
    for r in evidence.records:
        name = None
        if r.payload is not None:
            name = "payloads/" + sha256(r.statement).hex()
            members[name] = r.payload
        records.append({"statement": r.statement, "signature": r.signature, "receipt": r.receipt,
                        "payload": name, "batch_id": r.batch_id, "leaf_index": r.leaf_index,
                        "proof": list(r.proof)})
    members["records.cbor"] = canonical.encode(records)
    if evidence.rows is not None:
        rows = evidence.rows
        col = rows.column("statement_hash").combine_chunks()
        if pa.types.is_dictionary(col.type):
            rows = rows.set_column(0, "statement_hash", col.dictionary_decode())
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, rows.schema) as w:
            w.write_table(rows)
        members["rows.arrow"] = sink.getvalue().to_pybytes()
    index = {
        "format": FORMAT, "v": VERSION, "subject": evidence.subject,
        "window_us": None if evidence.window_us is None else list(evidence.window_us),
        "genesis_hash": lg.genesis.genesis_hash().hex(), "batches": batches,
        "members": {name: sha256(data).hex() for name, data in members.items()},
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(INDEX, _dumps(index))
        for name in sorted(members):
            z.writestr(name, members[name])
    return index


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise BundleError(message)


def _cbor(members: dict[str, bytes], name: str) -> Any:
    try:
        return canonical.decode(members[name])
    except (ValueError, KeyError) as exc:
        raise BundleError(f"{name}: not canonical CBOR: {exc}") from None


def _read_members(path: Union[str, Path, io.BytesIO]) -> tuple[dict, dict[str, bytes]]:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"not a zip file: {exc}") from None
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        _need(len(set(names)) == len(names), "duplicate zip entries")
        _need(INDEX in names, f"missing {INDEX}")
        try:
            index = json.loads(z.read(INDEX))
        except ValueError as exc:
            raise BundleError(f"{INDEX} is not JSON: {exc}") from None
        _need(isinstance(index, dict) and index.get("format") == FORMAT,
              f"{INDEX}: not a {FORMAT} (format {index.get('format') if isinstance(index, dict) else None!r})")
        _need(index.get("v") == VERSION, f"unsupported bundle version {index.get('v')!r} (this verifier reads {VERSION})")
        keys = {"format", "v", "subject", "window_us", "genesis_hash", "batches", "members"}
        _need(set(index) == keys, f"{INDEX}: want exactly the keys {sorted(keys)}")
        listed = index["members"]
        _need(isinstance(listed, dict), f"{INDEX}: members must be a map")
        extra = sorted(set(names) - set(listed) - {INDEX})
        _need(not extra, f"members not listed in {INDEX}: {extra[:5]}")
        members: dict[str, bytes] = {}
        for name, digest in sorted(listed.items()):
            _need(name in names, f"missing member {name}")
            info = z.getinfo(name)
            _need(not info.is_dir() and info.file_size <= _MAX_MEMBER, f"member {name} is not a plain file")
            data = z.read(name)
            _need(sha256(data).hex() == digest, f"member {name} does not have the SHA-256 {INDEX} lists")
            members[name] = data
    return index, members


def read_bundle(path: Union[str, Path, io.BytesIO]) -> Evidence:
    """The `Evidence` in a bundle; `BundleError` for anything but a well-formed version-1 bundle."""
    index, members = _read_members(path)
    for name in ("ledger/genesis.cbor", "ledger/headers.cbor", "ledger/sealer_sets.json", "ledger/anchors.cbor",
                 "ledger/state.cbor", "records.cbor"):
        _need(name in members, f"missing member {name}")
    try:
        genesis = Genesis.from_wire(_cbor(members, "ledger/genesis.cbor"))
        headers = tuple((BlockHeader.from_wire(h), CommitCertificate.from_wire(c))
                        for h, c in _cbor(members, "ledger/headers.cbor"))
        anchors = tuple(AnchorTx(a["batch_id"], a["tx"], TxProof(a["proof"]["height"], a["proof"]["index"],
                                                                a["proof"]["size"], tuple(a["proof"]["path"])))
                        for a in _cbor(members, "ledger/anchors.cbor"))
        state = tuple(StateValue(s["key"], s["value"], s["height"], s["proof"])
                      for s in _cbor(members, "ledger/state.cbor"))
        batches = []
        for b in index["batches"]:
            m = b["manifest"]
            _need(m is None or m in members, f"batch {b['batch_id']!r}: manifest member {m} not listed")
            batches.append(BatchEvidence(b["batch_id"], None if m is None else members[m]))
        records = []
        for r in _cbor(members, "records.cbor"):
            p = r["payload"]
            _need(p is None or p in members, f"payload member {p} not listed")
            records.append(RecordEvidence(r["statement"], r["signature"], r["receipt"],
                                          None if p is None else members[p], r["batch_id"], r["leaf_index"],
                                          tuple(r["proof"])))
        rows = None
        if "rows.arrow" in members:
            rows = pa.ipc.open_file(pa.BufferReader(members["rows.arrow"])).read_all()
            _need(rows.schema.names == ["statement_hash", "row_index", "time_us", "sensor", "value"],
                  f"rows.arrow has the columns {rows.schema.names}")
        w = index["window_us"]
        window = None if w is None else (w[0], w[1])
        history = json.loads(members["ledger/sealer_sets.json"])
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, pa.ArrowException) as exc:
        raise BundleError(f"malformed bundle content: {type(exc).__name__}: {exc}") from None
    lg = LedgerEvidence(genesis, headers, anchors, state)
    if history != sealer_history(genesis, headers):
        raise _SealerHistoryMismatch()
    _need(index["genesis_hash"] == genesis.genesis_hash().hex(), f"{INDEX}: genesis_hash is not the genesis' hash")
    return Evidence(index["subject"], lg, tuple(batches), tuple(records), rows, window)


class _SealerHistoryMismatch(BundleError):
    """ledger/sealer_sets.json is not the history the certified headers imply."""

    step = "sealer-set"

    def __init__(self) -> None:
        super().__init__("ledger/sealer_sets.json differs from the sealer sets the headers name")


def verify_bundle(path: Union[str, Path, io.BytesIO], *, trusted_genesis_hash: Optional[bytes] = None,
                  checkpoint: Optional[chain.Checkpoint] = None,
                  progress: Optional[Callable[[int], None]] = None) -> Report:
    """Read and verify a bundle; a bundle that does not read is a failed `Report` (step ``bundle``)."""
    try:
        evidence = read_bundle(path)
    except BundleError as exc:
        return Report({"kind": "bundle"}, (), (Failure(exc.step, str(exc)),), {})
    return chain.verify(evidence, trusted_genesis_hash=trusted_genesis_hash, checkpoint=checkpoint,
                        progress=progress)

