"""Ed25519 identities: key pairs, ``did:key`` ids, signatures, key files.

An id is ``did:key:z<base58btc(0xed 0x01 || public key)>``: the multicodec
varint for ed25519-pub (0xed) followed by the raw 32-byte public key, in
multibase base58btc (prefix ``z``), per the W3C did:key method.  Such ids
always start with ``did:key:z6Mk``.

Signatures are detached 64-byte Ed25519 signatures (RFC 8032) via PyNaCl.
Key files hold the 32-byte seed and are the only I/O here: they take explicit
paths, are written with mode 0600 and refused when group or others may access
them.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Union

import nacl.exceptions
import nacl.signing

from ._base58 import b58decode, b58encode
from .errors import IdentityError, KeyFileError

__all__ = [
    "KeyPair",
    "did_from_public_key",
    "public_key_from_did",
    "is_did",
    "verify_signature",
    "save_keypair",
    "load_keypair",
    "IdentityError",
    "KeyFileError",
    "DID_PREFIX",
    "ED25519_MULTICODEC",
]

DID_PREFIX = "did:key:"
#: Unsigned-varint encoding of multicodec 0xed (ed25519-pub).
ED25519_MULTICODEC = b"\xed\x01"
_KEY_FILE_VERSION = 1


def did_from_public_key(public_key: bytes) -> str:
    """Format a 32-byte Ed25519 public key as a ``did:key`` id."""
    if type(public_key) is not bytes or len(public_key) != 32:
        raise IdentityError("an Ed25519 public key is 32 bytes")
    return _did_of(public_key)


# A pipeline converts the same few device and gateway keys for every record; base58 is pure Python.
@functools.lru_cache(maxsize=4096)
def _did_of(public_key: bytes) -> str:
    return DID_PREFIX + "z" + b58encode(ED25519_MULTICODEC + public_key)


def public_key_from_did(did: str) -> bytes:
    """Parse a ``did:key`` id back to its 32-byte Ed25519 public key.

    Strict: the encoding must round-trip exactly (no other multibase, no other
    key type, no trailing bytes), so one key has one id.
    """
    if not isinstance(did, str) or not did.startswith(DID_PREFIX + "z"):
        raise IdentityError(f"not a base58btc did:key id: {did!r}")
    return _key_of(str(did))


@functools.lru_cache(maxsize=4096)  # errors are not cached: a bad id is parsed again each time
def _key_of(did: str) -> bytes:
    try:
        raw = b58decode(did[len(DID_PREFIX) + 1 :])
    except ValueError as exc:
        raise IdentityError(f"bad did:key {did!r}: {exc}") from None
    if raw[:2] != ED25519_MULTICODEC:
        raise IdentityError(f"did:key {did!r} is not an ed25519-pub key")
    if len(raw) != 34:
        raise IdentityError(f"did:key {did!r} has a key of {len(raw) - 2} bytes, want 32")
    public_key = raw[2:]
    if did_from_public_key(public_key) != did:
        raise IdentityError(f"did:key {did!r} is not canonically encoded")
    return public_key


def is_did(value: object) -> bool:
    """True when `value` is a well-formed Ed25519 ``did:key`` id."""
    try:
        public_key_from_did(value)  # type: ignore[arg-type]
    except IdentityError:
        return False
    return True


def _as_public_key(public_key_or_did: Union[bytes, str]) -> bytes:
    if isinstance(public_key_or_did, str):
        return public_key_from_did(public_key_or_did)
    if type(public_key_or_did) is bytes and len(public_key_or_did) == 32:
        return public_key_or_did
    raise IdentityError("expected a 32-byte Ed25519 public key or a did:key id")


def verify_signature(
    public_key_or_did: Union[bytes, str], message: bytes, signature: bytes
) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `message`.

    Returns False (never raises) for any bad signature, including one of the
    wrong length or type.  Raises `IdentityError` only when the *key* is
    malformed, which is a different problem than a forged message.
    """
    public_key = _as_public_key(public_key_or_did)
    if type(signature) is not bytes or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key pair, derived from its 32-byte `seed`.

    The seed is kept out of `repr` and comparisons use the public key only.
    """

    seed: bytes = field(repr=False, compare=False)
    public_key: bytes = field(init=False, repr=False)
    did: str = field(init=False)
    _signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.seed) is not bytes or len(self.seed) != 32:
            raise IdentityError("an Ed25519 seed is 32 bytes")
        sk = nacl.signing.SigningKey(self.seed)
        pk = bytes(sk.verify_key)
        object.__setattr__(self, "_signing_key", sk)
        object.__setattr__(self, "public_key", pk)
        object.__setattr__(self, "did", did_from_public_key(pk))

    @classmethod
    def generate(cls) -> "KeyPair":
        """A fresh key pair from the OS random source."""
        return cls(os.urandom(32))

    @classmethod
    def from_seed(cls, seed32: bytes) -> "KeyPair":
        """The key pair derived from a 32-byte seed (RFC 8032 §5.1.5)."""
        return cls(bytes(seed32))

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature of `message`."""
        return self._signing_key.sign(message).signature

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Shortcut for `verify_signature(self.public_key, ...)`."""
        return verify_signature(self.public_key, message, signature)


def save_keypair(path: Union[str, os.PathLike[str]], keypair: KeyPair, *, overwrite: bool = False) -> None:
    """Write `keypair` to `path` as JSON with mode 0600.

    Refuses to replace an existing file unless `overwrite` is true.  The file
    is created with 0600 from the start (no window where it is readable).
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    body = json.dumps(
        {
            "v": _KEY_FILE_VERSION,
            "type": "ed25519",
            "did": keypair.did,
            "seed": keypair.seed.hex(),
        },
        indent=1,
    )
    try:
        fd = os.open(os.fspath(path), flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{os.fspath(path)} exists; refusing to overwrite a key file") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(body + "\n")
    finally:
        if fd != -1:
            os.close(fd)


def load_keypair(path: Union[str, os.PathLike[str]]) -> KeyPair:
    """Read a key file written by `save_keypair`.

    Raises `KeyFileError` when group or others have any permission on the file
    (fix with ``chmod 600 <path>``) or when its content is malformed.
    """
    p = os.fspath(path)
    with open(p, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{p} has mode {stat.S_IMODE(mode):04o}; key files must not be "
                f"accessible by group or others (run: chmod 600 {p})"
            )
        raw = fh.read(4096)
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != _KEY_FILE_VERSION or doc.get("type") != "ed25519":
            raise ValueError("unsupported key file version or type")
        seed = bytes.fromhex(doc["seed"])
        keypair = KeyPair.from_seed(seed)
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{p} is not a valid key file: {exc}") from None
    if doc.get("did") != keypair.did:
        raise KeyFileError(f"{p}: stored did does not match the seed")
    return keypair
