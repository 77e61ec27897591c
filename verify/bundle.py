"""Offline evidence bundles: one zip with everything `chain.verify` needs.

`write_bundle(evidence, path)` writes it; `read_bundle(path)` reads it back
strictly; `verify_bundle(path, ...)` = read + `chain.verify`.  Reading does no
I/O besides the zip (no network, no database), and this module imports only
`trust`, the ledger's pure values/light client/contracts code and pyarrow.

Format version 2 (docs/verify.md has the full table):

- ``bundle.json``: ``{"format": "sealstream-evidence-bundle", "v": 2,
  "subject": {...}, "genesis_hash": hex,
  "batches": [{"batch_id", "manifest": member | null}],
  "members": {name: sha256 hex}}`` (compact JSON, sorted keys);
- ``ledger/genesis.cbor``, ``ledger/headers.cbor``, ``ledger/anchors.cbor``,
  ``ledger/state.cbor``: canonical CBOR (`trust.canonical`); every state
  value is proven at one height;
- ``ledger/sealer_sets.json``: the sealer-set history the headers imply
  (checked against them);
- ``records.cbor``: statements, signatures, receipts, leaf indexes and
  inclusion proofs; ``payloads/<statement hash hex>``: the payload bytes;
- ``batches/<n>.json``: the manifest bytes as stored;
- ``rows.arrow``: the stored rows under test (Arrow IPC file) with the
  device each is attributed to, if any.

Version 1 (``window_us`` in the index, rows without a device) is still read:
its window must be the one its subject implies, and a v1 bundle with stored
rows is refused (``v1-rows-without-device``: re-export it), since which
device a row is attributed to is part of the verdict now.

Strict: limits on the number of members and on each member's and the total
uncompressed size are checked before anything is inflated (`BundleLimits`);
an unknown ``format``/``v``, a member listed but absent or with another
SHA-256, a zip entry not listed, a duplicate entry, a zip that does not read
(CRC, unsupported compression, encryption, truncation) or malformed content
is a `BundleError` (step ``bundle``) with a machine-readable `reason`:
nothing is verified from a bundle that is not exactly what its index says.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pyarrow as pa

from ledger.values import BlockHeader, CommitCertificate, Genesis
from ledger.light_client import TxProof
from trust import canonical
from trust.hashes import sha256

from . import chain
from .model import AnchorTx, BatchEvidence, Evidence, Failure, LedgerEvidence, RecordEvidence, Report, StateValue
from .subject import window_of, parse_subject

__all__ = ["FORMAT", "VERSION", "INDEX", "BundleError", "BundleLimits", "write_bundle", "read_bundle",
           "verify_bundle", "sealer_history"]

FORMAT = "sealstream-evidence-bundle"
VERSION = 2
INDEX = "bundle.json"
_ROW_COLUMNS_V1 = ["statement_hash", "row_index", "time_us", "sensor", "value"]
_ROW_COLUMNS = _ROW_COLUMNS_V1 + ["device"]


@dataclass(frozen=True)
class BundleLimits:
    """What `read_bundle` accepts, checked on the zip's directory before inflating anything.

    Defaults fit a batch of ~100k records with video chunks on a workstation; settings
    ``SEALSTREAM_BUNDLE_MAX_*`` change them for the CLI."""

    max_members: int = 250_000
    max_member_bytes: int = 1 << 30
    max_total_bytes: int = 4 << 30


class BundleError(Exception):
    """The bundle is not a well-formed bundle; `step` is ``bundle``, `reason` machine-readable."""

    step = "bundle"

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sealer_history(genesis: Genesis, headers: Any) -> list[dict[str, Any]]:
    """``[{"epoch", "sealers": [did, ...], "from_height"}]``: epoch 0 from the genesis, each next
    set from the header that names it (``next_sealers`` at an epoch end)."""
    out = [{"epoch": 0, "from_height": 1, "sealers": list(genesis.sealers.members)}]
    for header, _ in headers:
        if header.next_sealers is not None:
            out.append({"epoch": header.epoch + 1, "from_height": header.height + 1,
                        "sealers": list(header.next_sealers.members)})
    return out


def _proof_wire(p: TxProof) -> dict[str, Any]:
    return {"height": p.height, "index": p.index, "size": p.size, "path": list(p.path)}


def write_bundle(evidence: Evidence, path: Union[str, Path, io.BytesIO]) -> dict[str, Any]:
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
        for i, name in enumerate(rows.schema.names):  # a plain Arrow file: dictionaries decoded
            col = rows.column(name).combine_chunks()
            if pa.types.is_dictionary(col.type):
                rows = rows.set_column(i, name, col.dictionary_decode())
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, rows.schema) as w:
            w.write_table(rows)
        members["rows.arrow"] = sink.getvalue().to_pybytes()
    index = {
        "format": FORMAT, "v": VERSION, "subject": evidence.subject,
        "genesis_hash": lg.genesis.genesis_hash().hex(), "batches": batches,
        "members": {name: sha256(data).hex() for name, data in members.items()},
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(INDEX, _dumps(index))
        for name in sorted(members):
            z.writestr(name, members[name])
    return index


def _need(cond: bool, message: str, reason: str = "malformed") -> None:
    if not cond:
        raise BundleError(message, reason)


def _cbor(members: dict[str, bytes], name: str) -> Any:
    try:
        return canonical.decode(members[name])
    except (ValueError, KeyError) as exc:
        raise BundleError(f"{name}: not canonical CBOR: {exc}") from None


_INDEX_KEYS = {1: {"format", "v", "subject", "window_us", "genesis_hash", "batches", "members"},
               2: {"format", "v", "subject", "genesis_hash", "batches", "members"}}
_MAX_INDEX = 64 << 20


def _inflate(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes, never more than its declared size (checked against the limits)."""
    try:
        with z.open(info) as f:
            data = f.read(info.file_size + 1)
    except NotImplementedError as exc:  # an unsupported compression method
        raise BundleError(f"member {info.filename}: {exc}", "unsupported-compression") from None
    except RuntimeError as exc:  # encrypted members
        raise BundleError(f"member {info.filename}: {exc}", "encrypted") from None
    except zipfile.BadZipFile as exc:
        reason = "crc-error" if "CRC" in str(exc) else "bad-zip"
        raise BundleError(f"member {info.filename}: {exc}", reason) from None
    except (OSError, EOFError, ValueError) as exc:  # truncated or corrupt deflate streams
        raise BundleError(f"member {info.filename}: {type(exc).__name__}: {exc}", "bad-zip") from None
    _need(len(data) == info.file_size, f"member {info.filename} is not its declared size", "size-mismatch")
    return data


def _read_members(path: Union[str, Path, io.BytesIO], limits: BundleLimits) -> tuple[dict[str, Any], dict[str, bytes]]:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BundleError(f"not a zip file: {exc}", "not-a-zip") from None
    with z:
        infos = z.infolist()
        _need(len(infos) <= limits.max_members + 1,
              f"{len(infos)} zip entries, more than the limit of {limits.max_members} members", "too-many-members")
        names = [i.filename for i in infos]
        _need(len(set(names)) == len(names), "duplicate zip entries", "duplicate-names")
        _need(INDEX in names, f"missing {INDEX}", "missing-index")
        big = [i.filename for i in infos if i.file_size > limits.max_member_bytes]
        _need(not big, f"member {big[:1]} inflates past the limit of {limits.max_member_bytes} bytes",
              "member-too-large")
        total = sum(i.file_size for i in infos)
        _need(total <= limits.max_total_bytes, f"the members inflate to {total} bytes, past the limit of "
              f"{limits.max_total_bytes}", "total-too-large")
        _need(all(not i.is_dir() for i in infos), "the bundle holds a directory entry", "not-a-plain-file")
        by_name = {i.filename: i for i in infos}
        _need(by_name[INDEX].file_size <= _MAX_INDEX, f"{INDEX} is too large", "member-too-large")
        try:
            index = json.loads(_inflate(z, by_name[INDEX]))
        except ValueError as exc:
            raise BundleError(f"{INDEX} is not JSON: {exc}") from None
        _need(isinstance(index, dict) and index.get("format") == FORMAT,
              f"{INDEX}: not a {FORMAT} (format {index.get('format') if isinstance(index, dict) else None!r})",
              "unknown-format")
        v = index.get("v")
        _need(type(v) is int and v in _INDEX_KEYS, f"unsupported bundle version {v!r} (this verifier reads "
              f"{sorted(_INDEX_KEYS)})", "unsupported-version")
        _need(set(index) == _INDEX_KEYS[v], f"{INDEX}: want exactly the keys {sorted(_INDEX_KEYS[v])}", "index-keys")
        listed = index["members"]
        _need(isinstance(listed, dict) and all(isinstance(d, str) for d in listed.values()),
              f"{INDEX}: members must be a map of names to SHA-256 hex", "index-keys")
        extra = sorted(set(names) - set(listed) - {INDEX})
        _need(not extra, f"members not listed in {INDEX}: {extra[:5]}", "unlisted-member")
        members: dict[str, bytes] = {}
        for name, digest in sorted(listed.items()):
            _need(name in by_name, f"missing member {name}", "missing-member")
            data = _inflate(z, by_name[name])
            _need(sha256(data).hex() == digest, f"member {name} does not have the SHA-256 {INDEX} lists",
                  "digest-mismatch")
            members[name] = data
    return index, members


def read_bundle(path: Union[str, Path, io.BytesIO], limits: BundleLimits = BundleLimits()) -> Evidence:
    """The `Evidence` in a bundle; `BundleError` for anything but a well-formed v2 (or v1) bundle."""
    index, members = _read_members(path, limits)
    for name in ("ledger/genesis.cbor", "ledger/headers.cbor", "ledger/sealer_sets.json", "ledger/anchors.cbor",
                 "ledger/state.cbor", "records.cbor"):
        _need(name in members, f"missing member {name}", "missing-member")
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
            _need(m is None or m in members, f"batch {b['batch_id']!r}: manifest member {m} not listed",
                  "missing-member")
            batches.append(BatchEvidence(b["batch_id"], None if m is None else members[m]))
        records = []
        for r in _cbor(members, "records.cbor"):
            p = r["payload"]
            _need(p is None or p in members, f"payload member {p} not listed", "missing-member")
            records.append(RecordEvidence(r["statement"], r["signature"], r["receipt"],
                                          None if p is None else members[p], r["batch_id"], r["leaf_index"],
                                          tuple(r["proof"])))
        rows = None
        if "rows.arrow" in members:
            rows = pa.ipc.open_file(pa.BufferReader(members["rows.arrow"])).read_all()
            if index["v"] == 1:
                raise BundleError("this version-1 bundle's stored rows carry no device, which the verdict now "
                                  "covers: re-export it with `sealstream evidence export`", "v1-rows-without-device")
            _need(rows.schema.names == _ROW_COLUMNS, f"rows.arrow has the columns {rows.schema.names}")
        subject = index["subject"]
        if index["v"] == 1:
            subject = _v1_subject(subject, index["window_us"])
        history = json.loads(members["ledger/sealer_sets.json"])
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, pa.ArrowException) as exc:
        raise BundleError(f"malformed bundle content: {type(exc).__name__}: {exc}") from None
    lg = LedgerEvidence(genesis, headers, anchors, state)
    if history != sealer_history(genesis, headers):
        raise _SealerHistoryMismatch()
    _need(index["genesis_hash"] == genesis.genesis_hash().hex(), f"{INDEX}: genesis_hash is not the genesis' hash")
    return Evidence(subject, lg, tuple(batches), tuple(records), rows)


_V1_SUBJECT_KEYS = {"blob": ("kind", "sha256"), "row": ("kind", "table", "key"),
                    "range": ("kind", "device", "from", "to"), "batch": ("kind", "batch_id")}


def _v1_subject(subject: Any, window: Any) -> dict[str, Any]:
    """A v1 subject in v2 form: its descriptive extras dropped (they never widened the claim), and
    its separate window refused unless it is the one the subject implies."""
    _need(isinstance(subject, dict) and subject.get("kind") in _V1_SUBJECT_KEYS, "v1 bundle: unknown subject")
    out = {k: subject[k] for k in _V1_SUBJECT_KEYS[subject["kind"]] if k in subject}
    try:
        implied = window_of(parse_subject(out))
    except Exception:  # noqa: BLE001 - chain.verify reports a malformed subject at step subject
        return out
    got = None if window is None else tuple(window)
    _need(got == implied, f"v1 bundle: window_us {window!r} is not the window its subject implies", "v1-window")
    return out


class _SealerHistoryMismatch(BundleError):
    """ledger/sealer_sets.json is not the history the certified headers imply."""

    step = "sealer-set"

    def __init__(self) -> None:
        super().__init__("ledger/sealer_sets.json differs from the sealer sets the headers name", "sealer-history")


def verify_bundle(path: Union[str, Path, io.BytesIO], *, trusted_genesis_hash: Optional[bytes] = None,
                  checkpoint: Optional[chain.TrustedCheckpoint] = None, insecure_unpinned: bool = False,
                  limits: BundleLimits = BundleLimits(),
                  progress: Optional[Callable[[int], None]] = None) -> Report:
    """Read and verify a bundle; a bundle that does not read is a failed `Report` (step ``bundle``,
    its reason in the failure's evidence)."""
    try:
        evidence = read_bundle(path, limits)
    except BundleError as exc:
        return Report({"kind": "bundle"}, (), (Failure(exc.step, str(exc), {"reason": exc.reason}),), {},
                      pinned=trusted_genesis_hash is not None or checkpoint is not None)
    return chain.verify(evidence, trusted_genesis_hash=trusted_genesis_hash, checkpoint=checkpoint,
                        insecure_unpinned=insecure_unpinned, progress=progress)

