"""The whole evidence chain of DESIGN.md step 8, as pure functions over `Evidence`.

Order (the first failure of a record is the one reported for it):

1. ledger: headers 1..n verify from the trusted genesis (``genesis``,
   ``header-chain``, ``sealer-set``, ``certificate``: a quorum of the sealer
   set of each height, that set followed from genesis through signed
   headers); every state value verifies against a certified header's state
   root (``registry-proof``);
2. per batch: the ANCHOR tx is in its block (``tx-in-block``), names this
   batch, root and size, and the anchors state recorded it as accepted
   (``anchor-tx``); the manifest parses, is this batch's and its leaves hash
   to its root (``manifest``), and that root is the anchored one (``anchor-root``);
3. per record: statement and payload (``statement-format``,
   ``payload-size``, ``payload-hash``), the device key registered and in force
   as the ANCHOR tx saw it (``device-key``), the device signature under that
   key (``device-signature``), the seal receipt (``receipt-*``,
   ``statement-hash``), the statement hash is leaf i of the manifest
   (``leaf``) and its inclusion proof leads to the anchored root (``inclusion``);
4. rows: each stored row equals its row in the signed payload (``row-value``),
   no stored row without a signed origin (``row-unsigned``), no signed row of
   the subject missing (``row-missing``).

Nothing here does I/O; `trust.verify` does the record steps, the ledger's
`LightClient` the headers, `verify_state_proof` the state values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ledger import light_client as lc_mod
from ledger._types import Transaction
from ledger.contracts import ProofError, verify_state_proof
from ledger.contracts.registry import resolve_key
from trust import canonical
from trust._hashes import sha256
from trust.errors import (
    CHAIN_STEPS,
    AnchorMismatchError,
    AnchorTxError,
    CertificateQuorumError,
    DeviceKeyError,
    EvidenceMissingError,
    LeafError,
    GenesisError,
    HeaderChainError,
    LedgerEvidenceError,
    ManifestError,
    PayloadFormatError,
    RegistryProofError,
    RowMissingError,
    RowUnsignedError,
    SealerSetHistoryError,
    TrustError,
    TxInBlockError,
    VerificationError,
)
from trust.receipt import AnchorRef
from trust.statement import Statement
from trust.verify import check_device_key, check_leaf, check_manifest, verify_record

from .model import BatchEvidence, Evidence, Failure, LedgerEvidence, RecordEvidence, Report

__all__ = ["LedgerView", "ParsedManifest", "verify_ledger", "parse_manifest", "verify", "Checkpoint"]

_LC_STEPS: dict[type, type] = {
    lc_mod.GenesisMismatch: GenesisError,
    lc_mod.HeaderLinkError: HeaderChainError,
    lc_mod.HeaderEpochError: HeaderChainError,
    lc_mod.SealerSetError: SealerSetHistoryError,
    lc_mod.CertificateInvalid: CertificateQuorumError,
    lc_mod.TxRootError: TxInBlockError,
    lc_mod.TxInclusionError: TxInBlockError,
}
_LC_NAMES = ("genesis", "header-link", "header-epoch", "sealer-set", "certificate", "tx-root", "inclusion")
_MANIFEST_KEYS = {"v", "batch_id", "root", "tree_size", "window_start", "window_end", "leaves"}
_MAX_FAILURES = 200


def _ledger_error(exc: lc_mod.LightClientError) -> LedgerEvidenceError:
    err = _LC_STEPS.get(type(exc), HeaderChainError)(str(exc))
    err.height = exc.height  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class Checkpoint:
    """A header hash the user trusts at `height` (out of band).

    The verified chain must pass through it.  It is a trust anchor on its own:
    the light client checks every ``prev_hash`` link from the genesis up, so a
    trusted header at `height` authenticates the headers below it and the
    genesis itself (block 1's ``prev_hash`` is the genesis hash); headers above
    it are checked by their certificates as always."""

    height: int
    header_hash: bytes

    @classmethod
    def parse(cls, text: str) -> "Checkpoint":
        """``HEIGHT:HEADER_HASH_HEX``."""
        try:
            h, hx = text.split(":", 1)
            value = cls(int(h), bytes.fromhex(hx))
        except ValueError:
            raise ValueError(f"checkpoint must be HEIGHT:<64 hex digits>, got {text!r}") from None
        if value.height < 1 or len(value.header_hash) != 32:
            raise ValueError(f"checkpoint must be HEIGHT>=1:<64 hex digits>, got {text!r}")
        return value


class _ProvenState:
    """A read-only state view over verified state values (what `registry.resolve` reads)."""

    def __init__(self, values: dict[str, Optional[bytes]]) -> None:
        self._values = values

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._values:
            raise RegistryProofError(f"state value {key!r} is not in the evidence")
        raw = self._values[key]
        return default if raw is None else canonical.decode(raw)

    peek = get


@dataclass
class LedgerView:
    """A verified ledger: its light client and the state values that checked out."""

    client: lc_mod.LightClient
    state: _ProvenState
    genesis_hash: bytes


def verify_ledger(ledger: LedgerEvidence, *, trusted_genesis_hash: Optional[bytes] = None,
                  checkpoint: Optional[Checkpoint] = None) -> LedgerView:
    """Follow the headers from the genesis and check every state value; raise a
    `LedgerEvidenceError` subclass naming the step that failed."""
    try:
        client = lc_mod.LightClient.from_genesis(ledger.genesis, trusted_genesis_hash)
        client.add_chain(ledger.headers)
    except lc_mod.LightClientError as exc:
        raise _ledger_error(exc) from None
    if checkpoint is not None:
        hdr = client.headers.get(checkpoint.height)
        if hdr is None or hdr.header_hash() != checkpoint.header_hash:
            raise GenesisError(f"the chain does not pass through the trusted checkpoint at height "
                               f"{checkpoint.height}")
    values: dict[str, Optional[bytes]] = {}
    for sv in ledger.state:
        hdr = client.headers.get(sv.height)
        if hdr is None:
            raise RegistryProofError(f"state value {sv.key!r} is proven at height {sv.height}, "
                                     f"past the {client.height} certified headers")
        try:
            verify_state_proof(hdr.state_root, sv.key, sv.value, sv.proof)
        except (ProofError, TypeError, KeyError) as exc:
            raise RegistryProofError(f"state value {sv.key!r} at height {sv.height}: {exc}") from None
        values[sv.key] = sv.value
    return LedgerView(client, _ProvenState(values), ledger.genesis.genesis_hash())


@dataclass(frozen=True)
class ParsedManifest:
    batch_id: str
    root: bytes
    leaves: tuple[bytes, ...]


def parse_manifest(data: bytes, batch_id: str) -> ParsedManifest:
    """Parse a version-1 manifest (docs/storage.md) strictly, for `batch_id`;
    `ManifestError` unless its leaves hash to its root."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != _MANIFEST_KEYS or doc["v"] != 1:
            raise ValueError(f"want exactly the keys {sorted(_MANIFEST_KEYS)} and v=1")
        if json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() != data:
            raise ValueError("not in canonical form")
        leaves = tuple(bytes.fromhex(h) for h in doc["leaves"])
        root = bytes.fromhex(doc["root"])
        if len(root) != 32 or any(len(x) != 32 for x in leaves):
            raise ValueError("hashes must be 32 bytes")
    except (ValueError, TypeError, KeyError) as exc:
        raise ManifestError(f"malformed manifest of batch {batch_id!r}: {exc}") from None
    if doc["batch_id"] != batch_id:
        raise ManifestError(f"the manifest stored for batch {batch_id!r} is batch {doc['batch_id']!r}")
    check_manifest(leaves, root, doc["tree_size"])
    return ParsedManifest(batch_id, root, leaves)


@dataclass(frozen=True)
class _Anchor:
    height: int
    tx_index: int
    root: bytes
    tree_size: int


def _check_anchor(view: LedgerView, ledger: LedgerEvidence, batch_id: str) -> _Anchor:
    a = ledger.anchor(batch_id)
    if a is None:
        raise EvidenceMissingError(f"no ANCHOR transaction for batch {batch_id!r} in the evidence")
    try:
        tx = Transaction.from_bytes(a.tx)
    except Exception as exc:  # noqa: BLE001 - any decoding failure of untrusted bytes
        raise AnchorTxError(f"the ANCHOR transaction of {batch_id!r} does not decode: {exc}") from None
    try:
        view.client.verify_tx(tx, a.proof)
    except lc_mod.LightClientError as exc:
        raise _ledger_error(exc) from None
    p = tx.payload
    if tx.kind != "anchors.anchor" or not isinstance(p, dict) or p.get("batch_id") != batch_id:
        raise AnchorTxError(f"transaction {tx.tx_id.hex()[:16]} is not the ANCHOR of batch {batch_id!r}")
    root, size = p.get("root"), p.get("tree_size")
    if type(root) is not bytes or len(root) != 32 or type(size) is not int:
        raise AnchorTxError(f"the ANCHOR of {batch_id!r} has no valid root/tree_size")
    rec = view.state.get("anc/batch/" + batch_id)
    if not isinstance(rec, dict) or rec.get("tx_id") != tx.tx_id or rec.get("root") != root \
            or rec.get("height") != a.proof.height or rec.get("index") != a.proof.index:
        raise AnchorTxError(f"the anchors state does not record this transaction as batch {batch_id!r}'s "
                            "accepted anchor (refused or another tx)")
    return _Anchor(a.proof.height, a.proof.index, root, size)


def _device_key(view: LedgerView, stmt: Statement, anchor: _Anchor) -> str:
    r = resolve_key(view.state, stmt.device, anchor.height, anchor.tx_index)
    status, key = ("unknown", None) if r is None else (r.status, r.key)
    return check_device_key(stmt.device, status, key)


class _Run:
    """Accumulates passed steps and failures while verifying."""

    def __init__(self) -> None:
        self.passed: set[str] = set()
        self.failures: list[Failure] = []
        self.failed_count = 0

    def ok(self, *steps: str) -> None:
        self.passed.update(steps)

    def fail(self, step: str, message: str, **evidence: Any) -> None:
        while True:  # errors prefix their step ("step: ..."), and wrapped ones once more
            head, sep, rest = message.partition(": ")
            if not sep or head not in (step, *_LC_NAMES):
                break
            message = rest
        self.failed_count += 1
        if len(self.failures) < _MAX_FAILURES:
            self.failures.append(Failure(step, message, evidence))

    def passed_steps(self) -> tuple[str, ...]:
        failed = {f.step for f in self.failures}
        return tuple(s for s in CHAIN_STEPS if s in self.passed and s not in failed)


def _record_failure(run: _Run, exc: VerificationError, rec_ev: RecordEvidence, stmt_hash: str) -> None:
    run.fail(exc.step, str(exc), statement_hash=stmt_hash, batch_id=rec_ev.batch_id, leaf_index=rec_ev.leaf_index)


def verify(evidence: Evidence, *, trusted_genesis_hash: Optional[bytes] = None,
           checkpoint: Optional[Checkpoint] = None,
           progress: Optional[Callable[[int], None]] = None) -> Report:
    """Check everything in `evidence`; a `Report` with every failure found (capped)."""
    run = _Run()
    subject = evidence.subject
    counts = {"records": len(evidence.records), "batches": len(evidence.batches),
              "rows": 0 if evidence.rows is None else evidence.rows.num_rows}
    try:
        view = verify_ledger(evidence.ledger, trusted_genesis_hash=trusted_genesis_hash, checkpoint=checkpoint)
    except VerificationError as exc:
        run.fail(exc.step, str(exc), height=getattr(exc, "height", None))
        return Report(subject, run.passed_steps(), tuple(run.failures), counts,
                      evidence.ledger.genesis.genesis_hash().hex(), 0)
    run.ok("genesis", "header-chain", "sealer-set", "certificate")
    if evidence.ledger.state:
        run.ok("registry-proof")

    batches: dict[str, tuple[_Anchor, ParsedManifest]] = {}
    for b in evidence.batches:
        got = _verify_batch(run, view, evidence.ledger, b)
        if got is not None:
            batches[b.batch_id] = got

    if subject.get("kind") == "batch":
        _verify_complete(run, batches, evidence.records)
    signed_rows: dict[bytes, Any] = {}
    for n, rec_ev in enumerate(evidence.records):
        _verify_record(run, view, batches, rec_ev, signed_rows, evidence.rows is not None)
        if progress is not None:
            progress(n + 1)
    if evidence.rows is not None:
        _verify_rows(run, evidence, signed_rows)
    counts["failures"] = run.failed_count
    return Report(subject, run.passed_steps(), tuple(run.failures), counts,
                  view.genesis_hash.hex(), view.client.height)


def _verify_batch(run: _Run, view: LedgerView, ledger: LedgerEvidence,
                  b: BatchEvidence) -> Optional[tuple[_Anchor, ParsedManifest]]:
    try:
        anchor = _check_anchor(view, ledger, b.batch_id)
        run.ok("tx-in-block", "anchor-tx")
        if b.manifest is None:
            raise EvidenceMissingError(f"the manifest of batch {b.batch_id!r} is missing")
        manifest = parse_manifest(b.manifest, b.batch_id)
        run.ok("manifest")
        if manifest.root != anchor.root or len(manifest.leaves) != anchor.tree_size:
            raise AnchorMismatchError(f"the manifest of batch {b.batch_id!r} has another root or size than "
                                      f"its ANCHOR transaction at height {anchor.height}")
        run.ok("anchor-root")
        return anchor, manifest
    except VerificationError as exc:
        run.fail(exc.step, str(exc), batch_id=b.batch_id)
        return None


def _verify_complete(run: _Run, batches: dict, records: tuple[RecordEvidence, ...]) -> None:
    """For a whole batch: every leaf of the manifest has its stored statement (the root is then
    rebuilt from stored statements, not only from the manifest)."""
    have = {sha256(r.statement) for r in records}
    for batch_id, (_, manifest) in batches.items():
        missing = [i for i, leaf in enumerate(manifest.leaves) if leaf not in have]
        if missing:
            run.fail(EvidenceMissingError.step, f"{len(missing)} leaf/leaves of batch {batch_id!r} have no stored "
                     "statement", batch_id=batch_id, leaf_index=missing[:20],
                     statement_hash=[manifest.leaves[i].hex() for i in missing[:20]])
        else:
            run.ok(EvidenceMissingError.step)


def _verify_record(run: _Run, view: LedgerView, batches: dict, rec_ev: RecordEvidence,
                   signed_rows: dict, want_rows: bool) -> None:
    from .rows import payload_rows

    stmt_hash = sha256(rec_ev.statement)
    hx = stmt_hash.hex()
    try:
        if rec_ev.batch_id is None or rec_ev.leaf_index is None:
            raise EvidenceMissingError(f"statement {hx} is in no anchored batch")
        got = batches.get(rec_ev.batch_id)
        if got is None:
            raise EvidenceMissingError(f"batch {rec_ev.batch_id!r} of statement {hx} did not verify")
        anchor, manifest = got
        if rec_ev.payload is None:
            raise EvidenceMissingError(f"the payload of statement {hx} is missing")
        if rec_ev.receipt is None:
            raise EvidenceMissingError(f"statement {hx} has no seal receipt")
        try:
            ref = AnchorRef(rec_ev.batch_id, rec_ev.leaf_index, anchor.tree_size, anchor.root, anchor.height,
                            anchor.tx_index)
        except ValueError as exc:
            raise LeafError(f"statement {hx}: {exc}") from None
        try:
            stmt = Statement.from_bytes(rec_ev.statement)
            key = _device_key(view, stmt, anchor)
        except (DeviceKeyError, RegistryProofError, TrustError) as exc:
            # Report payload/format failures before the key, as the chain orders them.
            early = verify_record(rec_ev.payload, rec_ev.statement, rec_ev.signature, rec_ev.receipt, ref,
                                  rec_ev.proof, root=anchor.root)
            if early.failed_step in ("statement-format", "payload-size", "payload-hash"):
                raise early.error from None
            if isinstance(exc, VerificationError):
                raise
            raise DeviceKeyError(str(exc)) from None
        run.ok("device-key")
        check_leaf(manifest.leaves, rec_ev.leaf_index, stmt_hash)
        result = verify_record(rec_ev.payload, rec_ev.statement, rec_ev.signature, rec_ev.receipt, ref,
                               rec_ev.proof, device_key=key, root=anchor.root)
        run.ok(*result.passed)
        result.raise_for_failure()
        run.ok("leaf")
        if want_rows and stmt.kind == "timeseries":
            try:
                signed_rows[stmt_hash] = payload_rows(rec_ev.payload)
                run.ok("payload-format")
            except PayloadFormatError as exc:
                signed_rows[stmt_hash] = exc
                raise
    except VerificationError as exc:
        _record_failure(run, exc, rec_ev, hx)


def _verify_rows(run: _Run, evidence: Evidence, signed_rows: dict) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from .rows import compare_rows

    rows = evidence.rows
    known = set(signed_rows)
    # Group the stored rows by statement: sort the dictionary indices once, then slice.
    groups: dict[bytes, tuple[int, int]] = {}
    if rows.num_rows:
        col = rows.column("statement_hash").combine_chunks()
        if not pa.types.is_dictionary(col.type):
            col = pc.dictionary_encode(col)
        ids = col.indices
        runs = 1 + pc.sum(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).cast(pa.int64())).as_py() \
            if len(ids) > 1 else 1
        if runs != len(pc.unique(ids)):  # a statement's rows are not contiguous: sort them together
            order = pc.sort_indices(ids)
            rows = rows.take(order)
            ids = ids.take(order)
        start = 0
        for item in pc.value_counts(ids):  # first-appearance order = the order of the runs
            h = col.dictionary[item["values"].as_py()].as_py()
            c = item["counts"].as_py()
            groups[h] = (start, c)
            start += c
    for h, (start, count) in groups.items():
        if h not in known:
            run.fail(RowUnsignedError.step, f"{count} stored row(s) name statement {h.hex()}, which is not a "
                     "verified signed time series", statement_hash=h.hex(), rows=count)
            continue
        signed = signed_rows[h]
        if isinstance(signed, Exception):
            continue
        for f in compare_rows(h, signed, rows.slice(start, count), evidence.window_us):
            run.fail(f.step, f.message, **f.evidence)
    if evidence.window_us is not None:
        for h, signed in signed_rows.items():
            if h not in groups and not isinstance(signed, Exception):
                for f in compare_rows(h, signed, rows.slice(0, 0), evidence.window_us):
                    run.fail(f.step, f.message, **f.evidence)
    if evidence.subject.get("kind") == "row" and rows.num_rows == 0:
        run.fail(RowMissingError.step, f"no stored row {evidence.subject.get('key')!r}",
                 table=evidence.subject.get("table"), key=evidence.subject.get("key"))
    if not any(f.step.startswith("row-") for f in run.failures):
        run.ok("row-value", "row-missing", "row-unsigned")
