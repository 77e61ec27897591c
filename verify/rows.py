"""Stored time-series rows against the signed Arrow payload they claim to come from.

A row of ``readings`` is ``(time, device, sensor, value, statement_hash,
row_index)``; it verifies when row `row_index` of the statement's signed
Arrow payload has the same time (µs, as the writer stores it), sensor and
value.  The comparison is vectorised (pyarrow compute): `all_identical`
checks every statement of a range at once (the common case: each statement's
rows all stored, in order, unchanged), and only when it cannot say yes does
`compare_rows` look at each statement on its own and name the failures.

Failures, each with the step of `trust.errors`:

- ``payload-format``: the payload is not an Arrow IPC stream with ts, sensor, value;
- ``row-unsigned``: a stored row whose index is past the payload's rows (or
  whose statement nobody signed: the caller reports those);
- ``row-value``: time, sensor or value differ from the payload's row;
- ``row-missing``: a payload row (inside the window) is not stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from trust.errors import PayloadFormatError, RowMissingError, RowUnsignedError, RowValueError

from .model import Failure

__all__ = ["ROW_SCHEMA", "payload_rows", "payload_rows_many", "payload_time_us", "plain", "compare_rows",
           "all_identical", "empty_rows"]

#: Columns of the stored rows under test (what `collect` reads from ``readings``); ``device``
#: is the device the database attributes the row to (checked against its statement's signer).
ROW_SCHEMA = pa.schema([
    ("statement_hash", pa.binary(32)),
    ("row_index", pa.int32()),
    ("time_us", pa.int64()),
    ("sensor", pa.string()),
    ("value", pa.float64()),
    ("device", pa.string()),
])
_UTC_US = pa.timestamp("us", tz="UTC")
_MAX_LISTED = 20


def payload_time_us(ts: pa.Array) -> pa.Array:
    """The one timestamp rule of a signed time-series payload (docs/formats.md), shared by the
    writer (`storage.writers`) and the verifier: an integer ``ts`` counts milliseconds since the
    epoch, a timestamp without a zone is UTC, and rows are stored and compared as UTC
    microseconds (finer units truncate).  `TypeError` for any other ``ts`` type."""
    if pa.types.is_integer(ts.type):
        ts = ts.cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    elif pa.types.is_timestamp(ts.type):
        if ts.type.tz is None:
            ts = ts.cast(pa.timestamp(ts.type.unit, tz="UTC"))
    else:
        raise TypeError(f"ts has type {ts.type}")
    return pc.cast(ts, _UTC_US, safe=False)


def plain(arr: Any) -> Any:
    """A dictionary-encoded column decoded (comparisons against plain values want plain values)."""
    return arr.dictionary_decode() if hasattr(arr, "dictionary_decode") else arr


def empty_rows() -> pa.Table:
    return ROW_SCHEMA.empty_table()


#: microseconds per unit of the timestamp units whose conversion to µs is an exact multiplication
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _fast_time_us(ts: pa.Array) -> Optional[pa.Array]:
    """`payload_time_us` as int64 by exact arithmetic for the common types (integer ms; timestamps
    in s, ms or µs, any zone: Arrow stores UTC), or None (another type, or an overflow) for the
    general rule. Equal to the general rule wherever it answers: an exact product is what the cast
    computes when it does not overflow. About 10x faster on a device-sized payload than the casts."""
    try:
        if pa.types.is_integer(ts.type):
            return pc.multiply_checked(ts.cast(pa.int64()), 1_000)
        if pa.types.is_timestamp(ts.type) and ts.type.unit in _US_PER_UNIT:
            raw = ts.view(pa.int64())
            factor = _US_PER_UNIT[ts.type.unit]
            return raw if factor == 1 else pc.multiply_checked(raw, factor)
    except pa.ArrowInvalid:  # overflow: the general rule decides
        return None
    return None


def _one_array(column: Any) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, OSError)


def _read(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.BufferReader(payload)).read_all()


def _normalise(table: pa.Table) -> pa.Table:
    """``time_us, sensor, value`` of a payload table (or of several of one schema, concatenated)."""
    ts = _one_array(table.column("ts"))
    time_us = _fast_time_us(ts)
    if time_us is None:
        try:
            time_us = payload_time_us(ts).cast(pa.int64())
        except TypeError as exc:
            raise PayloadFormatError(str(exc)) from None
    sensor, value = table.column("sensor"), table.column("value")
    # cast before combining: the chunks of a dictionary column may each have their own dictionary
    return pa.table({
        "time_us": time_us,
        "sensor": _one_array(sensor if sensor.type == pa.string() else sensor.cast(pa.string())),
        "value": _one_array(value if value.type == pa.float64() else value.cast(pa.float64())),
    })


def _format_error(exc: BaseException) -> PayloadFormatError:
    return PayloadFormatError(f"not an Arrow stream with ts, sensor, value: {exc}")


def payload_rows(payload: bytes) -> pa.Table:
    """``time_us, sensor, value`` of a signed Arrow payload, in row order (`payload_time_us`)."""
    try:
        return _normalise(_read(payload))
    except _ARROW_ERRORS as exc:
        raise _format_error(exc) from None


def payload_rows_many(payloads: Sequence[bytes]) -> list[pa.Table | PayloadFormatError]:
    """`payload_rows` of each payload: its table, or the `PayloadFormatError` it raises.

    The same answers, computed together: each payload is read on its own, then the payloads of one
    schema are concatenated and converted once, and each gets its slice back. On device-sized
    payloads (tens of rows) the per-call cost of the conversions is most of `payload_rows`; a
    group whose conversion fails is converted payload by payload, which names the bad ones."""
    out: list[pa.Table | PayloadFormatError | None] = [None] * len(payloads)
    groups: dict[pa.Schema, list[tuple[int, pa.Table]]] = {}
    last: tuple[pa.Schema, list[tuple[int, pa.Table]]] | None = None  # a device's payloads share one schema
    for i, payload in enumerate(payloads):
        try:
            table = _read(payload)
            for name in ("ts", "sensor", "value"):
                table.column(name)
        except _ARROW_ERRORS as exc:
            out[i] = _format_error(exc)
            continue
        schema = table.schema
        if last is None or not last[0].equals(schema, check_metadata=True):
            last = (schema, groups.setdefault(schema, []))
        last[1].append((i, table))
    for members in groups.values():
        try:
            rows = _normalise(pa.concat_tables([t for _, t in members]))
        except (PayloadFormatError, *_ARROW_ERRORS):
            for i, table in members:
                try:
                    out[i] = _normalise(table)
                except PayloadFormatError as exc:
                    out[i] = exc
                except _ARROW_ERRORS as exc:
                    out[i] = _format_error(exc)
            continue
        at = 0
        for i, table in members:
            out[i] = rows.slice(at, table.num_rows)
            at += table.num_rows
    done = [r for r in out if r is not None]
    assert len(done) == len(payloads)  # every payload was read, or failed to be, above
    return done


def _eq(a: pa.Array, b: pa.Array) -> pa.Array:
    """Element-wise equality where null == null (and NaN == NaN for floats)."""
    same = pc.fill_null(pc.equal(a, b), False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    out = pc.or_(same, both_null)
    if pa.types.is_floating(a.type):
        out = pc.or_(out, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return out


def compare_rows(
    statement_hash: bytes,
    signed: pa.Table,
    stored: pa.Table,
    window_us: Optional[tuple[Optional[int], Optional[int]]],
) -> list[Failure]:
    """Failures of the `stored` rows of one statement against its `signed` rows.

    `stored` has the columns of `ROW_SCHEMA` (any order of rows).  With a
    `window_us`, every signed row whose time is inside ``[from, to)`` (None:
    unbounded) must be stored; without one only the given rows are compared.
    """
    h = statement_hash.hex()
    failures: list[Failure] = []
    n = signed.num_rows
    idx = stored.column("row_index").combine_chunks().cast(pa.int64())
    inside = pc.and_(pc.greater_equal(idx, 0), pc.less(idx, n))
    if not pc.all(inside).as_py():
        bad = pc.filter(idx, pc.invert(inside)).to_pylist()
        failures.append(Failure(RowUnsignedError.step,
                                f"{len(bad)} stored row(s) of statement {h} point past its {n} signed rows",
                                {"statement_hash": h, "row_index": bad[:_MAX_LISTED]}))
        stored = stored.filter(inside)
        idx = stored.column("row_index").combine_chunks().cast(pa.int64())
    # The common case: the stored rows are exactly rows 0..n-1 in order (no take, nothing missing).
    identity = stored.num_rows == n and n > 0 and pc.all(pc.equal(idx, pa.array(range(n), pa.int64()))).as_py()
    if stored.num_rows:
        want = signed if identity else signed.take(idx)
        ok: Any = None
        for col in ("time_us", "sensor", "value"):
            eq = _eq(stored.column(col).combine_chunks(), want.column(col).combine_chunks())
            ok = eq if ok is None else pc.and_(ok, eq)
        if not pc.all(ok).as_py():
            bad_pos = pc.indices_nonzero(pc.invert(ok)).to_pylist()[:_MAX_LISTED]
            diffs = []
            for p in bad_pos:
                i = idx[p].as_py()
                diffs.append({
                    "row_index": i,
                    "stored": {c: stored.column(c)[p].as_py() for c in ("time_us", "sensor", "value")},
                    "signed": {c: want.column(c)[p].as_py() for c in ("time_us", "sensor", "value")},
                })
            count = len(ok) - pc.sum(ok.cast(pa.int64())).as_py()
            failures.append(Failure(RowValueError.step,
                                    f"{count} stored row(s) of statement {h} differ from the signed payload",
                                    {"statement_hash": h, "rows": diffs}))
    if window_us is not None and not identity:
        lo, hi = window_us
        times = signed.column("time_us").combine_chunks()
        need = pa.array([True] * n, pa.bool_())
        if lo is not None:
            need = pc.and_(need, pc.greater_equal(times, lo))
        if hi is not None:
            need = pc.and_(need, pc.less(times, hi))
        needed = pc.indices_nonzero(need).cast(pa.int64())
        if len(needed):
            have = pc.is_in(needed, value_set=pc.unique(idx)) if len(idx) else pa.array([False] * len(needed))
            if not pc.all(have).as_py():
                missing = pc.filter(needed, pc.invert(have)).to_pylist()
                failures.append(Failure(RowMissingError.step,
                                        f"{len(missing)} signed row(s) of statement {h} are not stored",
                                        {"statement_hash": h, "row_index": missing[:_MAX_LISTED]}))
    return failures


def all_identical(stored: pa.Table, ids: pa.Array, signed: list[pa.Table], counts: list[int],
                  device_of_id: list[Optional[str]]) -> bool:
    """True only if `compare_rows` (with any window) and the device check would find nothing for
    every statement of `stored`, checked for all statements at once; False says nothing (the
    caller then compares statement by statement, which names the failures).

    `stored` has each statement's rows contiguous, run k of `counts[k]` rows belonging to the
    statement whose signed rows are `signed[k]`; `ids` (no nulls) numbers each row's statement
    and `device_of_id[id]` is the device that signed statement `id` (None: no verified signer).
    Yes means: every run is rows 0..n-1 of its statement, in order, all n of them (so none is
    unsigned or missing, whatever the window), with the signed time, sensor and value, each
    attributed to its statement's signer."""
    total = stored.num_rows
    if not total or ids.null_count or len(signed) != len(counts) \
            or any(s.num_rows != c for s, c in zip(signed, counts)) or sum(counts) != total:
        return False
    idx = stored.column("row_index").combine_chunks().cast(pa.int64())
    ids = ids.cast(pa.int64())
    if idx[0].as_py() != 0:
        return False
    if total > 1:  # a new run starts at row index 0, any other row follows the previous one
        new_run = pc.not_equal(ids.slice(1), ids.slice(0, total - 1))
        step_ok = pc.if_else(new_run, pc.equal(idx.slice(1), 0),
                             pc.equal(pc.subtract(idx.slice(1), idx.slice(0, total - 1)), 1))
        if not pc.all(pc.fill_null(step_ok, False)).as_py():
            return False
        starts = pc.add(pc.indices_nonzero(new_run), 1).to_pylist()  # run k begins after runs 0..k-1
        at, want_starts = 0, []
        for c in counts[:-1]:
            at += c
            want_starts.append(at)
        if starts != want_starts:
            return False
    elif len(counts) != 1:
        return False
    want = pa.concat_tables(signed)
    for col in ("time_us", "sensor", "value"):
        if not pc.all(_eq(stored.column(col).combine_chunks(), want.column(col).combine_chunks())).as_py():
            return False
    dev = plain(stored.column("device").combine_chunks())
    expected = pc.take(pa.array(device_of_id, pa.string()), ids)
    return bool(pc.all(pc.fill_null(pc.equal(dev, expected), False)).as_py())
