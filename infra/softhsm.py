"""SoftHSM2 (Debian ``softhsm2``): the PKCS#11 token the edge's key tests and a development edge use.

``ensure_softhsm()`` installs the package with apt when it is missing (as root, unless
``auto_install`` is false, like the stack's other Debian packages) and returns where its
PKCS#11 module and ``softhsm2-util`` are. Idempotent: a no-op once installed. SoftHSM2 >= 2.6
is required (the first release with Ed25519: CKK_EC_EDWARDS, CKM_EDDSA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._errors import MissingToolError
from ._tools import apt_install, tool_version, which

__all__ = ["SoftHsm", "ensure_softhsm", "softhsm_module", "MODULE_PATHS"]

_SERVICE = "softhsm"
#: Where Debian's libsofthsm2 puts the PKCS#11 module (first existing one wins).
MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
_MIN_VERSION = (2, 6)


@dataclass(frozen=True)
class SoftHsm:
    module: str  # path of libsofthsm2.so, the `module` of a PKCS#11 key config
    util: str  # path of softhsm2-util (token init)
    version: str


def softhsm_module() -> str | None:
    """Path of the installed SoftHSM2 PKCS#11 module, or None."""
    return next((p for p in MODULE_PATHS if os.path.exists(p)), None)


def ensure_softhsm(*, auto_install: bool = True) -> SoftHsm:
    """SoftHSM2's module and tool, installing the Debian package ``softhsm2`` first if needed."""
    if softhsm_module() is None or which("softhsm2-util") is None:
        apt_install(["softhsm2"], service=_SERVICE, auto_install=auto_install)
    module, util = softhsm_module(), which("softhsm2-util")
    if module is None or util is None:
        raise MissingToolError("softhsm2 was installed but libsofthsm2.so or softhsm2-util is still missing; "
                               "check the Debian softhsm2 and libsofthsm2 packages.", service=_SERVICE)
    version = tool_version([util, "--version"], r"(\d+\.\d+(?:\.\d+)?)") or "unknown"
    parts = tuple(int(x) for x in version.split(".")[:2]) if version != "unknown" else (0, 0)
    if parts < _MIN_VERSION:
        raise MissingToolError(f"SoftHSM2 {version} has no Ed25519; version 2.6 or later is needed "
                               "(Debian 11 or later ships it).", service=_SERVICE)
    return SoftHsm(module=module, util=util, version=version)
