"""Regenerate tests/vectors/forgeries/: honest evidence bundles of every subject kind and one
forged bundle per class of forgery the verifier must refuse, each with the step (or bundle
reason) it must be refused at (forgeries.json).  Needs the stack:

    .venv/bin/python tests/vectors/generate_forgeries.py

Starts a private 4-node contracts ledger and a throwaway PostgreSQL database, stores records as
the worker does and anchors them with `pipelines.anchor.Anchorer` (tests/verify/verify_helpers.py),
then builds:

- honest bundles (blob, row, range, batch) as `sealstream evidence export` writes them;
- forgeries a hostile operator can make with what it holds (the bundle's bytes, PostgreSQL,
  MinIO, one node's answers and the gateway's key, but no device key and no 2f+1 sealer keys):
  real ledger data arranged to lie (a statement signed with a gateway's key, a seal by an
  unregistered key, a device revoked before its anchor and its registry proven at a height
  before the revocation, ...) and honest bundles edited and re-stamped (a swapped subject,
  zero records, a re-attributed row, a receipt re-signed with another location, ...);
- malformed zips (an inflation past the limits, a CRC error, an unknown compression method,
  duplicate names).

tests/verify/test_forgeries.py checks every entry; the evidence_bundle_v2.zip pristine vector
is the honest batch bundle.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import tempfile
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "forgeries"
for p in (ROOT, ROOT / "tests" / "pipelines", ROOT / "tests" / "verify"):
    sys.path.insert(0, str(p))

import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from anchor_helpers import ledger_cluster, register_gateway  # noqa: E402
from sealstream.settings import load_settings  # noqa: E402
from storage import migrate, open_pool  # noqa: E402
from trust import canonical  # noqa: E402
from trust.hashes import sha256  # noqa: E402
from trust.identity import KeyPair  # noqa: E402
from trust.receipt import SealReceipt, seal_receipt  # noqa: E402
from verify.bundle import INDEX, write_bundle  # noqa: E402
from verify.model import Evidence, StateValue  # noqa: E402
from verify_helpers import T0, Dataset  # noqa: E402

ENTRIES: list[dict] = []


def _bytes(ev: Evidence) -> bytes:
    buf = io.BytesIO()
    write_bundle(ev, buf)
    return buf.getvalue()


def _save(name: str, data: bytes, *, step: str | None = None, reason: str | None = None, kind: str,
          why: str, pin: bool = True, limits: dict | None = None, also: list | None = None) -> None:
    (OUT / name).write_bytes(data)
    entry = {"file": name, "subject": kind, "step": step, "reason": reason, "pin": pin, "why": why}
    if limits:
        entry["limits"] = limits
    if also:
        entry["also"] = also  # steps that must fail too, after the first
    ENTRIES.append(entry)


def _members(data: bytes) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return json.loads(z.read(INDEX)), {n: z.read(n) for n in z.namelist() if n != INDEX}


def _rezip(index: dict, members: dict[str, bytes]) -> bytes:
    index = dict(index, members={n: sha256(d).hex() for n, d in members.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(INDEX, json.dumps(index, sort_keys=True, separators=(",", ":")))
        for n in sorted(members):
            z.writestr(n, members[n])
    return buf.getvalue()


def _edit(data: bytes, fn: Callable[[dict, dict], Any]) -> bytes:
    index, members = _members(data)
    fn(index, members)
    return _rezip(index, members)


def _with_state(ev: Evidence, state: tuple[StateValue, ...]) -> Evidence:
    from dataclasses import replace

    return replace(ev, ledger=replace(ev.ledger, state=tuple(sorted(state, key=lambda v: v.key))))


def _proofs(client: Any, dids: list[str]) -> tuple[StateValue, ...]:
    sp = client.get_state_proofs((), tuple(dids))
    return tuple(StateValue(p.key, p.value, sp.height, p.proof) for p in sp.proofs)


def build(d: Dataset, cluster: Any) -> dict:
    col = d.collector
    dev_id, key = d.device()
    batch, records = d.batch(key, n_ts=2, n_img=1, rows=12)
    img = next(r for r in records if r.statement.kind == "image")
    ts = next(r for r in records if r.statement.kind == "timeseries")
    honest = {
        "blob": _bytes(col().blob(img.statement.payload_sha256.hex())),
        "row": _bytes(col().row("readings", f"{ts.hash.hex()}:3")),
        "range": _bytes(col().range(key.did, T0 - timedelta(seconds=5), T0 + timedelta(seconds=60))),
        "batch": _bytes(col().batch(batch.batch_id)),
    }
    for kind, data in honest.items():
        _save(f"honest_{kind}.zip", data, kind=kind, why="an untouched export verifies")
    (HERE / "evidence_bundle_v2.zip").write_bytes(honest["batch"])
    meta = {"genesis_hash": cluster.layout.genesis().genesis_hash().hex(), "batch_id": batch.batch_id,
            "device": key.did, "image_sha256": img.statement.payload_sha256.hex(), "row": f"{ts.hash.hex()}:3"}

    # 1. the subject is not bound
    other = os.urandom(32).hex()
    _save("subject_blob_not_in_bundle.zip", _edit(honest["blob"], lambda i, m: i["subject"].update(sha256=other)),
          step="subject", kind="blob", why="the subject names a blob whose record is not in the bundle")

    def zero(i: dict, m: dict) -> None:
        m["records.cbor"] = canonical.encode([])
        for n in [n for n in m if n.startswith("payloads/")]:
            del m[n]
    _save("subject_zero_records.zip", _edit(honest["blob"], zero), step="subject", kind="blob",
          why="a bundle with zero records")
    _save("subject_other_batch.zip", _edit(honest["batch"], lambda i, m: i["subject"].update(batch_id="gw-x-0")),
          step="subject", kind="batch", why="the subject names another batch than the evidence holds")
    _save("subject_other_row.zip", _edit(honest["row"], lambda i, m: i["subject"].update(key=f"{ts.hash.hex()}:4")),
          step="subject", kind="row", why="the subject names another row than the one stored rows show")
    _, other_key = d.device()
    _save("subject_range_other_device.zip",
          _edit(honest["range"], lambda i, m: i["subject"].update(device=other_key.did)),
          step="row-device", also=["subject"], kind="range",
          why="a range of another device, proven with this device's records and rows")

    # 2. stale registry proofs: a device revoked before its anchor, registry proven before the revocation
    rev_id, rev_key = d.device()
    stale_recs = d.store_records(rev_key, [("image", b"\xff\xd8\xff" + os.urandom(64))], t0=T0)
    before = _proofs(d.read_client, [rev_key.did, d.gateway_key.did])
    d.revoke(rev_id)
    (rev_batch,) = d.anchor(stale_recs)
    ev = col().batch(rev_batch.batch_id)
    _save("revoked_then_anchored.zip", _bytes(ev), step="device-key", kind="batch",
          why="a device revoked before the anchor: the honest evidence shows the revocation")
    anc = tuple(v for v in ev.ledger.state if v.key.startswith("anc/"))
    _save("stale_registry_mixed_heights.zip", _bytes(_with_state(ev, before + anc)), step="registry-proof",
          kind="batch", why="registry records proven at a height before the revocation, beside a fresh anchor record")
    _save("stale_registry_before_anchor.zip", _bytes(_with_state(ev, before)), step="registry-proof", kind="batch",
          why="every state value proven at one height, before the anchor (so before the revocation)")
    stale_subject = _edit(_bytes(_with_state(ev, before + anc)),
                          lambda i, m: i.update(subject={"kind": "blob", "sha256": other}))
    _save("stale_registry_and_swapped_subject.zip", stale_subject, step="registry-proof", kind="blob",
          why="a stale proof combined with a subject naming another blob")

    # 3. entity-type confusion: a statement signed with a registered gateway's key
    gw_recs = d.store_records(d.gateway_key, [("image", b"\xff\xd8\xff" + os.urandom(64))], t0=T0)
    (gw_batch,) = d.anchor(gw_recs)
    _save("gateway_key_signs_statement.zip", _bytes(col().batch(gw_batch.batch_id)), step="device-key",
          kind="batch", why="a statement whose 'device' is a registered gateway's key")

    # 4. the receipt binds: an unregistered sealer, another registered gateway, another location
    rogue = KeyPair.generate()
    dev2_id, dev2 = d.device()
    _reseal(d, rogue)
    rogue_recs = d.store_records(dev2, [("image", b"\xff\xd8\xff" + os.urandom(64))], t0=T0)
    _reseal(d, None)
    (rogue_batch,) = d.anchor(rogue_recs)
    _save("receipt_unregistered_sealer.zip", _bytes(col().batch(rogue_batch.batch_id)), step="receipt-gateway",
          kind="batch", why="the seal receipt is signed by a key no registry names")
    gw2 = KeyPair.generate()
    register_gateway(cluster, f"gw2-{uuid.uuid4().hex[:6]}", gw2)
    _reseal(d, gw2)
    gw2_recs = d.store_records(dev2, [("image", b"\xff\xd8\xff" + os.urandom(64))], start_seq=10, t0=T0)
    _reseal(d, None)
    (gw2_batch,) = d.anchor(gw2_recs)
    _save("receipt_other_gateway.zip", _bytes(col().batch(gw2_batch.batch_id)), step="receipt-gateway",
          kind="batch", why="sealed by a registered gateway other than the one that anchored the batch")

    def relocate(i: dict, m: dict) -> None:
        recs = canonical.decode(m["records.cbor"])
        r = SealReceipt.from_bytes(recs[0]["receipt"])
        recs[0]["receipt"] = seal_receipt(r.statement_hash, "raw/" + "0" * 64, d.gateway_key).to_bytes()
        m["records.cbor"] = canonical.encode(recs)
    _save("receipt_other_location.zip", _edit(honest["blob"], relocate), step="receipt-location", kind="blob",
          why="the operator re-signs the receipt (it holds the gateway key) with another location")

    # 5. no trust anchor
    _save("unpinned.zip", honest["batch"], step="genesis", kind="batch", pin=False,
          why="verified with no pinned genesis or checkpoint")

    # 6. rows change owner
    def reattribute(i: dict, m: dict) -> None:
        t = pa.ipc.open_file(pa.BufferReader(m["rows.arrow"])).read_all()
        dev = t.column("device").to_pylist()
        dev[0] = other_key.did
        t = t.set_column(t.schema.get_field_index("device"), "device", pa.array(dev, pa.string()))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        m["rows.arrow"] = sink.getvalue().to_pybytes()
    _save("row_reattributed.zip", _edit(honest["range"], reattribute), step="row-device", kind="range",
          why="a stored row attributed to another device than its statement's signer")
    _save("row_reattributed_batch.zip", _edit(honest["batch"], reattribute), step="row-device", kind="batch",
          why="the same in a batch bundle")

    # 7. zips
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(INDEX, "{}")
        z.writestr("payloads/" + "0" * 64, b"\0" * (64 << 20))
    _save("zip_inflates_past_limit.zip", bomb.getvalue(), reason="member-too-large", kind="bundle",
          why="a small zip whose member inflates to 64 MiB, past a 16 MiB limit",
          limits={"max_member_bytes": 16 << 20})
    _save("zip_total_past_limit.zip", honest["batch"], reason="total-too-large", kind="bundle",
          why="an honest bundle whose members together pass the total limit", limits={"max_total_bytes": 1024})
    _save("zip_too_many_members.zip", honest["batch"], reason="too-many-members", kind="bundle",
          why="more members than the limit", limits={"max_members": 3})
    _save("zip_crc_error.zip", _crc_error(honest["blob"]), reason="crc-error", kind="bundle",
          why="a stored member whose bytes do not match its CRC-32")
    _save("zip_unknown_compression.zip", _compression(honest["blob"], 99), reason="unsupported-compression",
          kind="bundle", why="a member compressed with an unknown method (99)")
    dup = io.BytesIO()
    index, members = _members(honest["blob"])
    with zipfile.ZipFile(dup, "w") as z:
        z.writestr(INDEX, json.dumps(index, sort_keys=True, separators=(",", ":")))
        for n in sorted(members):
            z.writestr(n, members[n])
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z.writestr("records.cbor", members["records.cbor"])
    _save("zip_duplicate_names.zip", dup.getvalue(), reason="duplicate-names", kind="bundle",
          why="two entries with one name (which one would a verifier read?)")
    return meta


# `Dataset.store_records` seals with `anchorer_key`; let a forgery pick another sealer.
Dataset.anchorer_key = property(lambda self: self.__dict__.get("_seal_key", self.gateway_key))  # type: ignore


def _reseal(d: Dataset, key: KeyPair | None) -> None:
    """Make `d.store_records` seal with `key` (None: the dataset's own gateway key)."""
    if key is None:
        d.__dict__.pop("_seal_key", None)
    else:
        d.__dict__["_seal_key"] = key


def _store_zip(index: dict, members: dict[str, bytes]) -> tuple[bytes, dict[str, int]]:
    """An uncompressed zip and each member's data offset (to corrupt bytes in place)."""
    index = dict(index, members={n: sha256(d).hex() for n, d in members.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(INDEX, json.dumps(index, sort_keys=True, separators=(",", ":")))
        for n in sorted(members):
            z.writestr(n, members[n])
    data = buf.getvalue()
    offsets = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            off = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[off + 26:off + 30])
            offsets[info.filename] = off + 30 + name_len + extra_len
    return data, offsets


def _crc_error(bundle: bytes) -> bytes:
    index, members = _members(bundle)
    data, offsets = _store_zip(index, members)
    b = bytearray(data)
    b[offsets["records.cbor"] + 5] ^= 0x01
    return bytes(b)


def _compression(bundle: bytes, method: int) -> bytes:
    """The bundle with records.cbor's compression method set to `method` in both its local
    header and its central directory entry."""
    index, members = _members(bundle)
    data, _ = _store_zip(index, members)
    b = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        struct.pack_into("<H", b, z.getinfo("records.cbor").header_offset + 8, method)
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:  # central directory entries
        name_len = struct.unpack("<H", data[pos + 28:pos + 30])[0]
        if data[pos + 46:pos + 46 + name_len] == b"records.cbor":
            struct.pack_into("<H", b, pos + 10, method)
        pos = data.find(b"PK\x01\x02", pos + 4)
    return bytes(b)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.zip"):
        old.unlink()
    s = load_settings()
    name = f"ss_vector_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(s.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(s.postgres_dsn, dbname=name)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = ledger_cluster(Path(tmp) / "ledger")
        try:
            migrate(dsn)
            pool = open_pool(dsn, max_size=2)
            d = Dataset(s, cluster, pool)
            meta = build(d, cluster)
            d.close()
            pool.close()
        finally:
            cluster.stop(timeout=5)
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    doc = {"genesis_hash": meta["genesis_hash"], "meta": meta, "vectors": ENTRIES}
    (OUT / "forgeries.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (HERE / "evidence_bundle_v2.json").write_text(json.dumps(
        {"genesis_hash": meta["genesis_hash"], "batch_id": meta["batch_id"]}, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"vectors": len(ENTRIES), "genesis_hash": meta["genesis_hash"]}))


if __name__ == "__main__":
    main()
