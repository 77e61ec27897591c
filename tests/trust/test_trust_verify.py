"""trust.verify: the evidence chain names the first failed step."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust import STEPS, merkle
from trust.errors import (
    AnchorMismatchError,
    DeviceSignatureError,
    InclusionProofError,
    PayloadHashError,
    PayloadSizeError,
    ReceiptFormatError,
    ReceiptSignatureError,
    StatementFormatError,
    StatementHashError,
    VerificationError,
)
from trust.identity import KeyPair
from trust.receipt import AnchorRef, SealReceipt, seal_receipt
from trust.statement import Statement, sign_statement
from trust.verify import VerificationResult, check_record, verify_record

DEVICE = KeyPair.from_seed(hashlib.sha256(b"verify device").digest())
GATEWAY = KeyPair.from_seed(hashlib.sha256(b"verify gateway").digest())
OTHER = KeyPair.from_seed(hashlib.sha256(b"verify other").digest())


def build(payload: bytes = b"ts,sensor,value\n1,t1,20.5\n", n: int = 13, index: int = 5):
    stmt = Statement.for_payload(DEVICE.did, 42, 1_700_000_000_000, "timeseries", "text/csv", payload)
    sig = sign_statement(stmt, DEVICE)
    receipt = seal_receipt(stmt.hash(), "raw/" + stmt.payload_sha256.hex(), GATEWAY)
    leaves = [merkle.leaf_hash(hashlib.sha256(b"other %d" % i).digest()) for i in range(n)]
    leaves[index] = merkle.leaf_hash(stmt.hash())
    tree = merkle.MerkleTree(leaves)
    anchor = AnchorRef("batch-7", index, n, tree.root(), 1234, 2)
    return dict(payload=payload, statement=stmt, signature=sig, receipt=receipt, anchor=anchor,
                proof=tree.inclusion_proof(index))


def run(rec, **kw):
    return verify_record(rec["payload"], rec["statement"], rec["signature"], rec["receipt"], rec["anchor"],
                         rec["proof"], **kw)


def test_good_record_passes_every_step():
    rec = build()
    res = run(rec)
    assert res.ok and bool(res) and res.failed_step is None
    assert res.passed == STEPS
    res.raise_for_failure()
    check_record(rec["payload"], rec["statement"], rec["signature"], rec["receipt"], rec["anchor"], rec["proof"])
    assert run(rec, device_key=DEVICE.public_key, gateway_key=GATEWAY.did, root=rec["anchor"].root).ok


def test_good_record_from_serialized_parts():
    rec = build()
    rec["statement"] = rec["statement"].to_bytes()
    rec["receipt"] = rec["receipt"].to_json()
    assert run(rec).ok
    rec["receipt"] = SealReceipt.from_json(rec["receipt"]).to_bytes()
    assert run(rec).ok


@pytest.mark.parametrize("n,index", [(1, 0), (2, 1), (3, 2), (7, 6), (8, 0), (100, 63)])
def test_various_tree_shapes(n, index):
    assert run(build(n=n, index=index)).ok


def expect(rec, step, exc_type, **kw):
    res = run(rec, **kw)
    assert not res.ok
    assert res.failed_step == step
    assert isinstance(res.error, exc_type) and isinstance(res.error, VerificationError)
    assert res.error.step == step
    assert res.passed == STEPS[: STEPS.index(step)]
    with pytest.raises(exc_type):
        check_record(rec["payload"], rec["statement"], rec["signature"], rec["receipt"], rec["anchor"],
                     rec["proof"], **kw)
    with pytest.raises(VerificationError):
        res.raise_for_failure()


def test_each_step_is_named():
    rec = build()
    expect({**rec, "statement": rec["statement"].to_bytes() + b"\0"}, "statement-format", StatementFormatError)
    expect({**rec, "payload": rec["payload"][:-1]}, "payload-size", PayloadSizeError)
    expect({**rec, "payload": rec["payload"][:-1] + b"X"}, "payload-hash", PayloadHashError)
    expect({**rec, "signature": OTHER.sign(rec["statement"].signing_bytes())}, "device-signature",
           DeviceSignatureError)
    expect(rec, "device-signature", DeviceSignatureError, device_key=OTHER.public_key)
    expect(rec, "device-signature", DeviceSignatureError, device_key=b"bad key")
    expect({**rec, "receipt": "{}"}, "receipt-format", ReceiptFormatError)
    expect({**rec, "receipt": 17}, "receipt-format", ReceiptFormatError)
    other_receipt = seal_receipt(hashlib.sha256(b"x").digest(), rec["receipt"].location, GATEWAY)
    expect({**rec, "receipt": other_receipt}, "statement-hash", StatementHashError)
    r = rec["receipt"]
    expect({**rec, "receipt": SealReceipt(r.statement_hash, "raw/elsewhere", r.gateway, r.signature)},
           "receipt-signature", ReceiptSignatureError)
    expect(rec, "receipt-signature", ReceiptSignatureError, gateway_key=OTHER.did)
    expect(rec, "anchor-root", AnchorMismatchError, root=b"\x00" * 32)
    a = rec["anchor"]
    expect({**rec, "anchor": AnchorRef(a.batch_id, a.leaf_index + 1, a.tree_size, a.root, a.height, a.tx_index)},
           "inclusion", InclusionProofError)
    expect({**rec, "proof": rec["proof"][:-1]}, "inclusion", InclusionProofError)
    expect({**rec, "proof": ["00" * 32] * len(rec["proof"])}, "inclusion", InclusionProofError)


def flip(data: bytes, i: int, bit: int) -> bytes:
    b = bytearray(data)
    b[i] ^= 1 << bit
    return bytes(b)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_tampered_byte_is_detected_and_named(payload, data):
    rec = build(payload=payload)
    target = data.draw(st.sampled_from(["payload", "statement", "signature", "receipt-sig", "proof"]))
    bit = data.draw(st.integers(0, 7))
    if target == "payload":
        i = data.draw(st.integers(0, len(payload) - 1))
        rec["payload"] = flip(payload, i, bit)
        allowed = {"payload-hash"}
    elif target == "statement":
        raw = rec["statement"].to_bytes()
        i = data.draw(st.integers(0, len(raw) - 1))
        rec["statement"] = flip(raw, i, bit)
        # A changed statement either fails to parse, no longer describes the
        # payload, or is no longer what the device signed.
        allowed = {"statement-format", "payload-size", "payload-hash", "device-signature"}
    elif target == "signature":
        i = data.draw(st.integers(0, 63))
        rec["signature"] = flip(rec["signature"], i, bit)
        allowed = {"device-signature"}
    elif target == "receipt-sig":
        r = rec["receipt"]
        i = data.draw(st.integers(0, 63))
        rec["receipt"] = SealReceipt(r.statement_hash, r.location, r.gateway, flip(r.signature, i, bit))
        allowed = {"receipt-signature"}
    else:
        e = data.draw(st.integers(0, len(rec["proof"]) - 1))
        i = data.draw(st.integers(0, 31))
        rec["proof"] = [flip(h, i, bit) if j == e else h for j, h in enumerate(rec["proof"])]
        allowed = {"inclusion"}
    res = run(rec)
    assert not res.ok
    assert res.failed_step in allowed, (target, res.error)


def test_result_is_frozen_value():
    res = VerificationResult(passed=("statement-format",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.passed = ()  # type: ignore[misc]
