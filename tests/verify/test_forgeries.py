"""The forgery corpus (tests/vectors/forgeries/, made by tests/vectors/generate_forgeries.py
from real ledger data): every honest bundle verifies, and every forgery is refused at its
named step (or, for a bundle that does not read, with its named reason).  No services."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from verify.bundle import BundleError, BundleLimits, read_bundle
from verify.chain import verify

CORPUS = Path(__file__).resolve().parents[1] / "vectors" / "forgeries"
DOC = json.loads((CORPUS / "forgeries.json").read_text())
PIN = bytes.fromhex(DOC["genesis_hash"])
VECTORS = DOC["vectors"]


def test_the_corpus_covers_every_class() -> None:
    steps = {v["step"] for v in VECTORS} | {v["reason"] for v in VECTORS}
    for want in ("subject", "registry-proof", "device-key", "receipt-gateway", "receipt-location", "genesis",
                 "row-device", "member-too-large", "crc-error", "unsupported-compression", "duplicate-names"):
        assert want in steps, want
    assert {v["subject"] for v in VECTORS if v["step"] is None and v["reason"] is None} == {
        "blob", "row", "range", "batch"}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["file"] for v in VECTORS])
def test_vector(vector: dict) -> None:
    data = (CORPUS / vector["file"]).read_bytes()
    limits = BundleLimits(**vector.get("limits", {}))
    if vector["reason"] is not None:
        with pytest.raises(BundleError) as exc:
            read_bundle(io.BytesIO(data), limits)
        assert exc.value.reason == vector["reason"], str(exc.value)
        return
    ev = read_bundle(io.BytesIO(data), limits)
    report = verify(ev, trusted_genesis_hash=PIN if vector["pin"] else None)
    if vector["step"] is None:
        assert report.ok, report.to_json()
        assert report.proven is not None and report.proven["kind"] == vector["subject"]
        assert report.to_json()["subject"] == report.proven
    else:
        assert not report.ok
        assert report.failed_step == vector["step"], (vector["why"], report.to_json())
        for step in vector.get("also", ()):
            assert step in {f.step for f in report.failures}, (step, report.to_json())
        assert report.to_json()["subject"] is None  # nothing is stated as proven


def test_unpinned_may_be_asked_for_and_says_so() -> None:
    ev = read_bundle(io.BytesIO((CORPUS / "honest_batch.zip").read_bytes()))
    report = verify(ev, insecure_unpinned=True)
    assert report.ok and report.to_json()["pinned"] is False
    assert verify(ev, trusted_genesis_hash=PIN).to_json()["pinned"] is True
    assert verify(ev, trusted_genesis_hash=b"\x01" * 32).failed_step == "genesis"
