"""The store-and-forward spool: SQLite in WAL mode, ``PRAGMA synchronous=FULL``.

persist -> send -> broker ack -> delete. A message is inserted, with the device's next `seq` and
(for blobs) the source's `ref`, in ONE transaction that is fsynced before anything can be sent
(``synchronous=FULL``: every commit syncs the WAL). NORMAL would survive a SIGKILL too but may lose
the last commits on power loss; a message that had already left for Kafka and whose seq row was
lost would make the next message reuse its seq, which the pipeline rejects as a replay. So FULL:
one fsync per commit; the agent commits a whole group flush (every due device) at once.

Open windows: each reading is written to ``pending_readings`` (same file, same fsync policy; the
agent batches the readings that arrive during one commit into the next) before the source's `emit`
returns; `append(..., consumed=ids)` deletes the readings a message carries in the transaction that
spools it, so a SIGKILL or power loss leaves every acknowledged reading either pending (reloaded
into its window on start) or in exactly one spooled message. A confidential device's pending
readings go to ``pending_sealed`` instead, each sealed with AES-256-GCM under the spool key
(`edge.pending_seal`; its row id, bound in the AAD, is chosen inside the inserting transaction), and
are consumed the same way (`append(..., consumed_sealed=ids)`); a row that does not open is moved to
``pending_refused`` with its reason, never dropped silently, never crashed on.

Order: rows are sent in `id` order (insertion order, per device the seq order). A new device's first
seq is the edge's clock in microseconds (seqs stay above any an earlier, lost spool handed out,
as long as the clock is not set back).

Bounds: `full()` is ``"size"`` when the spooled bytes reach `max_bytes` and ``"age"`` when the
oldest message waited more than `max_age_s`; the agent then refuses new readings at the source
boundary (docs/edge.md, "When the spool fills"). Nothing spooled is ever dropped: a message the
broker refuses for good (e.g. too large) moves to the ``rejected`` table, counted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from trust import canonical
from trust.statement import Statement

from .pending_seal import PendingKey, PendingRefused
from .sdk import EdgeMessage

__all__ = ["Spool", "Spooled", "SpoolStats", "Build", "PendingRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, seq INTEGER NOT NULL, topic TEXT NOT NULL,
    key BLOB NOT NULL, value BLOB NOT NULL, headers BLOB NOT NULL,
    received_ms INTEGER NOT NULL, spooled_ms INTEGER NOT NULL, size INTEGER NOT NULL, source TEXT NOT NULL,
    statement BLOB NOT NULL,
    UNIQUE (device, seq));
CREATE TABLE IF NOT EXISTS seqs (device TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refs (ref TEXT PRIMARY KEY, device TEXT NOT NULL, seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY, device TEXT, seq INTEGER, topic TEXT, key BLOB,
    value BLOB, headers BLOB, received_ms INTEGER, spooled_ms INTEGER, size INTEGER, source TEXT,
    statement BLOB, reason TEXT, at_ms INTEGER);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending_readings (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
    device TEXT NOT NULL, sensor TEXT NOT NULL, value REAL NOT NULL, ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending_sealed (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
    device TEXT NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pending_refused (id INTEGER PRIMARY KEY, source TEXT, device TEXT, sealed BLOB,
    reason TEXT NOT NULL, detail TEXT NOT NULL, at_ms INTEGER NOT NULL);
"""

#: One reading of an open window as `Spool.add_pending` takes it: source, device, sensor, value, ts_ms, received_ms.
PendingRow = tuple[str, str, str, float, int, int]


@dataclass(frozen=True)
class Spooled:
    """A spooled message as the sender reads it."""

    id: int
    device: str
    seq: int
    size: int
    spooled_ms: int
    message: EdgeMessage


@dataclass(frozen=True)
class SpoolStats:
    messages: int
    bytes: int
    oldest_ms: Optional[int]
    devices: int
    rejected: int

    def age_s(self, now_ms: Optional[int] = None) -> float:
        if self.oldest_ms is None:
            return 0.0
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now - self.oldest_ms) / 1000)


#: What `Spool.append` takes per message: device did, a builder given the seq, an optional ref, the source.
Build = tuple[str, Callable[[int], EdgeMessage], Optional[str], str]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Spool:
    """One spool database (``<dir>/spool.db``); thread-safe (one connection behind a lock)."""

    def __init__(self, directory: Path, max_bytes: int = 1 << 30, max_age_s: float = 86400.0,
                 synchronous: str = "FULL") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "spool.db"
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        self._oldest: Optional[int] = self._query_oldest()

    # -- writing --------------------------------------------------------------------------------------
    def add_pending(self, rows: Sequence[PendingRow], sealed: Optional[Sequence[bool]] = None,
                    key: Optional[PendingKey] = None) -> list[int]:
        """Write readings of open windows in one transaction (fsynced on return, like every commit
        here); their ids, ascending in the order given (the order a restart reloads them in). A row
        whose `sealed` flag is set goes, sealed under `key`, to ``pending_sealed`` (its id is of that
        table: each table's ids ascend in the order given)."""
        if not rows:
            return []
        flags = list(sealed) if sealed is not None else [False] * len(rows)
        if any(flags) and key is None:
            raise ValueError("sealed pending readings need the spool key")
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                ids: list[int] = []
                next_sealed: Optional[int] = None
                for r, seal in zip(rows, flags, strict=True):
                    if not seal:
                        ids.append(int(db.execute("INSERT INTO pending_readings (source, device, sensor, value, "
                                                  "ts_ms, received_ms) VALUES (?,?,?,?,?,?)", r).lastrowid or 0))
                        continue
                    if next_sealed is None:  # AUTOINCREMENT: never an id handed out before, in this file
                        row = db.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = "
                                         "'pending_sealed'), 0), coalesce((SELECT max(id) FROM pending_sealed), 0), "
                                         "coalesce((SELECT max(id) FROM pending_refused), 0))").fetchone()
                        next_sealed = int(row[0]) + 1
                    source, device, sensor, value, ts_ms, received_ms = r
                    assert key is not None
                    blob = key.seal(source, device, next_sealed, sensor, value, ts_ms, received_ms)
                    db.execute("INSERT INTO pending_sealed (id, source, device, sealed) VALUES (?,?,?,?)",
                               (next_sealed, source, device, blob))
                    ids.append(next_sealed)
                    next_sealed += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return ids

    def load_pending(self) -> list[tuple[int, PendingRow]]:
        """Every reading of an open window, in id (emit) order."""
        with self._lock:
            rows = self._db.execute("SELECT id, source, device, sensor, value, ts_ms, received_ms "
                                    "FROM pending_readings ORDER BY id").fetchall()
        return [(int(r[0]), (str(r[1]), str(r[2]), str(r[3]), float(r[4]), int(r[5]), int(r[6]))) for r in rows]

    def load_sealed(self, key: PendingKey) -> tuple[list[tuple[int, PendingRow]], list[tuple[int, str, str, str]]]:
        """The sealed readings of open windows, opened, in id order; and the refused ones
        ``(id, device, reason, detail)``, moved (one transaction) to ``pending_refused``: a row that
        does not open is kept as evidence, out of the way of every later start."""
        with self._lock:
            rows = self._db.execute("SELECT id, source, device, sealed FROM pending_sealed ORDER BY id").fetchall()
        ok: list[tuple[int, PendingRow]] = []
        refused: list[tuple[int, str, str, str]] = []
        for id_, source, device, blob in rows:
            try:
                sensor, value, ts_ms, received_ms = key.open(str(source), str(device), int(id_), bytes(blob))
            except PendingRefused as e:
                refused.append((int(id_), str(device), e.reason, str(e)))
                continue
            ok.append((int(id_), (str(source), str(device), sensor, value, ts_ms, received_ms)))
        if refused:
            now = _now_ms()
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    for id_, _device, reason, detail in refused:
                        db.execute("INSERT OR REPLACE INTO pending_refused (id, source, device, sealed, reason, "
                                   "detail, at_ms) SELECT id, source, device, sealed, ?, ?, ? FROM pending_sealed "
                                   "WHERE id = ?", (reason, detail, now, id_))
                        db.execute("DELETE FROM pending_sealed WHERE id = ?", (id_,))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        return ok, refused

    @property
    def pending_sealed(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM pending_sealed").fetchone()[0])

    @property
    def pending_refused(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM pending_refused").fetchone()[0])

    @property
    def pending_readings(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM pending_readings").fetchone()[0])

    def append(self, builds: Sequence[Build], consumed: Sequence[int] = (),
               consumed_sealed: Sequence[int] = ()) -> list[Optional[EdgeMessage]]:
        """Spool each build in one transaction (fsynced on return): its seq is the device's next, the
        builder signs with it. A build whose `ref` is already spooled is skipped (None in the result).
        `consumed`: ids of pending readings these messages carry, deleted in the same transaction (so a
        reading is either pending or in exactly one spooled message, never both, never neither);
        `consumed_sealed`: the same for ``pending_sealed``."""
        out: list[Optional[EdgeMessage]] = []
        now = _now_ms()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                added = added_bytes = 0
                nexts: dict[str, int] = {}
                for did, build, ref, source in builds:
                    if ref is not None and db.execute("SELECT 1 FROM refs WHERE ref = ?", (ref,)).fetchone():
                        out.append(None)
                        continue
                    seq = nexts.get(did)
                    if seq is None:
                        r = db.execute("SELECT next FROM seqs WHERE device = ?", (did,)).fetchone()
                        seq = int(r[0]) if r else int(time.time() * 1_000_000)
                    msg = build(seq)
                    if msg.statement.seq != seq or msg.statement.device != did:
                        raise ValueError("a builder must sign the seq and device it is given")
                    db.execute("INSERT INTO messages (device, seq, topic, key, value, headers, received_ms, "
                               "spooled_ms, size, source, statement) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                               (did, seq, msg.topic, msg.key, msg.value,
                                canonical.encode([[k, v] for k, v in msg.headers]), msg.received_ms, now,
                                msg.size, source, msg.statement.to_bytes()))
                    if ref is not None:
                        db.execute("INSERT INTO refs (ref, device, seq, at_ms) VALUES (?,?,?,?)", (ref, did, seq, now))
                    nexts[did] = seq + 1
                    added += 1
                    added_bytes += msg.size
                    out.append(msg)
                for did, nxt in nexts.items():
                    db.execute("INSERT INTO seqs (device, next) VALUES (?, ?) "
                               "ON CONFLICT (device) DO UPDATE SET next = excluded.next", (did, nxt))
                for table, ids in (("pending_readings", list(consumed)), ("pending_sealed", list(consumed_sealed))):
                    for i in range(0, len(ids), 500):
                        chunk = ids[i:i + 500]
                        cur = db.execute(f"DELETE FROM {table} WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                        if cur.rowcount != len(chunk):
                            raise ValueError("a consumed pending reading is not pending (spooled twice?)")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count += added
            self._bytes += added_bytes
            if added and self._oldest is None:
                self._oldest = now
        return out

    def has_ref(self, ref: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM refs WHERE ref = ?", (ref,)).fetchone() is not None

    def next_seq(self, did: str) -> Optional[int]:
        with self._lock:
            r = self._db.execute("SELECT next FROM seqs WHERE device = ?", (did,)).fetchone()
        return None if r is None else int(r[0])

    # -- sending --------------------------------------------------------------------------------------
    def pending(self, after_id: int = 0, limit: int = 500) -> list[Spooled]:
        """Up to `limit` messages with id > `after_id`, in id order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, device, seq, topic, key, value, headers, received_ms, spooled_ms, size, statement "
                "FROM messages WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        out = []
        for (id_, device, seq, topic, key, value, headers, received, spooled, size, stmt) in rows:
            hdrs = tuple((k, bytes(v)) for k, v in canonical.decode(headers))
            msg = EdgeMessage(topic, bytes(key), bytes(value), hdrs, Statement.from_bytes(bytes(stmt)), int(received))
            out.append(Spooled(int(id_), device, int(seq), int(size), int(spooled), msg))
        return out

    def delete(self, acked: Iterable[tuple[int, int]]) -> int:
        """Delete acknowledged messages ``(id, size)``; the number deleted."""
        acked = list(acked)
        if not acked:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for i in range(0, len(acked), 500):
                    chunk = acked[i:i + 500]
                    cur = self._db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})",
                                           [a for a, _ in chunk])
                    n += cur.rowcount
                self._db.execute("INSERT INTO meta (k, v) VALUES ('last_send_ms', ?) "
                                 "ON CONFLICT (k) DO UPDATE SET v = excluded.v", (str(_now_ms()),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= n
            self._bytes -= sum(s for _, s in acked) if n == len(acked) else 0
            if n != len(acked):  # recount (a double ack: should not happen)
                row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
                self._count, self._bytes = int(row[0]), int(row[1])
            self._oldest = self._query_oldest()
        return n

    def reject(self, id_: int, reason: str) -> None:
        """Move a message the broker refuses for good to ``rejected`` (kept, never dropped)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                size = self._db.execute("SELECT size FROM messages WHERE id = ?", (id_,)).fetchone()
                self._db.execute(
                    "INSERT INTO rejected SELECT id, device, seq, topic, key, value, headers, received_ms, spooled_ms, "
                    "size, source, statement, ?, ? FROM messages WHERE id = ?", (reason, _now_ms(), id_))
                self._db.execute("DELETE FROM messages WHERE id = ?", (id_,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if size:
                self._count -= 1
                self._bytes -= int(size[0])
            self._oldest = self._query_oldest()

    def _query_oldest(self) -> Optional[int]:
        r = self._db.execute("SELECT spooled_ms FROM messages ORDER BY id LIMIT 1").fetchone()
        return None if r is None else int(r[0])

    # -- bounds and state -----------------------------------------------------------------------------
    def full(self, now_ms: Optional[int] = None) -> Optional[str]:
        """``"size"``, ``"age"`` or None (in-memory counters: cheap enough for every emit)."""
        if self._bytes >= self.max_bytes:
            return "size"
        if self._oldest is not None:
            now = _now_ms() if now_ms is None else now_ms
            if now - self._oldest > self.max_age_s * 1000:
                return "age"
        return None

    @property
    def depth(self) -> tuple[int, int]:
        return self._count, self._bytes

    def stats(self) -> SpoolStats:
        with self._lock:
            rej = self._db.execute("SELECT count(*) FROM rejected").fetchone()[0]
            devs = self._db.execute("SELECT count(*) FROM seqs").fetchone()[0]
            return SpoolStats(self._count, self._bytes, self._oldest, int(devs), int(rej))

    def meta(self, key: str) -> Optional[str]:
        with self._lock:
            r = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if r is None else r[0]

    def prune_refs(self, older_than_s: float) -> int:
        """Forget blob refs older than this (the files source moved those files long ago)."""
        with self._lock:
            return self._db.execute("DELETE FROM refs WHERE at_ms < ?",
                                    (_now_ms() - int(older_than_s * 1000),)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_stats(directory: Path) -> SpoolStats:
    """Depth and age of a spool another process owns (read-only; for `edge status`)."""
    path = Path(directory) / "spool.db"
    if not path.exists():
        raise FileNotFoundError(f"no spool at {path}; has `sealstream edge run` started with this config?")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        n, b = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
        oldest = db.execute("SELECT spooled_ms FROM messages ORDER BY id LIMIT 1").fetchone()
        devs = db.execute("SELECT count(*) FROM seqs").fetchone()[0]
        rej = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
        return SpoolStats(int(n), int(b), None if oldest is None else int(oldest[0]), int(devs), int(rej))
    finally:
        db.close()


def read_meta(directory: Path, key: str) -> Optional[str]:
    path = Path(directory) / "spool.db"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        r = db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if r is None else r[0]
    finally:
        db.close()
