"""The values and protocols the edge's parts share (one idea: what flows from a source to the spool).

A `Source` reads a real system (an OPC UA server, an MQTT broker, a Modbus device, a folder) and
emits `Reading`s (one sensor value with the device's timestamp and the edge's receive time) or
`BlobItem`s (a camera image or video chunk). The agent groups a device's readings into Arrow
payloads, signs each with the device's `Signer` and spools the message until Kafka acknowledges it.
A source never raises for bad input: it reports it through `SourceContext.error(reason, detail)`
(counted by reason, logged, the source keeps going) and its connection state through
`SourceContext.state(...)`.

Each source module in `edge.sources` exposes ``from_config(name: str, section: dict) -> Source``;
its TOML table (``[sources.<name>]``, with ``type = "mqtt" | "sparkplug" | "opcua" | "modbus" |
"files"``) maps what it reads to config device and sensor names (documented in the module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Union

__all__ = ["Reading", "BlobItem", "Item", "SourceState", "SourceContext", "Source", "Signer"]

SourceState = Literal["connecting", "connected", "disconnected"]


@dataclass(frozen=True)
class Reading:
    """One sensor value: `device` and `sensor` are the config's names; `ts_ms` is the device's
    (or server's) timestamp of the value, `received_ms` the edge's clock when it arrived."""

    device: str
    sensor: str
    value: float
    ts_ms: int
    received_ms: int


@dataclass(frozen=True)
class BlobItem:
    """A camera image (``kind="image"``) or video chunk (``"video"``) of `device`."""

    device: str
    kind: Literal["image", "video"]
    content_type: str
    data: bytes
    ts_ms: int
    received_ms: int
    #: A stable name of what this blob is (e.g. ``files:<folder>/<name>:<size>:<mtime_ns>``): the agent
    #: spools a `ref` at most once (kept in the spool's database with the message, in one transaction),
    #: so a source that re-emits after a crash (the file was spooled but not yet moved) is harmless.
    ref: str | None = None


Item = Union[Reading, BlobItem]


class SourceContext(Protocol):
    """What the agent gives a running source."""

    async def emit(self, item: Item) -> bool:
        """Hand one reading or blob to the agent (it is durable once the agent spooled it); False when the
        agent refused it (the reason is counted, e.g. ``unknown-device``) or is stopping."""

    def error(self, reason: str, detail: str = "") -> None:
        """Bad input or a failed read: counted by `reason` (machine-readable, e.g.
        ``malformed-sparkplug``, ``node-gone``, ``modbus-timeout``) and logged; never raised."""

    def state(self, state: SourceState) -> None:
        """The source's connection state (a gauge per source)."""


class Source(Protocol):
    """A configured source; `run` returns only when cancelled (it reconnects with backoff itself)."""

    name: str

    async def run(self, ctx: SourceContext) -> None: ...


class Signer(Protocol):
    """A device's Ed25519 signing key: a key file or a PKCS#11 token object."""

    @property
    def did(self) -> str: ...

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of `data`."""

