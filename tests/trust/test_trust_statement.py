"""trust.statement: canonical bytes, fixed vectors, signing, Kafka headers."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust import canonical, merkle
from trust.identity import KeyPair
from trust.statement import (
    HEADERS,
    KINDS,
    SIGNING_CONTEXT,
    Statement,
    StatementError,
    from_kafka_headers,
    sign_statement,
    to_kafka_headers,
    verify_statement,
)

from _trust_ref import load

V = load("statement_v1.json")
DEVICE = KeyPair.from_seed(hashlib.sha256(V["device"]["seed_label"].encode()).digest())
OTHER = KeyPair.from_seed(hashlib.sha256(b"another device").digest())


def make(**over) -> Statement:
    fields = dict(
        device=DEVICE.did, seq=7, ts=1_700_000_000_123, kind="timeseries",
        content_type="application/vnd.apache.arrow.stream", size=3, payload_sha256=hashlib.sha256(b"abc").digest(),
    )
    fields.update(over)
    return Statement(**fields)


# --- fixed vectors ---------------------------------------------------------------


def test_vector_keys_are_seed_derived():
    assert DEVICE.seed.hex() == V["device"]["seed"]
    assert DEVICE.public_key.hex() == V["device"]["public_key"]
    assert DEVICE.did == V["device"]["did"]


@pytest.mark.parametrize("case", V["statements"], ids=lambda c: c["fields"]["kind"])
def test_statement_vectors(case):
    f = dict(case["fields"])
    f["payload_sha256"] = bytes.fromhex(f["payload_sha256"])
    stmt = Statement(**f)
    payload = bytes.fromhex(case["payload"])
    assert stmt == Statement.for_payload(f["device"], f["seq"], f["ts"], f["kind"], f["content_type"], payload)
    assert stmt.to_bytes().hex() == case["canonical"]
    assert Statement.from_bytes(bytes.fromhex(case["canonical"])) == stmt
    assert stmt.hash().hex() == case["statement_hash"]
    assert merkle.leaf_hash(stmt.hash()).hex() == case["leaf_hash"]
    sig = sign_statement(stmt, DEVICE)
    assert sig.hex() == case["signature"]
    assert verify_statement(stmt, sig)
    headers = to_kafka_headers(stmt, sig)
    assert [[k, v.decode()] for k, v in headers] == case["kafka_headers"]
    assert from_kafka_headers(headers) == (stmt, sig)


def test_canonical_bytes_are_the_canonical_map():
    stmt = make()
    assert stmt.to_bytes() == canonical.encode(stmt.to_dict())
    assert canonical.decode(stmt.to_bytes())["v"] == 1
    assert stmt.signing_bytes() == SIGNING_CONTEXT + stmt.to_bytes()


# --- strict parsing ---------------------------------------------------------------


def test_from_bytes_rejects_non_canonical():
    good = make()
    d = good.to_dict()
    cases = {
        "extra key": canonical.encode({**d, "extra": 1}),
        "missing key": canonical.encode({k: v for k, v in d.items() if k != "ts"}),
        "trailing bytes": good.to_bytes() + b"\x00",
        "not a map": canonical.encode(list(d.values())),
        "wrong order": _unsorted(d),
        "non-minimal int": good.to_bytes().replace(b"\x63seq\x07", b"\x63seq\x18\x07"),
        "text digest": canonical.encode({**d, "payload_sha256": d["payload_sha256"].hex()}),
        "negative seq": canonical.encode({**d, "seq": -1}),
        "bool seq": canonical.encode({**d, "seq": True}),
        "version 2": canonical.encode({**d, "v": 2}),
        "bad device": canonical.encode({**d, "device": "did:key:zzz"}),
        "bad kind": canonical.encode({**d, "kind": "audio"}),
        "short digest": canonical.encode({**d, "payload_sha256": b"\x00" * 31}),
    }
    assert cases["non-minimal int"] != good.to_bytes()
    for name, data in cases.items():
        with pytest.raises(StatementError) as ei:
            Statement.from_bytes(data)
        assert ei.value.reason in {"non-canonical", "invalid-field", "unsupported-version"}, name
    with pytest.raises(StatementError) as ei:
        Statement.from_bytes(cases["version 2"])
    assert ei.value.reason == "unsupported-version"
    with pytest.raises(StatementError) as ei:
        Statement.from_bytes(cases["trailing bytes"])
    assert ei.value.reason == "non-canonical"


def _unsorted(d: dict) -> bytes:
    """A map with the right entries in the wrong order (hand-built)."""
    items = sorted(d.items(), key=lambda kv: canonical.encode(kv[0]), reverse=True)
    out = bytes([0xA0 | len(items)])
    for k, v in items:
        out += canonical.encode(k) + canonical.encode(v)
    return out


@pytest.mark.parametrize(
    "field,value",
    [
        ("device", "not-a-did"), ("device", None), ("seq", -1), ("seq", 2**63), ("seq", "1"),
        ("seq", True), ("ts", -5), ("ts", 1.5), ("size", -1), ("kind", "audio"), ("kind", ["image"]),
        ("content_type", ""), ("content_type", "image/\u00e9"), ("content_type", "a\nb"), ("content_type",
                                                                                           "image/png\n"),
        ("content_type", "x" * 256), ("payload_sha256", b"\x00" * 31), ("payload_sha256", "00" * 32),
        ("v", 2), ("v", True),
    ],
)
def test_invalid_fields(field, value):
    with pytest.raises(StatementError):
        make(**{field: value})


@pytest.mark.parametrize(
    "field,value",
    [
        ("device", "not-a-did"), ("device", None), ("seq", -1), ("seq", 2**63), ("seq", "1"), ("seq", True),
        ("ts", -5), ("size", -1), ("kind", "audio"), ("kind", ["image"]), ("content_type", ""),
        ("content_type", "a\nb"), ("content_type", "x" * 256), ("payload_sha256", b"\x00" * 31),
        ("payload_sha256", "00" * 32), ("v", True),
    ],
)
def test_from_bytes_checks_every_field(field, value):
    """The parser keeps the canonical bytes it read instead of encoding them again, but checks
    every field exactly as the constructor does."""
    doc = make().to_dict()
    doc[field] = value
    with pytest.raises(StatementError):
        Statement.from_bytes(canonical.encode(doc))


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(0, 2**63 - 1), ts=st.integers(0, 2**63 - 1), size=st.integers(0, 2**63 - 1),
       kind=st.sampled_from(sorted(KINDS)), digest=st.binary(min_size=32, max_size=32))
def test_from_bytes_is_the_constructor(seq, ts, size, kind, digest):
    built = Statement(DEVICE.did, seq, ts, kind, "application/octet-stream", size, digest)
    parsed = Statement.from_bytes(built.to_bytes())
    assert parsed == built and parsed.to_bytes() == built.to_bytes() == canonical.encode(built.to_dict())
    assert parsed.hash() == built.hash() and parsed.signing_bytes() == built.signing_bytes()


def test_kinds():
    assert KINDS == {"timeseries", "image", "video"}
    for kind in KINDS:
        make(kind=kind)


def test_content_type_with_parameters():
    stmt = make(content_type="text/csv; charset=utf-8")
    assert Statement.from_bytes(stmt.to_bytes()) == stmt


# --- signatures ---------------------------------------------------------------------


def test_sign_and_verify():
    stmt = make()
    sig = sign_statement(stmt, DEVICE)
    assert verify_statement(stmt, sig)
    assert verify_statement(stmt, sig, DEVICE.public_key)
    assert not verify_statement(make(seq=8), sig)
    assert not verify_statement(stmt, sig, OTHER.public_key)
    # Domain separation: a signature over the bare canonical bytes is not valid.
    assert not verify_statement(stmt, DEVICE.sign(stmt.to_bytes()))


def test_rotated_key_verifies_with_registered_key():
    stmt = make()
    sig = sign_statement(stmt, OTHER)  # device rotated to OTHER's key
    assert not verify_statement(stmt, sig)
    assert verify_statement(stmt, sig, OTHER.did)


# --- Kafka headers --------------------------------------------------------------------

statements = st.builds(
    Statement,
    device=st.sampled_from([DEVICE.did, OTHER.did]),
    seq=st.integers(0, 2**63 - 1),
    ts=st.integers(0, 2**63 - 1),
    kind=st.sampled_from(sorted(KINDS)),
    content_type=st.sampled_from(["image/png", "video/mp4", "application/vnd.apache.arrow.stream", "a/b; c=d"]),
    size=st.integers(0, 2**63 - 1),
    payload_sha256=st.binary(min_size=32, max_size=32),
)


@settings(max_examples=100, deadline=None)
@given(statements, st.binary(min_size=64, max_size=64))
def test_headers_round_trip_losslessly(stmt, sig):
    headers = to_kafka_headers(stmt, sig)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    assert [k for k, _ in headers] == list(HEADERS.values())
    assert from_kafka_headers(headers) == (stmt, sig)
    assert from_kafka_headers(list(reversed(headers))) == (stmt, sig)
    assert Statement.from_bytes(stmt.to_bytes()) == stmt


def test_headers_ignore_foreign_headers():
    stmt = make()
    sig = sign_statement(stmt, DEVICE)
    headers = [("traceparent", b"00-abc"), *to_kafka_headers(stmt, sig), ("x-reason", b"zzz")]
    assert from_kafka_headers(headers) == (stmt, sig)


def _headers():
    stmt = make()
    return to_kafka_headers(stmt, sign_statement(stmt, DEVICE))


def _replace(name, value):
    return [(k, value if k == name else v) for k, v in _headers()]


@pytest.mark.parametrize("name", list(HEADERS.values()))
def test_missing_header(name):
    with pytest.raises(StatementError) as ei:
        from_kafka_headers([(k, v) for k, v in _headers() if k != name])
    assert ei.value.reason == ("missing-header")


def test_no_headers():
    for headers in (None, []):
        with pytest.raises(StatementError) as ei:
            from_kafka_headers(headers)
        assert ei.value.reason == "missing-header"


def test_duplicate_header():
    h = _headers()
    with pytest.raises(StatementError) as ei:
        from_kafka_headers(h + [h[2]])
    assert ei.value.reason == "duplicate-header"


@pytest.mark.parametrize("value", [b"2", b"0", b"01", b"", b"v1", b"1 "])
def test_unsupported_version(value):
    with pytest.raises(StatementError) as ei:
        from_kafka_headers(_replace("ss-v", value))
    assert ei.value.reason == "unsupported-version"


@pytest.mark.parametrize(
    "name,value",
    [
        ("ss-seq", b"007"), ("ss-seq", b"+7"), ("ss-seq", b"-1"), ("ss-seq", b" 7"), ("ss-seq", b"7\n"),
        ("ss-seq", b""), ("ss-seq", b"1e3"), ("ss-seq", b"99999999999999999999"),
        ("ss-ts", b"0x10"), ("ss-size", b"3.0"),
        ("ss-payload-sha256", b"AB" * 32), ("ss-payload-sha256", b"ab" * 31),
        ("ss-payload-sha256", b"zz" * 32), ("ss-sig", b"00" * 63), ("ss-sig", b"00" * 65),
        ("ss-device", b"did:key:\xff"), ("ss-kind", b"\xc3\xa9"),
    ],
)
def test_malformed_header(name, value):
    with pytest.raises(StatementError) as ei:
        from_kafka_headers(_replace(name, value))
    assert ei.value.reason == "malformed-header"


@pytest.mark.parametrize(
    "name,value",
    [("ss-kind", b"audio"), ("ss-device", b"did:key:z6Mkxx"), ("ss-seq", b"9223372036854775808"),
     ("ss-content-type", b"")],
)
def test_invalid_field_in_header(name, value):
    with pytest.raises(StatementError) as ei:
        from_kafka_headers(_replace(name, value))
    assert ei.value.reason == "invalid-field"


def test_non_bytes_header_value():
    with pytest.raises(StatementError) as ei:
        from_kafka_headers(_replace("ss-seq", None))
    assert ei.value.reason == "malformed-header"


def test_bytes_header_names_accepted():
    h = [(k.encode(), v) for k, v in _headers()]
    stmt, sig = from_kafka_headers(h)
    assert stmt == make()


def test_to_headers_requires_64_byte_signature():
    with pytest.raises(StatementError):
        to_kafka_headers(make(), b"\x00" * 63)


def test_matches_payload():
    stmt = Statement.for_payload(DEVICE.did, 1, 2, "image", "image/jpeg", b"\xff\xd8data")
    assert stmt.matches_payload(b"\xff\xd8data")
    assert not stmt.matches_payload(b"\xff\xd8dat")
    assert not stmt.matches_payload(b"\xff\xd8datb")


def test_docs_quote_the_committed_vectors():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "formats.md").read_text()
    flat = "".join(doc.split())
    case = V["statements"][1]
    for value in (case["canonical"], case["statement_hash"], case["leaf_hash"], case["signature"],
                  case["receipt_json"], V["anchors"][1]["json"], V["device"]["did"], V["device"]["seed"]):
        assert "".join(value.split()) in flat, value[:40]
