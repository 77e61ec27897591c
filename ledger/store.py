"""Append-only, crash-safe block store: one SQLite database per replica.

WAL journal with ``synchronous=FULL``: each `append` is one transaction
(block, certificate, results, the block's tx ids as one blob) that is fsynced
before `append` returns, so after a crash (SIGKILL, power loss) the last block
is either fully present or absent. `open()` re-checks the stored chain's
links; `blocks()` yields the chain for `Replica(committed=...)` to replay.

The tx-id index (`find_tx`) is derived lazily: a lookup first indexes the
blocks appended since the last one, from their id blobs, in one transaction.
A running node answers from its replica's in-memory index instead, so the
commit path inserts one row per block, not one per transaction (a B-tree
insert of a random 32-byte key per tx was ~4 µs of a backup's CPU per tx).

The store never decides what is committed; the consensus core does. It only
refuses a block that does not extend its tip (`StoreError`).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Iterator

from trust import canonical

from .values import Block, BlockHash, BlockHeader, CommitCertificate, Genesis
from .errors import StoreError, WireError
from .messages import CheckpointCertificate, _pairs

__all__ = ["BlockStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    prev_hash BLOB NOT NULL,
    header BLOB NOT NULL,
    block BLOB NOT NULL,
    cert BLOB NOT NULL,
    results BLOB NOT NULL,
    tx_ids BLOB
);
CREATE TABLE IF NOT EXISTS txs (
    tx_id BLOB PRIMARY KEY,
    height INTEGER NOT NULL REFERENCES blocks(height),
    idx INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    height INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,
    cert BLOB NOT NULL
);
"""


class BlockStore:
    """The block store of one replica at `path` (created on first open)."""

    def __init__(self, path: str | os.PathLike[str], genesis: Genesis) -> None:
        self.path = os.fspath(path)
        self.genesis = genesis
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        ghash = genesis.genesis_hash()
        row = self._db.execute("SELECT value FROM meta WHERE key='genesis_hash'").fetchone()
        if row is None:
            with self._tx():
                self._db.execute("INSERT INTO meta VALUES ('genesis_hash', ?)", (ghash,))
                self._db.execute("INSERT INTO meta VALUES ('genesis', ?)", (canonical.encode(genesis.to_wire()),))
        elif row[0] != ghash:
            raise StoreError(f"{self.path} belongs to another chain (genesis hash differs)")
        if "tx_ids" not in {r[1] for r in self._db.execute("PRAGMA table_info(blocks)")}:
            # a store from before the lazy index: every block's txs are already in `txs`
            self._db.execute("ALTER TABLE blocks ADD COLUMN tx_ids BLOB")
        self._height, self._tip = self._check_chain()
        row = self._db.execute("SELECT value FROM meta WHERE key='txs_indexed'").fetchone()
        if row is None:
            row = self._db.execute("SELECT MAX(height) FROM txs").fetchone()
        self._indexed = int(row[0] or 0)

    @classmethod
    def open(cls, path: str | os.PathLike[str], genesis: Genesis) -> "BlockStore":
        return cls(path, genesis)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "BlockStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _tx(self) -> "_Txn":
        return _Txn(self._db)

    def _check_chain(self) -> tuple[int, BlockHash]:
        """Heights are 1..n without gaps and each block links to the previous one."""
        prev = self.genesis.genesis_hash()
        n = 0
        for height, h, p in self._db.execute("SELECT height, hash, prev_hash FROM blocks ORDER BY height"):
            if height != n + 1 or p != prev:
                raise StoreError(f"{self.path}: chain broken at height {height}")
            n, prev = height, h
        return n, BlockHash(prev)

    # ------------------------------------------------------------ writing

    def append(self, block: Block, cert: CommitCertificate, results: tuple[Any, ...] = ()) -> None:
        """Durably append the next block (one fsynced transaction)."""
        h = block.height
        bh = block.block_hash()
        if h != self._height + 1 or block.header.prev_hash != self._tip:
            raise StoreError(f"block {h} does not extend the tip {self._height}")
        if cert.height != h or cert.block_hash != bh:
            raise StoreError(f"certificate is not for block {h}")
        with self._tx():
            self._db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (h, bh, block.header.prev_hash, canonical.encode(block.header.to_wire()),
                 canonical.encode(block.to_wire()), canonical.encode(cert.to_wire()),
                 canonical.encode(list(results)), b"".join(t.tx_id for t in block.txs)),
            )
        self._height, self._tip = h, bh

    def put_state(self, key: str, value: Any) -> None:
        """Durably record a small piece of replica state (e.g. the last view it entered)."""
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             (f"state.{key}", canonical.encode(value)))

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (f"state.{key}",)).fetchone()
        return default if row is None else canonical.decode(row[0])

    def put_checkpoint(self, cert: CheckpointCertificate) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                             (cert.height, cert.digest, canonical.encode(cert.to_wire())))

    # ------------------------------------------------------------ reading

    @property
    def height(self) -> int:
        return self._height

    @property
    def tip(self) -> BlockHash:
        return self._tip

    def get(self, height: int) -> tuple[Block, CommitCertificate] | None:
        """Block and certificate at `height` (a `consensus.BlockSource`)."""
        row = self._db.execute("SELECT block, cert FROM blocks WHERE height=?", (height,)).fetchone()
        return None if row is None else self._decode(row)

    def header(self, height: int) -> BlockHeader | None:
        row = self._db.execute("SELECT header FROM blocks WHERE height=?", (height,)).fetchone()
        return None if row is None else BlockHeader.from_wire(canonical.decode(row[0]))

    def headers(self, start: int, end: int) -> list[tuple[BlockHeader, CommitCertificate]]:
        rows = self._db.execute(
            "SELECT header, cert FROM blocks WHERE height BETWEEN ? AND ? ORDER BY height", (start, end))
        return [(BlockHeader.from_wire(canonical.decode(h)), CommitCertificate.from_wire(canonical.decode(c)))
                for h, c in rows]

    def blocks(self, start: int = 1) -> Iterator[tuple[Block, CommitCertificate]]:
        """All blocks from `start` in height order (replay on restart)."""
        for row in self._db.execute("SELECT block, cert FROM blocks WHERE height >= ? ORDER BY height", (start,)):
            yield self._decode(row)

    def results(self, height: int) -> list[Any]:
        row = self._db.execute("SELECT results FROM blocks WHERE height=?", (height,)).fetchone()
        return [] if row is None else canonical.decode(row[0])

    def find_tx(self, tx_id: bytes) -> tuple[int, int] | None:
        """(height, index) of a committed transaction (indexes the blocks appended since the last call)."""
        if self._indexed < self._height:
            self._index_txs()
        row = self._db.execute("SELECT height, idx FROM txs WHERE tx_id=?", (tx_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def _index_txs(self) -> None:
        """Index the tx ids of blocks above the indexed height, and record that height, in one transaction."""
        top = self._height
        with self._tx():
            rows = self._db.execute("SELECT height, tx_ids FROM blocks WHERE height > ? AND height <= ?",
                                    (self._indexed, top))
            self._db.executemany("INSERT OR IGNORE INTO txs VALUES (?, ?, ?)",
                                 [(ids[i:i + 32], h, i // 32) for h, ids in rows.fetchall()
                                  for i in range(0, len(ids or b""), 32)])
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('txs_indexed', ?)", (top,))
        self._indexed = top

    def checkpoint(self, height: int) -> CheckpointCertificate | None:
        row = self._db.execute("SELECT cert FROM checkpoints WHERE height=?", (height,)).fetchone()
        if row is None:
            return None
        w = canonical.decode(row[0])
        return CheckpointCertificate(w["height"], w["digest"], _pairs(w["sigs"]))

    def last_checkpoint(self) -> CheckpointCertificate | None:
        row = self._db.execute("SELECT MAX(height) FROM checkpoints").fetchone()
        return None if row is None or row[0] is None else self.checkpoint(row[0])

    @staticmethod
    def _decode(row: tuple[bytes, bytes]) -> tuple[Block, CommitCertificate]:
        try:
            # our own blocks, verified before they were appended: the fast tx decoder is enough
            return (Block.from_wire(canonical.decode(row[0]), certified=True),
                    CommitCertificate.from_wire(canonical.decode(row[1])))
        except (WireError, ValueError) as exc:
            raise StoreError(f"stored block does not decode: {exc}") from None


class _Txn:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
