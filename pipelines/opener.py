"""A recipient's reader of confidential records (issue 18): prove the ciphertext, check the policy,
open the envelope, prove the plaintext against the signed commitment.

`open_record` is pure (its inputs are fetched by the caller: `fetch` reads them from PostgreSQL
and MinIO); it names the first failing step: ``payload-size``/``payload-hash``/
``device-signature`` (the ciphertext against the signed statement, as for anyone), then
``not-a-recipient``/``recipient-revoked`` (the policy as of a height, when a proven state is
given), then the envelope's own steps (``envelope-format``, ``envelope-binding``,
``not-a-recipient``, ``decrypt``, ``plaintext-commitment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confidential.envelope import CONTENT_TYPE, Opened, OpenError, open_envelope
from confidential.keys import RecipientKey
from ledger.contracts.confidentiality import grant_status
from storage.errors import BlobNotFound
from trust.statement import Statement, verify_statement

__all__ = ["OpenFailure", "fetch", "open_record"]


class OpenFailure(Exception):
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


def fetch(reader: Any, blobs: Any, statement_hash: bytes) -> Fetched:
    """The statement, signature, payload and key record the system holds for `statement_hash`."""
    rec = reader.statement(statement_hash)
    if rec is None:
        raise OpenFailure("not-found", f"no statement {statement_hash.hex()}")
    payload = blobs.get_raw(rec.statement.payload_sha256)
    try:
        keys = blobs.get_keys(statement_hash)
    except BlobNotFound:
        keys = None
    return Fetched(rec.statement, rec.signature, payload, keys)


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
        if stream_state is not None and height is not None:
            from confidential.envelope import parse_envelope

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
