"""The offline bundle verifier alone (no services): a real bundle (tests/vectors/
evidence_bundle_v2.zip, made by tests/vectors/generate_bundle.py) verifies, and each
corruption of a copy fails at its own step.  Also: the verifier's modules import no
database, object-store or Kafka client."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pytest

from ledger.values import commit_signing_bytes
from verify.bundle import INDEX, verify_bundle
from trust import canonical, merkle
from trust.hashes import sha256
from trust.identity import KeyPair

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
BUNDLE = (VECTORS / "evidence_bundle_v2.zip").read_bytes()
META = json.loads((VECTORS / "evidence_bundle_v2.json").read_text())
PIN = bytes.fromhex(META["genesis_hash"])


def _members(data: bytes = BUNDLE) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        index = json.loads(z.read(INDEX))
        return index, {n: z.read(n) for n in z.namelist() if n != INDEX}


def _zip(index: dict, members: dict[str, bytes], *, restamp: bool = True, extra: tuple = ()) -> io.BytesIO:
    if restamp:
        index = dict(index, members={n: sha256(d).hex() for n, d in members.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(INDEX, json.dumps(index, sort_keys=True, separators=(",", ":")))
        for n, d in members.items():
            z.writestr(n, d)
        for n, d in extra:
            z.writestr(n, d)
    buf.seek(0)
    return buf


def _edit_cbor(members: dict, name: str, fn: Callable) -> None:
    doc = canonical.decode(members[name])
    doc = fn(doc) or doc
    members[name] = canonical.encode(doc)


def _verify(buf, pin: bytes = PIN):
    return verify_bundle(buf, trusted_genesis_hash=pin)


def test_pristine_bundle_verifies() -> None:
    report = _verify(io.BytesIO(BUNDLE))
    assert report.ok, report.to_json()
    assert report.counts["records"] == 3 and report.counts["rows"] == 24
    assert report.proven == {**report.proven, "kind": "batch", "batch_id": META["batch_id"]}
    assert {"certificate", "sealer-set", "anchor-tx", "tx-in-block", "inclusion", "row-value"} <= set(report.passed)


def _cert_below_quorum(m: dict) -> None:
    def fn(headers):
        headers[-1][1]["sigs"] = headers[-1][1]["sigs"][:2]  # 4 sealers: quorum 3
    _edit_cbor(m, "ledger/headers.cbor", fn)


def _cert_non_sealer(m: dict) -> None:
    stranger = KeyPair.generate()
    genesis = canonical.decode(m["ledger/genesis.cbor"])

    def fn(headers):
        cert = headers[-1][1]
        sig = stranger.sign(commit_signing_bytes(genesis["chain_id"], cert["view"], cert["height"], cert["hash"],
                                                 stranger.did))
        cert["sigs"][0] = [stranger.did, sig]
    _edit_cbor(m, "ledger/headers.cbor", fn)


def _drop_middle_header(m: dict) -> None:
    def fn(headers):
        del headers[len(headers) // 2]
    _edit_cbor(m, "ledger/headers.cbor", fn)


def _rewrite_header(m: dict) -> None:
    def fn(headers):
        headers[-1][0]["state_root"] = b"\x01" * 32
    _edit_cbor(m, "ledger/headers.cbor", fn)


def _sealer_history(m: dict) -> None:
    doc = json.loads(m["ledger/sealer_sets.json"])
    doc[0]["sealers"] = doc[0]["sealers"][:3]
    m["ledger/sealer_sets.json"] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _tx_proof(m: dict) -> None:
    def fn(anchors):
        p = anchors[0]["proof"]
        p["index"] = (p["index"] + 1) % max(p["size"], 2) if p["size"] > 1 else p["index"]
        if p["size"] == 1:
            p["path"] = [b"\x02" * 32]
    _edit_cbor(m, "ledger/anchors.cbor", fn)


def _anchor_state(m: dict) -> None:
    def fn(state):
        for s in state:
            if s["key"].startswith("anc/batch/"):
                rec = canonical.decode(s["value"])
                rec["tree_size"] += 1
                s["value"] = canonical.encode(rec)
    _edit_cbor(m, "ledger/state.cbor", fn)


def _drop_registry_value(m: dict) -> None:
    _edit_cbor(m, "ledger/state.cbor", lambda state: [s for s in state if not s["key"].startswith("reg/key/")])


def _manifest_reordered(m: dict) -> None:
    doc = json.loads(m["batches/0.json"])
    doc["leaves"] = doc["leaves"][::-1]
    doc["root"] = merkle.root(merkle.leaf_hashes([bytes.fromhex(x) for x in doc["leaves"]])).hex()
    m["batches/0.json"] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _manifest_leaf(m: dict) -> None:
    doc = json.loads(m["batches/0.json"])
    doc["leaves"][0] = "ab" * 32
    m["batches/0.json"] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _first_payload(m: dict) -> str:
    return sorted(n for n in m if n.startswith("payloads/"))[0]


def _payload(m: dict) -> None:
    name = _first_payload(m)
    data = bytearray(m[name])
    data[len(data) // 2] ^= 0x40
    m[name] = bytes(data)


def _record(field: str, fn: Callable) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        def records(rs):
            rs[0][field] = fn(rs[0][field], rs)
        _edit_cbor(m, "records.cbor", records)
    return edit


def _flip(b: bytes) -> bytes:
    return b[:-1] + bytes([b[-1] ^ 1])


def _receipt_sig(value: bytes, _rs) -> bytes:
    doc = canonical.decode(value)
    doc["sig"] = _flip(doc["sig"])
    return canonical.encode(doc)


def _rows(fn: Callable[[pa.Table], pa.Table]) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        t = pa.ipc.open_file(pa.BufferReader(m["rows.arrow"])).read_all()
        t = fn(t)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        m["rows.arrow"] = sink.getvalue().to_pybytes()
    return edit


def _row_value(t: pa.Table) -> pa.Table:
    values = t.column("value").to_pylist()
    values[3] += 1.0
    return t.set_column(4, "value", pa.array(values, pa.float64()))


def _row_unsigned(t: pa.Table) -> pa.Table:
    extra = pa.table({"statement_hash": pa.array([b"\x07" * 32], t.schema.field("statement_hash").type),
                      "row_index": pa.array([0], pa.int32()), "time_us": pa.array([0], pa.int64()),
                      "sensor": pa.array(["x"]), "value": pa.array([1.0]),
                      "device": pa.array([t.column("device")[0].as_py()])})
    return pa.concat_tables([t, extra.cast(t.schema)])


CORRUPTIONS = {
    "certificate below quorum": (_cert_below_quorum, "certificate"),
    "certificate signed by a non-sealer": (_cert_non_sealer, "certificate"),
    "header rewritten": (_rewrite_header, "certificate"),
    "header missing": (_drop_middle_header, "header-chain"),
    "sealer-set history edited": (_sealer_history, "sealer-set"),
    "tx proof altered": (_tx_proof, "tx-in-block"),
    "anchors state value altered": (_anchor_state, "registry-proof"),
    "registry value dropped": (_drop_registry_value, "registry-proof"),
    "manifest reordered and re-rooted": (_manifest_reordered, "anchor-root"),
    "manifest leaf replaced": (_manifest_leaf, "manifest"),
    "payload byte flipped": (_payload, "payload-hash"),
    "device signature flipped": (_record("signature", lambda v, _: _flip(v)), "device-signature"),
    "receipt signature flipped": (_record("receipt", _receipt_sig), "receipt-signature"),
    "leaf index moved": (_record("leaf_index", lambda v, rs: (v + 1) % len(rs)), "leaf"),
    "inclusion proof altered": (_record("proof", lambda v, _: [_flip(v[0])] + v[1:]), "inclusion"),
    "stored row value changed": (_rows(_row_value), "row-value"),
    "stored row deleted": (_rows(lambda t: t.slice(1)), "row-missing"),
    "stored row nobody signed": (_rows(_row_unsigned), "row-unsigned"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_names_its_step(name: str) -> None:
    edit, step = CORRUPTIONS[name]
    index, members = _members()
    edit(members)
    report = _verify(_zip(index, members))
    assert report.failed_step == step, report.to_json()


def test_wrong_trust_anchor_fails_at_genesis() -> None:
    assert _verify(io.BytesIO(BUNDLE), pin=b"\x00" * 32).failed_step == "genesis"


def _extra(index, members):
    return _zip(index, members, extra=(("notes.txt", b"hello"),))


def _missing(index, members):
    buf = _zip(index, members)
    idx, ms = _members(buf.getvalue())
    del ms["ledger/state.cbor"]
    return _zip(idx, ms, restamp=False)


def _stale(index, members):
    members[_first_payload(members)] += b"!"
    return _zip(index, members, restamp=False)


STRICT = {
    "unknown version": lambda i, m: _zip(dict(i, v=3), m),
    "unknown format": lambda i, m: _zip(dict(i, format="other"), m),
    "extra member": _extra,
    "missing member": _missing,
    "member digest stale": _stale,
    "extra index key": lambda i, m: _zip(dict(i, note="x"), m),
    "not a zip": lambda i, m: io.BytesIO(b"PK\x03\x04 not really"),
}


@pytest.mark.parametrize("name", sorted(STRICT))
def test_strict_format(name: str) -> None:
    index, members = _members()
    report = _verify(STRICT[name](index, members))
    assert report.failed_step == "bundle", report.to_json()


def test_duplicate_member_refused() -> None:
    import warnings

    index, members = _members()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it writes
        buf = _zip(index, members, extra=(("records.cbor", members["records.cbor"]),))
    assert _verify(buf).failed_step == "bundle"


def test_offline_modules_import_no_service_clients() -> None:
    code = ("import sys, verify.bundle, verify.chain; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('psycopg', 'psycopg_pool', 'minio', 'urllib3', 'faust', 'aiokafka', 'confluent_kafka', 'storage', "
            "'requests', 'httpx', 'aiohttp')] + [m for m in ('ledger.client', 'pipelines.collect') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_checkpoint_is_a_trust_anchor() -> None:
    from ledger.values import BlockHeader
    from verify.chain import TrustedCheckpoint as Checkpoint

    _, members = _members()
    headers = canonical.decode(members["ledger/headers.cbor"])
    h = BlockHeader.from_wire(headers[len(headers) // 2][0])
    good = Checkpoint(h.height, h.header_hash())
    assert verify_bundle(io.BytesIO(BUNDLE), checkpoint=good).ok
    bad = Checkpoint(h.height, b"\x05" * 32)
    assert verify_bundle(io.BytesIO(BUNDLE), checkpoint=bad).failed_step == "genesis"
    assert Checkpoint.parse(f"{h.height}:{h.header_hash().hex()}") == good
    with pytest.raises(ValueError):
        Checkpoint.parse("0:zz")


def test_v1_bundle_with_rows_is_refused_with_a_reason_to_reexport() -> None:
    """tests/vectors/evidence_bundle_v1.zip (format v1, before rows carried their device) is not
    verified under the new rules: its rows cannot show which device they are attributed to."""
    from verify.bundle import BundleError, read_bundle

    with pytest.raises(BundleError) as exc:
        read_bundle(VECTORS / "evidence_bundle_v1.zip")
    assert exc.value.reason == "v1-rows-without-device" and "re-export" in str(exc.value)
