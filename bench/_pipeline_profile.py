"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) of the trusted worker.

Each line is ``frame;frame;...;leaf count`` with frames ``func (file:line)``.
We report, as shares of the active samples, the inclusive time of the
functions that name a pipeline step (checks, hashing, archive, database
writes, seal, Kafka client), and the functions with the most self time.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

__all__ = ["profile_summary", "STEPS"]

#: step name -> regex on a frame "func (file:line)"; the first match in a stack (from the leaf) wins
STEPS: list[tuple[str, str]] = [
    ("device signature check (nacl verify)", r"verify_statement|crypto_sign_open|nacl/signing"),
    ("gateway receipt signature", r"seal_receipt|crypto_sign \("),
    ("payload SHA-256", r"matches_payload|_hashes\.py|sha256"),
    ("Arrow parse", r"ipc\.py|read_all|open_stream"),
    ("MinIO archive (put_raw)", r"put_raw|blobs\.py|minio/"),
    ("PostgreSQL statements", r"write_statements|write_receipts|readers\.py"),
    ("PostgreSQL readings COPY", r"write_readings|_stage_table|_csv \("),
    ("PostgreSQL blobs", r"write_blobs"),
    ("last seq lookup", r"stored_last_seq|last_seq \("),
    ("ingest checks (other)", r"checks\.py"),
    ("seal JSON", r"seal_value"),
    ("Kafka client (aiokafka)", r"aiokafka/"),
    ("Faust runtime", r"faust/|mode/"),
    ("asyncio loop / selector", r"asyncio/|selectors\.py"),
]
_COMPILED = [(n, re.compile(p)) for n, p in STEPS]
_LINE = re.compile(r"^(.*) (\d+)$")


def _name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``."""
    m = re.match(r"^(.*) \((?:.*/)?([^/:]+)(?::\d+)?\)$", frame)
    return f"{m.group(1)} ({m.group(2)})" if m else frame


def profile_summary(path: Path, top: int = 10) -> dict:
    """Shares (%) of active samples: by pipeline step (inclusive) and the top self-time functions."""
    steps: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        frames, n = m.group(1).split(";"), int(m.group(2))
        total += n
        selfs[_name(frames[-1])] += n
        for frame in reversed(frames):
            step = next((name for name, rx in _COMPILED if rx.search(frame)), None)
            if step is not None:
                steps[step] += n
                break
        else:
            steps["other"] += n
    if total == 0:
        return {"samples": 0, "inclusive": [], "self": []}
    pct = lambda n: round(100.0 * n / total, 1)  # noqa: E731
    return {"samples": total,
            "inclusive": [(k, pct(v)) for k, v in steps.most_common()],
            "self": [(k, pct(v)) for k, v in selfs.most_common(top)]}
