"""Pure ingest checks (DESIGN.md step 4): one raw Kafka record -> Accepted or Rejected.

No I/O: the caller passes the device directory lookup, the last accepted seq
of the device and the limits.  The checks run in this order, so each fault of
the simulator (`pipelines.devices.faults`) yields its own reason:

=====================  ====================================================
``malformed-headers``  the statement headers do not parse (any `StatementError`)
``key-mismatch``       the Kafka key is not the statement's device id
``kind-topic-mismatch`` the statement's kind does not belong on this topic
``unknown-device``     the directory does not know the device
``revoked-device``     the directory says the device (or its org) is revoked
``bad-signature``      the device signature is not valid for the registered key
``oversized``          payload (or its declared size) above the kind's limit
``corrupted-payload``  payload length or SHA-256 differs from the statement
``clock-skew``         |statement ts - ingest time| above ``max_clock_skew_ms``
``replay``             seq not above the last seq accepted for the device
=====================  ====================================================

Size is checked before hashing so an oversized payload is never hashed.
The replay check is last: a record only counts as a replay when everything
else about it is fine.  (The worker turns a ``replay`` of a record already
stored *from the same Kafka position* into an idempotent success: that is a
redelivery, not a replay.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from trust.hashes import sha256
from trust.errors import IdentityError, StatementError
from trust.statement import Statement, from_kafka_headers, verify_statement
from sealstream.topics import KIND_OF_RAW

__all__ = ["REASONS", "TOPIC_KINDS", "Limits", "DeviceKey", "Accepted", "Rejected", "check_record"]

#: Every dead-letter reason the ingest side emits (the simulator's fault names first).
REASONS: tuple[str, ...] = (
    "bad-signature", "unknown-device", "replay", "corrupted-payload", "oversized", "clock-skew",
    "malformed-headers", "revoked-device", "kind-topic-mismatch", "key-mismatch", "malformed-payload", "internal-error",
)
#: Raw topic -> the statement kind it carries.
TOPIC_KINDS: dict[str, str] = dict(KIND_OF_RAW)


@dataclass(frozen=True)
class Limits:
    """Payload size limit per kind (bytes) and clock tolerance (ms)."""

    max_bytes: Mapping[str, int]
    max_clock_skew_ms: int

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        return cls(
            {k: int(getattr(settings, f"max_{k}_bytes")) for k in ("timeseries", "image", "video")},
            int(settings.max_clock_skew_ms),
        )


@dataclass(frozen=True)
class DeviceKey:
    """What the directory knows about a device: its public key (did:key text) and status."""

    did: str
    public_key: str
    revoked: bool = False
    entity: Optional[str] = None


@dataclass(frozen=True)
class Accepted:
    statement: Statement
    signature: bytes
    device: DeviceKey


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str
    statement: Optional[Statement] = None  # when the headers parsed


Headers = Union[Sequence[tuple[str, bytes]], Mapping[str, bytes], None]


def _header_list(headers: Headers) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def check_record(
    topic: str,
    key: Optional[bytes],
    value: Optional[bytes],
    headers: Headers,
    now_ms: int,
    lookup: Callable[[str], Optional[DeviceKey]],
    last_seq: Optional[int],
    limits: Limits,
) -> Union[Accepted, Rejected]:
    """Run every ingest check on one raw record (see the module doc for the order).

    `lookup(did)` is the device directory; `last_seq` the highest seq accepted
    so far for the device (None if none); `now_ms` the ingest time the clock
    skew is measured against.
    """
    value = value or b""
    try:
        stmt, sig = from_kafka_headers(_header_list(headers))
    except StatementError as exc:
        return Rejected("malformed-headers", f"{exc.reason}: {exc}")
    if key is None or bytes(key) != stmt.device.encode("ascii"):
        return Rejected("key-mismatch", f"Kafka key {bytes(key or b'')[:80]!r} is not the device id {stmt.device}",
                        stmt)
    expected_kind = TOPIC_KINDS.get(topic)
    if expected_kind is not None and stmt.kind != expected_kind:
        return Rejected("kind-topic-mismatch", f"kind {stmt.kind!r} on topic {topic} (wants {expected_kind!r})", stmt)
    device = lookup(stmt.device)
    if device is None:
        return Rejected("unknown-device", f"device {stmt.device} is not registered", stmt)
    if device.revoked:
        return Rejected("revoked-device", f"device {stmt.device} is revoked", stmt)
    try:
        valid = verify_statement(stmt, sig, device.public_key)
    except IdentityError as exc:
        return Rejected("bad-signature", f"registered key unusable: {exc}", stmt)
    if not valid:
        return Rejected("bad-signature", f"signature of {stmt.device} seq {stmt.seq} does not verify", stmt)
    limit = limits.max_bytes.get(stmt.kind)
    if limit is not None and (len(value) > limit or stmt.size > limit):
        return Rejected("oversized", f"{stmt.kind} payload of {max(len(value), stmt.size)} bytes > limit {limit}",
                        stmt)
    if len(value) != stmt.size:
        return Rejected("corrupted-payload", f"payload is {len(value)} bytes, statement says {stmt.size}", stmt)
    if sha256(value) != stmt.payload_sha256:
        return Rejected("corrupted-payload", "payload SHA-256 differs from the signed statement", stmt)
    skew = stmt.ts - now_ms
    if abs(skew) > limits.max_clock_skew_ms:
        return Rejected("clock-skew", f"statement ts is {skew} ms from ingest time (max {limits.max_clock_skew_ms})",
                        stmt)
    if last_seq is not None and stmt.seq <= last_seq:
        return Rejected("replay", f"seq {stmt.seq} <= last accepted seq {last_seq} of {stmt.device}", stmt)
    return Accepted(stmt, sig, device)
