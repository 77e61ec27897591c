"""The pure ingest checks against the simulator's own messages and faults (no Kafka):
each fault yields exactly its own reason, good messages pass, replays are caught by seq."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from pipelines.checks import REASONS, Accepted, DeviceKey, Limits, Rejected, check_record
from pipelines.devices import FAULTS, generate, generate_oversized, kind_info, seal
from pipelines.devices import faults as F
from sealstream.settings import load_settings
from trust.identity import KeyPair

SETTINGS = load_settings()
LIMITS = Limits.from_settings(SETTINGS)
KINDS = ("timeseries", "image", "video")


@pytest.fixture(scope="module")
def devices() -> dict[str, KeyPair]:
    return {k: KeyPair.from_seed(bytes([i + 1]) * 32) for i, k in enumerate(KINDS)}


def _lookup(devices: dict[str, KeyPair], revoked: frozenset = frozenset()):
    table = {kp.did: DeviceKey(kp.did, kp.did, kp.did in revoked) for kp in devices.values()}
    return table.get


def _good(kp: KeyPair, kind: str, seq: int, now: int):
    return seal(kp, seq, now, generate(kind, 1, f"{kind}-dev", seq, now))


def _faulty(fault: str, kp: KeyPair, kind: str, seq: int, now: int, earlier):
    if fault == "replay":
        return F.as_replay(earlier)
    if fault == "unknown-device":
        rogue = KeyPair.from_seed(b"\x99" * 32)
        return seal(rogue, seq, now, generate(kind, 1, "rogue", seq, now))
    if fault == "oversized":
        return seal(kp, seq, now, generate_oversized(kind, 1, "dev", seq, now, LIMITS.max_bytes[kind]))
    if fault == "clock-skew":
        ts = now + F.skew_ms(LIMITS.max_clock_skew_ms)
        return seal(kp, seq, ts, generate(kind, 1, "dev", seq, ts))
    msg = _good(kp, kind, seq, now)
    return {"bad-signature": F.bad_signature, "corrupted-payload": F.corrupt_payload,
            "malformed-headers": F.malform_headers}[fault](msg)


def _check(msg, now, lookup, last):
    return check_record(msg.topic, msg.key, msg.value, list(msg.headers), now, lookup, last, LIMITS)


@pytest.mark.parametrize("kind", KINDS)
def test_good_messages_pass_and_replays_fail(devices, kind) -> None:
    kp, now = devices[kind], int(time.time() * 1000)
    lookup = _lookup(devices)
    last = None
    for seq in (0, 1, 5):
        msg = _good(kp, kind, seq, now)
        v = _check(msg, now, lookup, last)
        assert isinstance(v, Accepted), v
        assert v.statement == msg.statement and v.signature == msg.signature and v.device.did == kp.did
        last = seq
    v = _check(_good(kp, kind, 5, now), now, lookup, last)
    assert isinstance(v, Rejected) and v.reason == "replay"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_yields_its_own_reason(devices, kind, fault) -> None:
    kp, now = devices[kind], int(time.time() * 1000)
    lookup = _lookup(devices)
    earlier = _good(kp, kind, 10, now)
    assert isinstance(_check(earlier, now, lookup, 9), Accepted)
    msg = _faulty(fault, kp, kind, 11, now, earlier)
    assert msg.fault is None or msg.fault == fault
    v = _check(msg, now, lookup, 10)
    assert isinstance(v, Rejected), (fault, v)
    assert v.reason == fault, (fault, v.reason, v.detail)
    assert fault in REASONS


def test_revoked_key_and_topic_mismatches(devices) -> None:
    kp, now = devices["image"], int(time.time() * 1000)
    msg = _good(kp, "image", 3, now)
    v = _check(msg, now, _lookup(devices, frozenset({kp.did})), None)
    assert isinstance(v, Rejected) and v.reason == "revoked-device"
    v = check_record("iiot.video.raw", msg.key, msg.value, list(msg.headers), now, _lookup(devices), None, LIMITS)
    assert isinstance(v, Rejected) and v.reason == "kind-topic-mismatch"
    other = devices["video"].did.encode()
    v = check_record(msg.topic, other, msg.value, list(msg.headers), now, _lookup(devices), None, LIMITS)
    assert isinstance(v, Rejected) and v.reason == "key-mismatch"
    v = check_record(msg.topic, msg.key, msg.value, [], now, _lookup(devices), None, LIMITS)
    assert isinstance(v, Rejected) and v.reason == "malformed-headers"


def test_registered_key_wins_over_the_did(devices) -> None:
    """A directory that binds the did to another key (rotation) makes the signature fail."""
    kp, now = devices["timeseries"], int(time.time() * 1000)
    msg = _good(kp, "timeseries", 1, now)
    other = devices["image"].did
    v = _check(msg, now, {kp.did: DeviceKey(kp.did, other)}.get, None)
    assert isinstance(v, Rejected) and v.reason == "bad-signature"


def test_truncated_payload_is_corrupted_not_oversized(devices) -> None:
    kp, now = devices["timeseries"], int(time.time() * 1000)
    msg = _good(kp, "timeseries", 1, now)
    v = _check(replace(msg, value=msg.value[:-1]), now, _lookup(devices), None)
    assert isinstance(v, Rejected) and v.reason == "corrupted-payload"
    assert kind_info("timeseries").topic == msg.topic
