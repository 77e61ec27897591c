"""`Dataset`: records signed by registered devices, stored as the pipeline worker
stores them (MinIO raw object, statement with the gateway's seal receipt,
readings or blob row) and anchored by `pipelines.anchor.Anchorer` on a real
ledger.  `collector()` and `verify(...)` run the downstream verifier on them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from anchor_helpers import admin_client, register_gateway
from pipelines.anchor import Anchorer
from verify import chain
from pipelines.collect import Collector
from storage import BlobRecord, StatementRecord
from storage.blobs import BlobStore
from storage.readers import Reader
from storage.records import BatchRecord, payload_copy
from storage.verification import VerificationStore
from storage.writers import ReadingsPart, Writer
from trust.identity import KeyPair
from trust.receipt import seal_receipt
from trust.statement import Statement, sign_statement

ARROW = "application/vnd.apache.arrow.stream"
T0 = datetime(2031, 3, 1, tzinfo=timezone.utc)


def arrow_payload(ts_ms: int, rows: int, seed: int = 0) -> bytes:
    """An Arrow IPC stream with `rows` readings 100 ms apart ending at `ts_ms` (the device format)."""
    sensors = ["temperature", "vibration", "pressure", "current"]
    table = pa.table({
        "ts": pa.array([ts_ms - 100 * (rows - 1 - i) for i in range(rows)], pa.timestamp("ms", tz="UTC")),
        "sensor": pa.array([sensors[i % 4] for i in range(rows)]).dictionary_encode().cast(
            pa.dictionary(pa.int8(), pa.string())),
        "value": pa.array([20.0 + seed + i * 0.125 for i in range(rows)], pa.float64()),
    })
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@dataclass
class Record:
    statement: Statement
    payload: bytes

    @property
    def hash(self) -> bytes:
        return self.statement.hash()


class Dataset:
    """Devices, records and anchored batches on the real services (one gateway)."""

    def __init__(self, settings, cluster, pool) -> None:
        self.settings, self.cluster, self.pool = settings, cluster, pool
        self.blobs = BlobStore.from_settings(settings)
        self.writer, self.reader = Writer(pool), Reader(pool)
        self.store = VerificationStore(pool)
        self.gateway_key = KeyPair.generate()
        self.gateway = f"gw-{uuid.uuid4().hex[:8]}"
        register_gateway(cluster, self.gateway, self.gateway_key)
        self.gw_client = cluster.client(key=self.gateway_key)
        self.anchorer = Anchorer(self.writer, self.reader, self.blobs, self.gw_client, self.gateway,
                                 max_leaves=10_000)
        self.read_client = cluster.client()

    def close(self) -> None:
        self.gw_client.close()
        self.read_client.close()

    def device(self) -> tuple[str, KeyPair]:
        """A new device registered in the org ``operator``."""
        key = KeyPair.generate()
        dev_id = f"dev-{uuid.uuid4().hex[:8]}"
        with admin_client(self.cluster) as admin:
            r = admin.submit("registry.register_device", {"id": dev_id, "org": "operator", "key": key.did})
            assert r.refusal is None, r.refusal
        return dev_id, key

    def revoke(self, dev_id: str) -> int:
        with admin_client(self.cluster) as admin:
            r = admin.submit("registry.revoke", {"id": dev_id})
            assert r.refusal is None, r.refusal
            return r.height

    def store_records(self, key: KeyPair, specs: list[tuple[str, bytes]], *, start_seq: int = 0,
                      t0: datetime = T0) -> list[Record]:
        """Sign, archive and store records (``(kind, payload)``) as the worker does, with receipts."""
        out, stmts, parts, blobs = [], [], [], []
        for i, (kind, payload) in enumerate(specs):
            ts = int((t0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1)) + 1000 * i
            ctype = ARROW if kind == "timeseries" else "image/jpeg"
            st = Statement.for_payload(key.did, start_seq + i, ts, kind, ctype, payload)
            loc = self.blobs.put_raw(payload, ctype)
            receipt = seal_receipt(st.hash(), loc, self.anchorer_key)
            stmts.append(StatementRecord(st, sign_statement(st, key), receipt=receipt,
                                         sealed_at=datetime.now(timezone.utc), payload=payload_copy(st, payload)))
            if kind == "timeseries":
                parts.append(ReadingsPart(key.did, st.hash(), pa.ipc.open_stream(payload).read_all()))
            else:
                blobs.append(BlobRecord.for_statement(st))
            out.append(Record(st, payload))
        self.writer.write_statements(stmts)
        if parts:
            self.writer.write_readings(parts)
        if blobs:
            self.writer.write_blobs(blobs)
        return out

    @property
    def anchorer_key(self) -> KeyPair:
        return self.gateway_key

    def anchor(self, records: list[Record]) -> list[BatchRecord]:
        return self.anchorer.anchor_statements([r.hash for r in records])

    def batch(self, dev_key: KeyPair, n_ts: int = 3, n_img: int = 1, rows: int = 40,
              t0: datetime = T0, start_seq: int = 0) -> tuple[BatchRecord, list[Record]]:
        specs = [("timeseries", arrow_payload(0, rows, seed=i)) for i in range(n_ts)]
        specs += [("image", b"\xff\xd8\xff" + os.urandom(200)) for _ in range(n_img)]
        # time-series payloads end at their statement's ts: rebuild with the right ts
        recs_specs = []
        for i, (kind, payload) in enumerate(specs):
            if kind == "timeseries":
                ts = int((t0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1)) + 1000 * i
                payload = arrow_payload(ts, rows, seed=i + start_seq)
            recs_specs.append((kind, payload))
        records = self.store_records(dev_key, recs_specs, start_seq=start_seq, t0=t0)
        (batch,) = self.anchor(records)
        return batch, records

    def collector(self) -> Collector:
        return Collector(self.store, self.reader, self.blobs, self.read_client)

    def verify(self, evidence) -> chain.Report:
        return chain.verify(evidence, trusted_genesis_hash=self.cluster.layout.genesis().genesis_hash())
