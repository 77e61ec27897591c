"""trust.canonical's fast paths give exactly the reference implementation's answers.

`_canonical_ref` is the module as it was before the speed-only fast paths;
every value, valid or not, must encode to the same bytes (or raise the same
error) and every byte string must decode to the same value (or be refused).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import _canonical_ref as ref
from trust import canonical

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.binary(max_size=40)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=30)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=12), inner, max_size=30),
    max_leaves=80,
)


def _outcome(fn, arg):
    try:
        return ("ok", fn(arg))
    except Exception as exc:  # noqa: BLE001 - the error type and text are compared
        return ("err", type(exc).__name__, str(exc))


@settings(max_examples=600, deadline=None)
@given(values)
def test_encode_matches_reference(v):
    assert _outcome(canonical.encode, v) == _outcome(ref.encode, v)


@settings(max_examples=600, deadline=None)
@given(values)
def test_decode_of_valid_bytes_matches_reference(v):
    try:
        data = ref.encode(v)
    except ref.CanonicalError:
        return
    assert _outcome(canonical.decode, data) == _outcome(ref.decode, data)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=60))
def test_decode_of_arbitrary_bytes_matches_reference(data):
    assert _outcome(canonical.decode, data) == _outcome(ref.decode, data)


@settings(max_examples=600, deadline=None)
@given(values, st.data())
def test_decode_of_mutated_bytes_matches_reference(v, data):
    try:
        raw = bytearray(ref.encode(v))
    except ref.CanonicalError:
        return
    if not raw:
        return
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for blob in (bytes(raw), bytes(raw[:cut])):
        assert _outcome(canonical.decode, blob) == _outcome(ref.decode, blob)


class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict):
    pass


@pytest.mark.parametrize("v", [
    _Str("a"), _Int(5), _Dict(b=1, a=2), [_Str("x"), {"k": _Int(30)}], bytearray(b"ab"), memoryview(b"cd"),
    "\ud800", {"\ud800": 1}, {1: 2}, {b"k": 1}, 2**64, -(2**64) - 1, -(2**64), 2**64 - 1, 1.5, {"a": {1.5}},
    [[[[]]]], "é" * 30, b"x" * 300, list(range(30)), {f"k{i}": i for i in range(30)},
])
def test_unusual_values_match_reference(v):
    assert _outcome(canonical.encode, v) == _outcome(ref.encode, v)


def test_depth_limit_matches_reference():
    for depth in (canonical.MAX_DEPTH - 1, canonical.MAX_DEPTH, canonical.MAX_DEPTH + 1):
        v: object = 1
        for _ in range(depth):
            v = [v]
        assert _outcome(canonical.encode, v) == _outcome(ref.encode, v)
        blob = b"\x81" * depth + b"\x01"
        assert _outcome(canonical.decode, blob) == _outcome(ref.decode, blob)
        w: object = 1
        for _ in range(depth):
            w = {"a": w}
        assert _outcome(canonical.encode, w) == _outcome(ref.encode, w)
