"""Device signers: key files (trust.identity, mode 0600 enforced) or a PKCS#11 token (`edge.pkcs11`).

`load_signer(device)` returns an `edge.model.Signer`. A PKCS#11 key is loaded through
``edge.pkcs11.Pkcs11Signer.from_config(section)``, imported only when a device uses one.
Every signer's first signature is verified against its did (a token that signs with another key,
or not Ed25519, is refused before anything is spooled).
"""

from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path

from trust.errors import IdentityError, KeyFileError
from trust.identity import KeyPair, load_keypair, save_keypair, verify_signature

from .config import DeviceConfig, Problem
from .model import Signer

__all__ = ["FileSigner", "SignerError", "load_signer", "key_problems", "create_key", "checked"]


class SignerError(Exception):
    """A device key cannot be used; the message names the fix."""


class FileSigner:
    """A `Signer` over a trust.identity key file."""

    def __init__(self, keypair: KeyPair) -> None:
        self._kp = keypair

    @property
    def did(self) -> str:
        return self._kp.did

    def sign(self, data: bytes) -> bytes:
        return self._kp.sign(data)

    @classmethod
    def from_file(cls, path: Path) -> "FileSigner":
        try:
            return cls(load_keypair(path))
        except FileNotFoundError:
            raise SignerError(f"key file {path} does not exist; "
                              "create it with `sealstream edge keygen --config ...`") from None
        except (KeyFileError, IdentityError) as exc:
            raise SignerError(str(exc)) from None


def checked(signer: Signer) -> Signer:
    """`signer` after one test signature verified under its did (raises `SignerError` otherwise)."""
    probe = b"sealstream/edge/signer-self-test/v1"
    try:
        sig = signer.sign(probe)
        ok = isinstance(sig, bytes) and len(sig) == 64 and verify_signature(signer.did, probe, sig)
    except Exception as exc:  # noqa: BLE001 - a token can fail in many ways
        raise SignerError(f"the key of {signer.did} cannot sign ({type(exc).__name__}: {exc}); "
                          "check the token") from None
    if not ok:
        raise SignerError(f"the key claims {signer.did} but its signature does not verify under it; "
                          "the token holds another or a non-Ed25519 key")
    return signer


def load_signer(device: DeviceConfig) -> Signer:
    """The device's signer, self-tested."""
    if "file" in device.key:
        return checked(FileSigner.from_file(Path(device.key["file"])))
    try:
        mod = importlib.import_module("edge.pkcs11")
    except ModuleNotFoundError as exc:
        raise SignerError(f"device {device.name} uses a PKCS#11 key but edge.pkcs11 is not available ({exc}); "
                          "install sealstream with python-pkcs11 or use a key file") from None
    try:
        signer = mod.Pkcs11Signer.from_config(device.key["pkcs11"], base_dir=device.base_dir)
    except Exception as exc:  # noqa: BLE001 - the token module's own error, named
        raise SignerError(f"device {device.name}: PKCS#11 key unusable: {exc}") from None
    try:
        return checked(signer)
    except SignerError:
        signer.close()  # its share of the token's session is not kept by a signer nobody gets
        raise


def key_problems(device: DeviceConfig) -> list[Problem]:
    """Problems of a device's key file (missing, readable by others, malformed); PKCS#11 keys are tried."""
    if "file" in device.key:
        path = Path(device.key["file"])
        where = f"devices.{device.name}.key.file"
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return [Problem(where, f"{path} does not exist; create it with `sealstream edge keygen --config ...`")]
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            return [Problem(where, f"{path} has mode {stat.S_IMODE(mode):04o}; run chmod 600 {path}")]
        try:
            FileSigner.from_file(path)
        except SignerError as exc:
            return [Problem(where, str(exc))]
        return []
    try:
        signer = load_signer(device)
    except SignerError as exc:
        return [Problem(f"devices.{device.name}.key.pkcs11", str(exc))]
    close = getattr(signer, "close", None)  # a token signer holds a share of the logged-in session
    if callable(close):
        close()
    return []


def create_key(device: DeviceConfig) -> bool:
    """Create the device's key file (0600) if missing; True when one was created."""
    if "file" not in device.key:
        return False
    path = Path(device.key["file"])
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    save_keypair(path, KeyPair.generate())
    return True
