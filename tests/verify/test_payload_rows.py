"""`verify.rows.payload_rows`: its fast path (exact arithmetic for the common timestamp types) gives
exactly what the general rule (`payload_time_us`, the writer's) gives, for every ts type, zone,
null and extreme value; where the product would overflow, the general rule answers (as before)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from trust.errors import PayloadFormatError
from verify.rows import payload_rows, payload_rows_many, payload_time_us

_BIG = 2**62


def _payload(ts: pa.Array, sensor: pa.Array | None = None, value: pa.Array | None = None) -> bytes:
    n = len(ts)
    sensor = sensor if sensor is not None else pa.array([f"s{i % 3}" for i in range(n)], pa.string())
    value = value if value is not None else pa.array([float(i) / 3 for i in range(n)], pa.float64())
    batch = pa.record_batch([ts, sensor, value], names=["ts", "sensor", "value"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _general(ts: pa.Array) -> list:
    return payload_time_us(ts).cast(pa.int64()).to_pylist()


VALUES = [0, 1, -1, 1_700_000_000_123, -62_135_596_800_000, None, 253_402_300_799_999]
TYPES = [pa.int64(), pa.int32(), pa.uint32(), pa.timestamp("s", tz="UTC"), pa.timestamp("ms", tz="UTC"),
         pa.timestamp("ms"), pa.timestamp("us", tz="UTC"), pa.timestamp("ms", tz="Europe/Berlin"),
         pa.timestamp("ns", tz="UTC")]


@pytest.mark.parametrize("typ", TYPES, ids=str)
def test_fast_path_equals_the_general_rule(typ) -> None:
    vals = []
    for v in VALUES:
        if v is None:
            vals.append(None)
            continue
        if pa.types.is_unsigned_integer(typ) and v < 0 or typ == pa.int32() and abs(v) >= 2**31 \
                or typ == pa.uint32() and v >= 2**32:
            continue
        if pa.types.is_timestamp(typ) and typ.unit == "s":
            v //= 1000
        vals.append(v)
    ts = pa.array(vals, typ)
    got = payload_rows(_payload(ts)).column("time_us").to_pylist()
    assert got == _general(ts)


@pytest.mark.parametrize("typ", [pa.int64(), pa.timestamp("ms", tz="UTC"), pa.timestamp("s")], ids=str)
def test_overflow_falls_back_to_the_general_rule(typ) -> None:
    ts = pa.array([1, _BIG], typ)
    got = payload_rows(_payload(ts)).column("time_us").to_pylist()
    assert got == _general(ts)  # whatever the writer stores, the verifier computes the same


def test_sensor_and_value_types_are_normalised() -> None:
    ts = pa.array([1, 2, 3], pa.timestamp("ms", tz="UTC"))
    sensor = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int8()), pa.array(["a", "b"]))
    value = pa.array([1, 2, None], pa.int32())
    t = payload_rows(_payload(ts, sensor, value))
    assert t.schema == pa.schema([("time_us", pa.int64()), ("sensor", pa.string()), ("value", pa.float64())])
    assert t.column("sensor").to_pylist() == ["a", "b", "a"] and t.column("value").to_pylist() == [1.0, 2.0, None]


def test_a_ts_of_another_type_is_a_payload_format_error() -> None:
    with pytest.raises(PayloadFormatError):
        payload_rows(_payload(pa.array(["x", "y"], pa.string())))


def _one(payload: bytes) -> pa.Table | str:
    try:
        return payload_rows(payload)
    except PayloadFormatError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_payload_rows_many_gives_each_payload_what_payload_rows_gives() -> None:
    """The batched conversion is a differential twin of the single one: payloads of several schemas
    (dictionary sensors with different dictionaries), an overflow inside a group of good ones, a value
    column that casts for some payloads of its schema and not for others, garbage and a missing column."""
    def ts(n: int, first: int = 1_700_000_000_000, typ: pa.DataType | None = None) -> pa.Array:
        return pa.array(range(first, first + n), pa.int64()).cast(typ or pa.timestamp("ms", tz="UTC"))

    dict_a = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int8()), pa.array(["a", "b"]))
    dict_b = pa.DictionaryArray.from_arrays(pa.array([1, 0, 1], pa.int8()), pa.array(["x", "y"]))
    no_value = pa.BufferOutputStream()
    batch = pa.record_batch([ts(2), pa.array(["s", "t"])], names=["ts", "sensor"])
    with pa.ipc.new_stream(no_value, batch.schema) as w:
        w.write_batch(batch)
    payloads = [
        _payload(ts(3), dict_a),
        _payload(pa.array([5, 6], pa.int64())),
        _payload(ts(3), dict_b),
        _payload(pa.array([1, _BIG], pa.int64())),  # overflows: the general rule, in a group of good ones
        _payload(pa.array([7, 8], pa.int64())),
        _payload(ts(2), value=pa.array(["1.5", "2"], pa.string())),
        _payload(ts(2), value=pa.array(["1.5", "not a number"], pa.string())),
        _payload(pa.array(["x", "y"], pa.string())),
        b"not arrow at all",
        no_value.getvalue().to_pybytes(),
        _payload(ts(0, typ=pa.timestamp("s"))),
    ]
    got = payload_rows_many(payloads)
    assert len(got) == len(payloads)
    for p, g in zip(payloads, got):
        want = _one(p)
        if isinstance(want, str):
            assert isinstance(g, PayloadFormatError) and f"{type(g).__name__}: {g}" == want
        else:
            assert isinstance(g, pa.Table) and g.equals(want), (g, want)
