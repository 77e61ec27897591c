"""The spool (a real SQLite file): order, seq persistence across reopen, refs once, bounds, reject."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edge.sdk import TIMESERIES_CONTENT_TYPE, sign_payload, timeseries_payload
from edge.signing import FileSigner
from edge.spool import Spool, read_stats
from trust.identity import KeyPair


def _builds(signer, n: int, source: str = "s", ref=None):
    payload = timeseries_payload([(1_700_000_000_000, "t", 1.0)])
    return [(signer.did, lambda seq: sign_payload(signer, seq, 1_700_000_000_000, "timeseries",
                                                  TIMESERIES_CONTENT_TYPE, payload, 1_700_000_000_005),
             ref, source) for _ in range(n)]


def test_order_and_seq_survive_a_reopen(tmp_path: Path) -> None:
    a, b = FileSigner(KeyPair.generate()), FileSigner(KeyPair.generate())
    sp = Spool(tmp_path)
    before = int(time.time() * 1_000_000)
    sp.append(_builds(a, 3) + _builds(b, 2))
    sp.append(_builds(a, 2))
    rows = sp.pending()
    seqs_a = [r.seq for r in rows if r.device == a.did]
    assert len(seqs_a) == 5 and seqs_a == sorted(seqs_a) and len(set(seqs_a)) == 5
    assert seqs_a == list(range(seqs_a[0], seqs_a[0] + 5))
    assert seqs_a[0] >= before  # a new device starts at the clock in microseconds
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert all(r.message.statement.seq == r.seq for r in rows)
    sp.delete((r.id, r.size) for r in rows)
    assert sp.depth == (0, 0)
    sp.close()
    sp = Spool(tmp_path)  # a restart: the next seq continues, never reuses
    (m,) = sp.append(_builds(a, 1))
    assert m.statement.seq == seqs_a[-1] + 1
    assert sp.next_seq(a.did) == seqs_a[-1] + 2
    assert sp.depth[0] == 1 and read_stats(tmp_path).messages == 1


def test_a_failing_builder_rolls_back_the_whole_transaction(tmp_path: Path) -> None:
    a = FileSigner(KeyPair.generate())
    sp = Spool(tmp_path)
    sp.append(_builds(a, 1))
    nxt = sp.next_seq(a.did)

    def boom(seq: int):
        raise RuntimeError("token removed")

    try:
        sp.append(_builds(a, 2) + [(a.did, boom, None, "s")])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the failing build did not raise")
    assert sp.depth[0] == 1 and sp.next_seq(a.did) == nxt


def test_a_ref_is_spooled_once(tmp_path: Path) -> None:
    a = FileSigner(KeyPair.generate())
    sp = Spool(tmp_path)
    first = sp.append(_builds(a, 1, ref="files:/cam:a.jpg:10:1"))
    again = sp.append(_builds(a, 1, ref="files:/cam:a.jpg:10:1"))
    assert first[0] is not None and again == [None] and sp.depth[0] == 1 and sp.has_ref("files:/cam:a.jpg:10:1")


def test_full_by_size_and_by_age(tmp_path: Path) -> None:
    a = FileSigner(KeyPair.generate())
    sp = Spool(tmp_path, max_bytes=3000, max_age_s=60)
    assert sp.full() is None
    while sp.full() is None:
        sp.append(_builds(a, 1))
        assert sp.depth[0] < 100
    assert sp.full() == "size" and sp.depth[1] >= 3000
    rows = sp.pending()
    sp.delete((r.id, r.size) for r in rows)
    assert sp.full() is None
    sp.append(_builds(a, 1))
    assert sp.full(now_ms=int(time.time() * 1000) + 61_000) == "age"
    assert sp.full(now_ms=int(time.time() * 1000) + 1_000) is None


def test_reject_keeps_the_message(tmp_path: Path) -> None:
    a = FileSigner(KeyPair.generate())
    sp = Spool(tmp_path)
    sp.append(_builds(a, 2))
    first = sp.pending()[0]
    sp.reject(first.id, "msg-size-too-large")
    assert sp.depth[0] == 1 and sp.stats().rejected == 1
    sp.close()
    db = sqlite3.connect(tmp_path / "spool.db")
    (reason, value) = db.execute("SELECT reason, value FROM rejected").fetchone()
    assert reason == "msg-size-too-large" and bytes(value) == first.message.value
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
