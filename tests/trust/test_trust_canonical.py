"""trust.canonical: RFC 8949 examples, committed vectors, strict decoding, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust import canonical
from trust.canonical import CanonicalError, decode, encode

from _trust_ref import load

V = load("canonical_v1.json")


def untag(value):
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {k: untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untag(v) for v in value]
    return value


@pytest.mark.parametrize("case", V["valid"], ids=lambda c: c["hex"][:24])
def test_valid_vectors(case):
    value = untag(case["value"])
    assert encode(value).hex() == case["hex"]
    assert decode(bytes.fromhex(case["hex"])) == value


@pytest.mark.parametrize("case", V["invalid"], ids=lambda c: c["why"])
def test_invalid_vectors_are_rejected(case):
    with pytest.raises(CanonicalError):
        decode(bytes.fromhex(case["hex"]))


def test_rfc8949_appendix_a_examples():
    # A few examples straight from RFC 8949 Appendix A.
    assert encode(0).hex() == "00"
    assert encode(24).hex() == "1818"
    assert encode(1000000000000).hex() == "1b000000e8d4a51000"
    assert encode(-1000).hex() == "3903e7"
    assert encode("\u6c34").hex() == "63e6b0b4"
    assert encode([1, [2, 3], [4, 5]]).hex() == "8301820203820405"
    assert encode({"a": 1, "b": [2, 3]}).hex() == "a26161016162820203"


def test_canonical_error_is_value_error():
    assert issubclass(CanonicalError, ValueError)


def test_tuple_encodes_like_list_and_decodes_to_list():
    assert encode((1, "a")) == encode([1, "a"])
    assert decode(encode((1, (2,)))) == [1, [2]]


def test_dict_key_order_does_not_matter():
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})


@pytest.mark.parametrize(
    "value",
    [1.5, float("nan"), {1: 2}, {b"k": 1}, {(1,): 2}, set(), object(), 2**64, -(2**64) - 1, "\ud800", {"\udfff": 1}],
    ids=lambda v: type(v).__name__ if type(v) is object else repr(v),  # stable ids: pytest-xdist compares them
)
def test_unencodable_values(value):
    with pytest.raises(CanonicalError):
        encode(value)


def test_depth_limit():
    deep = []
    for _ in range(canonical.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(CanonicalError):
        encode(deep)
    # Hand-built: MAX_DEPTH + 1 nested one-element arrays.
    data = b"\x81" * (canonical.MAX_DEPTH + 1) + b"\x80"
    with pytest.raises(CanonicalError):
        decode(data)
    ok = b"\x81" * (canonical.MAX_DEPTH - 1) + b"\x80"
    assert encode(decode(ok)) == ok


def test_huge_declared_lengths_fail_fast():
    for data in (b"\x9b" + b"\xff" * 8, b"\x5b" + b"\x7f" * 8, b"\xbb" + b"\x01" * 8):
        with pytest.raises(CanonicalError):
            decode(data)


def test_non_bytes_input():
    with pytest.raises(CanonicalError):
        decode("00")  # type: ignore[arg-type]


def test_bool_is_not_int():
    assert encode(True) != encode(1)
    assert decode(encode(True)) is True


def test_digest():
    assert canonical.digest({"a": 1}) == __import__("hashlib").sha256(encode({"a": 1})).digest()


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip(value):
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_mutations_never_decode_to_something_else_silently(value, draw):
    """Any byte change either fails to decode or decodes to a value whose
    encoding is exactly the mutated bytes (i.e. it is itself canonical)."""
    data = bytearray(encode(value))
    i = draw.draw(st.integers(0, len(data) - 1))
    data[i] = draw.draw(st.integers(0, 255))
    mutated = bytes(data)
    try:
        decoded = decode(mutated)
    except CanonicalError:
        return
    assert encode(decoded) == mutated


@settings(max_examples=200, deadline=None)
@given(values, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_rejected(value, extra):
    with pytest.raises(CanonicalError):
        decode(encode(value) + extra)


@settings(max_examples=200, deadline=None)
@given(values)
def test_truncation_rejected(value):
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(CanonicalError):
            decode(data[:cut])
