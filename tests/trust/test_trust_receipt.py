"""trust.receipt: seal receipts and anchor references."""

from __future__ import annotations

import hashlib
import json

import pytest

from trust.identity import KeyPair
from trust.receipt import (
    RECEIPT_CONTEXT,
    AnchorRef,
    ReceiptError,
    SealReceipt,
    seal_receipt,
    verify_receipt,
)
from trust.statement import Statement

from _trust_ref import load

V = load("statement_v1.json")
GATEWAY = KeyPair.from_seed(hashlib.sha256(V["gateway"]["seed_label"].encode()).digest())
SH = hashlib.sha256(b"statement").digest()


def test_receipt_vectors():
    assert GATEWAY.did == V["gateway"]["did"]
    for case in V["statements"]:
        f = dict(case["fields"])
        f["payload_sha256"] = bytes.fromhex(f["payload_sha256"])
        stmt = Statement(**f)
        r = seal_receipt(stmt.hash(), f"raw/{stmt.payload_sha256.hex()}", GATEWAY)
        assert r.to_json() == case["receipt_json"]
        assert r.to_bytes().hex() == case["receipt_canonical"]
        assert SealReceipt.from_json(case["receipt_json"]) == r
        assert SealReceipt.from_bytes(bytes.fromhex(case["receipt_canonical"])) == r
        assert verify_receipt(r)


def test_anchor_vectors():
    for i, case in enumerate(V["anchors"]):
        ref = AnchorRef.from_json(case["json"])
        assert ref.leaf_index == i and ref.root.hex() == V["tree_root"]
        assert ref.to_json() == case["json"]
        assert ref.to_bytes().hex() == case["canonical"]
        assert AnchorRef.from_bytes(ref.to_bytes()) == ref


def test_receipt_signature_and_tamper():
    r = seal_receipt(SH, "raw/abc", GATEWAY)
    assert verify_receipt(r)
    assert verify_receipt(r, GATEWAY.public_key)
    assert r.signed_bytes().startswith(RECEIPT_CONTEXT)
    other = KeyPair.generate()
    assert not verify_receipt(r, other.did)
    moved = SealReceipt(r.statement_hash, "raw/other", r.gateway, r.signature)
    assert not verify_receipt(moved)
    forged = SealReceipt(r.statement_hash, r.location, other.did, r.signature)
    assert not verify_receipt(forged)


def test_receipt_json_is_compact_and_sorted():
    r = seal_receipt(SH, "raw/abc", GATEWAY)
    text = r.to_json()
    assert " " not in text
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert SealReceipt.from_json(text.encode()) == r


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("sig"),
        lambda d: d.update(extra=1),
        lambda d: d.update(v=2),
        lambda d: d.update(v=True),
        lambda d: d.update(sig=d["sig"][:-2]),
        lambda d: d.update(sig=d["sig"].upper()),
        lambda d: d.update(statement_hash="zz" * 32),
        lambda d: d.update(statement_hash=None),
        lambda d: d.update(location=""),
        lambda d: d.update(location="has space"),
        lambda d: d.update(location=5),
        lambda d: d.update(gateway="did:key:zzz"),
    ],
)
def test_receipt_from_json_strict(mutate):
    d = json.loads(seal_receipt(SH, "raw/abc", GATEWAY).to_json())
    mutate(d)
    with pytest.raises(ReceiptError):
        SealReceipt.from_json(json.dumps(d))


@pytest.mark.parametrize("text", ["", "[]", "null", "{", '{"v":1}'])
def test_receipt_from_json_garbage(text):
    with pytest.raises(ReceiptError):
        SealReceipt.from_json(text)


def test_receipt_from_bytes_strict():
    r = seal_receipt(SH, "raw/abc", GATEWAY)
    with pytest.raises(ReceiptError):
        SealReceipt.from_bytes(r.to_bytes() + b"\x00")
    with pytest.raises(ReceiptError):
        SealReceipt.from_bytes(b"\xa0")


def anchor(**over):
    fields = dict(batch_id="batch-1", leaf_index=3, tree_size=8, root=b"\x11" * 32, height=10, tx_index=0)
    fields.update(over)
    return AnchorRef(**fields)


def test_anchor_round_trip():
    a = anchor()
    assert AnchorRef.from_json(a.to_json()) == a
    assert AnchorRef.from_bytes(a.to_bytes()) == a
    assert json.loads(a.to_json()) == {
        "v": 1, "batch_id": "batch-1", "leaf_index": 3, "tree_size": 8, "root": "11" * 32,
        "height": 10, "tx_index": 0,
    }


@pytest.mark.parametrize(
    "over",
    [
        {"leaf_index": 8}, {"leaf_index": 9}, {"leaf_index": -1}, {"tree_size": 0}, {"height": -1},
        {"tx_index": True}, {"root": b"\x11" * 31}, {"batch_id": ""}, {"batch_id": "a b"},
        {"batch_id": "x" * 129}, {"v": 2}, {"leaf_index": 1.0},
    ],
)
def test_anchor_invalid(over):
    with pytest.raises(ReceiptError):
        anchor(**over)


def test_anchor_from_json_strict():
    d = json.loads(anchor().to_json())
    for bad in ({**d, "x": 1}, {k: v for k, v in d.items() if k != "height"}, {**d, "root": "11" * 31},
                {**d, "leaf_index": "3"}, {**d, "v": 2}):
        with pytest.raises(ReceiptError):
            AnchorRef.from_json(json.dumps(bad))
