"""A SoftHSM2 token in a test's tmp_path, for the PKCS#11 signer tests (tests/edge/test_pkcs11.py).

`init_token` writes a softhsm2.conf under the folder, points SOFTHSM2_CONF at it (through
pytest's monkeypatch, undone after the test), initialises a token with ``softhsm2-util
--init-token --free`` and re-initialises the module in this process when python-pkcs11 has
already loaded it (SoftHSM2 reads its config and token folder in C_Initialize).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pkcs11

from infra.softhsm import SoftHsm


@dataclass(frozen=True)
class Token:
    module: str
    label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)
    conf: Path
    dir: Path

    def pin_file(self, name: str = "token.pin", *, mode: int = 0o600, pin: str | None = None) -> Path:
        path = self.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write((self.pin if pin is None else pin) + "\n")
        os.chmod(path, mode)
        return path

    def section(self, key_label: str, **extra: object) -> dict:
        return {"module": self.module, "token_label": self.label, "key_label": key_label,
                "pin_file": str(self.pin_file()), **extra}


def reload_module(module: str) -> None:
    """C_Finalize + C_Initialize of an already loaded module (every open session is invalidated)."""
    loaded = pkcs11._loaded.get(module) or pkcs11._loaded.get(os.path.realpath(module))
    if loaded is not None:
        loaded.reinitialize()


def init_token(hsm: SoftHsm, folder: Path, monkeypatch, *, labels: tuple[str, ...] = ("sealstream-test",),
               pin: str = "4711-user", so_pin: str = "8812-so-officer") -> list[Token]:
    tokens_dir = folder / "softhsm-tokens"
    tokens_dir.mkdir(parents=True, exist_ok=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens_dir}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    out = []
    for label in labels:
        proc = subprocess.run([hsm.util, "--init-token", "--free", "--label", label, "--so-pin", so_pin,
                               "--pin", pin], capture_output=True, text=True, env=dict(os.environ))
        assert proc.returncode == 0, f"softhsm2-util --init-token failed: {proc.stderr.strip()}"
        out.append(Token(module=hsm.module, label=label, pin=pin, so_pin=so_pin, conf=conf, dir=folder))
    reload_module(hsm.module)
    return out
