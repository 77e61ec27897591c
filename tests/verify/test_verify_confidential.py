"""A confidential time series (its payload an encryption envelope, stored as a blob, no rows)
verifies like any record for anyone, with no key: the verifier proves the ciphertext's origin and
anchor and does not parse it as rows; the verifier agent records it with zero rows."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from pipelines.verifier import BatchVerifier, VerifyMetrics
from storage import BlobRecord, StatementRecord
from trust.receipt import seal_receipt
from trust.statement import ENVELOPE_CONTENT_TYPE, Statement, sign_statement
from verify_helpers import T0


def test_a_confidential_time_series_verifies_as_ciphertext(dataset) -> None:
    _, key = dataset.device()
    ts = int((T0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1))
    payload = b"SSENV1" + os.urandom(300)  # opaque to everything but a recipient
    st = Statement.for_payload(key.did, 0, ts, "timeseries", ENVELOPE_CONTENT_TYPE, payload)
    loc = dataset.blobs.put_raw(payload, ENVELOPE_CONTENT_TYPE)
    dataset.writer.write_statements([StatementRecord(st, sign_statement(st, key),
                                                     receipt=seal_receipt(st.hash(), loc, dataset.gateway_key),
                                                     sealed_at=datetime.now(timezone.utc))])
    dataset.writer.write_blobs([BlobRecord.for_statement(st)])
    (batch,) = dataset.anchorer.anchor_statements([st.hash()])
    report = dataset.verify(dataset.collector().batch(batch.batch_id))
    assert report.ok, report.to_json()
    assert dataset.verify(dataset.collector().row("blobs", st.hash().hex())).ok
    v = BatchVerifier(dataset.collector(), dataset.store, dataset.cluster.layout.genesis().genesis_hash(),
                      VerifyMetrics(), alert=lambda k, v: None)
    assert v.verify_batch(batch.batch_id).verdict == "verified"
    (vs,) = dataset.store.verified_statements(batch.batch_id)
    assert vs.rows == 0
