"""Where a component finds its secrets and its TLS files (part of the config module).

Every password, key and token of the stack is resolved here, highest priority first, from

1. the environment variable ``SEALSTREAM_<NAME>`` (for example ``SEALSTREAM_PG_PASSWORD``),
2. a file named by ``SEALSTREAM_<NAME>_FILE`` (the way container platforms hand out secrets),
3. the file ``<home>/secrets/<name>`` that ``sealstream stack up`` generates, once per stack, 0600.

A secret is never a default in code, and `mask` is the one place that hides a value wherever it
could be printed. TLS files follow the same pattern: the stack's own CA and certificates under
``<home>/pki`` (made by `infra.pki`), or ``SEALSTREAM_<SERVICE>_{CA,CERT,KEY}_FILE`` for a remote
cluster with its own CA.

This module does no network I/O and imports nothing of the project but the settings, so every
layer may read it.
"""

from __future__ import annotations

import os
import re
import secrets as _random
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PRINCIPALS",
    "SecretError",
    "TLSFiles",
    "mask",
    "new_secret",
    "pki_dir",
    "read_secret",
    "secret_path",
    "secrets_dir",
    "tls_files",
    "write_private",
]

#: The jobs of the stack; each is one principal on every service it uses, with the least rights
#: that job needs (Kafka ``User:<name>`` with ACLs, a PostgreSQL role, a MinIO user and policy).
#: Factories are principals too: ``factory-<name>``, made by the stack for each factory it knows.
PRINCIPALS: dict[str, str] = {
    "admin": "the stack itself: provisioning, migrations, topics, bucket, users and roles",
    "pipeline": "pipeline workers: read the raw topics, write sealed/deadletter/anchors; insert the ingest "
                "tables; put and get raw/ and manifests/",
    "verifier": "the verifier agent and `sealstream verify`: read anchors, every row and blob; write verdicts "
                "and alerts",
    "alerts": "the alerts bridge: write iiot.alerts",
    "analyst": "data scientists: SELECT the verified_* views, run exports",
    "grafana": "the Grafana datasource: read only",
}

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class SecretError(Exception):
    """A secret or TLS file that should exist does not, or is readable by others."""


def secrets_dir(home: Path) -> Path:
    return Path(home).expanduser() / "secrets"


def pki_dir(home: Path) -> Path:
    return Path(home).expanduser() / "pki"


def secret_path(home: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"bad secret name {name!r}")
    return secrets_dir(home) / name


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 from the first byte on (temp file, fsync,
    rename): no reader ever sees a partial file or a file readable by others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_secret(home: Path, name: str, nbytes: int = 24) -> str:
    """The stack's generated secret `name`, made on first call (URL-safe, `nbytes` random bytes)."""
    path = secret_path(home, name)
    if not path.exists():
        write_private(path, (_random.token_urlsafe(nbytes) + "\n").encode())
    return _read_file(path, f"the stack's secret {name}")


def read_secret(home: Path, name: str, *, env: dict[str, str] | None = None) -> str:
    """The value of secret `name` (env, then ``..._FILE``, then the stack's file); SecretError if none."""
    environ = os.environ if env is None else env
    var = f"SEALSTREAM_{name.upper()}"
    if environ.get(var):
        return environ[var]
    if environ.get(var + "_FILE"):
        return _read_file(Path(environ[var + "_FILE"]), f"{var}_FILE")
    path = secret_path(home, name)
    if path.exists():
        return _read_file(path, f"the stack's secret {name}")
    raise SecretError(f"no secret {name}: set {var} or {var}_FILE, or run `sealstream stack up`, which generates "
                      f"{path}")


def _read_file(path: Path, what: str) -> str:
    try:
        value = path.read_text("utf-8").strip()
    except OSError as exc:
        raise SecretError(f"cannot read {what} ({path}): {exc.strerror}") from None
    if not value:
        raise SecretError(f"{what} ({path}) is empty")
    return value


def mask(text: str, *values: str) -> str:
    """`text` with every occurrence of each secret in `values` replaced by ``***``."""
    for value in values:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of one TLS client or server: the CA to trust, and the own certificate and key
    (``None`` for a client that authenticates by password only)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def tls_files(home: Path, service: str, principal: str | None = None, *,
              env: dict[str, str] | None = None) -> TLSFiles:
    """TLS files a client of `service` (``kafka``, ``pg``, ``minio``) uses as `principal`.

    ``SEALSTREAM_<SERVICE>_CA_FILE`` / ``_CERT_FILE`` / ``_KEY_FILE`` override each file (a remote
    cluster with its own CA); else the stack's CA and the principal's certificate under
    ``<home>/pki`` (`infra.pki.StackPKI` names them ``client-<principal>.crt``/``.key``).
    """
    environ = os.environ if env is None else env
    prefix = f"SEALSTREAM_{service.upper()}_"
    pki = pki_dir(home)
    ca = Path(environ.get(prefix + "CA_FILE") or pki / "ca.crt")
    cert: Path | None = None
    key: Path | None = None
    if environ.get(prefix + "CERT_FILE"):
        cert = Path(environ[prefix + "CERT_FILE"])
        key = Path(environ.get(prefix + "KEY_FILE") or cert)
    elif principal is not None:
        cert = pki / f"client-{principal}.crt"
        key = pki / f"client-{principal}.key"
    return TLSFiles(ca=ca, cert=cert, key=key)
