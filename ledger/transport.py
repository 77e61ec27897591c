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

Delivery is in order per link and best effort: a frame written just as a peer
hangs up can be lost, and one in flight during a reconnect can arrive twice.
PBFT copes with both (handlers are idempotent; status messages, view changes
and state transfer recover what was lost).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trust import canonical

__all__ = ["Transport", "Connection", "Peer", "read_frame", "write_frame", "FrameError", "HELLO_TAG"]

log = logging.getLogger("sealstream.ledger.transport")

HELLO_TAG = "sealstream-hello"
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_LEN = struct.Struct(">I")


class FrameError(Exception):
    """A peer broke framing (oversized or truncated frame); the connection is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> bytes | None:
    """The next frame, or None on a clean end of stream between frames."""
    try:
        header = await reader.readexactly(_LEN.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("truncated") from None
        return None
    (length,) = _LEN.unpack(header)
    if length > max_frame:
        raise FrameError("oversized")
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

    def send(self, payload: bytes) -> None:
        if not self._writer.is_closing():
            write_frame(self._writer, payload)

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()


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
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_limit: int = 10_000,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.chain_id = chain_id
        self.node_id = node_id
        self.host = host
        self.port = port
        self.peers = {p.node_id: p for p in peers if p.node_id != node_id}
        self.on_frame = on_frame
        self.max_frame = max_frame
        self.backoff = backoff
        self.drops: Counter[str] = Counter()
        self.connected: set[str] = set()
        self._queues: dict[str, asyncio.Queue[bytes]] = {
            nid: asyncio.Queue(maxsize=queue_limit) for nid in self.peers
        }
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inbound: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        for nid in self.peers:
            self._tasks.append(asyncio.create_task(self._dial_loop(nid), name=f"dial-{nid[-8:]}"))

    async def close(self) -> None:
        for task in [*self._tasks, *self._inbound]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._inbound, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

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
                reader, writer = await asyncio.open_connection(peer.host, peer.port)
            except OSError:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            self.connected.add(node_id)
            log.debug("connected to %s", node_id)
            # The peer never writes on this link, so a finished read means it hung up; watching for
            # that lets us reconnect before writing into a dead socket.
            hangup = asyncio.ensure_future(reader.read())
            try:
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

    # -- receiving ------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inbound.add(task)
        conn = Connection(writer, remote="?")
        try:
            first = await read_frame(reader, self.max_frame)
            if first is None:
                return
            remote = self._parse_hello(first)
            if remote is None:
                self.drops["bad-hello"] += 1
                return
            conn.remote = remote
            while True:
                frame = await read_frame(reader, self.max_frame)
                if frame is None:
                    return
                result = self.on_frame(conn, frame)
                if result is not None:
                    await result
                await writer.drain()
        except FrameError as exc:
            self.drops[exc.reason] += 1
        except (OSError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # close(): end quietly (asyncio logs a handler task that ends cancelled)
        finally:
            writer.close()
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
