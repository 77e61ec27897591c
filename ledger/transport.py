"""Length-prefixed frames over asyncio TCP between ledger nodes (and their clients).

Wire: every frame is a 4-byte big-endian length followed by that many bytes,
at most ``max_frame`` of them. The first frame a dialer sends is a HELLO, the
canonical encoding of ``["sealstream-hello", 1, chain_id, node_id]``; it only
labels the connection for logs and metrics. Authenticity is per message: every
consensus message is signed by its sender and verified by the core, so the
transport never trusts a connection's claimed identity.

Each node dials every peer once and keeps that connection for its outbound
traffic (reconnecting with capped exponential backoff and jitter); inbound
connections deliver frames and can be answered on (clients wait for replies on
the connection they submitted on). Frames that cannot be delivered are dropped
and counted by reason, never raised into the caller.

Limits (`Limits`, read from ``SEALSTREAM_LEDGER_*`` by `Limits.from_env`): a frame's
length is checked before its body is read, against ``hello_max_frame`` until the HELLO,
then ``max_frame`` on a link whose HELLO names a known node and ``client_max_frame`` on
any other (a client's); a connection that sends nothing for ``idle_timeout_s``, takes
longer than ``read_timeout_s`` over one frame (or its HELLO) is closed; connections
above ``max_connections`` in all or ``max_connections_per_address`` from one address are
refused at accept. Refusals (`refused`) and frames over a limit (`over_limit`) are
counted by reason, as are drops.

With TLS (`ledger.tls.NodeTLS`, the default of a layout made by ``init``), the peers' port
speaks mutually authenticated TLS 1.3: the handshake runs before any frame is read (within
``read_timeout_s``), a dialer must present the self-signed certificate of a genesis node key
and prove its possession, and the HELLO must then name that very key (`Connection.remote` is
the authenticated did, `Connection.peer` True). Clients use a port of their own
(``client_port``): TLS with the node's certificate only, the client frame limit, and whatever
arrives there is a client's (never a peer's). A dialer pins the peer's certificate to the
genesis key of the node it dialed before writing its HELLO, and counts the link up (and resets
its backoff) only once the peer answered ``HELLO_ACK`` (in TLS 1.3 the dialer's handshake ends
before the server has checked the dialer's certificate). Failed handshakes are counted by reason
in `handshake_failures` (``dial_<reason>`` for the dialer's side), and a refused dial keeps its
backoff. Without TLS (a plaintext layout, ``--plaintext``: the bench's comparison) the one
port serves both as before and the HELLO is unauthenticated.

Delivery is in order per link and best effort: a frame written just as a peer
hangs up can be lost, and one in flight during a reconnect can arrive twice.
PBFT copes with both (handlers are idempotent; status messages, view changes
and state transfer recover what was lost).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields

from trust import canonical

from .tls import NodeTLS, handshake_reason, peer_did, pinned

__all__ = ["Transport", "Connection", "Peer", "Limits", "read_frame", "write_frame", "FrameError", "HELLO_TAG",
           "HELLO_ACK"]

log = logging.getLogger("sealstream.ledger.transport")

HELLO_TAG = "sealstream-hello"
#: what a node answers on its peers' port (TLS) once a dialer's certificate and HELLO are accepted
HELLO_ACK = canonical.encode(["sealstream-hello-ok", 1])
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class Limits:
    """What one node's listener accepts (see the module doc); the settings are
    ``SEALSTREAM_LEDGER_<FIELD>`` (`sealstream.settings.Settings` documents them)."""

    max_frame: int = DEFAULT_MAX_FRAME
    client_max_frame: int = 1024 * 1024
    hello_max_frame: int = 4096
    read_timeout_s: float = 10.0
    idle_timeout_s: float = 120.0
    max_connections: int = 512
    max_connections_per_address: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Limits":
        kw: dict[str, float | int] = {}
        for f in fields(cls):
            raw = environ.get(f"SEALSTREAM_LEDGER_{f.name.upper()}")
            if raw is not None and raw.strip():
                kw[f.name] = float(raw) if f.name.endswith("_s") else int(raw)
        return cls(**kw)  # type: ignore[arg-type]


class FrameError(Exception):
    """A peer broke framing (oversized or truncated frame); the connection is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_frame(reader: asyncio.StreamReader, max_frame: int,
                     conn: "Connection | None" = None) -> bytes | None:
    """The next frame, or None on a clean end of stream between frames.

    The length is checked against `max_frame` before the body is read. With
    `conn`, the time the body read started is kept in ``conn.reading_since``
    (the transport's sweeper closes a connection stuck in one frame)."""
    try:
        header = await reader.readexactly(_LEN.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("truncated") from None
        return None
    (length,) = _LEN.unpack(header)
    if length > max_frame:
        raise FrameError("oversized")
    if conn is not None:
        conn.reading_since = time.monotonic()
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("truncated") from None


def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(_LEN.pack(len(payload)) + payload)


def hello(chain_id: str, node_id: str) -> bytes:
    return canonical.encode([HELLO_TAG, 1, chain_id, node_id])


@dataclass(frozen=True)
class Peer:
    node_id: str
    host: str
    port: int


class Connection:
    """One accepted connection; ``remote`` is what its HELLO claimed (unauthenticated)."""

    def __init__(self, writer: asyncio.StreamWriter, remote: str) -> None:
        self._writer = writer
        self.remote = remote
        #: when the last frame ended (monotonic), and when the frame being read started (None: between frames)
        self.last_frame = time.monotonic()
        self.reading_since: float | None = None
        self.hello_done = False
        #: True on a link from a genesis node: authenticated by TLS, or (plaintext) a HELLO naming one
        self.peer = False
        #: why the transport closed it (a timeout), counted once
        self.closed_by: str | None = None

    def send(self, payload: bytes) -> None:
        if not self._writer.is_closing():
            write_frame(self._writer, payload)

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    def abort(self, reason: str) -> None:
        """Close now (a limit was hit); the reader of this connection then ends."""
        self.closed_by = reason
        self._writer.transport.abort()


OnFrame = Callable[[Connection, bytes], Awaitable[None] | None]


class Transport:
    """A node's TCP endpoint: a listener plus one outbound link per peer."""

    def __init__(
        self,
        *,
        chain_id: str,
        node_id: str,
        host: str,
        port: int,
        peers: list[Peer],
        on_frame: OnFrame,
        max_frame: int | None = None,
        limits: Limits | None = None,
        queue_limit: int = 10_000,
        backoff: tuple[float, float] = (0.05, 2.0),
        tls: NodeTLS | None = None,
        client_port: int | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.node_id = node_id
        self.host = host
        self.port = port
        self.peers = {p.node_id: p for p in peers if p.node_id != node_id}
        self.on_frame = on_frame
        limits = limits or Limits()
        if max_frame is not None:
            limits = Limits(**{**limits.__dict__, "max_frame": max_frame})
        self.limits = limits
        self.max_frame = limits.max_frame
        self.backoff = backoff
        self.tls = tls
        self.client_port = client_port
        self.drops: Counter[str] = Counter()
        #: TLS handshakes that failed, by reason (``dial_<reason>``: this node dialing a peer)
        self.handshake_failures: Counter[str] = Counter()
        #: connections refused at accept, and frames over a length limit, by reason
        self.refused: Counter[str] = Counter()
        self.over_limit: Counter[str] = Counter()
        self._conns: dict[Connection, str] = {}  # open inbound connection -> its address
        self._per_address: Counter[str] = Counter()
        self.connected: set[str] = set()
        self._queues: dict[str, asyncio.Queue[bytes]] = {
            nid: asyncio.Queue(maxsize=queue_limit) for nid in self.peers
        }
        self._server: asyncio.base_events.Server | None = None
        self._client_server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inbound: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        if self.client_port is not None:
            self._client_server = await asyncio.start_server(self._accept_client, self.host, self.client_port)
            if self.client_port == 0:
                self.client_port = self._client_server.sockets[0].getsockname()[1]
        for nid in self.peers:
            self._tasks.append(asyncio.create_task(self._dial_loop(nid), name=f"dial-{nid[-8:]}"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="sweep"))

    async def _sweep(self) -> None:
        """Close inbound connections that sit silent past the idle timeout, or hold one frame
        (or their HELLO) open past the read timeout. One pass a fraction of the shorter timeout,
        so the hot path only stamps times."""
        lim = self.limits
        period = max(0.05, min(1.0, lim.read_timeout_s / 4, lim.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self._conns):
                if conn.closed_by is not None:
                    continue
                if conn.reading_since is not None:
                    if now - conn.reading_since > lim.read_timeout_s:
                        conn.abort("read_timeout")
                elif not conn.hello_done:
                    if now - conn.last_frame > lim.read_timeout_s:
                        conn.abort("hello_timeout")
                elif now - conn.last_frame > lim.idle_timeout_s:
                    conn.abort("idle_timeout")

    async def close(self) -> None:
        for task in [*self._tasks, *self._inbound]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._inbound, return_exceptions=True)
        for server in (self._server, self._client_server):
            if server is not None:
                server.close()
                await server.wait_closed()

    # -- sending --------------------------------------------------------------------
    def send(self, node_id: str, payload: bytes) -> None:
        queue = self._queues.get(node_id)
        if queue is None:
            self.drops["unknown-peer"] += 1
            return
        if len(payload) > self.max_frame:
            self.drops["oversized-outbound"] += 1
            return
        if queue.full():
            queue.get_nowait()  # the oldest message is the least useful to a consensus protocol
            self.drops["queue-full"] += 1
        queue.put_nowait(payload)

    def broadcast(self, payload: bytes) -> None:
        for nid in self.peers:
            self.send(nid, payload)

    async def _dial_loop(self, node_id: str) -> None:
        peer = self.peers[node_id]
        queue = self._queues[node_id]
        delay = self.backoff[0]
        pending: bytes | None = None
        while True:
            try:
                reader, writer = await self._dial(peer)
            except OSError:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            self.connected.add(node_id)
            log.debug("connected to %s", node_id)
            # The peer never writes on this link (after its HELLO_ACK, with TLS), so a finished read
            # means it hung up; watching for that lets us reconnect before writing into a dead socket.
            hangup = asyncio.ensure_future(reader.read())
            try:
                if self.tls is None:
                    write_frame(writer, hello(self.chain_id, self.node_id))
                while True:
                    if pending is None:
                        getter = asyncio.ensure_future(queue.get())
                        await asyncio.wait({getter, hangup}, return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():
                            getter.cancel()
                            break
                        pending = getter.result()
                    write_frame(writer, pending)
                    await writer.drain()
                    pending = None
            except (OSError, ConnectionError):
                pass  # reconnect and resend the frame that was in flight
            finally:
                hangup.cancel()
                self.connected.discard(node_id)
                writer.close()

    async def _dial(self, peer: Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to `peer`; with TLS, handshaken and pinned to its genesis key (else OSError)."""
        if self.tls is None:
            return await asyncio.open_connection(peer.host, peer.port)
        try:
            reader, writer = await asyncio.open_connection(
                peer.host, peer.port, ssl=self.tls.peer_client, server_hostname=peer.host,
                ssl_handshake_timeout=self.limits.read_timeout_s)
        except ssl.SSLError as exc:
            self.handshake_failures["dial_" + handshake_reason(exc)] += 1
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            self.handshake_failures["dial_handshake_timeout"] += 1
            raise OSError("handshake timeout") from exc
        if not pinned(writer.get_extra_info("ssl_object"), peer.node_id):
            self.handshake_failures["dial_wrong_key"] += 1
            writer.transport.abort()
            raise OSError(f"{peer.host}:{peer.port} does not hold the genesis key of {peer.node_id}")
        # In TLS 1.3 the dialer's handshake ends before the server has checked its certificate: the
        # link counts (and the backoff resets) only once the peer acknowledged our HELLO.
        write_frame(writer, hello(self.chain_id, self.node_id))
        try:
            ack = await asyncio.wait_for(read_frame(reader, 64), self.limits.read_timeout_s)
        except (OSError, FrameError, asyncio.TimeoutError, TimeoutError) as exc:
            ack = None
            reason = "dial_refused" if isinstance(exc, (OSError, FrameError)) else "dial_ack_timeout"
        else:
            reason = "dial_refused"
        if ack != HELLO_ACK:
            self.handshake_failures[reason] += 1
            writer.transport.abort()
            raise OSError(f"{peer.host}:{peer.port} refused this node's link")
        return reader, writer

    # -- receiving ------------------------------------------------------------------
    async def _accept_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._accept(reader, writer, client_port=True)

    async def _handshake(self, writer: asyncio.StreamWriter, conn: Connection, client_port: bool) -> str | None:
        """Server side of TLS; the peer's authenticated did (``""`` on the clients' port), or
        None when refused (counted in `handshake_failures`). The sweeper bounds it like a HELLO
        (``hello_timeout`` after ``read_timeout_s``)."""
        assert self.tls is not None
        ctx = self.tls.client_server if client_port else self.tls.peer_server
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=self.limits.read_timeout_s + 5)
        except (ssl.SSLError, OSError, EOFError, asyncio.TimeoutError, TimeoutError) as exc:
            self.handshake_failures["handshake_timeout" if conn.closed_by else handshake_reason(exc)] += 1
            return None
        if client_port:
            return ""
        did = peer_did(writer.get_extra_info("ssl_object"))
        if did is None or did not in self.peers:
            self.handshake_failures["unknown_key"] += 1  # the trust store holds only genesis keys
            return None
        return did

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      client_port: bool = False) -> None:
        lim = self.limits
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if len(self._conns) >= lim.max_connections:
            self.refused["total_cap"] += 1
            writer.transport.abort()
            return
        if self._per_address[address] >= lim.max_connections_per_address:
            self.refused["address_cap"] += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._inbound.add(task)
        conn = Connection(writer, remote="?")
        self._conns[conn] = address
        self._per_address[address] += 1
        stage = "hello"
        try:
            authenticated: str | None = None
            if self.tls is not None:
                authenticated = await self._handshake(writer, conn, client_port)
                if authenticated is None:
                    return
            first = await read_frame(reader, lim.hello_max_frame, conn)
            if first is None:
                return
            remote = self._parse_hello(first)
            if remote is None:
                self.drops["bad-hello"] += 1
                return
            if authenticated and remote != authenticated:
                self.handshake_failures["identity_mismatch"] += 1  # a HELLO naming another node
                return
            conn.remote = remote
            conn.hello_done = True
            conn.reading_since = None
            conn.last_frame = time.monotonic()
            if self.tls is not None:
                conn.peer = bool(authenticated)
                if conn.peer:  # tell the dialer its link is accepted (see `_dial`)
                    write_frame(writer, HELLO_ACK)
                    await writer.drain()
            else:  # plaintext: a HELLO is unauthenticated; naming a node only buys the peers' frame limit
                conn.peer = remote in self.peers
            limit = lim.max_frame if conn.peer else lim.client_max_frame
            stage = "peer" if conn.peer else "client"
            while True:
                frame = await read_frame(reader, limit, conn)
                if frame is None:
                    return
                conn.reading_since = None
                result = self.on_frame(conn, frame)
                if result is not None:
                    await result
                await writer.drain()
                conn.last_frame = time.monotonic()
        except FrameError as exc:
            if conn.closed_by is None:
                self.drops[exc.reason] += 1
                if exc.reason == "oversized":
                    self.over_limit[stage] += 1
        except (OSError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # close(): end quietly (asyncio logs a handler task that ends cancelled)
        finally:
            if conn.closed_by is not None:
                self.drops[conn.closed_by] += 1
            writer.close()
            self._conns.pop(conn, None)
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]
            if task is not None:
                self._inbound.discard(task)

    def _parse_hello(self, frame: bytes) -> str | None:
        try:
            tag, version, chain_id, node_id = canonical.decode(frame)
        except (ValueError, TypeError):
            return None
        if tag != HELLO_TAG or version != 1 or chain_id != self.chain_id or not isinstance(node_id, str):
            return None
        return node_id
