"""The device side of a confidential stream, pure (issue 18): seal, sign, headers; recipients files.

`seal_and_sign` encrypts a payload for the recipients in force (`confidential.envelope.seal`),
signs the statement over the *envelope* with any signer (``sign(bytes) -> 64-byte signature``:
a `trust.identity.KeyPair`, an edge key file or a PKCS#11 token) and returns the Kafka value and
headers: the statement's ``ss-*`` headers then ``ss-keys`` (the key record, not signed). The
simulator (`pipelines.devices.confidential.seal_confidential`) and the edge SDK
(`edge.sdk.seal_confidential`) both call it, so the wire format is one.

A device that cannot read the ledger (the edge: it may import only `trust` and `confidential`)
takes its recipients from a **recipients file**, UTF-8 JSON written by
``sealstream data recipients --stream S --json --out FILE`` from the policy proven on chain::

    {"v": 1, "stream": "line-3", "height": 812,
     "recipients": [{"id": "qa-team", "org": "operator", "key": "<64 hex X25519 public key>"}]}

or from **recipient public key files** (``{"v": 1, "type": "x25519", "id", "public"}``: a
recipient key file without its secret, see `public_key_doc`). Either is trusted as given: whoever
writes it chooses who can read; docs/edge.md says how to keep it current.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trust.statement import Statement, to_kafka_headers

from .envelope import CONTENT_TYPE, DEFAULT_CHUNK_SIZE, KEYS_HEADER, Sealed, seal

__all__ = ["RecipientsFileError", "SealedMessage", "load_recipients", "public_key_doc", "recipients_doc",
           "seal_and_sign"]


@dataclass(frozen=True)
class SealedMessage:
    """A confidential message ready for Kafka: value = the envelope, headers (statement + ``ss-keys``)."""

    statement: Statement
    signature: bytes
    envelope: bytes
    headers: tuple[tuple[str, bytes], ...]
    sealed: Sealed


def seal_and_sign(sign: Callable[[bytes], bytes], did: str, seq: int, ts_ms: int, kind: str, content_type: str,
                  plaintext: bytes, *, stream: str, recipients: Sequence[tuple[str, bytes]],
                  chunk_size: int = DEFAULT_CHUNK_SIZE) -> SealedMessage:
    """Encrypt `plaintext` (of MIME `content_type`) for `recipients` ``(id, X25519 public key)``, sign
    the statement over the envelope as message `seq` of device `did`; the Kafka value and headers."""
    sealed = seal(plaintext, stream=stream, device=did, seq=seq, kind=kind, content_type=content_type,
                  recipients=list(recipients), chunk_size=chunk_size)
    stmt = Statement.for_payload(did, seq, ts_ms, kind, CONTENT_TYPE, sealed.envelope)
    sig = sign(stmt.signing_bytes())
    headers = tuple(to_kafka_headers(stmt, sig)) + ((KEYS_HEADER, sealed.keys.to_bytes()),)
    return SealedMessage(stmt, sig, sealed.envelope, headers, sealed)


class RecipientsFileError(ValueError):
    """A recipients file or recipient public key file that cannot be used (the message says why)."""


def recipients_doc(stream: str, height: int, recipients: Sequence[tuple[str, str, bytes]]) -> dict[str, Any]:
    """The recipients file of `stream` as proven at `height`: ``(id, org, X25519 public key)`` each."""
    return {"v": 1, "stream": stream, "height": height,
            "recipients": [{"id": i, "org": o, "key": k.hex()} for i, o, k in sorted(recipients)]}


def public_key_doc(recipient_id: str, public: bytes) -> dict[str, Any]:
    """A recipient public key file (what a recipient hands a device team; no secret)."""
    return {"v": 1, "type": "x25519", "id": recipient_id, "public": public.hex()}


def _key(hexed: object, where: str) -> bytes:
    if not isinstance(hexed, str):
        raise RecipientsFileError(f"{where}: the key must be 64 hex characters")
    try:
        key = bytes.fromhex(hexed)
    except ValueError:
        raise RecipientsFileError(f"{where}: the key is not hex") from None
    if len(key) != 32:
        raise RecipientsFileError(f"{where}: the key must be 32 bytes (X25519)")
    return key


def load_recipients(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                    stream: str) -> list[tuple[str, bytes]]:
    """``(id, X25519 public key)`` of each recipient, from one recipients file (its ``stream`` must be
    `stream`) or from a list of recipient public key files. Raises `RecipientsFileError`."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        doc = _read(path)
        if doc.get("v") != 1 or not isinstance(doc.get("recipients"), list):
            raise RecipientsFileError(f"{path}: not a recipients file (v 1 with a list of recipients)")
        if doc.get("stream") != stream:
            raise RecipientsFileError(f"{path}: recipients of stream {doc.get('stream')!r}, not {stream!r}")
        out = []
        for i, r in enumerate(doc["recipients"]):
            if not isinstance(r, dict) or not isinstance(r.get("id"), str) or not r["id"]:
                raise RecipientsFileError(f"{path}: recipient {i} has no id")
            out.append((r["id"], _key(r.get("key"), f"{path}: recipient {r['id']!r}")))
    else:
        out = []
        for p in source:
            path = Path(p)
            doc = _read(path)
            if doc.get("v") != 1 or doc.get("type") != "x25519" or not isinstance(doc.get("id"), str):
                raise RecipientsFileError(f"{path}: not a recipient key file (v 1, type x25519, id, public)")
            out.append((doc["id"], _key(doc.get("public"), str(path))))
    ids = [i for i, _ in out]
    if not out:
        raise RecipientsFileError(f"no recipient for stream {stream!r}: an envelope nobody could open")
    if len(set(ids)) != len(ids):
        raise RecipientsFileError(f"a recipient is named twice for stream {stream!r}")
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise RecipientsFileError(f"{path}: {exc.strerror or exc}") from None
    except ValueError:
        raise RecipientsFileError(f"{path}: not JSON") from None
    if not isinstance(doc, dict):
        raise RecipientsFileError(f"{path}: not a JSON object")
    return doc
