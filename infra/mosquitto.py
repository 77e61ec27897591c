"""The mosquitto MQTT broker binary (Debian's ``mosquitto``), for the edge agent's MQTT and Sparkplug B
tests: installed with apt when missing (idempotent), never started here — whoever needs a broker
runs the binary with its own config file on its own port."""

from __future__ import annotations

import shutil
from pathlib import Path

from ._errors import MissingToolError
from ._tools import apt_install

__all__ = ["mosquitto_binary"]

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def _find() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _CANDIDATES if Path(p).is_file()), None)


def mosquitto_binary(*, auto_install: bool = True) -> str:
    """Path of the mosquitto broker; installs the Debian package when missing and allowed
    (``auto_install`` is ``settings.auto_install``), else raises :class:`MissingToolError` with the fix."""
    found = _find()
    if found:
        return found
    apt_install(["mosquitto"], service="mosquitto", auto_install=auto_install)
    found = _find()
    if found is None:
        raise MissingToolError("the Debian mosquitto package was installed but the mosquitto binary is "
                               "still missing; check `dpkg -L mosquitto`.", service="mosquitto")
    return found
