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
