"""What a verification is about, parsed strictly, and what the evidence must cover for it.

A claimed subject is untrusted text (a bundle's author writes it); the
verifier parses it into one of four frozen values and then decides from the
*verified* content whether the evidence covers it (`chain.verify`):

=========  ==================================  =====================================================
kind       JSON                                covered when
=========  ==================================  =====================================================
blob       ``{kind, sha256}``                  a verified record's payload has this SHA-256
row        ``{kind, table, key}``              readings ``HASH:ROW``: that stored row equals row ROW of
                                               the verified statement HASH; blobs/statements ``HASH``:
                                               the verified statement HASH (a blob row: an image or
                                               video statement)
range      ``{kind, device, from, to}``        every stored row given is the device's, in ``[from, to)``,
                                               its statement the device's and verified, and every signed
                                               row of those statements in the window is stored
batch      ``{kind, batch_id}``                every leaf of the batch has a verified record
=========  ==================================  =====================================================

In every case the evidence holds nothing outside the subject (a record of
another blob, device or batch is refused, not ignored) and zero verified
records is never VERIFIED.  `proven_json` states what was proven, from the
verified records, for the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Union

from trust.errors import SubjectError

__all__ = ["BlobSubject", "RowSubject", "RangeSubject", "BatchSubject", "Subject", "ROW_TABLES",
           "parse_subject", "micros", "window_of"]

#: Tables a row subject may name and the form of their key.
ROW_TABLES = {"readings": "<statement hash hex>:<row index>", "blobs": "<statement hash hex>",
              "statements": "<statement hash hex>"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BATCH_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def micros(t: datetime) -> int:
    """Exact µs since the epoch of an aware datetime (the rule `readings.time` is compared by)."""
    if t.tzinfo is None:
        raise ValueError("a window bound must be timezone-aware")
    return (t - _EPOCH) // timedelta(microseconds=1)


def _iso_us(text: Any, name: str) -> int:
    if not isinstance(text, str):
        raise SubjectError(f"range subject: {name} must be an ISO-8601 time with a zone")
    try:
        return micros(datetime.fromisoformat(text))
    except ValueError as exc:
        raise SubjectError(f"range subject: {name} {text!r}: {exc}") from None


@dataclass(frozen=True)
class BlobSubject:
    sha256: bytes

    def to_json(self) -> dict[str, Any]:
        return {"kind": "blob", "sha256": self.sha256.hex()}


@dataclass(frozen=True)
class RowSubject:
    table: str
    statement_hash: bytes
    row_index: Optional[int]

    @property
    def key(self) -> str:
        h = self.statement_hash.hex()
        return h if self.row_index is None else f"{h}:{self.row_index}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "row", "table": self.table, "key": self.key}


@dataclass(frozen=True)
class RangeSubject:
    device: str
    start: str  # ISO-8601 as claimed (shown back)
    end: str
    from_us: int
    to_us: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": "range", "device": self.device, "from": self.start, "to": self.end}


@dataclass(frozen=True)
class BatchSubject:
    batch_id: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": "batch", "batch_id": self.batch_id}


Subject = Union[BlobSubject, RowSubject, RangeSubject, BatchSubject]


def _keys(doc: dict[str, Any], want: set[str]) -> None:
    if set(doc) != want:
        raise SubjectError(f"a {doc.get('kind')} subject has exactly the keys {sorted(want)}, got {sorted(doc)}")


def parse_row_key(table: str, key: Any) -> tuple[bytes, Optional[int]]:
    """``(statement hash, row index or None)`` of a row subject's key; `SubjectError` if malformed."""
    if table not in ROW_TABLES:
        raise SubjectError(f"table must be one of {sorted(ROW_TABLES)}, not {table!r}")
    parts = key.split(":") if isinstance(key, str) else []
    want = 2 if table == "readings" else 1
    if len(parts) != want or not _HEX64.match(parts[0]) or (want == 2 and not parts[1].isdigit()) \
            or (want == 2 and str(int(parts[1])) != parts[1]):
        raise SubjectError(f"a {table} key is {ROW_TABLES[table]} (lowercase hex), got {key!r}")
    return bytes.fromhex(parts[0]), (int(parts[1]) if want == 2 else None)


def parse_subject(doc: Any) -> Subject:
    """The subject a JSON document claims; `SubjectError` (step ``subject``) for anything else."""
    if not isinstance(doc, dict):
        raise SubjectError("the subject must be a JSON object with a kind")
    kind = doc.get("kind")
    if kind == "blob":
        _keys(doc, {"kind", "sha256"})
        if not isinstance(doc["sha256"], str) or not _HEX64.match(doc["sha256"]):
            raise SubjectError("a blob subject's sha256 is 64 lowercase hex digits")
        return BlobSubject(bytes.fromhex(doc["sha256"]))
    if kind == "row":
        _keys(doc, {"kind", "table", "key"})
        h, i = parse_row_key(doc["table"], doc["key"])
        return RowSubject(doc["table"], h, i)
    if kind == "range":
        _keys(doc, {"kind", "device", "from", "to"})
        if not isinstance(doc["device"], str) or not doc["device"].startswith("did:key:"):
            raise SubjectError("a range subject's device is a did:key")
        lo, hi = _iso_us(doc["from"], "from"), _iso_us(doc["to"], "to")
        if lo >= hi:
            raise SubjectError("a range subject's from must be before its to")
        return RangeSubject(doc["device"], doc["from"], doc["to"], lo, hi)
    if kind == "batch":
        _keys(doc, {"kind", "batch_id"})
        if not isinstance(doc["batch_id"], str) or not _BATCH_ID.match(doc["batch_id"]):
            raise SubjectError("a batch subject's batch_id is 1..128 printable ASCII characters")
        return BatchSubject(doc["batch_id"])
    raise SubjectError(f"unknown subject kind {kind!r} (blob, row, range or batch)")


def window_of(subject: Subject) -> Optional[tuple[Optional[int], Optional[int]]]:
    """The window every signed row of the subject's statements must be stored in: a range's
    ``[from, to)``, a batch's everything, None for a blob or a row (only given rows compared)."""
    if isinstance(subject, RangeSubject):
        return (subject.from_us, subject.to_us)
    if isinstance(subject, BatchSubject):
        return (None, None)
    return None
