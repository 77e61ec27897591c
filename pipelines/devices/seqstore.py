"""Per-device sequence numbers that never go backwards, even across crashes.

The store hands out seqs from blocks reserved on disk: before seq ``n`` is used,
``seq.json`` already says the device may resume at ``>= n + 1``. A clean `close`
writes the exact next seq (so a restart continues without a gap); a crash costs
at most one unused block (a gap, which is allowed: seqs are strictly increasing,
not contiguous). Writes are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["SeqStore"]


class SeqStore:
    """Next seq per device id, persisted in one JSON file."""

    def __init__(self, path: Path, block: int = 1000) -> None:
        self.path = Path(path)
        self.block = block
        self._next: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        if self.path.exists():
            self._next = {k: int(v) for k, v in json.loads(self.path.read_text("utf-8")).items()}
        self._reserved = dict(self._next)

    def peek(self, device: str) -> int:
        """The seq `take` would return next."""
        return self._next.get(device, 0)

    def take(self, device: str) -> int:
        """Reserve and return the device's next seq."""
        n = self._next.get(device, 0)
        if n >= self._reserved.get(device, 0):
            self._reserved[device] = n + self.block
            self._write(dict(self._reserved))
        self._next[device] = n + 1
        return n

    def close(self) -> None:
        """Persist the exact next seq of every device (no gap on a clean restart)."""
        self._write(dict(self._next))
        self._reserved = dict(self._next)

    def _write(self, doc: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
