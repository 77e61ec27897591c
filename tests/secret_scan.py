"""A watch over the whole test run: no secret of the stack may appear in anything the CLI prints or
anything a test, a worker or a service logs (issue 17).

The secrets are read from the state directory as they appear (a stack makes them on first `up`):
every file under ``<home>/secrets``, the body of every PEM private key under ``<home>/pki``, and
the seed of every JSON key file under ``<home>`` (gateway, ledger node, admin and client keys).
`SecretScan.check` is fed every CLI output of `click.testing.CliRunner`, every test's captured
stdout/stderr/log (which also holds what subprocesses print, by pytest's fd capture), and at the
end of the session every log file under ``<home>/logs`` and ``<home>/ledger``. A finding names the
place and the secret's file, never the secret.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SecretScan"]

#: shorter values are not looked for (they would match by chance)
MIN_SECRET_LEN = 12


#: directories of the state directory that hold key files (services' data/ and the rest are not walked:
#: a running MinIO creates and deletes files under data/ all the time)
KEY_DIRS = ("gateway", "ledger", "devices", "edge")


def _key_files(home: Path) -> list[Path]:
    out: list[Path] = []
    for name in KEY_DIRS:
        root = home / name
        try:
            out.extend(p for p in root.rglob("*.key") if p.is_file())
        except OSError:  # a file gone while walking: the next check sees the rest
            continue
    return out


@dataclass
class SecretScan:
    home: Path
    findings: list[tuple[str, str]] = field(default_factory=list)
    _cache: dict[Path, tuple[float, list[str]]] = field(default_factory=dict)

    def _values_of(self, path: Path) -> list[str]:
        try:
            raw = path.read_text("utf-8", errors="replace")
        except OSError:
            return []
        if path.parent.name == "secrets":
            return [raw.strip()]
        if "PRIVATE KEY-----" in raw:
            body = [ln for ln in raw.splitlines() if ln and not ln.startswith("-----")]
            return ["".join(body)[:64]] + [ln for ln in body if len(ln) >= 40]
        if raw.lstrip().startswith("{"):
            try:
                doc = json.loads(raw)
            except ValueError:
                return []
            if isinstance(doc, dict):
                return [str(doc[k]) for k in ("seed", "secret", "private") if isinstance(doc.get(k), str)]
        return []

    def secrets(self) -> dict[str, str]:
        """value -> the file it comes from (relative to home), for every secret that exists now."""
        out: dict[str, str] = {}
        if not self.home.is_dir():
            return out
        candidates = list((self.home / "secrets").glob("*")) + list((self.home / "pki").glob("*.key"))
        candidates += _key_files(self.home)
        for path in candidates:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, self._values_of(path))
                self._cache[path] = cached
            for value in cached[1]:
                if len(value) >= MIN_SECRET_LEN:
                    out[value] = os.path.relpath(path, self.home)
        return out

    def check(self, where: str, text: str | bytes | None) -> None:
        if not text:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        for value, origin in self.secrets().items():
            if value in text and (where, origin) not in self.findings:
                self.findings.append((where, origin))

    def check_files(self) -> None:
        """Every log file the stack, its ledger and its workers wrote."""
        for root in (self.home / "logs", self.home / "ledger"):
            if not root.is_dir():
                continue
            for path in root.rglob("*"):
                if path.is_file() and (path.suffix in (".log", ".txt", ".jsonl") or path.parent.name == "logs"):
                    try:
                        self.check(str(path), path.read_bytes()[-50_000_000:])
                    except OSError:
                        continue

    def report(self) -> str:
        lines = [f"{len(self.findings)} secret(s) printed or logged during the test run:"]
        lines += [f"  - the secret of {origin} appears in {where}" for where, origin in self.findings[:50]]
        return "\n".join(lines)
