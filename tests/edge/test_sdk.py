"""The SDK builds exactly what the pipeline accepts: the simulator's Arrow schema, the statement
headers (plus ss-edge-received-ms, which ingest ignores), a valid device signature."""

from __future__ import annotations

import pyarrow as pa
import pytest

from edge.agent import _split
from edge.model import Reading
from edge.sdk import EDGE_RECEIVED_HEADER, SCHEMA, TIMESERIES_CONTENT_TYPE, sign_payload, timeseries_payload
from edge.signing import FileSigner, SignerError, checked
from pipelines.checks import Accepted, DeviceKey, Limits, check_record
from pipelines.devices.timeseries import SCHEMA as SIM_SCHEMA
from pipelines.devices.timeseries import read_timeseries
from sealstream.settings import load_settings
from trust.identity import KeyPair
from trust.statement import from_kafka_headers, verify_statement


def test_payload_is_the_simulators_schema() -> None:
    assert SCHEMA.equals(SIM_SCHEMA, check_metadata=True)
    data = timeseries_payload([(1000, "temperature", 1.5), (1000, "pressure", 6.0), (1100, "temperature", 1.75)])
    t = read_timeseries(data)
    assert t.schema.equals(SIM_SCHEMA)
    assert t.column("value").to_pylist() == [1.5, 6.0, 1.75]
    assert t.column("sensor").to_pylist() == ["temperature", "pressure", "temperature"]
    assert t.column("ts").cast(pa.int64()).to_pylist() == [1000, 1000, 1100]
    with pytest.raises(ValueError):
        timeseries_payload([])
    with pytest.raises(ValueError):
        timeseries_payload([(1, f"s{i}", 0.0) for i in range(128)])


def test_message_passes_the_ingest_checks() -> None:
    kp = KeyPair.generate()
    signer = FileSigner(kp)
    payload = timeseries_payload([(1_700_000_000_000, "t", 1.0)])
    msg = sign_payload(signer, 7, 1_700_000_000_000, "timeseries", TIMESERIES_CONTENT_TYPE, payload, 1_700_000_000_040)
    assert msg.topic == "iiot.timeseries.raw" and msg.key == kp.did.encode()
    assert msg.headers[-1] == (EDGE_RECEIVED_HEADER, b"1700000000040")
    stmt, sig = from_kafka_headers(list(msg.headers))
    assert stmt == msg.statement and verify_statement(stmt, sig)
    limits = Limits.from_settings(load_settings())
    verdict = check_record(msg.topic, msg.key, msg.value, list(msg.headers), 1_700_000_000_040,
                           lambda did: DeviceKey(did, kp.did, False) if did == kp.did else None, 6,
                           limits)
    assert isinstance(verdict, Accepted), verdict
    verdict = check_record(msg.topic, msg.key, msg.value, list(msg.headers), 1_700_000_000_040,
                           lambda did: DeviceKey(did, kp.did, False), 7,
                           limits)
    assert verdict.reason == "replay"  # the same seq again is a replay: why the spool keeps seqs durable


def test_a_signer_whose_key_is_not_its_did_is_refused() -> None:
    class Liar:
        did = KeyPair.generate().did

        def sign(self, data: bytes) -> bytes:
            return KeyPair.generate().sign(data)

    with pytest.raises(SignerError, match="does not verify"):
        checked(Liar())
    assert checked(FileSigner(KeyPair.generate()))


def test_split_bounds_readings_and_sensors() -> None:
    rows = [Reading("d", f"s{i % 200}", 0.0, i, i) for i in range(400)]
    parts = _split(rows, 1000)
    assert sum(map(len, parts)) == 400 and all(len({r.sensor for r in p}) <= 127 for p in parts)
    assert [len(p) for p in _split(rows[:25], 10)] == [10, 10, 5]
