"""Forgeries on the live stack, each refused at its named step: collected by `pipelines.collect.Collector`
from PostgreSQL, MinIO and a private 4-node ledger and verified by `verify.chain.verify`, through
`sealstream verify batch|range ... --json` (subprocess), and at ingest where the attack reaches ingest
(a `sealstream pipeline worker` on the real Kafka, resolving devices on the same ledger).

1. a stored row re-attributed to another registered device (``UPDATE readings SET device``);
2. a statement signed with a registered gateway's key (stored and anchored; and sent through Kafka);
3. a seal receipt signed by an unregistered key;
4. a device revoked, then its earlier-stored records anchored (a batch anchored before still verifies);
5. ``UPDATE statements SET device | seq | ts`` on verified statements (migration 0007's trigger), and what
   an audit re-verification then puts back into the verified views.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines.verifier import BatchVerifier, VerifyMetrics
from trust.identity import KeyPair
from verify_helpers import T0
from sealstream._kafka_config import kafka_endpoint

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers

def _env(dataset) -> dict:
    return dict(os.environ, SEALSTREAM_PG_DSN=dataset.pool.conninfo, SEALSTREAM_LOG_LEVEL="WARNING")


def _cli(dataset, *args: str) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "sealstream", "verify", *args, "--ledger", str(dataset.cluster.root), "--json"]
    p = subprocess.run(cmd, cwd=ROOT, env=_env(dataset), capture_output=True, text=True, timeout=120)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from {args}: {p.stdout!r} {p.stderr[-2000:]!r}") from None
    return p.returncode, doc


def _steps(report) -> set[str]:
    if isinstance(report, dict):
        return {f["step"] for f in report["failures"]}
    return {f.step for f in report.failures}


def _verifier(dataset) -> BatchVerifier:
    return BatchVerifier(dataset.collector(), dataset.store, dataset.cluster.layout.genesis().genesis_hash(),
                         VerifyMetrics(), alert=lambda k, v: None)


def _count(dataset, query: str, params: tuple = ()) -> int:
    with dataset.pool.connection() as conn:
        return conn.execute(query, params).fetchone()[0]


def _window(t0) -> tuple[str, str]:
    return (t0 - timedelta(seconds=5)).isoformat(), (t0 + timedelta(seconds=60)).isoformat()


@pytest.fixture
def seal_with(dataset, monkeypatch):
    """``seal_with(key)``: `Dataset.store_records` seals receipts with `key` until the test ends."""
    def use(key: KeyPair) -> None:
        monkeypatch.setattr(type(dataset), "anchorer_key", property(lambda self: key))
    return use


# ---------------------------------------------------------------- 1. re-attributed row

def test_row_reattributed_to_another_registered_device(dataset) -> None:
    t0 = T0 + timedelta(days=1)
    _, key_a = dataset.device()
    _, key_b = dataset.device()
    batch, records = dataset.batch(key_a, n_ts=2, n_img=0, rows=10, t0=t0)
    frm, to = _window(t0)
    v = _verifier(dataset)
    assert v.verify_batch(batch.batch_id).verdict == "verified"
    h = records[0].hash
    q_stmt = "SELECT count(*) FROM verified_readings WHERE statement_hash = %s"
    assert _count(dataset, q_stmt, (h,)) == 10
    assert _count(dataset, q_stmt, (records[1].hash,)) == 10
    with dataset.pool.connection() as conn:
        n = conn.execute("UPDATE readings SET device = %s WHERE statement_hash = %s AND row_index = 0",
                         (key_b.did, h)).rowcount
    assert n == 1
    # the view no longer shows the row, under either device
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE device = %s", (key_b.did,)) == 0
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE statement_hash = %s AND row_index = 0",
                  (h,)) == 0

    # live: the batch fails row-device; B's range (only A's signed row) fails row-device and/or subject;
    # A's range misses a signed row
    col = dataset.collector()
    rb = dataset.verify(col.batch(batch.batch_id))
    assert not rb.ok and rb.failed_step == "row-device", rb.failures
    assert rb.proven is None
    rr = dataset.verify(col.range(key_b.did, t0 - timedelta(seconds=5), t0 + timedelta(seconds=60)))
    assert not rr.ok and rr.proven is None and _steps(rr) & {"row-device", "subject"}, rr.failures
    ra = dataset.verify(col.range(key_a.did, t0 - timedelta(seconds=5), t0 + timedelta(seconds=60)))
    assert not ra.ok and "row-missing" in _steps(ra), ra.failures

    # the CLI, as a user runs it
    code, doc = _cli(dataset, "range", "--device", key_b.did, "--from", frm, "--to", to)
    assert code == 1 and not doc["ok"] and _steps(doc) & {"row-device", "subject"}, doc
    code, doc = _cli(dataset, "batch", batch.batch_id)
    assert code == 1 and doc["failed_step"] == "row-device", doc

    # the audit records the failure and the batch leaves the view
    verdict = v.verify_batch(batch.batch_id, audit=True)
    assert verdict.verdict == "failed" and verdict.failed_step == "row-device"
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE batch_id = %s", (batch.batch_id,)) == 0


def test_view_joins_rows_on_their_statements_device_even_with_triggers_off(dataset) -> None:
    """Migration 0007's join alone: with every trigger disabled (a superuser operator), a re-attributed row
    of a statement still listed in verified_statements is not shown by verified_readings."""
    t0 = T0 + timedelta(days=2)
    _, key_a = dataset.device()
    _, key_b = dataset.device()
    batch, records = dataset.batch(key_a, n_ts=1, n_img=0, rows=8, t0=t0)
    assert _verifier(dataset).verify_batch(batch.batch_id).verdict == "verified"
    h = records[0].hash
    with dataset.pool.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE readings SET device = %s WHERE statement_hash = %s AND row_index = 3", (key_b.did, h))
    # the statement is still listed (the triggers did not fire) ...
    assert _count(dataset, "SELECT count(*) FROM verified_statements WHERE statement_hash = %s", (h,)) == 1
    # ... but the re-attributed row is not in the view, the 7 others are
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE device = %s", (key_b.did,)) == 0
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE statement_hash = %s", (h,)) == 7
    assert _count(dataset, "SELECT count(*) FROM verified_readings WHERE statement_hash = %s AND row_index = 3",
                  (h,)) == 0


# ---------------------------------------------------------------- 2. a gateway key signs a statement

def test_gateway_key_signs_statement_stored_and_anchored(dataset) -> None:
    t0 = T0 + timedelta(days=3)
    recs = dataset.store_records(dataset.gateway_key, [("image", b"\xff\xd8\xff" + os.urandom(64))], t0=t0)
    (batch,) = dataset.anchor(recs)
    r = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert not r.ok and r.failed_step == "device-key", r.failures
    code, doc = _cli(dataset, "batch", batch.batch_id)
    assert code == 1 and doc["failed_step"] == "device-key", doc
    # the blob subject too
    code, doc = _cli(dataset, "blob", recs[0].statement.payload_sha256.hex())
    assert code == 1 and doc["failed_step"] == "device-key", doc


def test_gateway_key_signs_statement_sent_through_kafka(dataset, settings, tmp_path) -> None:
    from confluent_kafka import Producer

    from support.workers import WorkerProc

    from anchor_helpers import wait_for
    from devices_helpers import end_offsets, read_range
    from pipelines.devices import KIND_INFO, generate, seal
    from pipelines.offsets import pin_offsets
    from sealstream.settings import load_settings

    raw = sorted({k.topic for k in KIND_INFO.values()})
    home = tmp_path / "home"
    home.mkdir()
    (home / "ledger").symlink_to(Path(dataset.cluster.root).resolve(), target_is_directory=True)
    s = load_settings(home=home, kafka_bootstrap_servers=settings.kafka_bootstrap)
    _, dev_key = dataset.device()
    app_id = f"sealstream-pipeline-test-{uuid.uuid4().hex[:8]}"
    pin_offsets(kafka_endpoint(s, "admin"), app_id, end_offsets(s, raw))
    dlq_start = end_offsets(s, ["iiot.deadletter"])
    worker = WorkerProc.ledger(s, app_id, f"gw-fl-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log",
                        extra_env={"SEALSTREAM_PG_DSN": dataset.pool.conninfo}, args=("--no-anchor",))
    try:
        now = int(time.time() * 1000)
        good = seal(dev_key, 0, now, generate("image", 1, "cam-ok", 0, now))
        forged = seal(dataset.gateway_key, 0, now, generate("image", 2, "cam-gw", 0, now))
        positions: dict[bytes, tuple[str, int, int]] = {}

        def delivered(err, msg, h):
            assert err is None, err
            positions[h] = (msg.topic(), msg.partition(), msg.offset())

        producer = Producer({**kafka_endpoint(s, "admin").confluent(), "enable.idempotence": True})
        for m in (good, forged):
            h = m.statement.hash()
            producer.produce(m.topic, key=m.key, value=m.value, headers=list(m.headers),
                             on_delivery=lambda err, msg, h=h: delivered(err, msg, h))
        assert producer.flush(30) == 0 and len(positions) == 2

        def stored(hashes) -> set[bytes]:
            with dataset.pool.connection() as conn:
                return {bytes(r[0]) for r in conn.execute(
                    "SELECT statement_hash FROM statements WHERE statement_hash = ANY(%s)", (list(hashes),))}

        def dead_reasons(h: bytes) -> set[str]:
            """Reasons iiot.deadletter gives for the record at `h`'s position (it is shared: other groups'
            workers, trusting other devices, may dead-letter the same raw records too)."""
            want = positions[h]
            out = set()
            for r in read_range(s, dlq_start, end_offsets(s, ["iiot.deadletter"])):
                hd = dict(r.headers)
                if (hd["ss-dlq-topic"].decode(), int(hd["ss-dlq-partition"]), int(hd["ss-dlq-offset"])) == want:
                    out.add(hd["ss-dlq-reason"].decode())
            return out

        def ours(h: bytes) -> list[tuple[str, bool]]:
            """This worker's own dead letters of `h`'s position (its group's rows in dead_letters)."""
            topic, partition, offset = positions[h]
            with dataset.pool.connection() as conn:
                return conn.execute("SELECT reason, produced FROM dead_letters WHERE grp = %s AND topic = %s "
                                    "AND partition = %s AND \"offset\" = %s",
                                    (app_id, topic, partition, offset)).fetchall()

        gh, fh = good.statement.hash(), forged.statement.hash()
        wait_for(lambda: stored([gh]) == {gh} and ours(fh) == [("unknown-device", True)], 90,
                 "good stored, forged dead-lettered", worker)
        assert "unknown-device" in dead_reasons(fh)
        assert not stored([fh])
        assert ours(gh) == []
        worker.check()
    finally:
        worker.kill()


# ---------------------------------------------------------------- 3. an unregistered sealer

def test_seal_by_unregistered_key(dataset, seal_with) -> None:
    t0 = T0 + timedelta(days=4)
    _, key = dataset.device()
    seal_with(KeyPair.generate())
    recs = dataset.store_records(key, [("image", b"\xff\xd8\xff" + os.urandom(64)),
                                       ("image", b"\xff\xd8\xff" + os.urandom(64))], t0=t0)
    (batch,) = dataset.anchor(recs)
    r = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert not r.ok and r.failed_step == "receipt-gateway", r.failures
    assert {f.step for f in r.failures} == {"receipt-gateway"}
    code, doc = _cli(dataset, "batch", batch.batch_id)
    assert code == 1 and doc["failed_step"] == "receipt-gateway", doc
    code, doc = _cli(dataset, "blob", recs[1].statement.payload_sha256.hex())
    assert code == 1 and doc["failed_step"] == "receipt-gateway", doc


# ---------------------------------------------------------------- 4. revoked, then anchored

def test_revoked_device_then_anchored(dataset) -> None:
    t0 = T0 + timedelta(days=5)
    dev_id, key = dataset.device()
    before, _ = dataset.batch(key, n_ts=1, n_img=1, rows=10, t0=t0)
    late = dataset.store_records(key, [("image", b"\xff\xd8\xff" + os.urandom(64))], start_seq=10,
                                 t0=t0 + timedelta(seconds=30))
    revoked_at = dataset.revoke(dev_id)
    (after,) = dataset.anchor(late)
    assert before.ledger_height < revoked_at <= after.ledger_height
    col = dataset.collector()
    r = dataset.verify(col.batch(after.batch_id))
    assert not r.ok and r.failed_step == "device-key", r.failures
    ok = dataset.verify(col.batch(before.batch_id))
    assert ok.ok and ok.proven is not None, ok.failures
    code, doc = _cli(dataset, "batch", after.batch_id)
    assert code == 1 and doc["failed_step"] == "device-key", doc
    code, doc = _cli(dataset, "batch", before.batch_id)
    assert code == 0 and doc["ok"], doc


# ---------------------------------------------------------------- 5. statements' columns rewritten

def _verified(dataset, h: bytes) -> bool:
    return _count(dataset, "SELECT count(*) FROM verified_statements WHERE statement_hash = %s", (h,)) == 1


def _forge_columns(dataset, records) -> dict[str, tuple[bytes, bytes]]:
    """Rewrite device / seq / ts of one time-series and one image statement each; returns
    column -> (time-series hash, image hash)."""
    ts = [r for r in records if r.statement.kind == "timeseries"]
    img = [r for r in records if r.statement.kind == "image"]
    forged_did = KeyPair.generate().did
    edits = {"device": ("device = %s", (forged_did,)), "seq": ("seq = seq + 1000", ()),
             "ts": ("ts = ts + interval '1 hour'", ())}
    out = {}
    with dataset.pool.connection() as conn:
        for i, (col, (set_sql, params)) in enumerate(edits.items()):
            for r in (ts[i], img[i]):
                n = conn.execute(f"UPDATE statements SET {set_sql} WHERE statement_hash = %s",
                                 (*params, r.hash)).rowcount
                assert n == 1
            out[col] = (ts[i].hash, img[i].hash)
    return out


def test_statement_columns_rewritten_leave_the_views(dataset) -> None:
    t0 = T0 + timedelta(days=6)
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=4, n_img=4, rows=10, t0=t0)
    assert _verifier(dataset).verify_batch(batch.batch_id).verdict == "verified"
    assert all(_verified(dataset, r.hash) for r in records)
    q_r = "SELECT count(*) FROM verified_readings WHERE statement_hash = %s"
    q_b = "SELECT count(*) FROM verified_blobs WHERE statement_hash = %s"
    assert all(_count(dataset, q_r, (r.hash,)) == 10 for r in records if r.statement.kind == "timeseries")
    assert all(_count(dataset, q_b, (r.hash,)) == 1 for r in records if r.statement.kind == "image")
    forged = _forge_columns(dataset, records)
    for col, (ts_h, img_h) in forged.items():
        assert not _verified(dataset, ts_h) and not _verified(dataset, img_h), col
        assert _count(dataset, q_r, (ts_h,)) == 0, col
        assert _count(dataset, q_b, (img_h,)) == 0, col
    # the untouched statements (the 4th of each kind) stay verified and shown
    ts4 = [r for r in records if r.statement.kind == "timeseries"][3]
    img4 = [r for r in records if r.statement.kind == "image"][3]
    assert _verified(dataset, ts4.hash) and _count(dataset, q_r, (ts4.hash,)) == 10
    assert _verified(dataset, img4.hash) and _count(dataset, q_b, (img4.hash,)) == 1


def test_statement_device_column_rewritten_range_of_the_forged_device_fails(dataset) -> None:
    """A statement's device column pointed at another registered device: that device's range now
    collects a statement (and rows are still the signer's) it did not sign: refused, never VERIFIED."""
    t0 = T0 + timedelta(days=7)
    _, key_a = dataset.device()
    _, key_b = dataset.device()
    batch, records = dataset.batch(key_a, n_ts=1, n_img=1, rows=10, t0=t0)
    img = records[-1]
    with dataset.pool.connection() as conn:
        conn.execute("UPDATE statements SET device = %s WHERE statement_hash = %s", (key_b.did, img.hash))
    frm, to = _window(t0)
    r = dataset.verify(dataset.collector().range(key_b.did, t0 - timedelta(seconds=5), t0 + timedelta(seconds=60)))
    assert not r.ok and r.proven is None and _steps(r) & {"subject", "row-device"}, r.failures
    code, doc = _cli(dataset, "range", "--device", key_b.did, "--from", frm, "--to", to)
    assert code == 1 and not doc["ok"] and _steps(doc) & {"subject", "row-device"}, doc


def test_audit_after_statement_columns_rewritten_shows_no_forged_attribution(dataset) -> None:
    """After `UPDATE statements SET device|seq|ts`, an audit re-verification must not put a blob back into
    verified_blobs under a device / seq / ts its signed statement does not say (verified_blobs takes
    device, seq and ts from the statements columns)."""
    t0 = T0 + timedelta(days=8)
    _, key = dataset.device()
    batch, records = dataset.batch(key, n_ts=3, n_img=3, rows=10, t0=t0)
    v = _verifier(dataset)
    assert v.verify_batch(batch.batch_id).verdict == "verified"
    forged = _forge_columns(dataset, records)
    verdict = v.verify_batch(batch.batch_id, audit=True)
    signed = {r.hash: r.statement for r in records}
    with dataset.pool.connection() as conn:
        shown = conn.execute("SELECT statement_hash, device, seq, (extract(epoch FROM ts) * 1000)::bigint "
                             "FROM verified_blobs WHERE batch_id = %s", (batch.batch_id,)).fetchall()
    wrong = [(col, bytes(h).hex()[:16], (dev, seq, ts), (signed[bytes(h)].device, signed[bytes(h)].seq,
                                                         signed[bytes(h)].ts))
             for col, (_, img_h) in forged.items() for h, dev, seq, ts in shown if bytes(h) == img_h
             and (dev, seq, ts) != (signed[img_h].device, signed[img_h].seq, signed[img_h].ts)]
    assert not wrong, (f"audit verdict {verdict.verdict} re-listed forged blobs in verified_blobs "
                       f"(column, statement, shown (device, seq, ts), signed): {wrong}")
