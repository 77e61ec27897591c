"""The confidential-payload envelope, version 1 (docs/formats.md section 8).

Envelope (the payload the device signs and the pipeline stores)::

    "SSE1" || u32be(len(header)) || header || chunk_0 || ... || chunk_{n-1}

``header`` is the `trust.canonical` map ``{v, alg, stream, device, seq, kind, content_type,
size, chunk_size, commitment}`` (``size``: plaintext bytes; ``content_type``: the plaintext's
type; ``commitment``: SHA-256(salt || plaintext), 32-byte salt). The plaintext is cut into
``n = max(1, ceil(size / chunk_size))`` chunks of ``chunk_size`` bytes (the last one shorter,
possibly empty); chunk ``i`` is AES-256-GCM under the data key with nonce = ``i`` as 12 bytes
big-endian (the key is fresh per envelope, so a counter never repeats) and AAD =
``"sealstream/envelope/v1/chunk" 0x00 || SHA-256(header) || u64be(i) || final`` (final = 1 for
the last chunk, else 0): a chunk cannot be moved, dropped, truncated or taken from another
envelope without failing its tag.

Key record (travels and is stored apart from the envelope, never signed): the canonical map
``{v, envelope: SHA-256(envelope), wraps: [{recipient, key, ct}]}`` (sorted by recipient),
``ct`` = HPKE ``enc || ciphertext`` of ``data key || salt`` (64 bytes) to the recipient's
X25519 public ``key``: RFC 9180 single-shot base mode (section 6.1, SealBase with empty aad),
suite DHKEM(X25519, HKDF-SHA256) 0x0020, HKDF-SHA256 0x0001, AES-256-GCM 0x0002, with
``info`` = ``"sealstream/envelope/v1/wrap" 0x00 || canonical({v, stream, device, seq, header:
SHA-256(header), recipient})``: a wrap opens only for that recipient name, device, seq, stream
and envelope header.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trust import canonical
from trust.errors import CanonicalError
from trust.statement import ENVELOPE_CONTENT_TYPE

__all__ = [
    "ALG",
    "CONTENT_TYPE",
    "DEFAULT_CHUNK_SIZE",
    "KEYS_HEADER",
    "MAGIC",
    "OPEN_STEPS",
    "SUITE",
    "VERSION",
    "Envelope",
    "KeyRecord",
    "OpenError",
    "Opened",
    "Sealed",
    "Wrap",
    "chunk_aad",
    "commitment",
    "decrypt",
    "key_record_of",
    "open_envelope",
    "parse_envelope",
    "seal",
    "unwrap",
    "wrap_info",
]

MAGIC = b"SSE1"
VERSION = 1
ALG = "A256GCM-CHUNKED"
#: The statement's ``content_type`` of an envelope (the plaintext's type is in the header).
CONTENT_TYPE = ENVELOPE_CONTENT_TYPE  # trust.statement's, so the verifier knows it without this package
DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_HEADER = 4096
MAX_WRAPS = 256
TAG = 16
#: HPKE output for a 64-byte plaintext: enc (32) || ciphertext (64) || tag (16).
WRAP_CT_SIZE = 32 + 64 + TAG
_CHUNK_AAD = b"sealstream/envelope/v1/chunk\x00"
_WRAP_INFO = b"sealstream/envelope/v1/wrap\x00"
_HEADER_KEYS = ("v", "alg", "stream", "device", "seq", "kind", "content_type", "size", "chunk_size", "commitment")
#: RFC 9180 suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (base mode, single shot).
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

#: The steps of opening, in order; an `OpenError` names one.
OPEN_STEPS = ("envelope-format", "envelope-binding", "not-a-recipient", "recipient-revoked", "decrypt",
              "plaintext-commitment")


class OpenError(ValueError):
    """Opening failed at `step` (one of `OPEN_STEPS`)."""

    def __init__(self, step: str, message: str) -> None:
        assert step in OPEN_STEPS, step
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def commitment(salt: bytes, plaintext: bytes) -> bytes:
    """The salted plaintext commitment: SHA-256(salt || plaintext)."""
    return _sha256(salt + plaintext)


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: the header's fields, its bytes and hash, and the ciphertext body."""

    stream: str
    device: str
    seq: int
    kind: str
    content_type: str
    size: int
    chunk_size: int
    commitment: bytes
    header_bytes: bytes
    body: bytes
    raw: bytes

    @property
    def header_hash(self) -> bytes:
        return _sha256(self.header_bytes)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole envelope: the statement's ``payload_sha256``."""
        return _sha256(self.raw)

    @property
    def chunks(self) -> int:
        return max(1, -(-self.size // self.chunk_size))


def chunk_aad(header_hash: bytes, index: int, final: bool) -> bytes:
    return _CHUNK_AAD + header_hash + struct.pack(">Q", index) + (b"\x01" if final else b"\x00")


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def wrap_info(stream: str, device: str, seq: int, header_hash: bytes, recipient: str) -> bytes:
    """The HPKE ``info`` of one wrap (RFC 9180 section 5.1: bound into the key schedule)."""
    return _WRAP_INFO + canonical.encode({"v": VERSION, "stream": stream, "device": device, "seq": seq,
                                          "header": header_hash, "recipient": recipient})


@dataclass(frozen=True)
class Wrap:
    recipient: str
    key: bytes  # the recipient's X25519 public key this was wrapped to
    ct: bytes   # HPKE enc || ciphertext

    def to_wire(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "key": self.key, "ct": self.ct}


@dataclass(frozen=True)
class KeyRecord:
    """The wrapped data keys of one envelope (apart from the signed bytes; erasable)."""

    envelope: bytes  # SHA-256 of the envelope
    wraps: tuple[Wrap, ...]

    def to_bytes(self) -> bytes:
        return canonical.encode({"v": VERSION, "envelope": self.envelope,
                                 "wraps": [w.to_wire() for w in self.wraps]})

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRecord:
        """Parse a key record; a malformed one raises `OpenError` at ``decrypt`` (it cannot open)."""
        try:
            doc = canonical.decode(data)
            if not isinstance(doc, dict) or set(doc) != {"v", "envelope", "wraps"} or doc["v"] != VERSION:
                raise ValueError("want {v: 1, envelope, wraps}")
            env, wraps = doc["envelope"], doc["wraps"]
            if type(env) is not bytes or len(env) != 32 or not isinstance(wraps, list) or len(wraps) > MAX_WRAPS:
                raise ValueError("bad envelope digest or wraps")
            out = []
            for w in wraps:
                if (not isinstance(w, dict) or set(w) != {"recipient", "key", "ct"} or type(w["recipient"]) is not str
                        or type(w["key"]) is not bytes or len(w["key"]) != 32 or type(w["ct"]) is not bytes):
                    raise ValueError("bad wrap")
                out.append(Wrap(w["recipient"], w["key"], w["ct"]))
            ids = [w.recipient for w in out]
            if ids != sorted(set(ids)):
                raise ValueError("wraps must be sorted by recipient, one each")
        except (CanonicalError, ValueError, TypeError) as exc:
            raise OpenError("decrypt", f"malformed key record: {exc}") from None
        return cls(env, tuple(out))

    def wrap_for(self, recipient: str) -> Wrap | None:
        return next((w for w in self.wraps if w.recipient == recipient), None)


@dataclass(frozen=True)
class Sealed:
    envelope: bytes
    keys: KeyRecord


@dataclass(frozen=True)
class Opened:
    plaintext: bytes
    envelope: Envelope
    salt: bytes  # with the plaintext, what proves it against the signed commitment to a third party


def _header(stream: str, device: str, seq: int, kind: str, content_type: str, size: int, chunk_size: int,
            commit: bytes) -> bytes:
    return canonical.encode({"v": VERSION, "alg": ALG, "stream": stream, "device": device, "seq": seq,
                             "kind": kind, "content_type": content_type, "size": size, "chunk_size": chunk_size,
                             "commitment": commit})


def seal(plaintext: bytes, *, stream: str, device: str, seq: int, kind: str, content_type: str,
         recipients: Sequence[tuple[str, bytes]], chunk_size: int = DEFAULT_CHUNK_SIZE,
         random: Callable[[int], bytes] = os.urandom) -> Sealed:
    """Encrypt `plaintext` for `recipients` (``(id, X25519 public key)``, at least one).

    `random` draws the data key and the salt (``os.urandom``; a seeded source only for the
    test vectors); HPKE draws its own ephemeral key."""
    if not recipients:
        raise ValueError("no recipient: an envelope nobody can open")
    ids = [r for r, _ in recipients]
    if len(set(ids)) != len(ids) or len(ids) > MAX_WRAPS:
        raise ValueError(f"recipients must be distinct, at most {MAX_WRAPS}")
    if type(chunk_size) is not int or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    data_key, salt = random(32), random(32)
    header = _header(stream, device, seq, kind, content_type, len(plaintext), chunk_size,
                     commitment(salt, plaintext))
    if len(header) > MAX_HEADER:
        raise ValueError("envelope header too long")
    hh = _sha256(header)
    aes = AESGCM(data_key)
    n = max(1, -(-len(plaintext) // chunk_size))
    parts = [MAGIC, struct.pack(">I", len(header)), header]
    mv = memoryview(plaintext)
    for i in range(n):
        parts.append(aes.encrypt(_nonce(i), bytes(mv[i * chunk_size:(i + 1) * chunk_size]),
                                 chunk_aad(hh, i, i == n - 1)))
    envelope = b"".join(parts)
    wraps = []
    for rid, pub in sorted(recipients):
        pk = X25519PublicKey.from_public_bytes(pub)
        ct = SUITE.encrypt(data_key + salt, pk, info=wrap_info(stream, device, seq, hh, rid))
        wraps.append(Wrap(rid, bytes(pub), ct))
    return Sealed(envelope, KeyRecord(_sha256(envelope), tuple(wraps)))


def _bad(msg: str) -> OpenError:
    return OpenError("envelope-format", msg)


def parse_envelope(raw: bytes) -> Envelope:
    """Parse an envelope; anything but the exact v1 layout raises `OpenError` (``envelope-format``)."""
    raw = bytes(raw)
    if len(raw) < 8 or raw[:4] != MAGIC:
        raise _bad("not a sealstream envelope (magic SSE1)")
    (hlen,) = struct.unpack(">I", raw[4:8])
    if hlen > MAX_HEADER or 8 + hlen > len(raw):
        raise _bad(f"header length {hlen} out of range")
    hb = raw[8:8 + hlen]
    try:
        h = canonical.decode(hb)
    except CanonicalError as exc:
        raise _bad(f"header is not canonical: {exc}") from None
    if not isinstance(h, dict) or set(h) != set(_HEADER_KEYS):
        raise _bad(f"header keys must be {', '.join(_HEADER_KEYS)}")
    if h["v"] != VERSION or h["alg"] != ALG:
        raise _bad(f"unsupported envelope version/alg {h['v']!r}/{h['alg']!r}")
    for f in ("stream", "device", "kind", "content_type"):
        if type(h[f]) is not str:
            raise _bad(f"{f} must be text")
    for f in ("seq", "size", "chunk_size"):
        if type(h[f]) is not int or h[f] < 0:
            raise _bad(f"{f} must be a non-negative integer")
    if not MIN_CHUNK_SIZE <= h["chunk_size"] <= MAX_CHUNK_SIZE:
        raise _bad("chunk_size out of range")
    if type(h["commitment"]) is not bytes or len(h["commitment"]) != 32:
        raise _bad("commitment must be 32 bytes")
    body = raw[8 + hlen:]
    n = max(1, -(-h["size"] // h["chunk_size"]))
    if len(body) != h["size"] + TAG * n:
        raise _bad(f"body is {len(body)} bytes; {n} chunks of size {h['size']} need {h['size'] + TAG * n}")
    return Envelope(h["stream"], h["device"], h["seq"], h["kind"], h["content_type"], h["size"],
                    h["chunk_size"], h["commitment"], hb, body, raw)


def unwrap(env: Envelope, keys: KeyRecord, recipient: str, private_key: X25519PrivateKey) -> tuple[bytes, bytes]:
    """``(data key, salt)`` from `recipient`'s wrap, with its private key (RFC 9180 OpenBase)."""
    wrap = keys.wrap_for(recipient)
    if wrap is None:
        raise OpenError("not-a-recipient", f"{recipient!r} has no wrapped key for this envelope")
    mine = private_key.public_key().public_bytes_raw()
    if wrap.key != mine:
        raise OpenError("not-a-recipient", f"the key of {recipient!r} this was wrapped to is not this key")
    if keys.envelope != env.digest:
        raise OpenError("decrypt", "the key record belongs to another envelope")
    try:
        pt = SUITE.decrypt(wrap.ct, private_key, info=wrap_info(env.stream, env.device, env.seq, env.header_hash,
                                                                 recipient))
    except (InvalidTag, ValueError) as exc:
        raise OpenError("decrypt", f"the wrapped key does not open ({type(exc).__name__})") from None
    if len(pt) != 64:
        raise OpenError("decrypt", "the wrapped key is not a data key and salt")
    return pt[:32], pt[32:]


def decrypt(env: Envelope, data_key: bytes) -> bytes:
    """The plaintext of `env`; a chunk whose tag fails raises `OpenError` (``decrypt``)."""
    aes = AESGCM(data_key)
    hh, n, step = env.header_hash, env.chunks, env.chunk_size + TAG
    out = []
    for i in range(n):
        try:
            out.append(aes.decrypt(_nonce(i), env.body[i * step:(i + 1) * step], chunk_aad(hh, i, i == n - 1)))
        except InvalidTag:
            raise OpenError("decrypt", f"chunk {i} of {n} does not authenticate") from None
    return b"".join(out)


def open_envelope(raw: bytes, keys: KeyRecord | bytes, recipient: str, private_key: X25519PrivateKey, *,
                  device: str | None = None, seq: int | None = None, kind: str | None = None) -> Opened:
    """Parse, check the header names the signed statement's `device`/`seq`/`kind` (when given:
    ``envelope-binding``), unwrap, decrypt and prove the plaintext against the commitment."""
    env = parse_envelope(raw)
    for name, want, got in (("device", device, env.device), ("seq", seq, env.seq), ("kind", kind, env.kind)):
        if want is not None and want != got:
            raise OpenError("envelope-binding", f"the envelope names {name} {got!r}, the statement {want!r}")
    if isinstance(keys, (bytes, bytearray)):
        keys = KeyRecord.from_bytes(bytes(keys))
    data_key, salt = unwrap(env, keys, recipient, private_key)
    plaintext = decrypt(env, data_key)
    if len(plaintext) != env.size or commitment(salt, plaintext) != env.commitment:
        raise OpenError("plaintext-commitment", "SHA-256(salt || plaintext) is not the signed commitment")
    return Opened(plaintext, env, salt)


#: The Kafka header carrying a confidential record's key record (not signed; the worker stores
#: it apart from the payload: a row of PostgreSQL's ``key_records``).
KEYS_HEADER = "ss-keys"


def key_record_of(headers: Iterable[tuple[str | bytes, bytes | None]] | None) -> bytes | None:
    """The bytes of the first non-empty ``ss-keys`` header, or None."""
    for item in headers or ():
        name, value = item
        if (name.decode("utf-8", "replace") if isinstance(name, bytes) else name) == KEYS_HEADER and value:
            return bytes(value)
    return None
