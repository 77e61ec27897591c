"""Recipient key files: a recipient's X25519 private key (RFC 7748), mode 0600.

UTF-8 JSON ``{"v": 1, "type": "x25519", "id": "<recipient id>", "public": "<64 hex>",
"secret": "<64 hex>"}``; like `trust.identity` key files, created 0600, never overwritten
unless asked, and refused when group or others may access it or when ``public`` is not the
secret's public key.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["KeyFileError", "RecipientKey", "load_recipient_key", "save_recipient_key"]


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class RecipientKey:
    id: str
    private: X25519PrivateKey

    @classmethod
    def generate(cls, recipient_id: str) -> RecipientKey:
        return cls(recipient_id, X25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, recipient_id: str, secret: bytes) -> RecipientKey:
        return cls(recipient_id, X25519PrivateKey.from_private_bytes(secret))

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    def __repr__(self) -> str:  # never the secret
        return f"RecipientKey({self.id!r}, public={self.public.hex()[:16]}...)"


def save_recipient_key(key: RecipientKey, path: str | os.PathLike[str], overwrite: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(os.fspath(path), flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{os.fspath(path)} exists; refusing to overwrite a key file") from None
    os.fchmod(fd, 0o600)
    doc = {"v": 1, "type": "x25519", "id": key.id, "public": key.public.hex(),
           "secret": key.private.private_bytes_raw().hex()}
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.write("\n")


def load_recipient_key(path: str | os.PathLike[str]) -> RecipientKey:
    p = Path(path)
    with open(p, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{p} has mode {stat.S_IMODE(mode):04o}; key files must not be accessible "
                               f"by group or others (chmod 600 {p})")
        raw = fh.read()
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("type") != "x25519":
            raise ValueError("not a v1 x25519 key file")
        key = RecipientKey.from_seed(str(doc["id"]), bytes.fromhex(doc["secret"]))
        if key.public.hex() != doc["public"]:
            raise ValueError("public key does not match the secret")
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{p}: {exc}") from None
    return key
