"""A recipient's reader of confidential records (issue 18): prove the ciphertext, check the policy,
open the envelope, prove the plaintext against the signed commitment.

`open_record` is pure (its inputs are fetched by the caller: `fetch` reads them from PostgreSQL
and MinIO); it names the first failing step: ``payload-size``/``payload-hash``/
``device-signature`` (the ciphertext against the signed statement, as for anyone), then
``not-a-recipient``/``recipient-revoked`` (the policy as of a height, when a proven state is
given), then the envelope's own steps (``envelope-format``, ``envelope-binding``,
``not-a-recipient``, ``decrypt``, ``plaintext-commitment``). A record whose content was erased
(``policy.erase`` in the proven state, for the record's own device) is ``erased``: an outcome,
not a broken proof.

`judge` gathers the ledger side for a set of records: the stream's policy closure, each
record's anchor record and erasure, all proven at one height against headers verified from
genesis; the height a record is judged at is its proven anchor's (or, not yet anchored, the
proven height: the policy now). `rows_of` turns an opened time series into its signed rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confidential.envelope import CONTENT_TYPE, Opened, OpenError, open_envelope, parse_envelope
from confidential.keys import RecipientKey
from ledger.contracts import confidentiality
from ledger.contracts.anchors import batch_key
from ledger.contracts.confidentiality import erasure_at, grant_status
from storage import key_records
from trust.statement import Statement, verify_statement

from .devices.confidential import ProvenState, proven_state

__all__ = ["Judged", "OpenFailure", "fetch", "judge", "open_record", "prove_plaintexts", "rows_of"]


class OpenFailure(Exception):
    """Opening failed at `step` (the ciphertext's, the policy's or the envelope's; or ``erased``)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass(frozen=True)
class Fetched:
    statement: Statement
    signature: bytes
    payload: bytes
    key_record: bytes | None  # None: no key record (never stored, or erased)
    batch_id: str | None = None  # the batch the database says holds it (checked against the ledger by judge)


def _raw_object(blobs: Any, digest: bytes) -> bytes:
    """The archived object's bytes as stored, unchecked (`open_record` proves them against the
    signed statement and names ``payload-hash``; `BlobStore.get_raw` would refuse first)."""
    from minio.error import S3Error

    from storage.records import raw_key

    response = None
    try:
        response = blobs.client.get_object(blobs.bucket, raw_key(digest))
        return bytes(response.read())
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            raise OpenFailure("not-found", f"no archived payload {raw_key(digest)}") from None
        raise
    finally:
        if response is not None:
            response.close()
            response.release_conn()


def fetch(pool: Any, blobs: Any, statement_hash: bytes) -> Fetched:
    """The statement, signature, payload, key record and batch the system holds for `statement_hash`."""
    from storage.readers import Reader

    rec = Reader(pool).statement(statement_hash)
    if rec is None:
        raise OpenFailure("not-found", f"no statement {statement_hash.hex()}")
    payload = _raw_object(blobs, rec.statement.payload_sha256)
    keys = key_records.read(pool, [statement_hash])[bytes(statement_hash)]
    with pool.connection() as conn:
        row = conn.execute("SELECT batch_id FROM batch_leaves WHERE statement_hash = %s",
                           (bytes(statement_hash),)).fetchone()
    return Fetched(rec.statement, rec.signature, payload, keys, None if row is None else row[0])


@dataclass(frozen=True)
class Judged:
    """The proven ledger side of some records: the state and, per statement hash, the height
    each is judged at and whether that height is its proven anchor's."""

    state: ProvenState
    heights: dict[bytes, tuple[int, bool]]


def judge(client: Any, records: list[tuple[bytes, Statement, bytes, str | None]]) -> Judged:
    """`records`: ``(statement hash, statement, payload, batch id or None)``. Reads each
    envelope's stream from its (public) header; every value is proven at one height."""
    keys: dict[str, None] = {}
    streams: set[str] = set()
    for h, _, payload, batch in records:
        try:
            streams.add(parse_envelope(payload).stream)
        except OpenError:
            pass  # reported by open_record at envelope-format
        keys[confidentiality.erased_key(h)] = None
        if batch is not None:
            keys[batch_key(batch)] = None
    keys.update((confidentiality.stream_key(st), None) for st in sorted(streams))
    for _ in range(3):  # the streams' records name the recipients, whose records name their orgs
        state = proven_state(client, list(keys), strict=False)
        more = [k for st in sorted(streams) for k in confidentiality.policy_closure(state, st) if k not in keys]
        if not more:
            break
        keys.update(dict.fromkeys(more))
    state = proven_state(client, list(keys))
    heights = {}
    for h, _, _, batch in records:
        anc = state.get(batch_key(batch)) if batch is not None else None
        heights[h] = (anc["height"], True) if anc is not None else (state.height, False)
    return Judged(state, heights)


def rows_of(opened: Opened) -> Any:
    """The signed rows (``time_us, sensor, value``, an Arrow table) of an opened time series;
    `OpenFailure` at ``payload-format`` when the plaintext is not one."""
    from trust.errors import PayloadFormatError
    from verify.rows import payload_rows

    if opened.envelope.kind != "timeseries":
        raise OpenFailure("payload-format", f"a {opened.envelope.kind} record has no rows")
    try:
        return payload_rows(opened.plaintext)
    except PayloadFormatError as exc:
        raise OpenFailure("payload-format", str(exc)) from None


def open_record(statement: Statement, signature: bytes, payload: bytes, key_record: bytes | None,
                recipient: RecipientKey, *, stream_state: Any = None, height: int | None = None) -> Opened:
    """Prove and open one confidential record for `recipient` (see the module doc).

    `stream_state` and `height`: a (proven) ledger state and the height the record is judged
    at (its anchor's); with them the recipient must have been granted the envelope's stream
    then (``not-a-recipient`` if never, ``recipient-revoked`` if no longer)."""
    if len(payload) != statement.size:
        raise OpenFailure("payload-size", f"{len(payload)} bytes, the statement says {statement.size}")
    if not statement.matches_payload(payload):
        raise OpenFailure("payload-hash", "the ciphertext is not what the device signed")
    if not verify_statement(statement, signature):
        raise OpenFailure("device-signature", "the device signature does not verify")
    if statement.content_type != CONTENT_TYPE:
        raise OpenFailure("envelope-format", f"not a confidential record ({statement.content_type})")
    try:
        if stream_state is not None:
            erased = erasure_at(stream_state, statement.hash(), statement.device)
            if erased is not None:
                raise OpenFailure("erased", f"erased at height {erased.height} (tx {erased.index}): its keys "
                                            "are destroyed; the ciphertext and its proofs remain")
        if stream_state is not None and height is not None:
            env = parse_envelope(payload)
            status = grant_status(stream_state, env.stream, recipient.id, height)
            if status == "never":
                raise OpenFailure("not-a-recipient", f"{recipient.id!r} was never granted stream {env.stream!r} "
                                                     f"up to height {height}")
            if status == "revoked":
                raise OpenFailure("recipient-revoked", f"{recipient.id!r} was not in force for stream "
                                                       f"{env.stream!r} at height {height}")
        if key_record is None:
            raise OpenFailure("decrypt", "no key record: never stored or erased")
        return open_envelope(payload, key_record, recipient.id, recipient.private, device=statement.device,
                             seq=statement.seq, kind=statement.kind)
    except OpenError as exc:
        raise OpenFailure(exc.step, exc.message) from None


def prove_plaintexts(records: Any, key_records: dict[bytes, bytes | None], recipient: RecipientKey,
                     erased: set[str]) -> tuple[int, list[dict[str, Any]]]:
    """With a recipient key, prove the plaintext of each confidential record of verified evidence
    (`records`: `verify.model.RecordEvidence`; `key_records` by statement hash) against its signed
    commitment: ``(proven, failures)``, each failure ``{statement_hash, step, message}``; records
    in `erased` (hex) are skipped (their keys are destroyed)."""
    import hashlib

    proven, failures = 0, []
    for r in records:
        st = Statement.from_bytes(r.statement)
        h = hashlib.sha256(r.statement).digest()
        if st.content_type != CONTENT_TYPE or h.hex() in erased or r.payload is None:
            continue
        try:
            rec = key_records.get(h)
            if rec is None:
                raise OpenError("decrypt", "no key record: never stored or erased")
            open_envelope(r.payload, rec, recipient.id, recipient.private, device=st.device, seq=st.seq,
                          kind=st.kind)
            proven += 1
        except OpenError as exc:
            failures.append({"statement_hash": h.hex(), "step": exc.step, "message": exc.message})
    return proven, failures
