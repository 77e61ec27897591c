"""Finding, and where allowed installing, the programs the stack runs.

Debian packages are installed with apt when running as root (``apt-get update``
runs once per ``up`` at most); otherwise the error names the package to install.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from ._errors import DownloadError, MissingToolError

__all__ = ["which", "require_tool", "apt_install", "run_checked", "tool_version"]

log = logging.getLogger("sealstream.stack")

_apt_updated = False


def which(name: str) -> str | None:
    return shutil.which(name)


def _can_apt(auto_install: bool) -> bool:
    return auto_install and os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(packages: list[str], *, service: str, auto_install: bool = True) -> None:
    """Install Debian packages, or raise with the command the user should run.

    ``auto_install`` is ``settings.auto_install`` (``SEALSTREAM_AUTO_INSTALL=0``
    keeps the stack from touching the system's packages).
    """
    global _apt_updated
    if not _can_apt(auto_install):
        raise MissingToolError(
            f"{service} needs the Debian package(s) {' '.join(packages)}, which are not installed; "
            f"run `sudo apt-get install -y {' '.join(packages)}` and then `sealstream stack up` again.",
            service=service,
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        log.info("apt-get update", extra={"service": service})
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        _apt_updated = True
    log.info("apt-get install %s", " ".join(packages), extra={"service": service})
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DownloadError(
            f"Installing {' '.join(packages)} with apt failed ({last[0]}); "
            f"check access to the Debian mirrors and run `sealstream stack up` again.",
            service=service,
        )


def require_tool(name: str, *, service: str, package: str | None, hint: str, auto_install: bool = True) -> str:
    """Path of ``name``; installs ``package`` with apt if missing and allowed."""
    found = which(name)
    if found:
        return found
    if package is not None and _can_apt(auto_install):
        apt_install([package], service=service, auto_install=auto_install)
        found = which(name)
        if found:
            return found
    raise MissingToolError(f"{service} needs `{name}`, which is not on PATH; {hint}.", service=service)


def run_checked(argv: list[str], *, service: str, what: str, fix: str, log_path: Path,
                env: dict[str, str] | None = None, timeout: float = 1800) -> None:
    """Run a set-up command, its output appended to ``log_path``; on failure raise :class:`DownloadError`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n--- running: {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DownloadError(f"{what} took longer than {timeout:.0f} s (log: {log_path}); {fix}.",
                                service=service) from None
    if proc.returncode != 0:
        raise DownloadError(f"{what} failed with exit code {proc.returncode} (log: {log_path}); {fix}.",
                            service=service)


def tool_version(argv: list[str], pattern: str) -> str | None:
    """First match of ``pattern`` in the output of ``argv`` (stdout and stderr)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else None
