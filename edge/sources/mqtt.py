"""Plain MQTT topics from a real broker (aiomqtt) -> `Reading`s.

Config (``[sources.<name>]``, ``type = "mqtt"``)::

    host = "broker.plant.local"     # required
    port = 1883                     # 8883 is usual with TLS
    client_id = "edge-line1"        # default: "sealstream-edge-<name>"
    username = "edge"               # optional; its password from `password_file` (preferred) or `password`
    password_file = "/etc/sealstream/mqtt.pass"
    tls = true                      # TLS; `ca_file` (else the system's CAs), `cert_file` + `key_file`
    ca_file = "/etc/sealstream/ca.pem"        # for a client certificate; `tls_insecure = true` skips the
    cert_file = "/etc/sealstream/edge.pem"    # host name check only (never the chain)
    key_file = "/etc/sealstream/edge.key"
    keepalive_s = 30
    qos = 1                         # default QoS of the subscriptions (0, 1 or 2)
    reconnect_min_s = 0.5           # reconnect backoff: doubles from min to max, with jitter
    reconnect_max_s = 30

    [[sources.<name>.topics]]
    topic = "plant/line1/+/temperature"   # an MQTT filter; `+` and `#` levels are captured
    device = "press-{1}"                  # config device; {1}, {2}... are the captured levels
    sensor = "temperature"                # config sensor; may use captures too
    format = "json"                       # "json" (default) or "number" (the payload is a plain number)
    value_path = "data.value"             # json: the value's field path (dots; list indexes allowed)
    timestamp_path = "ts"                 # json, optional: epoch ms (or `timestamp_unit = "s"`) or ISO 8601
    qos = 1                               # optional, this subscription's QoS

A reading's `ts_ms` is the payload's timestamp when `timestamp_path` is set, else the edge's receive
time. A payload that does not parse, a missing or non-numeric value, or a configured timestamp that
is missing or invalid -> ``ctx.error("mqtt-bad-payload", ...)``, the message is dropped and the
source goes on; a lost or refused connection -> ``ctx.error("mqtt-connection", ...)``, state
``disconnected``, reconnect with backoff.

`BrokerOptions`, `Backoff` and `now_ms` are shared with `edge.sources.sparkplug`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiomqtt

from edge.model import Reading, SourceContext

__all__ = ["from_config", "MqttSource", "TopicMap", "BrokerOptions", "Backoff", "now_ms", "topic_captures",
           "raise_if_cancelled"]

log = logging.getLogger("sealstream.edge.mqtt")

_DETAIL_MAX = 200
_CAPTURE = re.compile(r"\{(\d+)\}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _short(data: bytes | str) -> str:
    text = data if isinstance(data, str) else data[:_DETAIL_MAX].decode("utf-8", "replace")
    return text if len(text) <= _DETAIL_MAX else text[:_DETAIL_MAX] + "..."


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library (or Python 3.11's ``asyncio.wait_for`` race) swallowed:
    a source must end when cancelled, whatever it was awaiting then."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class Backoff:
    """Reconnect delays: `min_s`, doubling up to `max_s`, each with +-20 % jitter; `reset` once connected."""

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError(f"reconnect delays need 0 < reconnect_min_s <= reconnect_max_s (got {min_s}, {max_s})")
        self.min_s, self.max_s = min_s, max_s
        self._next = min_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self.max_s, self._next * 2)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.min_s


def _get(section: dict, key: str, kind: type | tuple[type, ...], default: Any, source: str) -> Any:
    value = section.get(key, default)
    if (value is not None and not isinstance(value, kind)
            or isinstance(value, bool) and kind in (int, float, (int, float))):
        raise ValueError(f"source {source!r}: `{key}` must be {getattr(kind, '__name__', kind)}, not {value!r}")
    return value


def _known_keys(section: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


BROKER_KEYS = {"type", "host", "port", "client_id", "username", "password", "password_file", "tls", "ca_file",
               "cert_file", "key_file", "tls_insecure", "keepalive_s", "qos", "reconnect_min_s", "reconnect_max_s"}


@dataclass(frozen=True)
class BrokerOptions:
    """How to reach the broker (the connection keys of an mqtt or sparkplug source)."""

    host: str
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    @classmethod
    def from_section(cls, name: str, section: dict) -> "BrokerOptions":
        host = _get(section, "host", str, None, name)
        if not host:
            raise ValueError(f"source {name!r}: `host` (the MQTT broker) is required")
        password = _get(section, "password", str, None, name)
        password_file = _get(section, "password_file", str, None, name)
        if password_file is not None:
            if password is not None:
                raise ValueError(f"source {name!r}: set `password_file` or `password`, not both")
            try:
                password = Path(password_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"source {name!r}: cannot read password_file {password_file}: "
                                 f"{exc.strerror}") from None
        cert_file = _get(section, "cert_file", str, None, name)
        key_file = _get(section, "key_file", str, None, name)
        if (cert_file is None) != (key_file is None):
            raise ValueError(f"source {name!r}: a client certificate needs both `cert_file` and `key_file`")
        tls = _get(section, "tls", bool, False, name)
        if not tls and any(section.get(k) for k in ("ca_file", "cert_file", "key_file", "tls_insecure")):
            raise ValueError(f"source {name!r}: ca_file/cert_file/key_file/tls_insecure need `tls = true`")
        port = _get(section, "port", int, 8883 if tls else 1883, name)
        opts = cls(
            host=host, port=port,
            client_id=_get(section, "client_id", str, f"sealstream-edge-{name}", name),
            username=_get(section, "username", str, None, name), password=password, tls=tls,
            ca_file=_get(section, "ca_file", str, None, name), cert_file=cert_file, key_file=key_file,
            tls_insecure=_get(section, "tls_insecure", bool, False, name),
            keepalive_s=_get(section, "keepalive_s", int, 30, name),
            reconnect_min_s=float(_get(section, "reconnect_min_s", (int, float), 0.5, name)),
            reconnect_max_s=float(_get(section, "reconnect_max_s", (int, float), 30.0, name)),
        )
        Backoff(opts.reconnect_min_s, opts.reconnect_max_s)  # validates the delays
        return opts

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.tls_insecure:
            ctx.check_hostname = False
        return ctx

    def client(self, *, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host, self.port, identifier=self.client_id, username=self.username, password=self.password,
            keepalive=self.keepalive_s, tls_context=self.tls_context(), will=will, clean_session=True,
            timeout=10,
        )


def topic_captures(pattern: str, topic: str) -> list[str] | None:
    """The levels of `topic` that `pattern`'s `+` / `#` wildcards matched, or None if it does not match."""
    pat, top = pattern.split("/"), topic.split("/")
    captures: list[str] = []
    for i, level in enumerate(pat):
        if level == "#":
            if topic.startswith("$") and i == 0:
                return None
            captures.append("/".join(top[i:]))
            return captures
        if i >= len(top):
            return None
        if level == "+":
            if i == 0 and top[0].startswith("$"):
                return None
            captures.append(top[i])
        elif level != top[i]:
            return None
    return captures if len(top) == len(pat) else None


def _path(text: str | None) -> tuple[str, ...]:
    return tuple(p for p in (text or "").split(".") if p)


def _walk(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.lstrip("-").isdigit() and -len(doc) <= int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise KeyError(part)
    return doc


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    raise TypeError(f"not a finite number: {value!r}")


def parse_timestamp_ms(value: Any, unit: str) -> int:
    """Epoch ms (or s with ``unit="s"``) as a number, or an ISO 8601 text (no zone = UTC)."""
    if isinstance(value, bool):
        raise TypeError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(round(value * 1000)) if unit == "s" else int(value)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    raise TypeError(f"not a timestamp: {value!r}")


@dataclass(frozen=True)
class TopicMap:
    """One `[[topics]]` entry."""

    topic: str
    device: str
    sensor: str
    format: str = "json"
    value_path: tuple[str, ...] = ()
    timestamp_path: tuple[str, ...] | None = None
    timestamp_unit: str = "ms"
    qos: int = 1

    def names(self, captures: list[str]) -> tuple[str, str]:
        """`device` and `sensor` with each ``{n}`` replaced by the n-th captured level (IndexError if none)."""

        def level(match: re.Match) -> str:
            n = int(match.group(1))
            if not 1 <= n <= len(captures):
                raise IndexError(f"{{{n}}}: the topic filter has {len(captures)} wildcard level(s)")
            return captures[n - 1]

        def sub(text: str) -> str:
            return _CAPTURE.sub(level, text)

        return sub(self.device), sub(self.sensor)

    def parse(self, payload: bytes, received_ms: int) -> tuple[float, int]:
        """(value, ts_ms) or ValueError naming what is wrong."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("payload is not UTF-8") from None
        if self.format == "number":
            try:
                return _number(float(text.strip())), received_ms
            except (ValueError, TypeError):
                raise ValueError(f"not a number: {_short(text)!r}") from None
        try:
            doc = json.loads(text)
        except ValueError:
            raise ValueError(f"not JSON: {_short(text)!r}") from None
        try:
            value = _number(_walk(doc, self.value_path))
        except KeyError as exc:
            raise ValueError(f"no field {'.'.join(self.value_path)!r} (missing {exc.args[0]!r})") from None
        except TypeError as exc:
            raise ValueError(f"field {'.'.join(self.value_path) or '(root)'!r}: {exc}") from None
        if self.timestamp_path is None:
            return value, received_ms
        try:
            return value, parse_timestamp_ms(_walk(doc, self.timestamp_path), self.timestamp_unit)
        except KeyError:
            raise ValueError(f"no timestamp field {'.'.join(self.timestamp_path)!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"timestamp field {'.'.join(self.timestamp_path)!r}: {exc}") from None


_TOPIC_KEYS = {"topic", "device", "sensor", "format", "value_path", "timestamp_path", "timestamp_unit", "qos"}


def _qos(value: Any, where: str) -> int:
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise ValueError(f"{where}: `qos` must be 0, 1 or 2, not {value!r}")
    return value


def _topic_map(name: str, i: int, entry: dict, default_qos: int) -> TopicMap:
    where = f"source {name!r} topics[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    _known_keys(entry, _TOPIC_KEYS, where)
    for key in ("topic", "device", "sensor"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ValueError(f"{where}: `{key}` (text) is required")
    levels = entry["topic"].split("/")
    if "#" in levels[:-1] or any(("+" in lv or "#" in lv) and len(lv) > 1 for lv in levels):
        raise ValueError(f"{where}: {entry['topic']!r} is not a valid MQTT topic filter")
    n_wild = sum(lv in ("+", "#") for lv in levels)
    fmt = entry.get("format", "json")
    if fmt not in ("json", "number"):
        raise ValueError(f"{where}: `format` must be \"json\" or \"number\", not {fmt!r}")
    if fmt == "number" and ("value_path" in entry or "timestamp_path" in entry):
        raise ValueError(f"{where}: value_path/timestamp_path apply to format = \"json\" only")
    unit = entry.get("timestamp_unit", "ms")
    if unit not in ("ms", "s"):
        raise ValueError(f"{where}: `timestamp_unit` must be \"ms\" or \"s\", not {unit!r}")
    tmap = TopicMap(
        topic=entry["topic"], device=entry["device"], sensor=entry["sensor"], format=fmt,
        value_path=_path(entry.get("value_path")),
        timestamp_path=_path(entry["timestamp_path"]) if entry.get("timestamp_path") else None,
        timestamp_unit=unit, qos=_qos(entry.get("qos", default_qos), where),
    )
    try:
        tmap.names(["x"] * n_wild)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"{where}: device/sensor name a capture the topic does not have ({exc})") from None
    return tmap


class MqttSource:
    """Subscribes to the configured topic filters and turns each matching message into readings."""

    def __init__(self, name: str, broker: BrokerOptions, topics: list[TopicMap]) -> None:
        self.name = name
        self.broker = broker
        self.topics = topics

    def _subscriptions(self) -> dict[str, int]:
        subs: dict[str, int] = {}
        for t in self.topics:
            subs[t.topic] = max(subs.get(t.topic, 0), t.qos)
        return subs

    async def run(self, ctx: SourceContext) -> None:
        backoff = Backoff(self.broker.reconnect_min_s, self.broker.reconnect_max_s)
        try:
            while True:
                ctx.state("connecting")
                try:
                    async with self.broker.client() as client:
                        for topic, qos in self._subscriptions().items():
                            await client.subscribe(topic, qos=qos)
                        ctx.state("connected")
                        backoff.reset()
                        async for message in client.messages:
                            await self.handle(ctx, str(message.topic), bytes(message.payload or b""))
                except aiomqtt.MqttError as exc:
                    raise_if_cancelled()
                    ctx.state("disconnected")
                    ctx.error("mqtt-connection", f"{self.broker.host}:{self.broker.port}: {exc}")
                raise_if_cancelled()
                await asyncio.sleep(backoff.next())
        finally:
            ctx.state("disconnected")

    async def handle(self, ctx: SourceContext, topic: str, payload: bytes) -> None:
        received = now_ms()
        for tmap in self.topics:
            captures = topic_captures(tmap.topic, topic)
            if captures is None:
                continue
            try:
                value, ts_ms = tmap.parse(payload, received)
            except ValueError as exc:
                ctx.error("mqtt-bad-payload", f"{topic}: {exc}")
                continue
            device, sensor = tmap.names(captures)
            await ctx.emit(Reading(device=device, sensor=sensor, value=value, ts_ms=ts_ms, received_ms=received))


def from_config(name: str, section: dict) -> MqttSource:
    _known_keys(section, BROKER_KEYS | {"topics"}, f"source {name!r}")
    broker = BrokerOptions.from_section(name, section)
    default_qos = _qos(section.get("qos", 1), f"source {name!r}")
    topics = section.get("topics")
    if not isinstance(topics, list) or not topics:
        raise ValueError(f"source {name!r}: at least one [[sources.{name}.topics]] entry is required")
    return MqttSource(name, broker, [_topic_map(name, i, t, default_qos) for i, t in enumerate(topics)])
