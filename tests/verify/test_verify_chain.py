"""The whole evidence chain on the real services: untouched data verifies, and
each tampering is caught at its own step (issue 7's list)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from verify_helpers import T0

pytestmark = pytest.mark.services


def _steps(report) -> set[str]:
    return {f.step for f in report.failures}


def test_untouched_batch_range_blob_row_verify(dataset) -> None:
    dev_id, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=3, n_img=1, rows=40)
    col = dataset.collector()
    for ev in (col.batch(batch.batch_id),
               col.range(key.did, T0 - timedelta(seconds=10), T0 + timedelta(seconds=10)),
               col.blob(records[-1].statement.payload_sha256.hex()),
               col.row("readings", f"{records[0].hash.hex()}:5"),
               col.row("blobs", records[-1].hash.hex())):
        report = dataset.verify(ev)
        assert report.ok, report.to_json()
        assert {"certificate", "anchor-tx", "device-key", "device-signature", "inclusion", "leaf"} <= set(
            report.passed)
    rep = dataset.verify(col.batch(batch.batch_id))
    assert rep.counts["rows"] == 120 and {"row-value", "row-missing", "row-unsigned"} <= set(rep.passed)


def _sql(dataset, query: str, params: tuple = ()) -> int:
    with dataset.pool.connection() as conn:
        return conn.execute(query, params).rowcount


def _overwrite(dataset, key: str, data: bytes) -> None:
    import io

    dataset.blobs.client.put_object(dataset.blobs.bucket, key, io.BytesIO(data), len(data))


def test_changed_reading_value_fails_row_value(dataset) -> None:
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=0, rows=20)
    h = records[1].hash
    assert _sql(dataset, "UPDATE readings SET value = value + 0.5 WHERE statement_hash = %s AND row_index = 7",
                (h,)) == 1
    col = dataset.collector()
    for ev in (col.batch(batch.batch_id), col.row("readings", f"{h.hex()}:7")):
        report = dataset.verify(ev)
        assert report.failed_step == "row-value", report.to_json()
        assert report.failures[0].evidence["rows"][0]["row_index"] == 7
    assert dataset.verify(col.row("readings", f"{h.hex()}:6")).ok  # the other rows still verify


def test_deleted_row_fails_row_missing(dataset) -> None:
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=0, rows=20)
    assert _sql(dataset, "DELETE FROM readings WHERE statement_hash = %s AND row_index = 3",
                (records[0].hash,)) == 1
    col = dataset.collector()
    rng = col.range(key.did, T0 - timedelta(seconds=10), T0 + timedelta(seconds=10))
    for ev in (rng, col.batch(batch.batch_id), col.row("readings", f"{records[0].hash.hex()}:3")):
        report = dataset.verify(ev)
        assert report.failed_step == "row-missing", report.to_json()


def test_inserted_unsigned_rows_fail_row_unsigned(dataset) -> None:
    import os

    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=1, n_img=0, rows=10)
    # a row naming a statement nobody signed, and one past the signed rows of a real statement
    _sql(dataset, "INSERT INTO readings VALUES (%s, %s, 'temperature', 99.0, %s, 0)",
         (T0, key.did, os.urandom(32)))
    col = dataset.collector()
    report = dataset.verify(col.range(key.did, T0 - timedelta(seconds=10), T0 + timedelta(seconds=10)))
    assert report.failed_step == "row-unsigned", report.to_json()
    _, key2 = dataset.device()
    batch2, records2 = dataset.batch(key2, n_ts=1, n_img=0, rows=10)
    _sql(dataset, "INSERT INTO readings VALUES (%s, %s, 'temperature', 99.0, %s, 10)",
         (T0, key2.did, records2[0].hash))
    report = dataset.verify(col.batch(batch2.batch_id))
    assert report.failed_step == "row-unsigned", report.to_json()


def test_overwritten_object_fails_payload_hash(dataset) -> None:
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=1, n_img=1)
    img = records[-1]
    forged = bytearray(img.payload)
    forged[-1] ^= 1
    _overwrite(dataset, "raw/" + img.statement.payload_sha256.hex(), bytes(forged))
    col = dataset.collector()
    for ev in (col.blob(img.statement.payload_sha256.hex()), col.batch(batch.batch_id),
               col.row("blobs", img.hash.hex())):
        report = dataset.verify(ev)
        assert report.failed_step == "payload-hash", report.to_json()
        assert report.failures[0].evidence["statement_hash"] == img.hash.hex()


def test_a_forged_payload_copy_is_not_taken_and_a_forged_pair_fails_payload_hash(dataset) -> None:
    """A time series' payload copy beside its statement (migration 0011) is read in bulk but trusted
    no more than the object: a copy that does not hash to the signed digest is passed over for the
    archived object, and when both are forged the record fails at payload-hash."""
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=0, rows=10)
    ts = records[0]
    assert _sql(dataset, "SELECT 1 FROM statements WHERE statement_hash = %s AND payload = %s",
                (ts.hash, ts.payload)) == 1  # stored as the worker stores it
    forged = bytearray(ts.payload)
    forged[-1] ^= 1
    assert _sql(dataset, "UPDATE statements SET payload = %s WHERE statement_hash = %s", (bytes(forged), ts.hash)) == 1
    col = dataset.collector()
    assert dataset.verify(col.batch(batch.batch_id)).ok
    _overwrite(dataset, "raw/" + ts.statement.payload_sha256.hex(), bytes(forged))
    report = dataset.verify(col.batch(batch.batch_id))
    assert report.failed_step == "payload-hash", report.to_json()
    assert report.failures[0].evidence["statement_hash"] == ts.hash.hex()


def test_swapped_payloads_fail_payload_hash(dataset) -> None:
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=0, n_img=2)
    a, b = records
    _overwrite(dataset, "raw/" + a.statement.payload_sha256.hex(), b.payload)
    _overwrite(dataset, "raw/" + b.statement.payload_sha256.hex(), a.payload)
    report = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert [f.step for f in report.failures] == ["payload-hash", "payload-hash"], report.to_json()


def test_rewritten_manifest_fails_manifest_or_anchor_root(dataset) -> None:
    import json

    from trust import merkle

    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=1)
    mkey = "manifests/" + batch.batch_id
    doc = json.loads(dataset.collector()._object(mkey))
    # 1. leaves reordered, root recomputed: a consistent tree, but not the anchored one
    doc["leaves"] = doc["leaves"][::-1]
    doc["root"] = merkle.root(merkle.leaf_hashes([bytes.fromhex(x) for x in doc["leaves"]])).hex()
    _overwrite(dataset, mkey, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    report = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert report.failed_step == "anchor-root", report.to_json()
    # 2. a leaf replaced, root kept: the leaves no longer hash to the root
    doc["leaves"][0] = "00" * 32
    doc["root"] = batch.root.hex()
    _overwrite(dataset, mkey, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    report = dataset.verify(dataset.collector().blob(records[-1].statement.payload_sha256.hex()))
    assert report.failed_step == "manifest", report.to_json()


def test_revoked_device_later_statement_fails_device_key(dataset) -> None:
    dev_id, key = dataset.device()
    before, _ = dataset.batch(key, n_ts=1, n_img=1)
    dataset.revoke(dev_id)
    after, records = dataset.batch(key, n_ts=1, n_img=1, start_seq=10, t0=T0 + timedelta(minutes=5))
    col = dataset.collector()
    report = dataset.verify(col.batch(after.batch_id))
    assert report.failed_step == "device-key", report.to_json()
    assert "revoked" in report.failures[0].message
    # anchored before the revocation: still verifies as of its anchor height
    assert dataset.verify(col.batch(before.batch_id)).ok


def test_unregistered_device_fails_device_key(dataset) -> None:
    from trust.identity import KeyPair

    stranger = KeyPair.generate()
    batch, _ = dataset.batch(stranger, n_ts=1, n_img=0)
    report = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert report.failed_step == "device-key" and "unknown" in report.failures[0].message, report.to_json()


def test_bundle_round_trip_verifies_offline(dataset, tmp_path) -> None:
    from verify import bundle

    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=2, n_img=1, rows=30)
    ev = dataset.collector().batch(batch.batch_id)
    path = tmp_path / "b.zip"
    bundle.write_bundle(ev, path)
    back = bundle.read_bundle(path)
    assert back.records == ev.records and back.batches == ev.batches and back.subject == ev.subject
    report = bundle.verify_bundle(path, trusted_genesis_hash=dataset.cluster.layout.genesis().genesis_hash())
    assert report.ok, report.to_json()
    assert report.counts["rows"] == 60


def test_deleted_statement_fails_evidence(dataset) -> None:
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=0, n_img=3)
    gone = records[1].hash
    with dataset.pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM batch_leaves WHERE statement_hash = %s", (gone,))
        conn.execute("DELETE FROM blobs WHERE statement_hash = %s", (gone,))
        conn.execute("DELETE FROM statements WHERE statement_hash = %s", (gone,))
    report = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert report.failed_step == "evidence", report.to_json()
    assert report.failures[0].evidence["statement_hash"] == [gone.hex()]


def test_one_collector_serves_many_batches_without_carrying_their_keys(dataset) -> None:
    """The verifier agent keeps one collector: each subject's state proofs are asked for that
    subject's keys only (they used to pile up until the request line passed the node's limit)."""
    col = dataset.collector()
    calls: list[tuple[tuple, tuple]] = []
    real = col.ledger.get_state_proofs

    def recording(keys=(), dids=(), node=None):
        calls.append((tuple(keys), tuple(dids)))
        return real(keys, dids, node)

    batches = []
    for _ in range(3):
        _, key = dataset.device()
        batch, _ = dataset.batch(key, n_ts=1, n_img=0, rows=4)
        batches.append(batch.batch_id)
    col.ledger.get_state_proofs = recording  # type: ignore[method-assign]
    try:
        for b in batches:
            assert dataset.verify(col.batch(b)).ok
    finally:
        del col.ledger.get_state_proofs  # the client's own method again (the fixture is shared)
    for b, (keys, _) in zip(batches, calls, strict=True):
        assert keys == (f"anc/batch/{b}",), keys


def test_one_collector_from_several_threads(dataset) -> None:
    """The verifier agent collects from its agent and its catch-up at once, with one collector:
    each collection keeps its own keys (shared per-collector state lost a batch's anchor record)."""
    from concurrent.futures import ThreadPoolExecutor

    col = dataset.collector()
    batches = []
    for _ in range(4):
        _, key = dataset.device()
        batch, _ = dataset.batch(key, n_ts=1, n_img=1, rows=4)
        batches.append(batch.batch_id)
    with ThreadPoolExecutor(4) as ex:
        reports = list(ex.map(lambda b: dataset.verify(col.batch(b)), batches * 3))
    assert all(r.ok for r in reports), [r.failed_step for r in reports]


def test_an_org_revoked_after_the_anchor_keeps_its_earlier_batches_verified(dataset) -> None:
    """An organisation's revocation counts from its position on, like a device's: its devices'
    batches anchored before it verify, those anchored after fail device-key."""
    import uuid

    from anchor_helpers import admin_client
    from trust.identity import KeyPair

    org, org_key, dev_key = f"org-{uuid.uuid4().hex[:8]}", KeyPair.generate(), KeyPair.generate()
    dev_id = f"dev-{uuid.uuid4().hex[:8]}"
    with admin_client(dataset.cluster) as admin:
        r = admin.submit("registry.register_org", {"id": org, "name": "a partner", "admin": org_key.did})
        assert r.refusal is None, r.refusal
        r = admin.submit("tokens.mint", {"account": org, "amount": 100_000})
        assert r.refusal is None, r.refusal
    with dataset.cluster.client(key=org_key) as org_admin:
        r = org_admin.submit("registry.register_device", {"id": dev_id, "org": org, "key": dev_key.did})
        assert r.refusal is None, r.refusal
    before, _ = dataset.batch(dev_key, n_ts=1, n_img=1)
    dataset.revoke(org)
    after, _ = dataset.batch(dev_key, n_ts=1, n_img=1, start_seq=10, t0=T0 + timedelta(minutes=5))
    col = dataset.collector()
    assert dataset.verify(col.batch(before.batch_id)).ok
    report = dataset.verify(col.batch(after.batch_id))
    assert report.failed_step == "device-key", report.to_json()


def test_a_signed_payload_that_is_not_arrow_fails_payload_format_in_record_order(dataset) -> None:
    """A device that signs garbage as a time series (anchored like any record) fails at
    ``payload-format``; its failure sits where record-by-record checking would put it: after the
    records before it and before a later record's own failure (the rows are read all at once)."""
    from datetime import datetime, timezone

    from storage import StatementRecord
    from trust.identity import KeyPair
    from trust.receipt import seal_receipt
    from trust.statement import Statement, sign_statement
    from verify_helpers import ARROW, Record, arrow_payload

    dev_id, key = dataset.device()
    t0 = T0 + timedelta(minutes=30)
    ms = int((t0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1))
    (honest,) = dataset.store_records(key, [("timeseries", arrow_payload(ms, 8))], t0=t0)
    garbage = b"ARROW1 but not an IPC stream"
    st = Statement.for_payload(key.did, 1, ms + 1000, "timeseries", ARROW, garbage)
    dataset.writer.write_statements([StatementRecord(
        st, sign_statement(st, key), receipt=seal_receipt(st.hash(), dataset.blobs.put_raw(garbage, ARROW),
                                                          dataset.anchorer_key),
        sealed_at=datetime.now(timezone.utc))])
    bad = Record(st, garbage)
    (stranger,) = dataset.store_records(KeyPair.generate(), [("timeseries", arrow_payload(ms + 2000, 8))],
                                        t0=t0 + timedelta(seconds=2))
    (batch,) = dataset.anchor([honest, bad, stranger])
    report = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert not report.ok
    steps = [(f.step, f.evidence.get("statement_hash")) for f in report.failures]
    assert steps[:2] == [("payload-format", bad.hash.hex()), ("device-key", stranger.hash.hex())], \
        report.to_json()
    assert "payload-format" not in report.passed  # a failed step is never also listed as passed
    # the stranger's stored rows are then unsigned; the honest record, before both, is in no failure
    assert {f.evidence.get("statement_hash") for f in report.failures} == {bad.hash.hex(), stranger.hash.hex()}, \
        report.to_json()
