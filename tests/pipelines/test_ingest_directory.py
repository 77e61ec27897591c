"""Device directories: registry resolutions map to device keys (`device_key_from_resolution`, used by
`ProvenDirectory` on proven values); the manifest one reads a factory's devices.json."""

from __future__ import annotations

import json

from pipelines.directory import ManifestDirectory, device_key_from_resolution
from trust.identity import KeyPair

A = KeyPair.from_seed(b"\x01" * 32).did
B = KeyPair.from_seed(b"\x02" * 32).did


def _answer(status: str, key: str = A, type_: str = "device") -> dict:
    return {"state_height": 9, "resolution": {"id": "dev-1", "type": type_, "org": "o", "key": key,
                                              "status": status, "valid": status == "valid"}}


def test_resolution_mapping() -> None:
    assert device_key_from_resolution(A, None) is None
    assert device_key_from_resolution(A, _answer("unknown")) is None
    assert device_key_from_resolution(A, _answer("unregistered")) is None
    assert device_key_from_resolution(A, _answer("valid", type_="gateway")) is None
    k = device_key_from_resolution(A, _answer("valid"))
    assert k is not None and k.public_key == A and not k.revoked and k.entity == "dev-1"
    r = device_key_from_resolution(A, _answer("revoked"))
    assert r is not None and r.revoked
    n = device_key_from_resolution(A, _answer("not_current", key=B))
    assert n is not None and n.public_key == B and not n.revoked


def test_manifest_directory(tmp_path) -> None:
    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"v": 1, "factory": "f", "devices": [
        {"did": A, "kind": "image", "name": "cam-000", "sensors": ["camera"], "key_file": "keys/cam-000.key"}]}))
    d = ManifestDirectory([path, tmp_path / "missing.json"], revoked=[B])
    assert d.resolve(A).public_key == A and d.resolve(B) is None
    doc = json.loads(path.read_text())
    doc["devices"].append({"did": B, "kind": "video", "name": "vid-000", "sensors": [], "key_file": "k"})
    path.write_text(json.dumps(doc))
    import os

    os.utime(path, (1, 1))
    assert d.resolve(B).revoked
