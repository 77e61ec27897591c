"""Regenerate the committed trust test vectors (deterministic: seed-derived keys).

    .venv/bin/python tests/vectors/generate.py

Writes canonical_v1.json and statement_v1.json beside this file.  The tests
recompute every output from the stored inputs and compare, so a change to an
encoding shows up as a test failure, not as silently regenerated vectors.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from trust import canonical, merkle  # noqa: E402
from trust.identity import KeyPair  # noqa: E402
from trust.receipt import AnchorRef, seal_receipt  # noqa: E402
from trust.statement import Statement, sign_statement, to_kafka_headers  # noqa: E402


def seed(label: str) -> bytes:
    """Test seeds are SHA-256 of a label, so anyone can rebuild the keys."""
    return hashlib.sha256(label.encode()).digest()


def tagged(value):
    """JSON form of a canonical value: bytes become {"$bytes": hex}."""
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, (list, tuple)):
        return [tagged(v) for v in value]
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    return value


CANONICAL_VALID = [
    # RFC 8949 Appendix A examples that fall in our data model.
    0, 1, 10, 23, 24, 25, 100, 1000, 1000000, 1000000000000, 18446744073709551615,
    -1, -10, -100, -1000, -18446744073709551616,
    "", "a", "IETF", "\"\\", "\u00fc", "\u6c34", "\U00010151",
    b"", b"\x01\x02\x03\x04",
    False, True, None,
    [], [1, 2, 3], [1, [2, 3], [4, 5]], list(range(1, 26)),
    {}, {"a": 1, "b": [2, 3]}, ["a", {"b": "c"}],
    {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
    # Our own: key order is by encoded bytes, so shorter keys first.
    {"bb": 1, "a": 2, "aa": 3, "b": 4},
    {"tx": {"kind": "ANCHOR", "root": b"\xaa" * 32, "size": 8}, "nonce": 7},
    255, 256, 65535, 65536, 4294967295, 4294967296, -24, -25, -256, -257,
]

CANONICAL_INVALID = [
    ("1817", "non-minimal integer (23 in one extra byte)"),
    ("190017", "non-minimal integer"),
    ("1a000000ff", "non-minimal integer"),
    ("1b00000000ffffffff", "non-minimal integer"),
    ("3817", "non-minimal negative integer"),
    ("580100", "non-minimal byte string length"),
    ("7801", "truncated / non-minimal text length"),
    ("a2616201616102", "map keys out of order"),
    ("a2616101616102", "duplicate map key"),
    ("a1010203", "integer map key"),
    ("a14161 01", "byte string map key"),
    ("5f41014102ff", "indefinite-length byte string"),
    ("9f01ff", "indefinite-length array"),
    ("bf616101ff", "indefinite-length map"),
    ("f7", "undefined"),
    ("f93c00", "half float"),
    ("fb3ff0000000000000", "double float"),
    ("c11a514b67b0", "tag"),
    ("0000", "trailing bytes"),
    ("62ff61", "invalid UTF-8"),
    ("63eda080", "UTF-8 encoded surrogate"),
    ("83010203ff", "trailing break byte"),
    ("8301", "truncated array"),
    ("1c", "reserved additional information"),
    ("", "empty input"),
    ("f0", "unassigned simple value"),
]


def canonical_vectors() -> dict:
    return {
        "description": "trust.canonical v1 (deterministic CBOR subset, RFC 8949 §4.2.1). "
        "Values use JSON with bytes as {\"$bytes\": hex}.",
        "valid": [{"value": tagged(v), "hex": canonical.encode(v).hex()} for v in CANONICAL_VALID],
        "invalid": [{"hex": h.replace(" ", ""), "why": why} for h, why in CANONICAL_INVALID],
    }


def statement_vectors() -> dict:
    device = KeyPair.from_seed(seed("sealstream test device 0"))
    gateway = KeyPair.from_seed(seed("sealstream test gateway 0"))
    payloads = [
        ("timeseries", "application/vnd.apache.arrow.stream", b"ARROW1\x00\x00" + bytes(range(40))),
        ("image", "image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 16),
        ("video", "video/mp4", b""),
    ]
    cases = []
    stmts = []
    for i, (kind, ctype, payload) in enumerate(payloads):
        stmt = Statement.for_payload(device.did, 1000 + i, 1700000000000 + 250 * i, kind, ctype, payload)
        sig = sign_statement(stmt, device)
        stmts.append(stmt)
        receipt = seal_receipt(stmt.hash(), f"raw/{stmt.payload_sha256.hex()}", gateway)
        cases.append(
            {
                "payload": payload.hex(),
                "fields": {
                    "v": stmt.v, "device": stmt.device, "seq": stmt.seq, "ts": stmt.ts,
                    "kind": stmt.kind, "content_type": stmt.content_type, "size": stmt.size,
                    "payload_sha256": stmt.payload_sha256.hex(),
                },
                "canonical": stmt.to_bytes().hex(),
                "statement_hash": stmt.hash().hex(),
                "leaf_hash": merkle.leaf_hash(stmt.hash()).hex(),
                "signature": sig.hex(),
                "kafka_headers": [[k, v.decode("ascii")] for k, v in to_kafka_headers(stmt, sig)],
                "receipt_json": receipt.to_json(),
                "receipt_canonical": receipt.to_bytes().hex(),
            }
        )
    tree = merkle.MerkleTree([merkle.leaf_hash(s.hash()) for s in stmts])
    anchors = []
    for i in range(len(stmts)):
        ref = AnchorRef("batch-0001", i, tree.size, tree.root(), 42, 1)
        anchors.append(
            {"json": ref.to_json(), "canonical": ref.to_bytes().hex(),
             "proof": [h.hex() for h in tree.inclusion_proof(i)]}
        )
    return {
        "description": "Statement v1 vectors. Seeds are SHA-256 of the labels; Ed25519 "
        "signatures are deterministic (RFC 8032), so everything here is reproducible.",
        "device": {"seed_label": "sealstream test device 0", "seed": device.seed.hex(),
                   "public_key": device.public_key.hex(), "did": device.did},
        "gateway": {"seed_label": "sealstream test gateway 0", "seed": gateway.seed.hex(),
                    "public_key": gateway.public_key.hex(), "did": gateway.did},
        "statements": cases,
        "tree_root": tree.root().hex(),
        "anchors": anchors,
    }


def main() -> None:
    for name, doc in (("canonical_v1.json", canonical_vectors()), ("statement_v1.json", statement_vectors())):
        (HERE / name).write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
