"""Sealed open windows of confidential devices: AES-256-GCM under the spool's own key.

A confidential device's readings may not reach the disk in plaintext (issue 18), yet its open
window must survive a SIGKILL like a plain device's (`edge.spool`, ``pending_readings``). So each of
its pending readings is written to ``pending_sealed`` as

    blob = 0x01 || nonce (12 random bytes) || AES-256-GCM(key, nonce, plaintext, aad)
    plaintext = f64be(value) || i64be(ts_ms) || i64be(received_ms) || utf-8(sensor)
    aad = canonical CBOR ["sealstream/edge/pending/v1", source, device, row id]

under a 32-byte key of the spool (`PendingKey`, by default ``<spool>/pending.key``, mode 0600,
created atomically on first use). The AAD binds the row to its device, source and row id: a row
edited, copied to another row or device, or sealed under another key does not open, and is refused
with a reason (`PendingRefused.reason`), never crashed on. Who can read the key can read these
readings (docs/edge.md, "Open windows of confidential devices").
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trust import canonical

__all__ = ["PendingKey", "PendingKeyError", "PendingRefused", "KEY_FILE", "AAD_CONTEXT"]

KEY_FILE = "pending.key"
AAD_CONTEXT = "sealstream/edge/pending/v1"
_VERSION = b"\x01"
_NONCE = 12
_FIXED = struct.Struct(">dqq")


class PendingKeyError(ValueError):
    """The spool key file is unusable (`reason`: ``key-insecure``, ``key-invalid``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PendingRefused(ValueError):
    """A sealed pending row that does not open: `reason` is ``pending-malformed`` (not a sealed row of
    this format) or ``pending-auth`` (does not authenticate: edited, moved to another row, device or
    source, or sealed under another key)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _aad(source: str, device: str, row_id: int) -> bytes:
    return canonical.encode([AAD_CONTEXT, source, device, int(row_id)])


class PendingKey:
    """The spool's AES-256-GCM key. Never printed (no `repr` of the bytes)."""

    def __init__(self, key: bytes, path: Path | None = None, created: bool = False) -> None:
        if len(key) != 32:
            raise PendingKeyError("key-invalid", "a spool key is 32 bytes")
        self._aes = AESGCM(key)
        self.path, self.created = path, created

    def __repr__(self) -> str:
        return f"PendingKey(path={str(self.path)!r})"

    @classmethod
    def load_or_create(cls, path: Path) -> "PendingKey":
        """Read the key file, or create it: 32 random bytes written 0600 to a temporary file, fsynced,
        then linked to `path` (a link never replaces a file: two agents racing both end up with the
        one that won) and the directory fsynced. A file group or others may access is refused."""
        path = Path(path)
        created = False
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
                created = True
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        st = os.stat(path)
        if st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            raise PendingKeyError("key-insecure", f"the spool key {path} must be a regular file of mode 0600 "
                                                  f"(it is {stat.filemode(st.st_mode)}): chmod 600 it")
        data = path.read_bytes()
        if len(data) != 32:
            raise PendingKeyError("key-invalid", f"the spool key {path} is not 32 bytes; restore it from where "
                                                 "it was kept (or move it away to start a new one)")
        return cls(data, path, created)

    def seal(self, source: str, device: str, row_id: int, sensor: str, value: float, ts_ms: int,
             received_ms: int) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        pt = _FIXED.pack(float(value), int(ts_ms), int(received_ms)) + sensor.encode("utf-8")
        return _VERSION + nonce + self._aes.encrypt(nonce, pt, _aad(source, device, row_id))

    def open(self, source: str, device: str, row_id: int, blob: bytes) -> tuple[str, float, int, int]:
        """``(sensor, value, ts_ms, received_ms)``, or `PendingRefused`."""
        blob = bytes(blob)
        if len(blob) < 1 + _NONCE + 16 + _FIXED.size or blob[:1] != _VERSION:
            raise PendingRefused("pending-malformed", f"row {row_id} is not a sealed pending reading (v1)")
        try:
            pt = self._aes.decrypt(blob[1:1 + _NONCE], blob[1 + _NONCE:], _aad(source, device, row_id))
        except InvalidTag:
            raise PendingRefused("pending-auth", f"row {row_id} of {device!r} does not authenticate under the "
                                                 "spool key (edited, moved, or sealed under another key)") from None
        value, ts_ms, received_ms = _FIXED.unpack_from(pt)
        try:
            sensor = pt[_FIXED.size:].decode("utf-8")
        except UnicodeDecodeError:
            raise PendingRefused("pending-malformed", f"row {row_id}: the sensor name is not UTF-8") from None
        return sensor, value, ts_ms, received_ms
