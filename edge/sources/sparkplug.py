"""Sparkplug B over MQTT -> `Reading`s: the edge acts as a Sparkplug host application.

Topics ``spBv1.0/<group>/<type>/<edge node>[/<device>]``, payloads the Sparkplug B protobuf
``Payload`` (edge/sources/sparkplug_b.proto, Eclipse Sparkplug 3.0.0 chapter 6). What it does,
by the specification (chapter 7 "Operational Behavior", chapter 8 "Payloads"):

- NBIRTH starts an edge node's session: its ``bdSeq`` metric, its ``seq`` and its metric aliases
  (alias -> name) are recorded, replacing everything of an earlier session (a rebirth with new aliases
  replaces the old ones; the node's devices must be born again). DBIRTH does the same for a device's
  aliases. BIRTH metrics carry current values: they are emitted like DATA.
- NDATA/DDATA metrics are resolved by name, else by alias from the last BIRTH of that node or device.
- ``seq`` (0..255, wrapping) is one counter per edge node over NBIRTH/DBIRTH/NDATA/DDATA/DDEATH.
  A message whose seq is not the previous one + 1 -> ``sparkplug-seq-gap`` and a rebirth request
  (NCMD ``Node Control/Rebirth`` = true, once per session and once after a death); its metrics are still emitted.
- NDEATH ends the session only when its ``bdSeq`` equals the NBIRTH's (a late Will of an earlier
  session is ignored); DDEATH ends a device's. DATA or DBIRTH of a node with no live session (never
  seen, or dead) -> ``sparkplug-no-birth`` and a rebirth request; an alias the BIRTH did not define ->
  ``sparkplug-unknown-alias``.
- A reading's timestamp is the metric's ``timestamp``, else the payload's, else the receive time.
- A payload that is not a Sparkplug B protobuf, a topic that is not a Sparkplug one, a DATA/BIRTH
  without ``seq`` or an NBIRTH without ``bdSeq`` -> ``malformed-sparkplug``; the source goes on.

Config (``[sources.<name>]``, ``type = "sparkplug"``): the broker keys of `edge.sources.mqtt`
(host, port, client_id, username, password_file, tls, ca_file, cert_file, key_file, keepalive_s,
reconnect_min_s, reconnect_max_s; ``qos`` default 0) and::

    group = "plant1"          # the Sparkplug group id to subscribe to; "+" = every group (default)
    host_id = "sealstream"    # optional: publish Sparkplug 3.0 host STATE (spBv1.0/STATE/<host_id>)
    rebirth = true            # send NCMD rebirth requests (default true)

    [[sources.<name>.metrics]]
    node = "press1"           # edge node id (required)
    sparkplug_device = "plc1" # optional: a Sparkplug device of that node; absent = the node's own metrics
    group = "plant1"          # optional: default the source's `group` (required when that is "+")
    metric = "Temperature"    # the metric name as in the BIRTH; "*" = every numeric metric
    device = "press-1"        # config device
    sensor = "temperature"    # config sensor; default (and with metric = "*") the metric name

Only mapped metrics are read. Numeric Sparkplug types become floats (Int8..Int64 are read as two's
complement of their width, Boolean as 1/0, DateTime as epoch ms); a metric mapped by name whose
value is null or not numeric -> ``sparkplug-non-numeric`` (a "*" mapping skips those silently, as it
skips ``bdSeq`` and the ``Node Control/`` / ``Device Control/`` metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import aiomqtt
from google.protobuf.message import DecodeError

from edge.model import Reading, SourceContext

from .mqtt import BROKER_KEYS, Backoff, BrokerOptions, _known_keys, _qos, now_ms, raise_if_cancelled
from .sparkplug_b_pb import DataType, Payload

__all__ = ["from_config", "SparkplugSource", "SparkplugHost", "MetricMap", "rebirth_payload"]

log = logging.getLogger("sealstream.edge.sparkplug")

NAMESPACE = "spBv1.0"
_TYPES = {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"}
_SIGNED_WIDTH = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}
REBIRTH_METRIC = "Node Control/Rebirth"


def rebirth_payload(ts_ms: int) -> bytes:
    """An NCMD payload asking an edge node to publish its births again."""
    p = Payload(timestamp=ts_ms)
    m = p.metrics.add()
    m.name, m.datatype, m.boolean_value = REBIRTH_METRIC, DataType.Boolean, True
    return p.SerializeToString()


@dataclass(frozen=True)
class MetricMap:
    group: str
    node: str
    sparkplug_device: str | None
    metric: str
    device: str
    sensor: str | None  # None: the metric's name


@dataclass
class _Scope:
    """A node's or a device's birth: alias -> name and name -> datatype."""

    aliases: dict[int, str] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)


@dataclass
class _Node:
    online: bool = False
    bd_seq: int | None = None
    seq: int | None = None
    scope: _Scope = field(default_factory=_Scope)
    devices: dict[str, _Scope] = field(default_factory=dict)  # live (born, not dead) devices
    rebirth_requested: bool = False


class _Malformed(Exception):
    pass


def _metric_value(metric, datatype: int | None) -> float | None:
    """The metric's value as a float, or None when null or not numeric."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind in ("int_value", "long_value"):
        raw = getattr(metric, kind)
        width = _SIGNED_WIDTH.get(datatype or 0)
        if width is not None:
            raw &= (1 << width) - 1
            if raw >= 1 << (width - 1):
                raw -= 1 << width
        return float(raw)
    if kind in ("float_value", "double_value"):
        return float(getattr(metric, kind))
    if kind == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    return None


class SparkplugHost:
    """The host application's state over all edge nodes; `handle` processes one MQTT message.

    Returns the topics to publish a rebirth request to (the caller publishes them)."""

    def __init__(self, maps: list[MetricMap], *, rebirth: bool = True) -> None:
        self.rebirth = rebirth
        self.nodes: dict[tuple[str, str], _Node] = {}
        self._exact: dict[tuple[str, str, str | None, str], MetricMap] = {}
        self._wild: dict[tuple[str, str, str | None], MetricMap] = {}
        for m in maps:
            if m.metric == "*":
                self._wild[(m.group, m.node, m.sparkplug_device)] = m
            else:
                self._exact[(m.group, m.node, m.sparkplug_device, m.metric)] = m

    def _lookup(self, group: str, node: str, dev: str | None, name: str) -> tuple[MetricMap | None, bool]:
        """(map, explicit)."""
        for g in (group, "+"):
            hit = self._exact.get((g, node, dev, name))
            if hit is not None:
                return hit, True
        if name == "bdSeq" or name.startswith(("Node Control/", "Device Control/")):
            return None, False
        for g in (group, "+"):
            hit = self._wild.get((g, node, dev))
            if hit is not None:
                return hit, False
        return None, False

    def _request_rebirth(self, group: str, node_id: str, node: _Node | None) -> list[str]:
        if not self.rebirth or (node is not None and node.rebirth_requested):
            return []
        if node is not None:
            node.rebirth_requested = True
        return [f"{NAMESPACE}/{group}/NCMD/{node_id}"]

    async def handle(self, ctx: SourceContext, topic: str, data: bytes, received_ms: int | None = None) -> list[str]:
        received = now_ms() if received_ms is None else received_ms
        parts = topic.split("/")
        if len(parts) >= 2 and parts[0] == NAMESPACE and parts[1] == "STATE":
            return []  # host application state (ours or another host's)
        if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in _TYPES or not all(parts):
            ctx.error("malformed-sparkplug", f"{topic}: not a Sparkplug B topic")
            return []
        _, group, mtype, node_id = parts[:4]
        dev = parts[4] if len(parts) == 5 else None
        if (mtype[0] == "D") != (dev is not None):
            ctx.error("malformed-sparkplug", f"{topic}: {mtype} {'needs' if dev is None else 'has no'} device id")
            return []
        if mtype in ("NCMD", "DCMD"):
            return []  # commands to edge nodes (our rebirth requests among them)
        try:
            payload = Payload.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            ctx.error("malformed-sparkplug", f"{topic}: not a Sparkplug B payload ({exc or type(exc).__name__})")
            return []
        try:
            return await self._handle(ctx, topic, group, mtype, node_id, dev, payload, received)
        except _Malformed as exc:
            ctx.error("malformed-sparkplug", f"{topic}: {exc}")
            return []

    async def _handle(self, ctx, topic, group, mtype, node_id, dev, payload, received) -> list[str]:
        key = (group, node_id)
        node = self.nodes.get(key)
        if mtype == "NDEATH":
            bd = self._bd_seq(payload)
            if node is not None and node.online and (bd is None or node.bd_seq is None or bd == node.bd_seq):
                node.online, node.devices, node.seq = False, {}, None
                node.rebirth_requested = False  # data after a death asks again
            else:
                log.info("ignoring NDEATH of %s/%s with bdSeq %s (current session: %s)", group, node_id, bd,
                         None if node is None or not node.online else node.bd_seq)
            return []
        if not payload.HasField("seq"):
            raise _Malformed(f"{mtype} without seq")
        seq = payload.seq
        if seq > 255:
            raise _Malformed(f"seq {seq} out of 0..255")
        if mtype == "NBIRTH":
            bd = self._bd_seq(payload)
            node = _Node(online=True, bd_seq=bd, seq=seq, scope=self._scope(payload))
            self.nodes[key] = node
            if bd is None:
                ctx.error("malformed-sparkplug", f"{topic}: NBIRTH without bdSeq")
            await self._emit(ctx, group, node_id, None, node.scope, payload, received)
            return []
        if node is None or not node.online:
            ctx.error("sparkplug-no-birth", f"{topic}: {mtype} from an edge node with no live session")
            if node is None:
                node = self.nodes[key] = _Node()
            return self._request_rebirth(group, node_id, node)
        out: list[str] = []
        expected = (node.seq + 1) % 256 if node.seq is not None else seq
        if seq != expected:
            ctx.error("sparkplug-seq-gap", f"{topic}: seq {seq}, expected {expected}")
            out = self._request_rebirth(group, node_id, node)
        node.seq = seq
        if mtype == "NDATA":
            await self._emit(ctx, group, node_id, None, node.scope, payload, received)
        elif mtype == "DBIRTH":
            scope = node.devices[dev] = self._scope(payload)
            await self._emit(ctx, group, node_id, dev, scope, payload, received)
        elif mtype == "DDEATH":
            node.devices.pop(dev, None)
        else:  # DDATA
            born = node.devices.get(dev)
            if born is None:
                ctx.error("sparkplug-no-birth", f"{topic}: DDATA from a device with no live DBIRTH")
                return out or self._request_rebirth(group, node_id, node)
            await self._emit(ctx, group, node_id, dev, born, payload, received)
        return out

    @staticmethod
    def _bd_seq(payload) -> int | None:
        for m in payload.metrics:
            if m.name == "bdSeq" and m.WhichOneof("value") in ("int_value", "long_value"):
                return getattr(m, m.WhichOneof("value"))
        return None

    @staticmethod
    def _scope(payload) -> _Scope:
        scope = _Scope()
        for m in payload.metrics:
            if not m.name:
                raise _Malformed("a BIRTH metric without a name")
            if m.HasField("alias"):
                other = scope.aliases.get(m.alias)
                if other is not None and other != m.name:
                    raise _Malformed(f"alias {m.alias} given to both {other!r} and {m.name!r}")
                scope.aliases[m.alias] = m.name
            if m.HasField("datatype"):
                scope.types[m.name] = m.datatype
        return scope

    async def _emit(self, ctx, group, node_id, dev, scope: _Scope, payload, received) -> None:
        where = f"{group}/{node_id}" + (f"/{dev}" if dev else "")
        for m in payload.metrics:
            if m.name:
                name = m.name
            elif m.HasField("alias") and m.alias in scope.aliases:
                name = scope.aliases[m.alias]
            else:
                ctx.error("sparkplug-unknown-alias",
                          f"{where}: alias {m.alias if m.HasField('alias') else '(none)'} not in the last BIRTH")
                continue
            mapping, explicit = self._lookup(group, node_id, dev, name)
            if mapping is None:
                continue
            datatype = m.datatype if m.HasField("datatype") else scope.types.get(name)
            value = _metric_value(m, datatype)
            if value is None:
                if explicit:
                    kind = "null" if m.is_null else (m.WhichOneof("value") or "no value")
                    ctx.error("sparkplug-non-numeric", f"{where}: metric {name!r} is {kind}")
                continue
            if m.HasField("timestamp"):
                ts = m.timestamp
            elif payload.HasField("timestamp"):
                ts = payload.timestamp
            else:
                ts = received
            await ctx.emit(Reading(device=mapping.device, sensor=mapping.sensor or name, value=value,
                                   ts_ms=int(ts), received_ms=received))


class SparkplugSource:
    def __init__(self, name: str, broker: BrokerOptions, group: str, maps: list[MetricMap], *,
                 qos: int = 0, host_id: str | None = None, rebirth: bool = True) -> None:
        self.name = name
        self.broker = broker
        self.group = group
        self.maps = maps
        self.qos = qos
        self.host_id = host_id
        self.rebirth = rebirth

    def _state(self, online: bool, ts_ms: int) -> bytes:
        return json.dumps({"online": online, "timestamp": ts_ms}).encode()

    async def run(self, ctx: SourceContext) -> None:
        backoff = Backoff(self.broker.reconnect_min_s, self.broker.reconnect_max_s)
        try:
            while True:
                ctx.state("connecting")
                host = SparkplugHost(self.maps, rebirth=self.rebirth)  # a new session: every node is reborn
                state_topic = f"{NAMESPACE}/STATE/{self.host_id}" if self.host_id else None
                born = now_ms()
                will = aiomqtt.Will(state_topic, self._state(False, born), qos=1, retain=True) if state_topic else None
                try:
                    async with self.broker.client(will=will) as client:
                        await client.subscribe(f"{NAMESPACE}/{self.group}/#", qos=self.qos)
                        if state_topic:
                            await client.publish(state_topic, self._state(True, born), qos=1, retain=True)
                        ctx.state("connected")
                        backoff.reset()
                        async for message in client.messages:
                            for ncmd in await host.handle(ctx, str(message.topic), bytes(message.payload or b"")):
                                log.info("requesting a rebirth: %s", ncmd)
                                await client.publish(ncmd, rebirth_payload(now_ms()), qos=0, retain=False)
                except aiomqtt.MqttError as exc:
                    raise_if_cancelled()
                    ctx.state("disconnected")
                    ctx.error("mqtt-connection", f"{self.broker.host}:{self.broker.port}: {exc}")
                raise_if_cancelled()
                await asyncio.sleep(backoff.next())
        finally:
            ctx.state("disconnected")


_MAP_KEYS = {"node", "sparkplug_device", "group", "metric", "device", "sensor"}


def from_config(name: str, section: dict) -> SparkplugSource:
    _known_keys(section, BROKER_KEYS | {"group", "host_id", "rebirth", "metrics"}, f"source {name!r}")
    broker = BrokerOptions.from_section(name, section)
    group = section.get("group", "+")
    if not isinstance(group, str) or not group or "/" in group or "#" in group or ("+" in group and group != "+"):
        raise ValueError(f"source {name!r}: `group` must be a Sparkplug group id or \"+\", not {group!r}")
    host_id = section.get("host_id")
    if host_id is not None and (not isinstance(host_id, str) or not host_id or set("/+#") & set(host_id)):
        raise ValueError(f"source {name!r}: `host_id` must be a topic level, not {host_id!r}")
    rebirth = section.get("rebirth", True)
    if not isinstance(rebirth, bool):
        raise ValueError(f"source {name!r}: `rebirth` must be true or false")
    entries = section.get("metrics")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"source {name!r}: at least one [[sources.{name}.metrics]] entry is required")
    maps = []
    for i, e in enumerate(entries):
        where = f"source {name!r} metrics[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: must be a table")
        _known_keys(e, _MAP_KEYS, where)
        for k in ("node", "metric", "device"):
            if not isinstance(e.get(k), str) or not e[k]:
                raise ValueError(f"{where}: `{k}` (text) is required")
        g = e.get("group", group)
        if g == "+" and group != "+":
            raise ValueError(f"{where}: `group` must be a group id")
        if e["metric"] == "*" and "sensor" in e:
            raise ValueError(f"{where}: metric = \"*\" names each sensor after its metric; drop `sensor`")
        for k in ("sparkplug_device", "sensor", "group"):
            if k in e and (not isinstance(e[k], str) or not e[k]):
                raise ValueError(f"{where}: `{k}` must be non-empty text")
        maps.append(MetricMap(group=g, node=e["node"], sparkplug_device=e.get("sparkplug_device"),
                              metric=e["metric"], device=e["device"], sensor=e.get("sensor")))
    return SparkplugSource(name, broker, group, maps, qos=_qos(section.get("qos", 0), f"source {name!r}"),
                           host_id=host_id, rebirth=rebirth)
