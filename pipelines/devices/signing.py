"""Turn a payload into a ready-to-send Kafka message: statement, device signature, headers."""

from __future__ import annotations

from dataclasses import dataclass, field

from trust.identity import KeyPair
from trust.statement import Statement, sign_statement, to_kafka_headers

from .kinds import kind_info
from .payloads import Payload

__all__ = ["OutMessage", "seal"]


@dataclass(frozen=True)
class OutMessage:
    """One Kafka record as a device sends it, plus what the sent-log records about it.

    ``statement`` is what was signed (for faults that break headers or bytes it
    still says what the device *meant* to send); ``fault`` is None for good messages.
    """

    topic: str
    key: bytes
    value: bytes = field(repr=False)
    headers: tuple[tuple[str, bytes], ...] = field(repr=False)
    statement: Statement
    signature: bytes = field(repr=False)
    device: str
    fault: str | None = None

    @property
    def size(self) -> int:
        return len(self.value)


def seal(keypair: KeyPair, seq: int, ts_ms: int, payload: Payload) -> OutMessage:
    """Sign `payload` as message `seq` of the device owning `keypair`."""
    stmt = Statement.for_payload(keypair.did, seq, ts_ms, payload.kind, payload.content_type, payload.data)
    sig = sign_statement(stmt, keypair)
    return OutMessage(kind_info(payload.kind).topic, keypair.did.encode("ascii"), payload.data,
                      tuple(to_kafka_headers(stmt, sig)), stmt, sig, keypair.did)
