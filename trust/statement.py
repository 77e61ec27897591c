"""The device statement: what a device signs about one payload.

``{v, device, seq, ts, kind, content_type, size, payload_sha256}`` encoded
with `trust.canonical` as a map (so one statement has exactly one byte
string).  `Statement.hash()` = SHA-256 of those bytes; it is the Merkle leaf
*data* of the anchored batch (leaf hash = SHA-256(0x00 || statement hash)).

The device signs ``SIGNING_CONTEXT || canonical bytes`` (domain separation:
a statement signature can never be replayed as a signature over anything
else).  In Kafka the payload is the message value, untouched; the statement
travels as one header per field plus the signature (see `to_kafka_headers`).
Layout, header names and test vectors: docs/formats.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, Union

from . import canonical
from .hashes import PayloadDigest, StatementHash, sha256
from .errors import CanonicalError, IdentityError, StatementError
from .identity import KeyPair, public_key_from_did, verify_signature

__all__ = [
    "VERSION",
    "KINDS",
    "ENVELOPE_CONTENT_TYPE",
    "SIGNING_CONTEXT",
    "HEADERS",
    "Statement",
    "sign_statement",
    "verify_statement",
    "to_kafka_headers",
    "from_kafka_headers",
    "StatementError",
]

VERSION = 1
#: Payload kinds, one per raw topic (iiot.<kind>.raw).
KINDS = frozenset({"timeseries", "image", "video"})
#: The content type of a confidential payload (an encryption envelope, docs/formats.md §8): the
#: pipeline and the verifier treat it as an opaque blob, whatever its kind (no rows are parsed).
ENVELOPE_CONTENT_TYPE = "application/vnd.sealstream.envelope.v1"
SIGNING_CONTEXT = b"sealstream/statement/v1\x00"
_MAX_INT = (1 << 63) - 1
_CONTENT_TYPE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_FIELDS = ("v", "device", "seq", "ts", "kind", "content_type", "size", "payload_sha256")

#: Kafka header names, in the order `to_kafka_headers` writes them.
HEADERS = {
    "v": "ss-v",
    "device": "ss-device",
    "seq": "ss-seq",
    "ts": "ss-ts",
    "kind": "ss-kind",
    "content_type": "ss-content-type",
    "size": "ss-size",
    "payload_sha256": "ss-payload-sha256",
    "signature": "ss-sig",
}
_HEADER_TO_FIELD = {h: f for f, h in HEADERS.items()}
_DECIMAL = re.compile(rb"^(?:0|[1-9][0-9]{0,18})$")
_HEX = re.compile(rb"^[0-9a-f]*$")


def _invalid(message: str) -> StatementError:
    return StatementError("invalid-field", message)


def _check_int(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise _invalid(f"{name} must be an int in [0, 2**63), got {value!r}")


@dataclass(frozen=True)
class Statement:
    """A device's signed claim about one payload.

    - ``device``: the device's ``did:key`` id (also the Kafka message key);
    - ``seq``: strictly increasing per device (replays are rejected upstream);
    - ``ts``: milliseconds since the Unix epoch, UTC (Kafka's unit);
    - ``kind``: one of `KINDS`; ``content_type``: a MIME type;
    - ``size`` and ``payload_sha256``: length and SHA-256 of the payload;
    - ``v``: format version, `VERSION`.
    """

    device: str
    seq: int
    ts: int
    kind: str
    content_type: str
    size: int
    payload_sha256: PayloadDigest
    v: int = VERSION
    _bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()
        object.__setattr__(self, "_bytes", canonical.encode(self.to_dict()))

    def _check(self) -> None:
        """Raise `StatementError` unless every field is valid."""
        if self.v != VERSION or type(self.v) is not int:
            raise StatementError("unsupported-version", f"statement version {self.v!r}, want {VERSION}")
        if not isinstance(self.device, str):
            raise _invalid("device must be a did:key id")
        try:
            public_key_from_did(self.device)
        except IdentityError as exc:
            raise _invalid(f"device: {exc}") from None
        _check_int("seq", self.seq)
        _check_int("ts", self.ts)
        _check_int("size", self.size)
        if type(self.kind) is not str or self.kind not in KINDS:
            raise _invalid(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if (
            type(self.content_type) is not str
            or len(self.content_type) > 255
            or not _CONTENT_TYPE.fullmatch(self.content_type)
        ):
            raise _invalid(f"content_type must be 1..255 printable ASCII chars, got {self.content_type!r}")
        if type(self.payload_sha256) is not bytes or len(self.payload_sha256) != 32:
            raise _invalid("payload_sha256 must be 32 bytes")

    @classmethod
    def for_payload(
        cls, device: str, seq: int, ts: int, kind: str, content_type: str, payload: bytes
    ) -> "Statement":
        """The statement describing `payload` (computes size and digest)."""
        return cls(device, seq, ts, kind, content_type, len(payload), PayloadDigest(sha256(payload)))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (bytes stay bytes)."""
        return {
            "v": self.v,
            "device": self.device,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "content_type": self.content_type,
            "size": self.size,
            "payload_sha256": self.payload_sha256,
        }

    def to_bytes(self) -> bytes:
        """Canonical bytes (trust.canonical map of the eight fields)."""
        return self._bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> "Statement":
        """Parse canonical bytes; raise `StatementError` for anything else."""
        try:
            doc = canonical.decode(data)
        except CanonicalError as exc:
            raise StatementError("non-canonical", str(exc)) from None
        if not isinstance(doc, dict):
            raise StatementError("non-canonical", "a statement is a map")
        if "v" in doc and doc["v"] != VERSION:
            raise StatementError("unsupported-version", f"statement version {doc['v']!r}, want {VERSION}")
        if set(doc) != set(_FIELDS):
            missing = sorted(set(_FIELDS) - set(doc))
            extra = sorted(set(doc) - set(_FIELDS))
            raise StatementError("invalid-field", f"missing fields {missing}, unknown fields {extra}")
        # `canonical.decode` accepts exactly the output of `canonical.encode`, so `data` already is
        # the canonical form of `doc`: kept as it is rather than encoded again (the verifier parses
        # one statement per record; tests/trust/test_statement.py checks the two agree)
        stmt = cls.__new__(cls)
        for name, value in doc.items():
            object.__setattr__(stmt, name, value)
        stmt._check()
        object.__setattr__(stmt, "_bytes", bytes(data))
        return stmt

    def hash(self) -> StatementHash:
        """SHA-256 of the canonical bytes: the Merkle leaf data."""
        return StatementHash(sha256(self._bytes))

    def signing_bytes(self) -> bytes:
        """What the device signs: `SIGNING_CONTEXT` || canonical bytes."""
        return SIGNING_CONTEXT + self._bytes

    def matches_payload(self, payload: bytes) -> bool:
        return len(payload) == self.size and sha256(payload) == self.payload_sha256


def sign_statement(stmt: Statement, keypair: KeyPair) -> bytes:
    """The device's 64-byte Ed25519 signature over `stmt`."""
    return keypair.sign(stmt.signing_bytes())


def verify_statement(stmt: Statement, signature: bytes, public_key: Union[bytes, str, None] = None) -> bool:
    """True iff `signature` is valid for `stmt` under `public_key`.

    `public_key` is the key registered for the device (raw 32 bytes or a
    did); by default the key embedded in ``stmt.device``.  Never raises on a
    bad signature; raises `IdentityError` for a malformed key.
    """
    key = stmt.device if public_key is None else public_key
    return verify_signature(key, stmt.signing_bytes(), signature)


def _int_header(value: int) -> bytes:
    return str(value).encode("ascii")


def to_kafka_headers(stmt: Statement, signature: bytes) -> list[tuple[str, bytes]]:
    """Kafka headers carrying `stmt` and its signature.

    Integers are ASCII decimal without sign or leading zeros; the digest and
    the signature are lowercase hex; text is UTF-8.  `from_kafka_headers`
    inverts this exactly.
    """
    if type(signature) is not bytes or len(signature) != 64:
        raise StatementError("invalid-field", "signature must be 64 bytes")
    return [
        ("ss-v", _int_header(stmt.v)),
        ("ss-device", stmt.device.encode("ascii")),
        ("ss-seq", _int_header(stmt.seq)),
        ("ss-ts", _int_header(stmt.ts)),
        ("ss-kind", stmt.kind.encode("ascii")),
        ("ss-content-type", stmt.content_type.encode("ascii")),
        ("ss-size", _int_header(stmt.size)),
        ("ss-payload-sha256", stmt.payload_sha256.hex().encode("ascii")),
        ("ss-sig", signature.hex().encode("ascii")),
    ]


def _malformed(name: str, why: str) -> StatementError:
    return StatementError("malformed-header", f"{name}: {why}")


def _parse_int(name: str, raw: bytes) -> int:
    if not _DECIMAL.fullmatch(raw):
        raise _malformed(name, f"not a canonical decimal integer: {raw[:40]!r}")
    return int(raw)


def _parse_hex(name: str, raw: bytes, size: int) -> bytes:
    if len(raw) != 2 * size or not _HEX.fullmatch(raw):
        raise _malformed(name, f"want {2 * size} lowercase hex digits")
    return bytes.fromhex(raw.decode("ascii"))


def _parse_ascii(name: str, raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _malformed(name, "not ASCII") from None


def from_kafka_headers(
    headers: Union[Sequence[tuple[str, bytes]], Iterable[tuple[str, bytes]], None],
) -> tuple[Statement, bytes]:
    """Rebuild ``(statement, signature)`` from Kafka headers.

    Other headers are ignored (tracing, dead-letter reasons, ...); each of
    the nine `HEADERS` must appear exactly once.  Raises
    `StatementError` with `.reason` ``missing-header``, ``duplicate-header``,
    ``malformed-header``, ``unsupported-version`` or ``invalid-field``.
    Does not check the signature.
    """
    found: dict[str, bytes] = {}
    for item in headers or ():
        try:
            name, value = item
        except (TypeError, ValueError):
            raise StatementError("malformed-header", f"not a (name, value) pair: {item!r}") from None
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name not in _HEADER_TO_FIELD:
            continue
        if value is None or not isinstance(value, (bytes, bytearray, memoryview)):
            raise _malformed(name, "value must be bytes")
        if name in found:
            raise StatementError("duplicate-header", f"{name} appears more than once")
        found[name] = bytes(value)
    missing = [h for h in HEADERS.values() if h not in found]
    if "ss-v" in found:
        if found["ss-v"] != _int_header(VERSION):
            raise StatementError(
                "unsupported-version", f"statement version {found['ss-v'][:20]!r}, want {VERSION}"
            )
    if missing:
        raise StatementError("missing-header", f"missing {', '.join(missing)}")
    stmt = Statement(
        device=_parse_ascii("ss-device", found["ss-device"]),
        seq=_parse_int("ss-seq", found["ss-seq"]),
        ts=_parse_int("ss-ts", found["ss-ts"]),
        kind=_parse_ascii("ss-kind", found["ss-kind"]),
        content_type=_parse_ascii("ss-content-type", found["ss-content-type"]),
        size=_parse_int("ss-size", found["ss-size"]),
        payload_sha256=PayloadDigest(_parse_hex("ss-payload-sha256", found["ss-payload-sha256"], 32)),
    )
    signature = _parse_hex("ss-sig", found["ss-sig"], 64)
    return stmt, signature
