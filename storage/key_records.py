"""Key records of confidential payloads (issue 18): PostgreSQL's ``key_records`` (migration 0010).

A confidential record's key record -- its data key and salt wrapped for each recipient with HPKE
(`confidential.envelope.KeyRecord`, docs/formats.md section 8) -- is kept apart from the signed
bytes, so that erasure can destroy it and leave every proof intact. It lives in one row per
statement:

- **written** by the pipeline in the same transaction as its statement, and only when that
  statement is new (`insert`, called by `storage.writers.Writer.write_sealed`): a redelivered raw
  message, whose ``ss-keys`` header still carries the record, cannot bring back an erased one.
  The pipeline's role may only INSERT here;
- **read** by a recipient's reader and the verifier (`read`);
- **destroyed** by `sealstream data erase` alone (`destroy`), as the role ``sealstream_erasure``,
  which may SELECT and DELETE here and nothing else.

What a DELETE leaves behind (the dead tuple until VACUUM, the WAL, backups) is in docs/storage.md.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from .db import db_errors

__all__ = ["destroy", "insert", "read"]


def insert(cur: Any, rows: Sequence[tuple[bytes, bytes]]) -> None:
    """Insert ``(statement hash, key record)`` rows on an open cursor (the statements' transaction);
    one already there is kept (``ON CONFLICT DO NOTHING`` needs the INSERT right only)."""
    if not rows:
        return
    cur.executemany("INSERT INTO key_records (statement_hash, record) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    [(bytes(h), bytes(r)) for h, r in rows])


def read(pool: Any, statement_hashes: Iterable[bytes]) -> dict[bytes, Optional[bytes]]:
    """The key record of each statement, None where there is none (never stored, or erased)."""
    hashes = [bytes(h) for h in statement_hashes]
    out: dict[bytes, Optional[bytes]] = dict.fromkeys(hashes)
    if not hashes:
        return out
    with db_errors("read key records"), pool.connection() as conn:
        for h, record in conn.execute("SELECT statement_hash, record FROM key_records WHERE statement_hash = ANY(%s)",
                                      (hashes,)).fetchall():
            out[bytes(h)] = bytes(record)
    return out


def destroy(pool: Any, statement_hashes: Iterable[bytes]) -> tuple[int, list[bytes]]:
    """Delete the key records of these statements in one transaction; ``(deleted, still held)``:
    how many rows went and which hashes a read afterwards still finds (none, unless something
    wrote them again)."""
    hashes = [bytes(h) for h in statement_hashes]
    if not hashes:
        return 0, []
    with db_errors("destroy key records"), pool.connection() as conn:
        with conn.transaction():
            deleted = conn.execute("DELETE FROM key_records WHERE statement_hash = ANY(%s)", (hashes,)).rowcount
        left = [bytes(r[0]) for r in conn.execute("SELECT statement_hash FROM key_records WHERE statement_hash = "
                                                  "ANY(%s)", (hashes,)).fetchall()]
    return deleted, left
