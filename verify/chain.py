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

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ledger import light_client as lc_mod
from ledger.values import Transaction
from ledger.contracts import StateProofError, verify_state_proof
from ledger.contracts.anchors import batch_key
from ledger.contracts.confidentiality import erased_key, erasure_at
from ledger.contracts.registry import ent_key, resolve_key
from trust import canonical
from trust.hashes import RootHash, sha256
from trust.errors import (
    CHAIN_STEPS,
    AnchorMismatchError,
    AnchorTxError,
    CertificateQuorumError,
    DeviceKeyError,
    EvidenceMissingError,
    GenesisError,
    HeaderChainError,
    LeafError,
    LedgerEvidenceError,
    PayloadFormatError,
    ReceiptGatewayError,
    ReceiptLocationError,
    RegistryProofError,
    RowDeviceError,
    RowMissingError,
    RowUnsignedError,
    SealerSetHistoryError,
    SubjectError,
    TrustError,
    TxInBlockError,
    VerificationError,
)
from trust.manifest import ParsedManifest, parse_manifest
from trust.receipt import AnchorRef, SealReceipt, content_address
from trust.statement import ENVELOPE_CONTENT_TYPE, Statement
from trust.verify import check_device_key, check_leaf, verify_record

from .model import BatchEvidence, Evidence, Failure, LedgerEvidence, RecordEvidence, Report
from .subject import BatchSubject, BlobSubject, RangeSubject, RowSubject, Subject, parse_subject, window_of

__all__ = ["LedgerView", "TrustedCheckpoint", "apply_erasures", "erasure_keys", "verify_ledger", "verify"]

_LC_STEPS: dict[type[lc_mod.LightClientError], type[LedgerEvidenceError]] = {
    lc_mod.GenesisMismatch: GenesisError,
    lc_mod.HeaderLinkError: HeaderChainError,
    lc_mod.HeaderEpochError: HeaderChainError,
    lc_mod.SealerSetError: SealerSetHistoryError,
    lc_mod.CertificateInvalid: CertificateQuorumError,
    lc_mod.TxRootError: TxInBlockError,
    lc_mod.TxInclusionError: TxInBlockError,
}
_LC_NAMES = tuple(sorted({c.step for c in _LC_STEPS}))
_MAX_FAILURES = 200


def _ledger_error(exc: lc_mod.LightClientError) -> LedgerEvidenceError:
    err = _LC_STEPS.get(type(exc), HeaderChainError)(str(exc))
    err.height = exc.height  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class TrustedCheckpoint:
    """A header hash the user trusts at `height` (out of band).

    The verified chain must pass through it.  It is a trust anchor on its own:
    the light client checks every ``prev_hash`` link from the genesis up, so a
    trusted header at `height` authenticates the headers below it and the
    genesis itself (block 1's ``prev_hash`` is the genesis hash); headers above
    it are checked by their certificates as always."""

    height: int
    header_hash: bytes

    @classmethod
    def parse(cls, text: str) -> "TrustedCheckpoint":
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
    """A read-only state view over verified state values (what `registry.resolve` reads).

    A key the evidence does not prove is refused (`RegistryProofError`), never defaulted."""

    def __init__(self, values: dict[str, Optional[bytes]]) -> None:
        self._values = values

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._values:
            raise RegistryProofError(f"state value {key!r} is not in the evidence")
        raw = self._values[key]
        return default if raw is None else canonical.decode(raw)

    peek = get

    def proves(self, key: str) -> bool:
        """True when the evidence proves `key` (its value, or its absence)."""
        return key in self._values


@dataclass
class LedgerView:
    """A verified ledger: its light client, the state values that checked out and the one
    height they are proven at (None: the evidence proves no state)."""

    client: lc_mod.LightClient
    state: _ProvenState
    genesis_hash: bytes
    state_height: Optional[int] = None
    #: resolutions already made from `state` (read-only: the same question, the same answer)
    resolved: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)


def verify_ledger(ledger: LedgerEvidence, *, trusted_genesis_hash: Optional[bytes] = None,
                  checkpoint: Optional[TrustedCheckpoint] = None) -> LedgerView:
    """Follow the headers from the genesis and check every state value; raise a
    `LedgerEvidenceError` subclass naming the step that failed.

    Every state value must be proven at **one** height (one certified state): values
    proven at different heights could combine a key index of one time with an entity
    record of another, e.g. a device record from before its revocation."""
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
    heights = sorted({sv.height for sv in ledger.state})
    if len(heights) > 1:
        raise RegistryProofError(f"state values are proven at heights {heights[:5]}: a verifier needs them "
                                 "from one certified state")
    values: dict[str, Optional[bytes]] = {}
    for sv in ledger.state:
        if sv.key in values:
            raise RegistryProofError(f"state value {sv.key!r} is given twice")
        hdr = client.headers.get(sv.height)
        if hdr is None:
            raise RegistryProofError(f"state value {sv.key!r} is proven at height {sv.height}, "
                                     f"past the {client.height} certified headers")
        if not isinstance(sv.proof, dict) or sv.proof.get("key") != sv.key or sv.proof.get("value") != sv.value:
            raise RegistryProofError(f"state value {sv.key!r}: the proof is for another key or value")
        try:
            verify_state_proof(hdr.state_root, sv.key, sv.value, sv.proof)
        except (StateProofError, TypeError, KeyError, ValueError) as exc:
            raise RegistryProofError(f"state value {sv.key!r} at height {sv.height}: {exc}") from None
        values[sv.key] = sv.value
    return LedgerView(client, _ProvenState(values), ledger.genesis.genesis_hash(),
                      heights[0] if heights else None)


@dataclass(frozen=True)
class _Anchor:
    height: int
    tx_index: int
    root: RootHash
    tree_size: int
    submitter: str  # the did that signed the ANCHOR tx
    gateway: str  # the registry id the ANCHOR names


#: batch id -> its verified anchor and manifest
_Batches = dict[str, tuple[_Anchor, ParsedManifest]]


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
    root, size, gateway = p.get("root"), p.get("tree_size"), p.get("gateway")
    if type(root) is not bytes or len(root) != 32 or type(size) is not int or not isinstance(gateway, str):
        raise AnchorTxError(f"the ANCHOR of {batch_id!r} has no valid root/tree_size/gateway")
    rec = view.state.get(batch_key(batch_id))
    if not isinstance(rec, dict) or rec.get("tx_id") != tx.tx_id or rec.get("root") != root \
            or rec.get("height") != a.proof.height or rec.get("index") != a.proof.index \
            or rec.get("submitter") != tx.submitter or rec.get("gateway") != gateway:
        raise AnchorTxError(f"the anchors state does not record this transaction as batch {batch_id!r}'s "
                            "accepted anchor (refused or another tx)")
    return _Anchor(a.proof.height, a.proof.index, RootHash(root), size, tx.submitter, gateway)


def _as_of_anchor(view: LedgerView, did: str, anchor: _Anchor, role: str) -> Any:
    """`did`'s resolution as the ANCHOR tx saw it, from a state proven at or after the anchor
    (so it also shows any rotation or revocation that took effect before the anchor)."""
    if view.state_height is None or view.state_height < anchor.height:
        raise RegistryProofError(
            f"the registry is proven at height {view.state_height}, before the anchor at height {anchor.height}: "
            f"it cannot show that the {role} key of {did} was still in force there")
    if not isinstance(did, str):
        return resolve_key(view.state, did, anchor.height, anchor.tx_index)
    at = (did, anchor.height, anchor.tx_index)  # only answers are kept; a refusal is asked again
    if at not in view.resolved:
        view.resolved[at] = resolve_key(view.state, did, anchor.height, anchor.tx_index)
    return view.resolved[at]


def _active_org(view: LedgerView, org: Optional[str], anchor: _Anchor) -> bool:
    """`org` is an organisation not revoked at the ANCHOR's (height, tx index): the rule of
    `resolve_key` (a revocation counts from its own position on), so an org revoked after the
    anchor leaves the batches anchored before it verified, like a device revoked after it."""
    if not isinstance(org, str):
        return False
    at = ("org", org, anchor.height, anchor.tx_index)
    if at not in view.resolved:
        rec = view.state.get(ent_key(org))
        revoked = rec.get("revoked") if isinstance(rec, dict) else None
        in_force = revoked is None or (
            isinstance(revoked, (list, tuple)) and len(revoked) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in revoked)
            and not tuple(revoked) < (anchor.height, anchor.tx_index))
        view.resolved[at] = isinstance(rec, dict) and rec.get("type") == "org" and in_force
    return bool(view.resolved[at])  # stored by this function: a bool


def _device_key(view: LedgerView, stmt: Statement, anchor: _Anchor) -> str:
    """The key a statement must verify under: `stmt.device`, bound to a ``device`` entity of an
    active org and in force at the ANCHOR's (height, tx index)."""
    r = _as_of_anchor(view, stmt.device, anchor, "device")
    if r is not None and r.type != "device":
        raise DeviceKeyError(f"{stmt.device} is the key of {r.type} {r.id!r}, not of a device: a statement "
                             "must be signed by a device key")
    if r is not None and r.status == "active" and not _active_org(view, r.org, anchor):
        raise DeviceKeyError(f"device {r.id!r} belongs to {r.org!r}, which is not an active organisation")
    status, key = ("unknown", None) if r is None else (r.status, r.key)
    return check_device_key(stmt.device, status, key)


def _check_receipt(view: LedgerView, stmt: Statement, receipt: SealReceipt, anchor: _Anchor) -> None:
    """The seal receipt binds: its location is the payload's content address, and its signer is
    an active ``gateway`` at the anchor and the very gateway that submitted the ANCHOR
    (`receipt` parsed and its signature checked by `verify_record` before)."""
    want = content_address(stmt.payload_sha256)
    if receipt.location != want:
        raise ReceiptLocationError(f"the receipt says the payload is at {receipt.location!r}, not at its "
                                   f"content address {want!r}")
    r = _as_of_anchor(view, receipt.gateway, anchor, "gateway")
    if r is None or r.type != "gateway" or r.status != "active":
        what = "unregistered" if r is None else f"{r.type or 'unknown'} {r.id!r} ({r.status})"
        raise ReceiptGatewayError(f"the receipt is signed by {receipt.gateway}, which is not an active gateway "
                                  f"at the anchor (it resolves as {what})")
    if receipt.gateway != anchor.submitter or r.id != anchor.gateway:
        raise ReceiptGatewayError(f"the receipt is signed by gateway {r.id!r}, but the batch was anchored by "
                                  f"gateway {anchor.gateway!r}: the anchoring gateway must seal its records")
    if not _active_org(view, r.org, anchor):
        raise ReceiptGatewayError(f"gateway {r.id!r} belongs to {r.org!r}, which is not an active organisation")


class _Run:
    """Accumulates passed steps and failures while verifying."""

    def __init__(self) -> None:
        self.passed: set[str] = set()
        self.failures: list[Failure] = []
        self.failed_count = 0

    def ok(self, *steps: str) -> None:
        self.passed.update(steps)

    def fail(self, step: str, message: str, **evidence: Any) -> None:
        self.fail_at(len(self.failures), step, message, **evidence)

    def fail_at(self, at: int, step: str, message: str, **evidence: Any) -> None:
        """A failure reported as the `at`-th (a record's last step, checked after all records, keeps
        the place it would have had: the first failure is the verdict's)."""
        while True:  # errors prefix their step ("step: ..."), and wrapped ones once more
            head, sep, rest = message.partition(": ")
            if not sep or head not in (step, *_LC_NAMES):
                break
            message = rest
        self.failed_count += 1
        if at < _MAX_FAILURES:
            self.failures.insert(at, Failure(step, message, evidence))
            del self.failures[_MAX_FAILURES:]

    def passed_steps(self) -> tuple[str, ...]:
        failed = {f.step for f in self.failures}
        return tuple(s for s in CHAIN_STEPS if s in self.passed and s not in failed)


@dataclass
class _Checked:
    """What one record's verification established (`stmt` None: the statement did not parse)."""

    statement_hash: bytes
    stmt: Optional[Statement]
    batch_id: Optional[str]
    leaf_index: Optional[int]
    verified: bool


def _record_failure(run: _Run, exc: VerificationError, rec_ev: RecordEvidence, stmt_hash: str) -> None:
    run.fail(exc.step, str(exc), statement_hash=stmt_hash, batch_id=rec_ev.batch_id, leaf_index=rec_ev.leaf_index)


_NO_ANCHOR = "no trust anchor: pin the genesis (--genesis-hash HEX or --genesis FILE) or a checkpoint " \
             "(--checkpoint HEIGHT:HASH); --insecure-unpinned verifies against the evidence's own genesis"


def verify(evidence: Evidence, *, trusted_genesis_hash: Optional[bytes] = None,
           checkpoint: Optional[TrustedCheckpoint] = None, insecure_unpinned: bool = False,
           progress: Optional[Callable[[int], None]] = None) -> Report:
    """Check everything in `evidence` against its claimed subject; a `Report` with every failure
    found (capped).  A trust anchor (genesis hash or checkpoint) is required unless
    `insecure_unpinned`, and the report then says ``pinned: false``."""
    run = _Run()
    pinned = trusted_genesis_hash is not None or checkpoint is not None
    counts = {"records": len(evidence.records), "batches": len(evidence.batches),
              "rows": 0 if evidence.rows is None else evidence.rows.num_rows}
    genesis_hex = evidence.ledger.genesis.genesis_hash().hex()

    def done(height: int, proven: Optional[dict[str, Any]] = None,
             erased: tuple[dict[str, Any], ...] = ()) -> Report:
        counts["failures"] = run.failed_count
        return Report(claimed, run.passed_steps(), tuple(run.failures), counts, genesis_hex, height,
                      pinned=pinned, proven=proven if not run.failures else None, erased=erased)

    claimed = evidence.subject if isinstance(evidence.subject, dict) else {"kind": None}
    try:
        subject = parse_subject(evidence.subject)
        claimed = subject.to_json()
    except SubjectError as exc:
        run.fail(exc.step, str(exc))
        return done(0)
    if not pinned and not insecure_unpinned:
        run.fail(GenesisError.step, _NO_ANCHOR)
        return done(0)
    try:
        view = verify_ledger(evidence.ledger, trusted_genesis_hash=trusted_genesis_hash, checkpoint=checkpoint)
    except VerificationError as exc:
        run.fail(exc.step, str(exc), height=getattr(exc, "height", None))
        return done(0)
    run.ok("genesis", "header-chain", "sealer-set", "certificate")
    if evidence.ledger.state:
        run.ok("registry-proof")

    batches: dict[str, tuple[_Anchor, ParsedManifest]] = {}
    seen_batches: set[str] = set()
    for b in evidence.batches:
        if b.batch_id in seen_batches:
            run.fail(SubjectError.step, f"batch {b.batch_id!r} is given twice", batch_id=b.batch_id)
            continue
        seen_batches.add(b.batch_id)
        got = _verify_batch(run, view, evidence.ledger, b)
        if got is not None:
            batches[b.batch_id] = got

    if isinstance(subject, BatchSubject):
        _verify_complete(run, batches, evidence.records)
    signed_rows: dict[bytes, Any] = {}
    checked: list[_Checked] = []
    seen: set[bytes] = set()
    pending: list[_RowsPending] = []
    for n, rec_ev in enumerate(evidence.records):
        c = _verify_record(run, view, batches, rec_ev, pending, evidence.rows is not None)
        if c.statement_hash in seen:
            run.fail(SubjectError.step, f"statement {c.statement_hash.hex()} is given twice",
                     statement_hash=c.statement_hash.hex())
            c.verified = False
        seen.add(c.statement_hash)
        checked.append(c)
        if progress is not None:
            progress(n + 1)
    _signed_rows(run, pending, signed_rows)
    if evidence.rows is not None:
        devices = {c.statement_hash: c.stmt.device for c in checked if c.verified and c.stmt is not None}
        _verify_rows(run, evidence.rows, subject, signed_rows, devices)
    proven = _verify_subject(run, subject, evidence, checked, batches)
    erased = tuple(e.to_json() for c in checked if c.verified and c.stmt is not None
                   and c.stmt.content_type == ENVELOPE_CONTENT_TYPE and view.state.proves(erased_key(c.statement_hash))
                   for e in [erasure_at(view.state, c.statement_hash, c.stmt.device)] if e is not None)
    return done(view.client.height, proven, erased)


def erasure_keys(evidence: Evidence) -> list[str]:
    """The state keys that say whether the confidential records of `evidence` were erased
    (``pol/erased/<statement hash>``): what a verifier asks the ledger for, later than the
    evidence was collected (`apply_erasures`)."""
    out = []
    for r in evidence.records:
        try:
            st = Statement.from_bytes(r.statement)
        except TrustError:
            continue
        if st.content_type == ENVELOPE_CONTENT_TYPE:
            out.append(erased_key(sha256(r.statement)))
    return out


def apply_erasures(report: Report, evidence: Evidence, fresh: LedgerEvidence, *,
                   trusted_genesis_hash: Optional[bytes] = None,
                   checkpoint: Optional[TrustedCheckpoint] = None) -> Report:
    """`report` (of `evidence`) with the erasures a later ledger state proves: `fresh` holds
    certified headers from the same genesis and the `erasure_keys` values proven at one height
    (an offline bundle exported before an erasure cannot know of it). A `fresh` that does not
    verify, or another genesis, is a failure at its step; a failed report is returned as is."""
    if not report.ok:
        return report
    import dataclasses

    def failed(step: str, message: str) -> Report:
        return dataclasses.replace(report, proven=None, failures=(Failure(step, message, {"erasure_check": True}),))

    if fresh.genesis.genesis_hash() != evidence.ledger.genesis.genesis_hash():
        return failed(GenesisError.step, "the ledger asked about erasures has another genesis than the evidence")
    try:
        view = verify_ledger(fresh, trusted_genesis_hash=trusted_genesis_hash
                             if trusted_genesis_hash is not None or checkpoint is not None
                             else evidence.ledger.genesis.genesis_hash(), checkpoint=checkpoint)
    except VerificationError as exc:
        return failed(exc.step, f"the erasure check: {exc}")
    have = {e["statement_hash"] for e in report.erased}
    found = list(report.erased)
    for r in evidence.records:
        st = Statement.from_bytes(r.statement)
        h = sha256(r.statement)
        if st.content_type != ENVELOPE_CONTENT_TYPE or h.hex() in have:
            continue
        if not view.state.proves(erased_key(h)):
            return failed(RegistryProofError.step, f"the erasure check: no proof for {erased_key(h)!r}")
        e = erasure_at(view.state, h, st.device)
        if e is not None:
            found.append(e.to_json())
    return dataclasses.replace(report, erased=tuple(found))


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


def _verify_complete(run: _Run, batches: _Batches, records: tuple[RecordEvidence, ...]) -> None:
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


@dataclass
class _RowsPending:
    """A verified time-series record whose payload rows are still to be read (`_signed_rows`)."""

    checked: _Checked
    payload: bytes
    failure_at: int  # where its failure goes in the report: after those of the records before it


def _signed_rows(run: _Run, pending: list[_RowsPending], signed_rows: dict[bytes, Any]) -> None:
    """The last step of each verified time-series record, for all of them at once (`payload_rows_many`:
    its per-payload answers, computed together): its signed rows, or the record fails at
    ``payload-format``, placed in the report where checking it record by record would have put it."""
    from .rows import payload_rows_many

    shift = 0
    for p, got in zip(pending, payload_rows_many([p.payload for p in pending])):
        signed_rows[p.checked.statement_hash] = got
        if isinstance(got, PayloadFormatError):
            c = p.checked
            c.verified = False
            run.fail_at(p.failure_at + shift, got.step, str(got), statement_hash=c.statement_hash.hex(),
                        batch_id=c.batch_id, leaf_index=c.leaf_index)
            shift += 1
        else:
            run.ok("payload-format")


def _verify_record(run: _Run, view: LedgerView, batches: _Batches, rec_ev: RecordEvidence,
                   pending: list[_RowsPending], want_rows: bool) -> _Checked:
    stmt_hash = sha256(rec_ev.statement)
    hx = stmt_hash.hex()
    out = _Checked(stmt_hash, None, rec_ev.batch_id, rec_ev.leaf_index, False)
    try:
        out.stmt = Statement.from_bytes(rec_ev.statement)
    except TrustError:
        pass  # reported below as statement-format, in the chain's order
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
            if out.stmt is None:
                raise DeviceKeyError("the statement does not parse")
            key = _device_key(view, out.stmt, anchor)
        except (DeviceKeyError, RegistryProofError, TrustError) as exc:
            # Report payload/format failures before the key, as the chain orders them.
            early = verify_record(rec_ev.payload, rec_ev.statement, rec_ev.signature, rec_ev.receipt, ref,
                                  rec_ev.proof, root=anchor.root)
            if early.error is not None and early.failed_step in ("statement-format", "payload-size", "payload-hash"):
                raise early.error from None
            if isinstance(exc, VerificationError):
                raise
            raise DeviceKeyError(str(exc)) from None
        run.ok("device-key")
        check_leaf(manifest.leaves, rec_ev.leaf_index, stmt_hash)
        try:  # parsed once here (a malformed receipt is left to verify_record: receipt-format)
            receipt: Any = SealReceipt.from_bytes(rec_ev.receipt)
        except TrustError:
            receipt = rec_ev.receipt
        result = verify_record(rec_ev.payload, out.stmt, rec_ev.signature, receipt, ref,
                               rec_ev.proof, device_key=key, root=anchor.root)
        run.ok(*result.passed)
        result.raise_for_failure()
        _check_receipt(view, out.stmt, receipt, anchor)
        run.ok("leaf", "receipt-location", "receipt-gateway")
        out.verified = True
        if want_rows and out.stmt.kind == "timeseries" and out.stmt.content_type != ENVELOPE_CONTENT_TYPE:
            pending.append(_RowsPending(out, rec_ev.payload, len(run.failures)))
    except VerificationError as exc:
        _record_failure(run, exc, rec_ev, hx)
    return out


def _groups(rows: Any, with_ids: bool = False) -> tuple[Any, ...]:
    """`rows` sorted so each statement's rows are contiguous, and ``hash -> (start, count)``
    (`with_ids`: also each row's statement number and the hash of each number)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    groups: dict[Optional[bytes], tuple[int, int]] = {}
    if not rows.num_rows:
        return (rows, groups, None, []) if with_ids else (rows, groups)
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
    hashes = col.dictionary.to_pylist()
    counted = pc.value_counts(ids)  # first-appearance order = the order of the runs
    for v, c in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()):
        groups[None if v is None else hashes[v]] = (start, c)
        start += c
    return (rows, groups, ids, hashes) if with_ids else (rows, groups)


def _verify_rows(run: _Run, rows: Any, subject: Subject, signed_rows: dict[bytes, Any],
                 devices: dict[bytes, str]) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from .rows import all_identical, compare_rows, plain

    window = window_of(subject)
    if "device" not in rows.schema.names:
        run.fail(RowDeviceError.step, "the stored rows carry no device column: which device a row is "
                 "attributed to cannot be checked")
        return
    rows, groups, ids, hashes = _groups(rows, with_ids=True)
    if isinstance(subject, RangeSubject) and rows.num_rows:
        dev = rows.column("device").combine_chunks()
        wrong = pc.sum(pc.invert(pc.fill_null(pc.equal(plain(dev), subject.device), False)).cast("int64")).as_py()
        if wrong:
            run.fail(RowDeviceError.step, f"{wrong} stored row(s) in the range are attributed to another device "
                     f"than {subject.device}", device=subject.device, rows=wrong)
        t = rows.column("time_us").combine_chunks()
        outside = pc.sum(pc.invert(pc.and_(pc.greater_equal(t, subject.from_us),
                                           pc.less(t, subject.to_us))).cast("int64")).as_py()
        if outside:
            run.fail(SubjectError.step, f"{outside} stored row(s) lie outside the subject's window",
                     rows=outside)
    # All statements at once first; only if that cannot say "all rows match" is each one compared
    # on its own (which names every failure).
    fast = bool(groups) and all(h in devices and isinstance(signed_rows.get(h), pa.Table) for h in groups) \
        and all_identical(rows, ids, [signed_rows[h] for h in groups], [c for _, c in groups.values()],
                          [devices.get(h) for h in hashes])
    for h, (start, count) in () if fast else groups.items():
        if h not in devices:
            run.fail(RowUnsignedError.step, f"{count} stored row(s) name statement {h.hex()}, which is not a "
                     "verified signed time series", statement_hash=h.hex(), rows=count)
            continue
        signed = signed_rows.get(h)
        if signed is None or isinstance(signed, Exception):
            run.fail(RowUnsignedError.step, f"{count} stored row(s) name statement {h.hex()}, which signed no "
                     "time series", statement_hash=h.hex(), rows=count)
            continue
        part = rows.slice(start, count)
        dev = part.column("device").combine_chunks()
        same = pc.fill_null(pc.equal(plain(dev), devices[h]), False)
        if not pc.all(same).as_py():
            bad = pc.sum(pc.invert(same).cast("int64")).as_py()
            run.fail(RowDeviceError.step, f"{bad} stored row(s) of statement {h.hex()} are attributed to another "
                     f"device than its signer {devices[h]}", statement_hash=h.hex(), rows=bad)
        for f in compare_rows(h, signed, part, window):
            run.fail(f.step, f.message, **f.evidence)
    if window is not None:
        for h, signed in signed_rows.items():
            if h not in groups and not isinstance(signed, Exception):
                for f in compare_rows(h, signed, rows.slice(0, 0), window):
                    run.fail(f.step, f.message, **f.evidence)
    if not any(f.step.startswith("row-") for f in run.failures):
        run.ok("row-value", "row-missing", "row-unsigned", "row-device")


def _outside(subject: Subject, c: _Checked) -> bool:
    if c.stmt is None:
        return False  # failed statement-format already
    if isinstance(subject, BlobSubject):
        return c.stmt.payload_sha256 != subject.sha256
    if isinstance(subject, RowSubject):
        return c.statement_hash != subject.statement_hash
    if isinstance(subject, RangeSubject):
        return c.stmt.device != subject.device
    return c.batch_id != subject.batch_id


def _verify_subject(run: _Run, subject: Subject, evidence: Evidence, checked: list[_Checked],
                    batches: dict[str, tuple[_Anchor, ParsedManifest]]) -> Optional[dict[str, Any]]:
    """Refuse (step ``subject``) unless the verified content covers the claimed subject and the
    evidence holds nothing outside it; return the subject as proven."""
    before = run.failed_count
    outside = [c.statement_hash.hex() for c in checked if _outside(subject, c)]
    if outside:
        run.fail(SubjectError.step, f"{len(outside)} record(s) in the evidence are not about the subject "
                 f"{subject.to_json()}", statement_hash=outside[:20])
    used = {c.batch_id for c in checked}
    if isinstance(subject, BatchSubject):
        used = {subject.batch_id}
    stray = sorted({b.batch_id for b in evidence.batches} - used)
    if stray:
        run.fail(SubjectError.step, f"batch(es) {stray[:5]} in the evidence hold no record of the subject",
                 batch_id=stray[:20])
    ok = [c for c in checked if c.verified and not _outside(subject, c)]
    # A record that failed is already a failure; coverage is reported on its own only when every
    # record verified (so a verdict with no failure always covers its subject).
    quiet = any(not c.verified for c in checked)
    if not ok:
        if not quiet:
            run.fail(SubjectError.step, f"no verified record covers the subject {subject.to_json()}")
        return None
    rows = evidence.rows
    nrows = 0 if rows is None else rows.num_rows
    if isinstance(subject, BlobSubject):
        proven: dict[str, Any] = {"kind": "blob", "sha256": subject.sha256.hex(),
                        "statements": [c.statement_hash.hex() for c in ok],
                        "devices": sorted({c.stmt.device for c in ok if c.stmt}),
                        "batches": sorted({c.batch_id for c in ok if c.batch_id})}
    elif isinstance(subject, RowSubject):
        c = ok[0]
        proven = {"kind": "row", "table": subject.table, "key": subject.key,
                  "device": c.stmt.device if c.stmt else None,
                  "batch_id": c.batch_id, "leaf_index": c.leaf_index}
        if subject.table == "readings":
            _row_covered(run, subject, rows)
        elif subject.table == "blobs" and c.stmt is not None and c.stmt.kind == "timeseries" \
                and c.stmt.content_type != ENVELOPE_CONTENT_TYPE:
            run.fail(SubjectError.step, f"statement {subject.key} is a time series, not a blob")
        elif nrows:
            run.fail(SubjectError.step, f"a {subject.table} row subject carries {nrows} stored reading(s)")
    elif isinstance(subject, RangeSubject):
        if rows is None:
            run.fail(SubjectError.step, "a range subject needs the stored rows of the range")
        proven = {"kind": "range", "device": subject.device, "from": subject.start, "to": subject.end,
                  "statements": len(ok), "rows": nrows}
    else:
        got = batches.get(subject.batch_id)
        if got is None:
            run.fail(SubjectError.step, f"batch {subject.batch_id!r} itself did not verify", batch_id=subject.batch_id)
            return None
        anchor, manifest = got
        covered = {c.statement_hash for c in ok if c.batch_id == subject.batch_id}
        missing = [i for i, leaf in enumerate(manifest.leaves) if leaf not in covered]
        if missing and not quiet:
            run.fail(SubjectError.step, f"{len(missing)} leaf/leaves of batch {subject.batch_id!r} have no "
                     "verified record", batch_id=subject.batch_id, leaf_index=missing[:20])
        elif missing:
            return None
        if rows is None:
            run.fail(SubjectError.step, "a batch subject needs the stored rows of its time series")
        proven = {"kind": "batch", "batch_id": subject.batch_id, "root": anchor.root.hex(),
                  "height": anchor.height, "tx_index": anchor.tx_index, "leaves": len(manifest.leaves),
                  "rows": nrows}
    if run.failed_count == before:
        run.ok(SubjectError.step)
    return proven


def _row_covered(run: _Run, subject: RowSubject, rows: Any) -> None:
    """A readings row subject: the stored rows are exactly that one row."""
    from .rows import plain

    if rows is None or rows.num_rows == 0:
        run.fail(RowMissingError.step, f"no stored row {subject.key!r}", table=subject.table, key=subject.key)
        return
    hs = plain(rows.column("statement_hash").combine_chunks())
    pairs = set(zip(map(bytes, hs.to_pylist()), rows.column("row_index").to_pylist()))
    if pairs != {(subject.statement_hash, subject.row_index)} or rows.num_rows != 1:
        run.fail(SubjectError.step, f"the stored rows given are not exactly row {subject.key}",
                 rows=rows.num_rows)
