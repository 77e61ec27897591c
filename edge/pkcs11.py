"""A device's Ed25519 key on a PKCS#11 token (an HSM, a smart card, SoftHSM2): `Pkcs11Signer`.

The private key never leaves the token: `Pkcs11Signer.sign` asks the token for a pure Ed25519
signature (CKM_EDDSA without parameters, RFC 8032) with the private key of class
CKO_PRIVATE_KEY, type CKK_EC_EDWARDS. The device's ``did:key`` is derived from the token's
public key object (CKA_EC_POINT: a DER OCTET STRING around the 32-byte key, or the raw 32
bytes, which some tokens return) with `trust.identity.did_from_public_key`; when the signer is
opened it signs a probe and checks it with `trust.identity.verify_signature`, so a public key
object that does not belong to the private key is refused before any statement is signed.

Config (a device's ``key`` table; `Pkcs11Signer.from_config`)::

    module      = "/usr/lib/softhsm/libsofthsm2.so"   # the token's PKCS#11 library
    token_label = "edge-01"          # (or token =) and/or token_serial = "..." (the token's serial)
    key_label   = "press-7"          # (or label =) and/or key_id = "hex of CKA_ID"
    pin_file    = "/etc/sealstream/token.pin"   # mode 0600 (no group/other bits), or
    pin_env     = "SEALSTREAM_TOKEN_PIN"        # the name of an environment variable

The PIN is read once, kept only in memory (never in a repr, a log line or an error), and
a PIN file that group or others may access is refused like a key file (``chmod 600``).

Sessions and threads: the library is initialised without OS locking, so every call into one
PKCS#11 module is serialised by one lock per module. PKCS#11 login state is per application
and token, so all signers of one token in a process share one logged-in session (a second
signer whose PIN differs from the one that logged in is refused as ``pin-incorrect``: a
token has one user PIN). A session that the token or library invalidated (token removed and
re-inserted, library re-initialised) is reopened once, transparently, and the key must
still be the same public key.

Errors are `Pkcs11Error` with a machine-readable `reason` (`REASONS`) and a message that
says what to fix; the library's own exceptions never escape.

Admin: ``python -m edge.pkcs11 generate|did --module M --token-label T --key-label K
(--pin-file F | --pin-env VAR)`` creates an Ed25519 key on a token (`generate`) or prints
the did of an existing one.
"""

from __future__ import annotations

import argparse
import hmac
import os
import stat
import sys
import threading
from typing import Any, Mapping, Optional, Union

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11x

from trust.identity import did_from_public_key, verify_signature

__all__ = ["Pkcs11Signer", "Pkcs11Error", "REASONS", "generate", "read_pin", "public_key_from_ec_point"]

#: Every `Pkcs11Error.reason`.
REASONS = frozenset({
    "config-invalid",        # the key table is malformed (missing/unknown/conflicting fields)
    "module-missing",        # the PKCS#11 library file is absent or cannot be loaded
    "token-not-found",       # no token with that label/serial is present
    "token-ambiguous",       # several tokens match: set token_serial
    "mechanism-unsupported", # the token has no CKM_EDDSA (or no CKM_EC_EDWARDS_KEY_PAIR_GEN)
    "pin-unavailable",       # the PIN file or environment variable is missing or empty
    "pin-file-insecure",     # the PIN file is accessible by group or others
    "pin-incorrect",         # the token refused the PIN
    "pin-locked",            # the token locked the user PIN (too many wrong PINs)
    "key-not-found",         # no Ed25519 private key (or its public key) with that label/id
    "key-ambiguous",         # several keys match: set key_id
    "key-invalid",           # the key is not Ed25519, its public key is malformed or not its pair
    "key-exists",            # generate(): a key with that label already exists
    "token-error",           # any other failure of the token or library (named in the message)
})

_MODULE_HINT = "install the token's PKCS#11 library (SoftHSM2: the Debian package softhsm2)"
_CONFIG_KEYS = frozenset({"type", "module", "token_label", "token_serial", "key_label", "key_id",
                          "pin_file", "pin_env"})
#: Short spellings accepted in a config table (edge/config.py's example uses them).
_ALIASES = {"token": "token_label", "label": "key_label"}
#: CKA_EC_PARAMS of Ed25519: the OID 1.3.101.112 or the PrintableString "edwards25519" (both DER).
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0c" + b"edwards25519")
_PROBE = b"sealstream/pkcs11-probe/v1\x00"


class Pkcs11Error(Exception):
    """A PKCS#11 key cannot be used; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _lib_failure(exc: BaseException) -> str:
    """A library exception as a short phrase (its class name and text; never contains a PIN)."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name} ({text})" if text and text != name else name


# -- PIN ---------------------------------------------------------------------------------------

def read_pin(*, pin_file: Union[str, os.PathLike, None] = None, pin_env: Optional[str] = None) -> str:
    """The user PIN from a file (mode 0600: no group or other bits) or an environment variable.

    One trailing newline is dropped from a file. Raises `Pkcs11Error` (``pin-unavailable``,
    ``pin-file-insecure``, ``config-invalid``); the PIN itself is never part of a message.
    """
    if (pin_file is None) == (pin_env is None):
        raise Pkcs11Error("config-invalid", "set exactly one of pin_file and pin_env")
    if pin_env is not None:
        if not isinstance(pin_env, str) or not pin_env:
            raise Pkcs11Error("config-invalid", "pin_env must name an environment variable")
        value = os.environ.get(pin_env)
        if not value:
            raise Pkcs11Error("pin-unavailable", f"the environment variable {pin_env} (pin_env) is not set or empty")
        return value
    path = os.fspath(pin_file)  # type: ignore[arg-type]
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Pkcs11Error("pin-unavailable", f"the PIN file {path} does not exist") from None
    except OSError as exc:
        raise Pkcs11Error("pin-unavailable", f"cannot open the PIN file {path}: {exc.strerror}"
                          f"{' (a symlink is refused)' if os.path.islink(path) else ''}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Pkcs11Error("pin-unavailable", f"the PIN file {path} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise Pkcs11Error("pin-file-insecure",
                              f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; a PIN file must not be "
                              f"accessible by group or others (run: chmod 600 {path})")
        raw = os.read(fd, 4097)
    finally:
        os.close(fd)
    if len(raw) > 4096:
        raise Pkcs11Error("pin-unavailable", f"the PIN file {path} is larger than 4 KiB; it holds just the PIN")
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        pin = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Pkcs11Error("pin-unavailable", f"the PIN file {path} is not UTF-8 text") from None
    if not pin:
        raise Pkcs11Error("pin-unavailable", f"the PIN file {path} is empty")
    return pin


# -- the public key ----------------------------------------------------------------------------

def public_key_from_ec_point(value: bytes) -> bytes:
    """The 32-byte Ed25519 public key in a CKA_EC_POINT value.

    PKCS#11 3.0 says a DER OCTET STRING (``04 20 || key``); some tokens return the raw 32
    bytes. A long-form length (``04 81 20 || key``) is accepted too. Raises ``key-invalid``.
    """
    value = bytes(value)
    if len(value) == 32:
        return value
    if len(value) == 34 and value[:2] == b"\x04\x20":
        return value[2:]
    if len(value) == 35 and value[:3] == b"\x04\x81\x20":
        return value[3:]
    raise Pkcs11Error("key-invalid", f"CKA_EC_POINT of {len(value)} bytes is not an Ed25519 public key "
                                     "(want the 32-byte key, raw or in a DER OCTET STRING)")


# -- the library, tokens and their shared sessions ---------------------------------------------

_registry_lock = threading.Lock()  # taken before any module lock, never inside one
_module_locks: dict[str, threading.RLock] = {}
_tokens: dict[tuple[str, bytes], "_Token"] = {}


def _module_path(module: str) -> str:
    if not isinstance(module, str) or not module:
        raise Pkcs11Error("config-invalid", "module must be the path of a PKCS#11 library")
    if not os.path.isfile(module):
        raise Pkcs11Error("module-missing", f"the PKCS#11 module {module} does not exist; {_MODULE_HINT}")
    return os.path.realpath(module)


def _module_lock(path: str) -> threading.RLock:
    lock = _module_locks.get(path)
    if lock is None:
        lock = _module_locks.setdefault(path, threading.RLock())
    return lock


def _load(module: str) -> Any:
    """The initialised library of `module` (a path as configured).

    python-pkcs11 keeps one library object per path *string* and a module may only be
    initialised once per process, so one already loaded under another spelling (a symlink such
    as Debian's /usr/lib/softhsm/libsofthsm2.so) is reused; it is re-initialised if finalised.
    """
    path = os.path.realpath(module)
    loaded = getattr(pkcs11, "_loaded", {})
    so = next((k for k in list(loaded) if k == module or os.path.realpath(k) == path), module)
    try:
        return pkcs11.lib(so)
    except p11x.PKCS11Error as exc:
        if "already initialized" in str(exc):
            raise Pkcs11Error("token-error", f"{path} is already initialised in this process by other code; "
                                             "load it through python-pkcs11's pkcs11.lib()") from None
        raise Pkcs11Error("module-missing", f"{path} cannot be loaded as a PKCS#11 module: {_lib_failure(exc)}; "
                                            f"{_MODULE_HINT}") from None
    except (OSError, RuntimeError) as exc:
        raise Pkcs11Error("module-missing", f"{path} cannot be loaded: {_lib_failure(exc)}") from None


def _find_token(lib: Any, path: str, label: Optional[str], serial: Optional[bytes]) -> Any:
    try:
        found = list(lib.get_tokens(token_label=label, token_serial=serial))
    except p11x.PKCS11Error as exc:
        raise Pkcs11Error("token-error", f"listing the tokens of {path} failed: {_lib_failure(exc)}") from None
    what = " and ".join(x for x in (f"label {label!r}" if label is not None else "",
                                    f"serial {serial.decode('ascii', 'replace')!r}" if serial is not None else "") if x)
    if not found:
        try:
            present = sorted(repr(t.label) for t in lib.get_tokens())
        except p11x.PKCS11Error:
            present = []
        raise Pkcs11Error("token-not-found", f"no token with {what} in {path} (initialised tokens: "
                                             f"{', '.join(present) or 'none'})")
    if len(found) > 1:
        raise Pkcs11Error("token-ambiguous", f"{len(found)} tokens with {what} in {path}; set token_serial")
    return found[0]


def _mechanisms(token: Any) -> set:
    try:
        return set(token.slot.get_mechanisms())
    except p11x.PKCS11Error as exc:
        raise Pkcs11Error("token-error", f"reading the mechanisms of token {token.label!r} failed: "
                                         f"{_lib_failure(exc)}") from None


def _open_session(token: Any, pin: Optional[str], *, rw: bool = False) -> Any:
    try:
        return token.open(rw=rw, user_pin=pin)
    except p11x.PinIncorrect:
        raise Pkcs11Error("pin-incorrect", f"token {token.label!r} refused the PIN") from None
    except p11x.PinLocked:
        raise Pkcs11Error("pin-locked", f"the user PIN of token {token.label!r} is locked (too many wrong PINs); "
                                        "the security officer must unlock it") from None
    except (p11x.PinLenRange, p11x.PinInvalid):
        raise Pkcs11Error("pin-incorrect", f"token {token.label!r} refused the PIN (invalid length or "
                                           "characters)") from None
    except p11x.UserPinNotInitialized:
        raise Pkcs11Error("pin-incorrect", f"token {token.label!r} has no user PIN yet (initialise it)") from None
    except p11x.PKCS11Error as exc:
        raise Pkcs11Error("token-error", f"opening a session on token {token.label!r} failed: "
                                         f"{_lib_failure(exc)}") from None


# Errors after which the session (or the library) is gone and reopening may help.
_STALE = (p11x.SessionHandleInvalid, p11x.SessionClosed, p11x.DeviceRemoved, p11x.TokenNotPresent,
          p11x.UserNotLoggedIn, p11x.KeyHandleInvalid, p11x.ObjectHandleInvalid)


def _is_stale(exc: BaseException) -> bool:
    return isinstance(exc, _STALE) or (type(exc) is p11x.PKCS11Error and "not initialized" in str(exc))


class _Token:
    """One token of one module in this process: its logged-in session, shared by its signers."""

    def __init__(self, module: str, path: str, serial: bytes, label: str, token: Any, pin: str) -> None:
        self.module, self.path, self.serial, self.label = module, path, serial, label
        self.lock = _module_lock(path)
        self._pin = pin
        self.token = token
        self.session = _open_session(token, pin)
        self.generation = 0
        self.refs = 0

    def check_pin(self, pin: str) -> None:
        if not hmac.compare_digest(pin.encode("utf-8"), self._pin.encode("utf-8")):
            raise Pkcs11Error("pin-incorrect", f"token {self.label!r} is logged in in this process with a "
                                               "different PIN; the token has one user PIN")

    def open_rw(self) -> Any:
        """A read/write session (the token is already logged in through `session`)."""
        try:
            return self.token.open(rw=True)
        except p11x.PKCS11Error as exc:
            raise Pkcs11Error("token-error", f"opening a read/write session on token {self.label!r} failed: "
                                             f"{_lib_failure(exc)}") from None

    def reopen(self) -> None:
        """Open a fresh logged-in session (call with `lock` held)."""
        self._close_session()
        lib = _load(self.module)
        self.token = _find_token(lib, self.path, None, self.serial)
        self.session = _open_session(self.token, self._pin)
        self.generation += 1

    def _close_session(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close()
            except p11x.PKCS11Error:
                pass

    def close(self) -> None:
        with self.lock:
            self._close_session()


def _acquire(module: str, path: str, token: Any, pin: str) -> _Token:
    """The shared `_Token` of `token` (one more reference); call with `_registry_lock` held."""
    serial = bytes(token.serial)
    key = (path, serial)
    tok = _tokens.get(key)
    if tok is not None:
        tok.check_pin(pin)
    else:
        with _module_lock(path):
            tok = _Token(module, path, serial, token.label, token, pin)
        _tokens[key] = tok
    tok.refs += 1
    return tok


def _release(tok: _Token) -> None:
    with _registry_lock:
        tok.refs -= 1
        if tok.refs <= 0:
            if _tokens.get((tok.path, tok.serial)) is tok:
                del _tokens[(tok.path, tok.serial)]
            tok.close()


def _key_template(label: Optional[str], key_id: Optional[bytes]) -> dict:
    attrs: dict = {}
    if label is not None:
        attrs[Attribute.LABEL] = label
    if key_id is not None:
        attrs[Attribute.ID] = key_id
    return attrs


def _describe_key(label: Optional[str], key_id: Optional[bytes]) -> str:
    return " and ".join(x for x in (f"label {label!r}" if label is not None else "",
                                    f"id {key_id.hex()}" if key_id is not None else "") if x)


def _objects(session: Any, attrs: dict) -> list:
    return list(session.get_objects(attrs))


# -- the signer --------------------------------------------------------------------------------

class Pkcs11Signer:
    """An `edge.model.Signer` whose Ed25519 private key is an object on a PKCS#11 token."""

    def __init__(self, module: str, *, pin: str, token_label: Optional[str] = None,
                 token_serial: Union[str, bytes, None] = None, key_label: Optional[str] = None,
                 key_id: Union[bytes, str, None] = None) -> None:
        if token_label is None and token_serial is None:
            raise Pkcs11Error("config-invalid", "set token_label or token_serial")
        if key_label is None and key_id is None:
            raise Pkcs11Error("config-invalid", "set key_label or key_id")
        for name, value in (("token_label", token_label), ("key_label", key_label)):
            if value is not None and (not isinstance(value, str) or not value):
                raise Pkcs11Error("config-invalid", f"{name} must be a non-empty string")
        if not isinstance(pin, str) or not pin:
            raise Pkcs11Error("pin-unavailable", "the PIN is empty")
        self._path = _module_path(module)
        self._so = os.path.abspath(module)
        self.module = module
        self.token_label = token_label
        self._serial = _as_serial(token_serial)
        self.key_label = key_label
        self._key_id = _as_key_id(key_id)
        self._priv: Any = None
        self._gen = -1
        self._public_key: Optional[bytes] = None
        self._closed = False
        with _registry_lock:
            lib = _load(self._so)
            with _module_lock(self._path):
                token = _find_token(lib, self._path, token_label, self._serial)
                if Mechanism.EDDSA not in _mechanisms(token):
                    raise Pkcs11Error("mechanism-unsupported",
                                      f"token {token.label!r} ({lib.manufacturer_id.strip()} "
                                      f"{lib.library_description.strip()}) has no CKM_EDDSA: it cannot sign with "
                                      "Ed25519 (SoftHSM2 >= 2.6 can)")
            self._tok = _acquire(self._so, self._path, token, pin)
        try:
            with self._tok.lock:
                sig = self._sign_locked(_PROBE)  # finds the key (reopening a stale shared session once)
        except BaseException:
            self.close()
            raise
        if not verify_signature(self._public_key, _PROBE, sig):  # type: ignore[arg-type]
            self.close()
            raise Pkcs11Error("key-invalid", f"the public key object of {self._what()} does not verify the private "
                                             "key's signature: they are not one key pair")
        self._did = did_from_public_key(self._public_key)  # type: ignore[arg-type]

    # -- config ---------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, section: Mapping[str, Any], *, base_dir: Union[str, os.PathLike, None] = None
                    ) -> "Pkcs11Signer":
        """The signer of a config table (module docstring); a relative pin_file is resolved
        against `base_dir` (the config file's folder) when given."""
        if not isinstance(section, Mapping):
            raise Pkcs11Error("config-invalid", "a PKCS#11 key config is a table")
        section = dict(section)
        for short, full in _ALIASES.items():
            if short in section:
                if full in section:
                    raise Pkcs11Error("config-invalid", f"set {full} or its short form {short}, not both")
                section[full] = section.pop(short)
        unknown = sorted(set(section) - _CONFIG_KEYS)
        if unknown:
            raise Pkcs11Error("config-invalid", f"unknown field(s) {', '.join(unknown)}; known: "
                                                f"{', '.join(sorted(_CONFIG_KEYS))}")
        if section.get("type", "pkcs11") != "pkcs11":
            raise Pkcs11Error("config-invalid", f"type is {section.get('type')!r}, want 'pkcs11'")
        if "module" not in section:
            raise Pkcs11Error("config-invalid", "module (the path of the token's PKCS#11 library) is required")
        for name in ("module", "token_label", "token_serial", "key_label", "key_id", "pin_file", "pin_env"):
            if name in section and not isinstance(section[name], str):
                raise Pkcs11Error("config-invalid", f"{name} must be a string")
        pin_file = section.get("pin_file")
        if pin_file is not None and base_dir is not None and not os.path.isabs(pin_file):
            pin_file = os.path.join(os.fspath(base_dir), pin_file)
        pin = read_pin(pin_file=pin_file, pin_env=section.get("pin_env"))
        return cls(section["module"], pin=pin, token_label=section.get("token_label"),
                   token_serial=section.get("token_serial"), key_label=section.get("key_label"),
                   key_id=section.get("key_id"))

    # -- Signer ---------------------------------------------------------------------------------
    @property
    def did(self) -> str:
        return self._did

    @property
    def public_key(self) -> bytes:
        return self._public_key  # type: ignore[return-value]

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of `data`, made by the token (thread-safe)."""
        if self._closed:
            raise Pkcs11Error("token-error", f"the signer of {self._what()} is closed")
        data = bytes(data)
        with self._tok.lock:
            return self._sign_locked(data)

    def close(self) -> None:
        """Release this signer's share of the token's session (idempotent)."""
        if not self._closed:
            self._closed = True
            self._priv = None
            tok = getattr(self, "_tok", None)
            if tok is not None:
                _release(tok)

    def __enter__(self) -> "Pkcs11Signer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        did = getattr(self, "_did", None)
        return (f"Pkcs11Signer(module={self.module!r}, token={self.token_label or self._serial!r}, "
                f"key={self.key_label or (self._key_id or b'').hex()!r}, did={did!r})")

    # -- internals (called with the module lock held) ---------------------------------------------
    def _what(self) -> str:
        return f"key {_describe_key(self.key_label, self._key_id)} on token {self._tok.label!r}"

    def _sign_locked(self, data: bytes) -> bytes:
        for attempt in (0, 1):
            try:
                if self._gen != self._tok.generation or self._priv is None:
                    self._bind()
                sig = self._priv.sign(data, mechanism=Mechanism.EDDSA)
                break
            except p11x.PKCS11Error as exc:
                if attempt == 0 and _is_stale(exc):
                    self._tok.reopen()
                    continue
                if isinstance(exc, p11x.MechanismInvalid):
                    raise Pkcs11Error("mechanism-unsupported", f"token {self._tok.label!r} refused CKM_EDDSA for "
                                                               f"{self._what()}") from None
                raise Pkcs11Error("token-error", f"signing with {self._what()} failed: {_lib_failure(exc)}") from None
        sig = bytes(sig)
        if len(sig) != 64:
            raise Pkcs11Error("token-error", f"{self._what()} returned a {len(sig)}-byte signature, want 64")
        return sig

    def _bind(self) -> None:
        """Find the private key and read its public key in the current session."""
        session = self._tok.session
        if session is None:
            self._tok.reopen()
            session = self._tok.session
        what = self._what()
        try:
            privs = _objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                       **_key_template(self.key_label, self._key_id)})
            if not privs:
                raise Pkcs11Error("key-not-found", f"no private key with {_describe_key(self.key_label, self._key_id)} "
                                                   f"on token {self._tok.label!r}")
            eddsa = [k for k in privs if k[Attribute.KEY_TYPE] == KeyType.EC_EDWARDS]
            if not eddsa:
                kinds = sorted({str(getattr(k[Attribute.KEY_TYPE], "name", k[Attribute.KEY_TYPE])) for k in privs})
                raise Pkcs11Error("key-invalid", f"{what} is a {'/'.join(kinds)} key, not Ed25519 (CKK_EC_EDWARDS)")
            if len(eddsa) > 1:
                raise Pkcs11Error("key-ambiguous", f"{len(eddsa)} Ed25519 private keys match {what}; set key_id")
            priv = eddsa[0]
            pub_id = self._key_id if self._key_id is not None else _attr(priv, Attribute.ID)
            pubs = _objects(session, {Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                      Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                                      **_key_template(self.key_label, pub_id or None)})
            if len(pubs) > 1:
                raise Pkcs11Error("key-ambiguous", f"{len(pubs)} Ed25519 public keys match {what}; set key_id")
            holder = pubs[0] if pubs else priv  # some tokens keep CKA_EC_POINT on the private key only
            point = _attr(holder, Attribute.EC_POINT)
            if point is None:
                raise Pkcs11Error("key-not-found", f"{what} has no public key object (CKA_EC_POINT) to derive "
                                                   "the did from")
            params = _attr(holder, Attribute.EC_PARAMS)
            if params is not None and bytes(params) not in _ED25519_PARAMS:
                raise Pkcs11Error("key-invalid", f"{what} is an EdDSA key on curve {bytes(params).hex()} (DER), "
                                                 "not Ed25519")
        except p11x.PKCS11Error as exc:
            if _is_stale(exc):
                raise
            raise Pkcs11Error("token-error", f"looking up {what} failed: {_lib_failure(exc)}") from None
        public_key = public_key_from_ec_point(point)
        if self._public_key is not None and public_key != self._public_key:
            raise Pkcs11Error("key-invalid", f"{what} changed its public key since it was opened (was "
                                             f"{did_from_public_key(self._public_key)})")
        self._public_key = public_key
        self._priv = priv
        self._gen = self._tok.generation


def _attr(obj: Any, attribute: Attribute) -> Any:
    try:
        value = obj[attribute]
    except (p11x.AttributeTypeInvalid, p11x.AttributeSensitive, KeyError, NotImplementedError):
        return None
    return value if value not in (None, b"") else None


def _as_serial(serial: Union[str, bytes, None]) -> Optional[bytes]:
    if serial is None:
        return None
    if isinstance(serial, str):
        serial = serial.encode("ascii", "replace")
    if not isinstance(serial, bytes) or not serial:
        raise Pkcs11Error("config-invalid", "token_serial must be a non-empty string")
    return serial


def _as_key_id(key_id: Union[bytes, str, None]) -> Optional[bytes]:
    if key_id is None or isinstance(key_id, bytes):
        if key_id == b"":
            raise Pkcs11Error("config-invalid", "key_id must not be empty")
        return key_id
    try:
        value = bytes.fromhex(key_id)
    except (TypeError, ValueError):
        raise Pkcs11Error("config-invalid", f"key_id must be hex (CKA_ID), got {key_id!r}") from None
    if not value:
        raise Pkcs11Error("config-invalid", "key_id must not be empty")
    return value


# -- creating a key ----------------------------------------------------------------------------

def generate(module: str, *, pin: str, key_label: str, token_label: Optional[str] = None,
             token_serial: Union[str, bytes, None] = None, key_id: Union[bytes, str, None] = None) -> Pkcs11Signer:
    """Create a non-extractable Ed25519 key pair labelled `key_label` on the token and return
    its signer. `key_id` (CKA_ID, random 16 bytes by default) is set on both halves.

    Refuses (``key-exists``) when the token already has a private key with that label.
    """
    if not isinstance(key_label, str) or not key_label:
        raise Pkcs11Error("config-invalid", "key_label must be a non-empty string")
    if token_label is None and token_serial is None:
        raise Pkcs11Error("config-invalid", "set token_label or token_serial")
    if not isinstance(pin, str) or not pin:
        raise Pkcs11Error("pin-unavailable", "the PIN is empty")
    kid = _as_key_id(key_id) or os.urandom(16)
    path, so = _module_path(module), os.path.abspath(module)
    with _registry_lock:
        lib = _load(so)
        with _module_lock(path):
            token = _find_token(lib, path, token_label, _as_serial(token_serial))
            mechs = _mechanisms(token)
            if Mechanism.EC_EDWARDS_KEY_PAIR_GEN not in mechs or Mechanism.EDDSA not in mechs:
                raise Pkcs11Error("mechanism-unsupported", f"token {token.label!r} cannot generate or use Ed25519 "
                                                           "keys (no CKM_EC_EDWARDS_KEY_PAIR_GEN or CKM_EDDSA)")
        tok = _acquire(so, path, token, pin)
    try:
        with tok.lock:
            session = tok.open_rw()
            try:
                if _objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: key_label}):
                    raise Pkcs11Error("key-exists", f"token {tok.label!r} already has a private key labelled "
                                                    f"{key_label!r}")
                session.generate_keypair(
                    KeyType.EC_EDWARDS, store=True, label=key_label, id=kid,
                    public_template={Attribute.EC_PARAMS: _ED25519_PARAMS[0], Attribute.VERIFY: True},
                    private_template={Attribute.SIGN: True, Attribute.SENSITIVE: True,
                                      Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True},
                )
            except p11x.MechanismInvalid:
                raise Pkcs11Error("mechanism-unsupported", f"token {tok.label!r} refused to generate an Ed25519 "
                                                           "key") from None
            except p11x.PKCS11Error as exc:
                raise Pkcs11Error("token-error", f"generating key {key_label!r} on token {tok.label!r} failed: "
                                                 f"{_lib_failure(exc)}") from None
            finally:
                try:
                    session.close()
                except p11x.PKCS11Error:
                    pass
        return Pkcs11Signer(module, pin=pin, token_label=token_label, token_serial=token_serial,
                            key_label=key_label, key_id=kid)
    finally:
        _release(tok)


# -- admin command -----------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    """``python -m edge.pkcs11 generate|did ...``: prints the key's did (never the PIN)."""
    parser = argparse.ArgumentParser(prog="python -m edge.pkcs11",
                                     description="Create or show an Ed25519 device key on a PKCS#11 token.")
    parser.add_argument("action", choices=("generate", "did"))
    parser.add_argument("--module", required=True, help="path of the PKCS#11 library")
    parser.add_argument("--token-label")
    parser.add_argument("--token-serial")
    parser.add_argument("--key-label", required=True)
    parser.add_argument("--key-id", help="hex CKA_ID (generate: random by default)")
    pin = parser.add_mutually_exclusive_group(required=True)
    pin.add_argument("--pin-file", help="file holding the user PIN (mode 0600)")
    pin.add_argument("--pin-env", help="environment variable holding the user PIN")
    args = parser.parse_args(argv)
    try:
        user_pin = read_pin(pin_file=args.pin_file, pin_env=args.pin_env)
        opener = generate if args.action == "generate" else Pkcs11Signer
        signer = opener(args.module, pin=user_pin, token_label=args.token_label, token_serial=args.token_serial,
                        key_label=args.key_label, key_id=args.key_id)
    except Pkcs11Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with signer:
        print(signer.did)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
