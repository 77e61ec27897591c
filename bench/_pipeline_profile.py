"""Summarise a py-spy profile of the trusted worker (``record --idle --format raw``: collapsed stacks).

Each line is ``frame;frame;...;leaf count``, frames ``func (file:line)``, root
first. Samples are wall-clock (``--idle``), so waiting on PostgreSQL, MinIO or
Kafka shows up where it happens. Three views:

* ``store``: the samples inside `IngestProcessor.process_batch` (the blocking
  work the agents run in threads, one batch per raw topic at a time) and in
  its archive threads' `BlobStore.put_raw` (parallel PUTs), split by pipeline
  step, as shares of those samples (a batch thread waiting for its PUTs counts
  as MinIO too); ``store_concurrency`` = their count / (seconds x rate), the
  average number of threads doing store work at once (batch threads, at most
  3, plus PUT threads);
* ``event_loop``: the main thread (Faust, aiokafka, the agents' own code),
  split into idle (waiting in ``select``) and what it runs;
* ``self``: the functions with the most self time outside idle waits.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Optional

__all__ = ["profile_summary", "STORE_STEPS", "LOOP_STEPS"]

#: (step, regex on one frame); a stack goes to the first step matched, scanning from the leaf up
STORE_STEPS: list[tuple[str, str]] = [
    ("device signature check", r"verify_statement|nacl/"),
    ("gateway receipt signature", r"seal_receipt"),
    ("payload SHA-256", r"matches_payload|trust/hashes\.py"),
    ("Arrow parse", r"pyarrow/"),
    ("MinIO archive PUT", r"put_raw|storage/blobs\.py|storage/_s3put\.py|minio/|\._archive "),
    ("PostgreSQL readings COPY", r"write_readings|ensure_partitions|_insert_readings|_readings_table"),
    ("PostgreSQL blobs", r"write_blobs|_insert_blobs"),
    ("PostgreSQL statements (+ replay lookups)", r"write_statements|write_receipts|write_sealed|storage/readers\.py"),
    ("last-seq lookup (PostgreSQL)", r"stored_last_seq|\.last_seq "),
    ("ingest checks (parse, limits)", r"pipelines/checks\.py|trust/statement\.py|trust/canonical"),
    ("pool / other", r"psycopg_pool/|\.process \("),
]
LOOP_STEPS: list[tuple[str, str]] = [
    ("produce + wait for acks (aiokafka producer)", r"aiokafka/producer"),
    ("fetch (aiokafka consumer)", r"aiokafka/consumer|aiokafka/conn|aiokafka/client"),
    ("seal JSON + headers", r"seal_value|\.value \(pipelines/worker"),
    ("anchor agent", r"anchor"),
    ("metrics", r"prometheus_client/"),
    ("logging", r"logging/|colorlog|formatter\.py"),
    ("Faust/mode runtime", r"faust/|mode/"),
    ("asyncio machinery", r"asyncio/|selectors\.py"),
]
_LINE = re.compile(r"^(.*) (\d+)$")
_IDLE_LEAF = re.compile(r"EpollSelector\.select|_worker \(concurrent/futures/thread\.py|Condition\.wait|"
                        r"Event\.wait|\.select \(selectors|_wait_for_tstate_lock|socketserver|serve_forever|"
                        # a blocking read of an answer (the MinIO PUT's, PostgreSQL's)
                        r"SocketIO\.readinto|Connection\.wait \(connection\.py")
_STORE = [(n, re.compile(p)) for n, p in STORE_STEPS]
_LOOP = [(n, re.compile(p)) for n, p in LOOP_STEPS]


def _name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``."""
    m = re.match(r"^(.*) \((?:.*/)?([^/:]+)(?::\d+)?\)$", frame)
    return f"{m.group(1)} ({m.group(2)})" if m else frame


def _step(frames: list[str], steps: list, default: str) -> str:
    for frame in reversed(frames):
        for name, rx in steps:
            if rx.search(frame):
                return name
    return default


def _shares(c: Counter, total: int) -> list[tuple[str, float]]:
    return [(k, round(100.0 * v / total, 1)) for k, v in c.most_common()] if total else []


def profile_summary(path: Path, seconds: Optional[float] = None, rate_hz: int = 100, top: int = 10) -> dict:
    """The three views (shares in %); `seconds` and `rate_hz` give the store concurrency."""
    store: Counter[str] = Counter()
    loop: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        frames, n = m.group(1).split(";"), int(m.group(2))
        total += n
        idle = bool(_IDLE_LEAF.search(frames[-1]))
        if not idle:
            selfs[_name(frames[-1])] += n
        if any((".process (" in f or ".process_batch (" in f) and "pipelines/worker.py" in f for f in frames) \
                or any(f.startswith("BlobStore.put_raw (") for f in frames):
            store[_step(frames, _STORE, "pool / other")] += n
        elif not frames[0].startswith("Thread._bootstrap"):
            loop["idle (waiting in select)" if idle else _step(frames, _LOOP, "other")] += n
    n_store, n_loop = sum(store.values()), sum(loop.values())
    busy = sum(selfs.values())
    return {
        "samples": total,
        "store": _shares(store, n_store),
        "store_concurrency": round(n_store / (seconds * rate_hz), 2) if seconds else None,
        "event_loop": _shares(loop, n_loop),
        "self": [(k, round(100.0 * v / busy, 1)) for k, v in selfs.most_common(top)] if busy else [],
    }
