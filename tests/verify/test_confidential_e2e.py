"""Confidential records end to end on the real services (a throwaway PostgreSQL database, the
stack's MinIO, a private 4-node contracts ledger): recipients and the policy on chain, records
sealed at the device for the recipients in force, stored and sealed as the worker stores them,
anchored; then every command as a user runs it (subprocesses):

- ``data open blob|row|range`` and ``data export`` as the named recipient (plaintext proven
  against the signed commitment; rows into the recipient's own database with provenance);
- each failure at its named step: ``not-a-recipient``, ``recipient-revoked`` (a record sealed and
  anchored after the revocation), ``payload-hash`` (tampered ciphertext), ``decrypt`` (tampered
  wrapped key), ``plaintext-commitment`` (an envelope whose signed commitment is not its plaintext);
- ``verify ... --key`` proves the plaintext too;
- ``data erase``: the erasure tx on chain and on the event stream, no key record left, nothing opens,
  ``verify`` reports ERASED at the tx's height with every proof checking, and a bundle exported
  before the erasure still verifies offline and reports the erasure with ``--check-erasures``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import confidential.envelope as envelope_mod
from confidential.envelope import KEYS_HEADER, OpenError, open_envelope
from confidential.keys import RecipientKey, save_recipient_key
from ledger.contracts.confidentiality import erased_key
from pipelines.devices.confidential import recipients_now, seal_confidential
from pipelines.devices.payloads import Payload
from storage import BlobRecord, StatementRecord
from storage import key_records
from trust.receipt import seal_receipt
from verify_helpers import T0, arrow_payload

from anchor_helpers import admin_client

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
MARKER = b"SEALSTREAM-E2E-PLAINTEXT-" + uuid.uuid4().hex.encode()


def _ms(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1))


def _env(dataset) -> dict:
    return {**os.environ, "SEALSTREAM_PG_DSN": dataset.pool.conninfo, "SEALSTREAM_LOG_LEVEL": "WARNING"}


def _cli(dataset, *args: str) -> tuple[int, dict, str]:
    p = subprocess.run([sys.executable, "-m", "sealstream", *args, "--json"], cwd=ROOT, env=_env(dataset),
                       capture_output=True, text=True, timeout=180)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from {args}: {p.stdout!r} {p.stderr!r}") from None
    return p.returncode, doc, p.stdout + p.stderr


def _store(dataset, msgs) -> None:
    """Store confidential records as the worker does: the envelope archived as a blob (never parsed
    into rows), the key record apart (a row of key_records), the statement sealed by the gateway."""
    for m in msgs:
        st = m.statement
        loc = dataset.blobs.put_raw(m.value, st.content_type)
        dataset.writer.write_statements([StatementRecord(st, m.signature,
                                                         receipt=seal_receipt(st.hash(), loc, dataset.gateway_key),
                                                         sealed_at=datetime.now(timezone.utc))])
        with dataset.pool.connection() as conn:
            key_records.insert(conn.cursor(), [(st.hash(), dict(m.headers)[KEYS_HEADER])])
        dataset.writer.write_blobs([BlobRecord.for_statement(st)])


class _Rec:
    def __init__(self, m) -> None:
        self.statement, self.payload, self.hash = m.statement, m.value, m.statement.hash()


@pytest.fixture(scope="module")
def world(dataset, tmp_path_factory):
    """A device of org ``operator``, recipients qa (granted), late (granted, revoked after the first
    batch) and buyer (never granted); records of the first batch sealed for {qa, late}, of the
    second (after the revocation) for {qa}."""
    tmp = tmp_path_factory.mktemp("conf-e2e")
    dev_id, dev = dataset.device()
    stream = f"line-{uuid.uuid4().hex[:6]}"
    keys = {n: RecipientKey.generate(f"{n}-{uuid.uuid4().hex[:6]}") for n in ("qa", "late", "buyer")}
    files = {}
    with admin_client(dataset.cluster) as admin:
        for n, k in keys.items():
            r = admin.submit("registry.register_enc_key", {"id": k.id, "org": "operator", "key": k.public.hex()})
            assert r.refusal is None, r.refusal
            files[n] = tmp / f"{n}.key"
            save_recipient_key(k, files[n])
        for n in ("qa", "late"):
            assert admin.submit("policy.grant", {"stream": stream, "recipient": keys[n].id}).refusal is None
    height, rcpts = recipients_now(dataset.read_client, stream)
    assert sorted(r.id for r in rcpts) == sorted([keys["qa"].id, keys["late"].id])
    t0 = T0 + timedelta(days=400)
    ts = [_ms(t0) + 1000 * i for i in range(3)]
    first = [seal_confidential(dev, i, ts[i], Payload("timeseries", "application/vnd.apache.arrow.stream",
                                                      arrow_payload(ts[i], 8, seed=i)), stream=stream,
                               recipients=rcpts) for i in range(2)]
    first.append(seal_confidential(dev, 2, ts[2], Payload("image", "image/jpeg", b"\xff\xd8\xff" + MARKER),
                                   stream=stream, recipients=rcpts))
    _store(dataset, first)
    (b1,) = dataset.anchor([_Rec(m) for m in first])
    with admin_client(dataset.cluster) as admin:
        assert admin.submit("policy.revoke", {"stream": stream, "recipient": keys["late"].id,
                                              "reason": "contract ended"}).refusal is None
    _, rcpts2 = recipients_now(dataset.read_client, stream)
    assert [r.id for r in rcpts2] == [keys["qa"].id]
    later = [seal_confidential(dev, 3, ts[2] + 1000, Payload("image", "image/png", b"\x89PNG" + MARKER),
                               stream=stream, recipients=rcpts2)]
    # a device whose envelope commits to something else than its plaintext (signed as such)
    real = envelope_mod.commitment
    envelope_mod.commitment = lambda salt, pt: real(salt, pt + b"!")
    try:
        later.append(seal_confidential(dev, 4, ts[2] + 2000, Payload("image", "image/png", b"\x89PNG-bad"),
                                       stream=stream, recipients=rcpts2))
    finally:
        envelope_mod.commitment = real
    _store(dataset, later)
    (b2,) = dataset.anchor([_Rec(m) for m in later])
    return {"dev": dev, "dev_id": dev_id, "stream": stream, "keys": keys, "files": files, "first": first,
            "later": later, "batches": (b1, b2), "t0": t0, "tmp": tmp}


def test_recipient_opens_and_proves_blob_row_range_and_exports(dataset, world) -> None:
    qa = str(world["files"]["qa"])
    img = world["first"][2]
    out = world["tmp"] / "img.jpg"
    code, doc, text = _cli(dataset, "data", "open", "blob", img.statement.hash().hex(), "--key", qa,
                           "--out", str(out), "--ledger", str(dataset.cluster.root))
    assert code == 0 and doc["ok"] and doc["anchored"], doc
    assert doc["policy_height"] == world["batches"][0].ledger_height
    assert out.read_bytes() == b"\xff\xd8\xff" + MARKER and (out.stat().st_mode & 0o777) == 0o600
    assert MARKER.decode() not in text
    # a row of a confidential time series: its signed value, opened and proven
    ts0 = world["first"][0]
    code, doc, _ = _cli(dataset, "data", "open", "row", f"{ts0.statement.hash().hex()}:3", "--key", qa,
                        "--ledger", str(dataset.cluster.root))
    assert code == 0 and doc["row_index"] == 3 and doc["sensor"] and isinstance(doc["value"], float), doc
    # the device's range: rows of both time series with provenance
    t0 = world["t0"]
    pq_out = world["tmp"] / "range.parquet"
    window = ["--device", world["dev"].did, "--from", (t0 - timedelta(minutes=1)).isoformat(),
              "--to", (t0 + timedelta(minutes=1)).isoformat()]
    code, doc, _ = _cli(dataset, "data", "open", "range", *window, "--key", qa, "--out", str(pq_out),
                        "--ledger", str(dataset.cluster.root))
    assert code == 0 and doc["records"] == 2, doc
    table = pq.read_table(io.BytesIO(pq_out.read_bytes()))
    assert table.num_rows == doc["rows"] > 0
    assert set(table.column("statement_hash").to_pylist()) == {m.statement.hash() for m in world["first"][:2]}
    assert set(table.column("batch_id").to_pylist()) == {world["batches"][0].batch_id}
    # the recipient's own database and schema, with provenance; idempotent
    name = f"ss_recipient_{uuid.uuid4().hex[:8]}"
    admin_dsn = make_conninfo(dataset.settings.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        mine = make_conninfo(dataset.settings.postgres_dsn, dbname=name)
        for inserted in (table.num_rows, 0):
            code, doc, _ = _cli(dataset, "data", "export", *window, "--key", qa, "--dsn", mine, "--schema", "qa_lab",
                                "--ledger", str(dataset.cluster.root))
            assert code == 0 and doc["inserted"] == inserted and doc["rows"] == table.num_rows, doc
        with psycopg.connect(mine) as conn:
            rows = conn.execute("SELECT statement_hash, row_index, seq, recipient, batch_id, policy_height, "
                                "commitment FROM qa_lab.confidential_readings ORDER BY seq, row_index").fetchall()
        assert len(rows) == table.num_rows and {r[3] for r in rows} == {world["keys"]["qa"].id}
        assert {bytes(r[0]) for r in rows} == {m.statement.hash() for m in world["first"][:2]}
        # never into the pipeline's shared database
        code, doc, _ = _cli(dataset, "data", "export", *window, "--key", qa, "--dsn", dataset.pool.conninfo,
                            "--schema", "x", "--ledger", str(dataset.cluster.root))
        assert code == 2 and "shared" in doc["error"]
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    # verify with the recipient key also proves the plaintext
    code, doc, _ = _cli(dataset, "verify", "batch", world["batches"][0].batch_id, "--key", qa,
                        "--ledger", str(dataset.cluster.root))
    assert code == 0 and doc["outcome"] == "verified" and doc["plaintext"]["proven"] == 3, doc


def test_each_failure_names_its_step(dataset, world) -> None:
    led = ["--ledger", str(dataset.cluster.root)]
    f = world["files"]
    img1, img2, bad = world["first"][2], world["later"][0], world["later"][1]

    def open_(m, who: str) -> tuple[int, dict]:
        code, doc, _ = _cli(dataset, "data", "open", "blob", m.statement.hash().hex(), "--key", str(f[who]), *led)
        return code, doc

    assert open_(img1, "buyer")[1]["step"] == "not-a-recipient"
    assert open_(img1, "late")[0] == 0                 # sealed and anchored while granted
    code, doc = open_(img2, "late")                    # sealed and anchored after the revocation
    assert code == 1 and doc["step"] == "recipient-revoked", doc
    code, doc = open_(bad, "qa")
    assert code == 1 and doc["step"] == "plaintext-commitment", doc
    code, doc, _ = _cli(dataset, "verify", "row", "blobs", bad.statement.hash().hex(), "--key", str(f["qa"]), *led)
    assert code == 1 and doc["ok"] and doc["plaintext"]["failures"][0]["step"] == "plaintext-commitment", doc
    # tampered wrapped key -> decrypt; tampered ciphertext -> payload-hash (for anyone: the signed hash)
    h = img2.statement.hash()
    rec = key_records.read(dataset.pool, [h])[h]
    assert rec is not None

    def put_record(record: bytes) -> None:  # as the database's owner: a hostile DBA's edit
        with dataset.pool.connection() as conn:
            conn.execute("UPDATE key_records SET record = %s WHERE statement_hash = %s", (record, h))

    put_record(rec[:-1] + bytes([rec[-1] ^ 1]))
    try:
        code, doc = open_(img2, "qa")
        assert code == 1 and doc["step"] == "decrypt", doc
    finally:
        put_record(rec)
    assert open_(img2, "qa")[0] == 0
    digest = img2.statement.payload_sha256.hex()
    dataset.blobs._put(f"raw/{digest}", img2.value[:-1] + bytes([img2.value[-1] ^ 1]), "x", digest)
    try:
        code, doc = open_(img2, "qa")
        assert code == 1 and doc["step"] == "payload-hash", doc
    finally:
        dataset.blobs._put(f"raw/{digest}", img2.value, "x", digest)


def test_erase_destroys_keys_and_every_proof_still_checks(dataset, world) -> None:
    led = ["--ledger", str(dataset.cluster.root)]
    img = world["first"][2]
    h = img.statement.hash()
    genesis = dataset.cluster.layout.genesis().genesis_hash().hex()
    bundle = world["tmp"] / "before.zip"
    code, doc, _ = _cli(dataset, "evidence", "export", "row", "blobs", h.hex(), "-o", str(bundle), *led)
    assert code == 0, doc
    code, doc, _ = _cli(dataset, "verify", "row", "blobs", h.hex(), *led)
    assert code == 0 and doc["outcome"] == "verified" and doc["erased"] == []

    admin_key = str(dataset.cluster.layout.admin_key_path)
    # only the device's org admin may erase: a key of nobody is refused on chain (FORBIDDEN is the
    # contract's answer to other admins, tests/ledger/test_contracts_confidentiality.py)
    other = world["tmp"] / "other.key"
    from trust.identity import KeyPair, save_keypair

    save_keypair(other, KeyPair.generate())
    code, doc, _ = _cli(dataset, "data", "erase", "--statement", h.hex(), "--reason", "test", "--as", str(other), *led)
    assert code == 1 and doc["step"] == "erasure-tx" and "refused" in doc["message"], doc  # committed or at admission
    assert key_records.read(dataset.pool, [h])[h]  # nothing deleted when the tx is refused

    code, doc, _ = _cli(dataset, "data", "erase", "--statement", h.hex(), "--reason", "personal data in frame",
                        "--as", admin_key, *led)
    assert code == 0 and doc["records"] == 1 and doc["keys_deleted"] == 1, doc
    (tx,) = doc["txs"]
    height = tx["height"]
    # re-run: harmless, nothing new on chain
    code, doc, _ = _cli(dataset, "data", "erase", "--statement", h.hex(), "--reason", "again", "--as", admin_key, *led)
    assert code == 0 and doc["txs"][0]["already_erased"] == 1 and doc["txs"][0]["erased"] == 0
    # no key record left in the database
    assert key_records.read(dataset.pool, [h]) == {h: None}
    # the erasure is on chain (proven state) and on the audit event stream
    ev = [e for e in dataset.read_client.events(0, verify=True) if e.rule == "policy.erase"]
    assert any(e.operation["params"]["reason"] == "personal data in frame" and e.id.startswith(f"{height}-")
               for e in ev), [e.to_json() for e in ev]
    sp = dataset.read_client.get_state_proofs(keys=[erased_key(h)])
    assert sp.proofs[0].value is not None
    # nothing can open it: not the recipient, not with the erased record's old key record gone
    code, doc, _ = _cli(dataset, "data", "open", "blob", h.hex(), "--key", str(world["files"]["qa"]), *led)
    assert code == 3 and doc["outcome"] == "erased" and f"height {height}" in doc["message"], doc
    with pytest.raises(OpenError):
        open_envelope(img.value, b"", world["keys"]["qa"].id, world["keys"]["qa"].private)
    # verify: ERASED at height H, every proof still checks (ok, no failure)
    code, doc, _ = _cli(dataset, "verify", "row", "blobs", h.hex(), *led)
    assert code == 3 and doc["ok"] and doc["outcome"] == "erased" and not doc["failures"], doc
    assert [(e["statement_hash"], e["height"]) for e in doc["erased"]] == [(h.hex(), height)]
    code, doc, _ = _cli(dataset, "verify", "batch", world["batches"][0].batch_id, *led)
    assert code == 3 and doc["ok"] and len(doc["erased"]) == 1 and doc["counts"]["records"] == 3, doc
    # the bundle exported before the erasure: offline it still verifies (it cannot know) ...
    code, doc, _ = _cli(dataset, "evidence", "verify", str(bundle), "--genesis-hash", genesis)
    assert code == 0 and doc["outcome"] == "verified", doc
    # ... and asked about erasures it reports the erasure, every proof checking
    code, doc, _ = _cli(dataset, "evidence", "verify", str(bundle), "--genesis-hash", genesis, "--check-erasures",
                        *led)
    assert code == 3 and doc["ok"] and doc["outcome"] == "erased" and not doc["failures"], doc
    assert doc["erased"][0]["height"] == height
    # a bundle exported after the erasure carries the proof of it
    after = world["tmp"] / "after.zip"
    assert _cli(dataset, "evidence", "export", "row", "blobs", h.hex(), "-o", str(after), *led)[0] == 0
    code, doc, _ = _cli(dataset, "evidence", "verify", str(after), "--genesis-hash", genesis)
    assert code == 3 and doc["outcome"] == "erased" and doc["erased"][0]["height"] == height, doc
    # the other selections: a whole batch (its erased record skipped on chain), then the device before a time
    code, doc, _ = _cli(dataset, "data", "erase", "--batch", world["batches"][0].batch_id, "--reason", "contract ended",
                        "--as", admin_key, *led)
    assert code == 0 and doc["records"] == 3 and doc["keys_deleted"] == 2, doc  # the one erased above had none left
    assert (doc["txs"][0]["erased"], doc["txs"][0]["already_erased"]) == (2, 1)
    before = (world["t0"] + timedelta(hours=1)).isoformat()
    code, doc, _ = _cli(dataset, "data", "erase", "--device", world["dev"].did, "--before", before, "--reason",
                        "retention ended", "--as", admin_key, *led)
    assert code == 0 and doc["records"] == 5 and doc["skipped_plain"] == 0, doc
    assert (doc["txs"][0]["erased"], doc["txs"][0]["already_erased"]) == (2, 3)
    code, doc, _ = _cli(dataset, "verify", "batch", world["batches"][1].batch_id, *led)
    assert code == 3 and doc["ok"] and len(doc["erased"]) == 2, doc
    code, doc, _ = _cli(dataset, "data", "erase", "--batch", "no-such-batch", "--reason", "x", "--as", admin_key, *led)
    assert code == 1 and doc["step"] == "select", doc
