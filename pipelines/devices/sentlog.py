"""The sent-log: one JSON line per record the simulator produced (good or faulty).

Fields: ``device``, ``seq``, ``kind``, ``fault`` (null for good messages),
``topic``, ``partition``, ``offset`` (null with ``error`` set when delivery
failed), ``statement_hash`` (hex), ``ts``, ``size``, ``run`` (run id). End-to-end
tests compare it with what Kafka and the stores hold: nothing lost, nothing
duplicated. (Named "sent-log" to keep it apart from the consensus ledger.)
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from .producer import Delivery
from .signing import OutMessage

__all__ = ["SentRecord", "SentLog", "read_sent_log"]


@dataclass(frozen=True)
class SentRecord:
    """What was sent and where it landed."""

    run: str
    device: str
    seq: int
    kind: str
    fault: str | None
    topic: str
    partition: int | None
    offset: int | None
    statement_hash: str
    ts: int
    size: int
    error: str | None = None

    @classmethod
    def of(cls, run: str, msg: OutMessage, delivery: Delivery) -> "SentRecord":
        return cls(run, msg.device, msg.statement.seq, msg.statement.kind, msg.fault, delivery.topic,
                   delivery.partition, delivery.offset, msg.statement.hash().hex(), msg.statement.ts,
                   len(msg.value), delivery.error)


class SentLog:
    """Append-only JSON-lines file; safe to call from a producer's I/O thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, record: SentRecord) -> None:
        line = json.dumps(asdict(record), separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._fh.flush()
            self._fh.close()


def read_sent_log(path: Path, run: str | None = None) -> Iterator[SentRecord]:
    """The records of `path` (only those of `run` when given)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = SentRecord(**json.loads(line))
                if run is None or rec.run == run:
                    yield rec
