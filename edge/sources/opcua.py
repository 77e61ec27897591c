"""OPC UA subscriptions (asyncua client) -> `Reading`s.

Config (``[sources.<name>]``, ``type = "opcua"``)::

    endpoint = "opc.tcp://plc1.plant.local:4840/"   # required
    security_policy = "Basic256Sha256"  # "None" (default), "Basic256Sha256", "Aes128_Sha256_RsaOaep",
                                        # "Aes256_Sha256_RsaPss"
    security_mode = "SignAndEncrypt"    # "Sign" or "SignAndEncrypt" (required with a policy other than None)
    certificate = "/etc/sealstream/opcua/edge.der"   # the edge's application instance certificate
    private_key = "/etc/sealstream/opcua/edge.pem"   # and its key (both required with a policy)
    server_certificate = "/etc/sealstream/opcua/plc1.der"  # pins the server; without it the server's
                                        # certificate from GetEndpoints is taken as is (logged as a warning)
    application_uri = "urn:plant:sealstream-edge"    # must be the certificate's URI SubjectAltName
    username = "edge"                   # optional; its password from `password_file` (or `password`)
    password_file = "/etc/sealstream/opcua.pass"
    publishing_interval_ms = 500        # the subscription's publishing interval
    sampling_interval_ms = 100          # each monitored item's sampling interval
    queue_size = 10                     # per monitored item: values between two publishes are kept
    timeout_s = 4                       # each request's timeout
    watchdog_s = 1                      # how often the connection is probed
    node_check_s = 10                   # how often the subscribed nodes are checked to still exist
    reconnect_min_s = 0.5               # reconnect backoff: doubles from min to max, with jitter
    reconnect_max_s = 30

    [[sources.<name>.nodes]]
    node_id = "ns=2;s=Press1.Temperature"   # an OPC UA node id (string form)
    device = "press-1"
    sensor = "temperature"

Each data change with a Good status becomes a reading: `ts_ms` is the value's SourceTimestamp, else its
ServerTimestamp, else the receive time; numbers and booleans (1/0) are read, anything else ->
``opcua-bad-value``. A node that disappears (a BadNodeIdUnknown/BadNodeIdInvalid status on its
monitored item, when subscribing, or when the source checks every `node_check_s` that its nodes still
exist: not every server notifies a deleted node's monitored items) -> ``opcua-node-gone``, the other
nodes keep flowing; other Bad or Uncertain statuses -> ``opcua-bad-status``. A lost connection (server
restart, network) -> ``opcua-connection``, state ``disconnected``, reconnect with backoff and subscribe
again (gone nodes are tried again on every reconnect; the value a node still has after a reconnect is
not emitted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies

from edge.model import Reading, SourceContext

from .mqtt import Backoff, _known_keys, now_ms, raise_if_cancelled

__all__ = ["from_config", "OpcUaSource", "NodeMap", "OpcUaOptions"]

log = logging.getLogger("sealstream.edge.opcua")

_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
_GONE = {ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid}


@dataclass(frozen=True)
class NodeMap:
    node_id: str
    device: str
    sensor: str


@dataclass(frozen=True)
class OpcUaOptions:
    endpoint: str
    security_policy: str = "None"
    security_mode: str | None = None
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    application_uri: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    publishing_interval_ms: float = 500.0
    sampling_interval_ms: float = 100.0
    queue_size: int = 10
    timeout_s: float = 4.0
    watchdog_s: float = 1.0
    node_check_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


def _status_name(code: ua.StatusCode) -> str:
    try:
        return code.name
    except Exception:  # noqa: BLE001 - an unknown code number
        return f"0x{code.value:08X}"


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    if value.year < 1601 or value.year > 9000:  # OPC UA's "no time" (DateTime 0) and nonsense
        return None
    ms = int(value.timestamp() * 1000)
    return ms if ms > 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


class _Handler:
    """asyncua's subscription handler: hands every notification to the source's loop."""

    def __init__(self, queue: asyncio.Queue) -> None:
        self.queue = queue

    async def datachange_notification(self, node, val, data) -> None:
        await self.queue.put(("data", node, data.monitored_item.Value))

    async def status_change_notification(self, status) -> None:
        await self.queue.put(("status", None, getattr(status, "Status", status)))


class OpcUaSource:
    def __init__(self, name: str, options: OpcUaOptions, nodes: list[NodeMap]) -> None:
        self.name = name
        self.options = options
        self.nodes = nodes
        self._last: dict[str, tuple[float, int]] = {}  # node id -> (value, ts) last emitted

    async def _client(self) -> Client:
        o = self.options
        client = Client(o.endpoint, timeout=o.timeout_s, watchdog_intervall=o.watchdog_s, auto_reconnect=False)
        if o.application_uri:
            client.application_uri = o.application_uri
        if o.username:
            client.set_user(o.username)
            if o.password is not None:
                client.set_password(o.password)
        if o.security_policy != "None":
            policy = getattr(security_policies, f"SecurityPolicy{o.security_policy}")
            if o.server_certificate is None:
                log.warning("opcua source %s: no server_certificate pinned; trusting the certificate %s "
                            "announces", self.name, o.endpoint)
            if o.certificate is None or o.private_key is None or o.security_mode is None:  # from_config refuses it
                raise ValueError(f"opcua source {self.name}: security_policy {o.security_policy} needs "
                                 "certificate, private_key and security_mode")
            await client.set_security(policy, o.certificate, o.private_key, server_certificate=o.server_certificate,
                                      mode=_MODES[o.security_mode])
        return client

    async def run(self, ctx: SourceContext) -> None:
        o = self.options
        backoff = Backoff(o.reconnect_min_s, o.reconnect_max_s)
        try:
            while True:
                ctx.state("connecting")
                client = None
                try:
                    client = await self._client()
                    await client.connect()
                    await self._session(ctx, client, backoff)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    raise_if_cancelled()
                    ctx.state("disconnected")
                    ctx.error("opcua-connection", f"{o.endpoint}: {type(exc).__name__}: {exc}")
                    log.debug("opcua source %s: connection failed", self.name, exc_info=True)
                finally:
                    if client is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(client.disconnect(), 2)
                raise_if_cancelled()
                await asyncio.sleep(backoff.next())
        finally:
            ctx.state("disconnected")

    async def _session(self, ctx: SourceContext, client: Client, backoff: Backoff) -> None:
        o = self.options
        queue: asyncio.Queue = asyncio.Queue(maxsize=10_000)
        sub = await client.create_subscription(o.publishing_interval_ms, _Handler(queue))
        by_id = {n.node_id: n for n in self.nodes}
        nodes = [client.get_node(n.node_id) for n in self.nodes]
        results = await sub.subscribe_data_change(nodes, queuesize=o.queue_size,
                                                  sampling_interval=ua.Double(o.sampling_interval_ms))
        live: dict[str, Node] = {}  # node id -> Node, subscribed and not known to be gone
        for n, node, result in zip(self.nodes, nodes, results):
            if isinstance(result, ua.StatusCode):
                reason = "opcua-node-gone" if result.value in _GONE else "opcua-bad-status"
                ctx.error(reason, f"{n.node_id}: subscribing: {_status_name(result)}")
            else:
                live[n.node_id] = node
        ctx.state("connected")
        backoff.reset()
        loop = asyncio.get_running_loop()
        next_check = loop.time() + o.node_check_s
        while True:
            raise_if_cancelled()
            try:
                kind, node, payload = await asyncio.wait_for(queue.get(), o.watchdog_s)
            except asyncio.TimeoutError:
                raise_if_cancelled()
                kind = None
            if kind == "data":
                node_id = node.nodeid.to_string()
                if node_id in live:
                    if await self._data(ctx, by_id.get(node_id), node, payload) == "gone":
                        live.pop(node_id, None)
            if loop.time() >= next_check and live:
                # not every server notifies a deleted node's monitored items: ask about the live ones
                ids = list(live)
                found = await client.read_attributes([live[i] for i in ids], ua.AttributeIds.NodeClass)
                for node_id, dv in zip(ids, found):
                    code = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
                    if code.value in _GONE:
                        live.pop(node_id)
                        ctx.error("opcua-node-gone", f"{node_id}: {_status_name(code)}")
                next_check = loop.time() + o.node_check_s
            elif kind == "status" and isinstance(payload, ua.StatusCode) and not payload.is_good():
                raise ConnectionError(f"subscription status {_status_name(payload)}")
            if client.state.value in ("disconnected", "disconnecting"):
                raise ConnectionError("connection lost")

    async def _data(self, ctx: SourceContext, mapping: NodeMap | None, node, dv: ua.DataValue) -> str | None:
        received = now_ms()
        if mapping is None:
            log.warning("opcua source %s: a notification for unmapped node %s", self.name, node)
            return None
        status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        if not status.is_good():
            gone = status.value in _GONE
            ctx.error("opcua-node-gone" if gone else "opcua-bad-status", f"{mapping.node_id}: {_status_name(status)}")
            return "gone" if gone else None
        value = _number(dv.Value.Value if dv.Value is not None else None)
        if value is None:
            shown = repr(dv.Value.Value if dv.Value is not None else None)[:100]
            ctx.error("opcua-bad-value", f"{mapping.node_id}: not a number: {shown}")
            return None
        ts = _ms(dv.SourceTimestamp) or _ms(dv.ServerTimestamp) or received
        if self._last.get(mapping.node_id) == (value, ts):
            return None  # the value a (re)subscription reports again
        self._last[mapping.node_id] = (value, ts)
        await ctx.emit(Reading(device=mapping.device, sensor=mapping.sensor, value=value, ts_ms=ts,
                               received_ms=received))
        return None


_KEYS = {"type", "endpoint", "security_policy", "security_mode", "certificate", "private_key", "server_certificate",
         "application_uri", "username", "password", "password_file", "publishing_interval_ms",
         "sampling_interval_ms", "queue_size", "timeout_s", "watchdog_s", "node_check_s", "reconnect_min_s",
         "reconnect_max_s", "nodes"}


def _num(section: dict, key: str, default: float, where: str, *, integer: bool = False) -> Any:
    value = section.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise ValueError(f"{where}: `{key}` must be a positive {'integer' if integer else 'number'}, not {value!r}")
    return value


def from_config(name: str, section: dict) -> OpcUaSource:
    where = f"source {name!r}"
    _known_keys(section, _KEYS, where)
    endpoint = section.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("opc.tcp://"):
        raise ValueError(f"{where}: `endpoint` (opc.tcp://host:port/...) is required")
    policy = section.get("security_policy", "None")
    if policy not in _POLICIES:
        raise ValueError(f"{where}: `security_policy` must be one of {', '.join(_POLICIES)}, not {policy!r}")
    mode = section.get("security_mode")
    files = {k: section.get(k) for k in ("certificate", "private_key", "server_certificate")}
    if policy == "None":
        if mode not in (None, "None") or files["certificate"] or files["private_key"]:
            raise ValueError(f"{where}: security_mode/certificate/private_key need a security_policy other than None")
        mode = None
    else:
        if mode not in _MODES:
            raise ValueError(f"{where}: `security_mode` must be \"Sign\" or \"SignAndEncrypt\" with {policy}")
        if not files["certificate"] or not files["private_key"]:
            raise ValueError(f"{where}: security_policy {policy} needs `certificate` and `private_key`")
    for key, path in files.items():
        if path is not None and (not isinstance(path, str) or not Path(path).is_file()):
            raise ValueError(f"{where}: `{key}` {path!r} is not a readable file")
    password = section.get("password")
    if section.get("password_file") is not None:
        if password is not None:
            raise ValueError(f"{where}: set `password_file` or `password`, not both")
        try:
            password = Path(section["password_file"]).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read password_file {section['password_file']}: {exc.strerror}") from None
    options = OpcUaOptions(
        endpoint=endpoint, security_policy=policy, security_mode=mode, certificate=files["certificate"],
        private_key=files["private_key"], server_certificate=files["server_certificate"],
        application_uri=section.get("application_uri"), username=section.get("username"), password=password,
        publishing_interval_ms=_num(section, "publishing_interval_ms", 500, where),
        sampling_interval_ms=_num(section, "sampling_interval_ms", 100, where),
        queue_size=_num(section, "queue_size", 10, where, integer=True),
        timeout_s=_num(section, "timeout_s", 4, where), watchdog_s=_num(section, "watchdog_s", 1, where),
        node_check_s=_num(section, "node_check_s", 10, where),
        reconnect_min_s=_num(section, "reconnect_min_s", 0.5, where),
        reconnect_max_s=_num(section, "reconnect_max_s", 30, where),
    )
    Backoff(options.reconnect_min_s, options.reconnect_max_s)
    entries = section.get("nodes")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: at least one [[sources.{name}.nodes]] entry is required")
    nodes, seen = [], set()
    for i, e in enumerate(entries):
        w = f"{where} nodes[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{w}: must be a table")
        _known_keys(e, {"node_id", "device", "sensor"}, w)
        for k in ("node_id", "device", "sensor"):
            if not isinstance(e.get(k), str) or not e[k]:
                raise ValueError(f"{w}: `{k}` (text) is required")
        try:
            node_id = ua.NodeId.from_string(e["node_id"]).to_string()
        except Exception:  # noqa: BLE001 - asyncua raises several kinds for a bad id
            raise ValueError(f"{w}: {e['node_id']!r} is not an OPC UA node id") from None
        if node_id in seen:
            raise ValueError(f"{w}: node {node_id} is listed twice")
        seen.add(node_id)
        nodes.append(NodeMap(node_id=node_id, device=e["device"], sensor=e["sensor"]))
    return OpcUaSource(name, options, nodes)
